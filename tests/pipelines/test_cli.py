"""The aprflow entry point: help, and every single step reachable through it."""

import pytest

from pipelines.cli import STEPS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "compile", *STEPS):
        assert command in out


@pytest.mark.parametrize("step", sorted(STEPS))
def test_each_step_has_its_own_help(step, capsys):
    try:
        code = main([step, "--help"])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out


def test_steps_run_through_aprflow(tmp_path, capsys):
    specs = tmp_path / "specs.jsonl"
    args = ["--space", "anynetx-a", "--n", "3", "--flops", "150e6:250e6", "--out", str(specs)]
    assert main(["sample", *args]) == 0
    assert len(specs.read_text().splitlines()) == 3
    table = tmp_path / "results.csv"
    rows = [f"m{i},{d},{10 + i * (1 + j)}" for i in range(4) for j, d in enumerate("ab")]
    table.write_text("model,dataset,top1_error\n" + "\n".join(rows) + "\n")
    out = tmp_path / "report"
    assert main(["analyze", str(table), "--reference", "a", "--out", str(out)]) == 0
    assert (out / "report.html").exists() and (out / "summary.json").exists()


def test_run_dry_run_checks_without_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("APRFLOW_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["run", "apr-study", "--set", "n_models=2", "--dry-run"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert main(["run", "apr-study", "--set", "flops_max=1e3", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: FLOP band")
