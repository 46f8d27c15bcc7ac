"""Kill anywhere: SIGKILL a trial process during training, during its checkpoint upload and
during its result write, and a whole local study mid-run; the re-run resumes (finished trials
are not retrained, interrupted ones resume from their checkpoint) and ends with the same
results as an uninterrupted run.

Points are made observable with the store's test-only hook
``APRFLOW_FAULT_PAUSE_BEFORE_PUBLISH=<key suffix>`` (components/common/storage.py): the writer
prints ``aprflow-fault: pausing before publishing KEY`` and sleeps, and the test kills it there.
Figures: ``pytest tests/reliability/test_kills.py -s`` prints ``kills survived: ...``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from faults import aprflow_env, start_aprflow, wait_for

from components.common.storage import open_store
from components.sample.samplers import sample_specs

EPOCHS = 3
KILLS: list[str] = []


def _train_args(spec: Path, store_uri: str) -> list[str]:
    return [
        "train",
        "--spec",
        str(spec),
        "--dataset",
        "faces",
        "--resolution",
        "8",
        "--epochs",
        str(EPOCHS),
        "--store",
        store_uri,
    ]


def _result(store) -> dict:
    (key,) = [k for k in store.list("trials/") if k.endswith("/result.json")]
    return store.get_json(key)


def _kill(process, log: Path, point: str) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, log.read_text()[-2000:]
    KILLS.append(point)


def _finish(args, env, log: Path) -> str:
    process = start_aprflow(args, env, log)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory) -> dict:
    """The same trial, never interrupted."""
    folder = tmp_path_factory.mktemp("reference")
    store_uri = str(folder / "store")
    _finish(_train_args(spec_file, store_uri), aprflow_env(), folder / "log")
    return _result(open_store(store_uri))


def _same(result: dict, reference: dict) -> None:
    assert result["status"] == "ok", result["reason"]
    assert result["trial_id"] == reference["trial_id"]
    assert result["top1_error"] == reference["top1_error"]
    # Throughput and memory are measurements of the run, not results of the training.
    measured = ("images_per_s", "peak_memory_mb")
    assert {k: v for k, v in result["history"].items() if k not in measured} == {
        k: v for k, v in reference["history"].items() if k not in measured
    }, "a resumed trial equals an uninterrupted one"


@pytest.mark.slow
def test_kill_during_checkpoint_upload_and_result_write(spec_file, reference, s3_env, tmp_path):
    store_uri = f"s3://{s3_env}/kills"
    store = open_store(store_uri)
    args = _train_args(spec_file, store_uri)
    hook = "APRFLOW_FAULT_PAUSE_BEFORE_PUBLISH"

    # 1. Killed while uploading the first checkpoint: nothing appears under its key.
    log = tmp_path / "1.log"
    process = start_aprflow(args, aprflow_env(**{hook: "checkpoint.pt"}), log)
    wait_for(lambda: "pausing before publishing" in log.read_text(), 120, "checkpoint upload")
    _kill(process, log, "checkpoint upload (epoch 1)")
    assert not [k for k in store.list("trials/") if k.endswith(("checkpoint.pt", "result.json"))]

    # 2. Re-run, killed while writing the result: every epoch's checkpoint is there.
    log = tmp_path / "2.log"
    process = start_aprflow(args, aprflow_env(**{hook: "result.json"}), log)
    wait_for(lambda: "pausing before publishing" in log.read_text(), 120, "result write")
    _kill(process, log, "result write")
    text = log.read_text()
    assert "resuming" not in text and f"epoch {EPOCHS}/{EPOCHS}" in text
    assert not [k for k in store.list("trials/") if k.endswith("result.json")]

    # 3. Re-run: resumes after the last epoch, trains nothing, same result.
    text = _finish(args, aprflow_env(), tmp_path / "3.log")
    assert f"after epoch {EPOCHS}" in text and "epoch 1/" not in text
    _same(_result(store), reference)
    # Each killed holder's lease was taken over at once (its process is gone), none is left.
    leases = [k for k in store.list("trials/") if "/lease-" in k]
    assert len(leases) == 3 and store.get_json(leases[-1])["released"]


@pytest.mark.slow
def test_kill_during_training_resumes_from_its_checkpoint(spec_file, reference, tmp_path):
    store_dir = tmp_path / "store"
    args = _train_args(spec_file, str(store_dir))
    log = tmp_path / "1.log"
    # The result write pauses, so the kill always lands before the trial is finished.
    process = start_aprflow(
        args, aprflow_env(APRFLOW_FAULT_PAUSE_BEFORE_PUBLISH="result.json"), log
    )
    wait_for(lambda: list(store_dir.glob("trials/*/checkpoint.pt")), 120, "a checkpoint", 0.02)
    _kill(process, log, "training (after the first checkpoint)")
    text = _finish(args, aprflow_env(), tmp_path / "2.log")
    resumed = re.search(r"resuming trial \w+ after epoch (\d+)", text)
    assert resumed, text[-2000:]
    print(f"\nkilled in training: resumed after epoch {resumed[1]} of {EPOCHS}")
    _same(_result(open_store(str(store_dir))), reference)


def test_tally_kills():
    """Prints the figure (after the kill tests: pytest keeps file order)."""
    print(f"\nkills survived: {len(KILLS)} of {len(KILLS)}: {'; '.join(KILLS)}")
