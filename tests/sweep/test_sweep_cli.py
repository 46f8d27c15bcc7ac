"""``aprflow run --dry-run`` prints the chunking; bad sweep settings are one error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main

DEMO = str(Path(__file__).parents[2] / "pipelines" / "configs" / "apr_study.toy.yaml")


def _dry_run(capsys, *overrides: str) -> tuple[int, str, str]:
    sets = [arg for pair in overrides for arg in ("--set", pair)]
    code = main(["run", "apr-study", "--config", DEMO, "--dry-run", *sets])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_prints_trials_chunks_and_tasks(local_env, capsys):
    code, out, _ = _dry_run(capsys, "chunk_size=5")
    assert code == 0
    assert "24 trials in 5 chunks: 5 training tasks" in out
    # Sized by estimate for the machine that runs it: kfp.local's two slots here ...
    code, out, _ = _dry_run(capsys)
    assert code == 0 and "24 trials in 2 chunks: 2 training tasks" in out
    # ... and, for a cluster (aprflow submit), 24 tiny trials over the profile's 16 tasks.
    from pipelines.apr_study import apr_study
    from pipelines.config import load_config
    from pipelines.sweep import dry_run_summary

    summary = dry_run_summary(load_config(apr_study, DEMO, {}))
    assert "24 trials in 12 chunks: 12 training tasks" in summary


@pytest.mark.parametrize(
    "override, message",
    [
        ("chunk_size=-1", "error: chunk_size must be a whole number of trials >= 1, or 0"),
        ("trials_per_gpu=0", "error: config key 'trials_per_gpu' must be in [1, 64], got 0"),
        ("max_attempts=0", "error: config key 'max_attempts' must be in [1, 100], got 0"),
        ("gpus_per_trial=2", "error: gpus_per_trial=2 needs engine=deepspeed"),
        ("device=tpu", "error: device 'tpu': choose from auto, cuda, cpu"),
    ],
)
def test_bad_sweep_settings_are_one_error(local_env, capsys, override, message):
    code, out, err = _dry_run(capsys, override)
    assert code == 1 and err.startswith(message) and err.count("\n") == 1, err
    assert "trials in" not in out
    assert not (local_env / "store").exists(), "nothing written"


def test_more_gpus_than_a_node_has(local_env, capsys):
    code, _, err = _dry_run(capsys, "engine=deepspeed", "gpus_per_trial=9")
    assert code == 1
    assert (
        "gpus_per_trial=9 is more than a node of the cluster profile has (gpus_per_node=8)" in err
    )


def test_cuda_on_a_machine_without_a_gpu(local_env, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = _dry_run(capsys, "device=cuda")
    assert code == 1 and "device 'cuda' was asked for but this machine has no usable GPU" in err
