"""Exact resume: a training process SIGKILLed mid-epoch and run again ends with the weights,
optimizer, EMA and history of an uninterrupted run, bitwise on the CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.sample.samplers import sample_specs

# Mixup (NumPy's global generator), drop path (torch's), EMA and label smoothing: every random
# source and every piece of state a resume has to restore.
RECIPE = ["--recipe", "apr_tiny", "--epochs", "2", "--seed", "1"]
RECIPE += ["--set", "recipe.mixup=0.2", "--set", "recipe.cutmix=1.0"]
RECIPE += ["--set", "recipe.drop_path=0.1", "--set", "recipe.model_ema=true"]


def _command(spec: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        *("-m", "components.train", "--spec", str(spec), "--dataset", "digits"),
        *("--resolution", "8", "--store", str(store), *RECIPE),
    ]


def _env() -> dict[str, str]:
    # One thread: the same floating-point reductions in both runs; a checkpoint after every
    # update, so the kill lands between two of them.
    return os.environ | {
        "APRFLOW_CHECKPOINT_EVERY_S": "0",
        "APRFLOW_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def _checkpoint(store: Path) -> dict | None:
    from components.train.trial import load_checkpoint_bytes

    found = list(store.glob("trials/*/checkpoint.pt"))
    if not found:
        return None
    try:
        return load_checkpoint_bytes(found[0].read_bytes())
    except (RuntimeError, EOFError, OSError):
        return None  # being replaced


def _tensors(state, prefix=""):
    """Every tensor in a nested checkpoint structure, by path."""
    import torch

    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(state, list | tuple):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}/{i}")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path):
    import torch

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict())
    )
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run(_command(spec, reference), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    victim = subprocess.Popen(
        _command(spec, resumed), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        state = _checkpoint(resumed)
        if state is not None and state["epoch"] == 1 and state["step"] >= 3:
            break  # in the middle of the second epoch, past its first checkpoints
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed mid-epoch"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = _checkpoint(resumed)
    assert killed_at["epoch"] == 1 and killed_at["step"] >= 3
    assert not list(resumed.glob("trials/*/result.json"))

    again = subprocess.run(_command(spec, resumed), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming trial" in again.stderr and "epoch 1, step" in again.stderr
    assert "epoch 1/2" not in again.stderr  # the first epoch is not trained again

    ours, theirs = _checkpoint(resumed), _checkpoint(reference)
    assert ours["epoch"] == theirs["epoch"] == 2 and ours["step"] == theirs["step"] == 0
    ours_tensors, theirs_tensors = dict(_tensors(ours)), dict(_tensors(theirs))
    assert ours_tensors.keys() == theirs_tensors.keys()
    weights = [k for k in ours_tensors if k.startswith(("/engine/model/", "/ema/"))]
    assert len(weights) > 20 and any(k.startswith("/engine/optimizer/") for k in ours_tensors)
    for key, tensor in ours_tensors.items():
        assert torch.equal(tensor, theirs_tensors[key]), key
    result = json.loads(again.stdout[again.stdout.index("{") :])
    expected = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["status"] == expected["status"] == "ok"
    for key in ("train_loss", "test_loss", "test_error", "ema_test_error", "lr"):
        assert result["history"][key] == expected["history"][key], key
