"""The aprflow entry point: help, and every command reachable through it."""

import os
import re

import pytest

from pipelines.cli import COMMANDS, main
from pipelines.names import LOCAL_PIPELINES, PIPELINE_NAMES


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_pipeline_names_match_the_registry():
    """The command line lists pipelines from a static list (no kfp import for --help)."""
    from pipelines.registry import PIPELINES

    assert tuple(PIPELINES) == PIPELINE_NAMES
    assert set(LOCAL_PIPELINES) <= set(PIPELINE_NAMES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_its_own_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: aprflow {command}")


def test_steps_run_through_aprflow(tmp_path, capsys):
    specs = tmp_path / "specs.jsonl"
    args = ["--space", "anynetx-a", "--n", "3", "--flops", "150e6:250e6", "--out", str(specs)]
    assert main(["sample", *args]) == 0
    assert len(specs.read_text().splitlines()) == 3
    table = tmp_path / "results.csv"
    rows = [f"m{i},{d},{10 + i * (1 + j)}" for i in range(4) for j, d in enumerate("ab")]
    table.write_text("model,dataset,top1_error\n" + "\n".join(rows) + "\n")
    out = tmp_path / "report"
    assert main(["analyze", str(table), "--reference", "a", "--out-dir", str(out)]) == 0
    assert (out / "report.html").exists() and (out / "summary.json").exists()


def test_run_dry_run_checks_without_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APRFLOW_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["run", "apr-study", "--set", "n_models=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: apr-study\n")
    # Readable YAML lines, not a Python dict's repr.
    assert "\nn_models: 2\n" in out and "{'" not in out
    # The time estimate names the measurement it rests on and its age: a local run on a
    # machine without a GPU trains on its CPU. The chunks are for kfp.local's two slots (6
    # trials in 2 chunks, not 6 chunks for the cluster's parallelism), and the environment
    # is as it was afterwards.
    assert "device-hours, one trial at a time" in out
    measured = r"images/s \+ \d+ s per trial, measured 20\d\d-\d\d-\d\d \("
    assert re.search(r"\n  cpu, .* " + measured, out)
    assert "6 trials in 2 chunks: 2 training tasks" in out
    assert "APRFLOW_LOCAL_PARALLEL_TASKS" not in os.environ
    assert main(["run", "apr-study", "--set", "flops_max=1e3", "--dry-run"]) == 1
    assert capsys.readouterr().err.startswith("error: FLOP band")
