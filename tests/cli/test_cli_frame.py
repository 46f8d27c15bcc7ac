"""One frame for every ``aprflow`` command (components/common/cli.py).

Every command: ``--help`` on stdout with exit 0; a success prints its result on stdout only
(JSON with ``--json``) and exits 0; a failure prints one ``error: ...`` line on stderr, nothing
on stdout, and exits 1 (2 for a usage error); ``--debug`` shows the traceback instead; a closed
stdout ends quietly with 141; ``--version``; ``aprflow --help`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components.common.cli import (
    UsageError,
    add_common_options,
    did_you_mean,
    print_result,
    run_cli,
)
from components.common.progress import configure_logging, report
from pipelines.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
APRFLOW = str(Path(sys.executable).parent / "aprflow")
TIMM_CSV = ROOT / "tests" / "analysis" / "fixtures" / "timm_top1.csv"
COMPILED = ROOT / "pipelines" / "compiled" / "apr_study.yaml"


@pytest.fixture
def files(local_env, monkeypatch) -> dict[str, Path]:
    """Inputs the cases name, in a fresh store and MLflow database; the working folder there."""
    monkeypatch.chdir(local_env)
    rng = np.random.default_rng(0)
    paths = {"features": local_env / "f.npy", "labels": local_env / "y.npy"}
    np.save(paths["features"], rng.normal(size=(40, 8)))
    np.save(paths["labels"], np.arange(40) % 4)
    paths["afile"] = local_env / "afile"
    paths["afile"].write_text("x")
    paths["specs"] = local_env / "specs.jsonl"
    paths["root"] = local_env
    return paths


def _sample(f, *extra: str) -> list[str]:
    out = ["--out", str(f["root"] / "out.jsonl")]
    return ["sample", "--space", "anynetx_a", "--n", "2", "--flops", "150e6:250e6", *out, *extra]


# (id, argv builder taking the files): one success per command, result on stdout.
SUCCESSES = [
    ("run", lambda f: ["run", "apr-study", "--set", "n_models=2", "--print-config", "--json"]),
    ("compile", lambda f: ["compile", "--out-dir", str(f["root"] / "compiled"), "--json"]),
    ("submit", lambda f: ["submit", "apr-study", "--dry-run", "--set", "n_models=2"]),
    ("sample", lambda f: _sample(f, "--json")),
    ("data", lambda f: ["data", "list", "--json"]),
    ("recipes", lambda f: ["recipes", "--json"]),
    (
        "transfer",
        lambda f: (
            ["transfer", "score", "logme", "--features", str(f["features"])]
            + ["--labels", str(f["labels"]), "--json"]
        ),
    ),
    ("analyze", lambda f: ["analyze", str(TIMM_CSV), "--out-dir", "report", "--bootstrap", "0"]),
]
# (id, argv builder, exit status): one failure per command, one error line on stderr.
FAILURES = [
    ("run-value", lambda f: ["run", "apr-study", "--set", "n_models=0", "--dry-run"], 1),
    ("run-unknown-key", lambda f: ["run", "apr-study", "--set", "n_model=2", "--dry-run"], 2),
    ("run-unknown-pipeline", lambda f: ["run", "nosuch"], 2),
    ("compile", lambda f: ["compile", "--out-dir", str(f["afile"])], 1),
    ("upload", lambda f: ["upload", "--host", "ml-pipeline:8888", str(COMPILED)], 1),
    ("submit", lambda f: ["submit", "apr-study", "--dry-run", "--set", "n_models=many"], 1),
    ("sample", lambda f: _sample(f, "--space", "nope"), 1),
    ("sample-usage", lambda f: ["sample", "--space", "anynetx_a"], 2),
    ("data", lambda f: ["data", "describe", "nosuch"], 1),
    (
        "train",
        lambda f: ["train", "--spec", str(f["root"] / "missing.json"), "--dataset", "digits"],
        1,
    ),
    ("recipes", lambda f: ["recipes", "nosuch"], 1),
    ("recipes-usage", lambda f: ["recipes", "--set", "recipe.lr=1"], 2),
    ("transfer", lambda f: ["transfer", "score", "logme", "--labels", str(f["labels"])], 1),
    ("analyze", lambda f: ["analyze", str(f["root"] / "missing.csv"), "--out-dir", "o"], 1),
    ("command-unknown", lambda f: ["nosuch"], 2),
]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_goes_to_stdout(command, capsys):
    argv = [command, "--help"] if command else ["--help"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: aprflow {command}".rstrip()) and captured.err == ""
    for option in ("--debug", "--quiet", "--verbose", "--version"):
        assert option in captured.out, (command, option)


@pytest.mark.parametrize(("name", "argv"), SUCCESSES, ids=[case[0] for case in SUCCESSES])
def test_success_prints_the_result_on_stdout_only(name, argv, files, capsys):
    assert main(argv(files)) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert captured.out.strip(), "a result"
    assert "error:" not in captured.err
    if "--json" in argv(files) or name == "submit":  # submit --dry-run: JSON by nature
        json.loads(captured.out)
    # Progress lines never reach stdout.
    assert not any(line.startswith("[") and "] " in line for line in captured.out.splitlines())


@pytest.mark.parametrize(("name", "argv", "code"), FAILURES, ids=[case[0] for case in FAILURES])
def test_failure_is_one_error_line_on_stderr(name, argv, code, files, capsys):
    assert main(argv(files)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.strip().splitlines()
    # A usage error from argparse ends in "PROG: error: ..." after the usage lines.
    assert errors[-1].startswith("error: ") or (code == 2 and ": error: " in errors[-1]), errors
    assert "Traceback" not in captured.err and "internal error" not in captured.err


@pytest.mark.parametrize(
    ("name", "argv", "code"),
    [case for case in FAILURES if case[2] == 1],
    ids=[case[0] for case in FAILURES if case[2] == 1],
)
def test_debug_shows_the_traceback_for_every_command(name, argv, code, files):
    """``aprflow --debug COMMAND ...``: the exception escapes (the interpreter prints it)."""
    with pytest.raises(Exception):  # noqa: B017 - each command raises its own type
        main(["--debug", *argv(files)])


def test_debug_after_the_command_too(files, capsys):
    with pytest.raises(ValueError, match="unknown design space 'nope'"):
        main([*_sample(files, "--space", "nope"), "--debug"])
    done = subprocess.run(
        [APRFLOW, "--debug", "sample", "--space", "nope", "--n", "2", "--out", "x.jsonl"],
        capture_output=True,
        text=True,
        cwd=files["root"],
    )
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().endswith(
        "ValueError: unknown design space 'nope': valid spaces "
        "are anynetx_a, anynetx_b, anynetx_c, anynetx_d, anynetx_e, regnet"
    )


def test_train_result_alone_on_stdout_and_a_failed_trial_exits_1(files, monkeypatch, capsys):
    """The trial itself is stood in for (training is tested elsewhere): its epoch lines are
    progress (stderr), its result JSON (stdout), and a failed trial exits 1."""
    import components.train.cli as train_cli
    from components.data.descriptor import DatasetRef

    status = {"value": "ok"}

    from components.train.trial import train_progress

    def fake_run_trial(store, trial, progress=train_progress):  # run_trial's own default
        progress("  epoch 1/1: train loss 2.000, test error 50.0%")
        return {"trial_id": trial.trial_id, "status": status["value"]}

    digits = DatasetRef("digits", "datasets/digits/m.json", "0" * 16, 10, 8, 100, 50)
    monkeypatch.setattr(train_cli, "prepare_all", lambda *args: [digits])
    monkeypatch.setattr(train_cli, "run_trial", fake_run_trial)
    assert main(_sample(files)) == 0
    capsys.readouterr()
    argv = ["train", "--spec", str(files["root"] / "out.jsonl"), "--dataset", "digits"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "ok"
    assert "[train] " in captured.err and "epoch 1/1" in captured.err
    status["value"] = "failed"
    assert main(argv) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "failed"


def test_upload_prints_one_line_per_file_or_json(files, monkeypatch, capsys):
    from tests.submit.kfp_api import FakeKfpApi

    monkeypatch.delenv("APRFLOW_KFP_TOKEN", raising=False)
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    with FakeKfpApi() as api:
        assert main(["upload", "--host", api.url, str(COMPILED)]) == 0
        assert capsys.readouterr().out.startswith("apr_study.yaml: pipeline aprflow-apr-study")
        assert main(["upload", "--host", api.url, str(COMPILED), "--json"]) == 0
    (uploaded,) = json.loads(capsys.readouterr().out)
    assert uploaded["pipeline_name"] == "aprflow-apr-study" and uploaded["created"] is False


def test_run_dry_run_is_readable_text_or_json(files, capsys):
    argv = ["run", "apr-study", "--set", "n_models=2", "--set", "datasets=[digits]", "--dry-run"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("config OK: apr-study\n") and "\nn_models: 2\n" in text
    assert "datasets: [digits]" in text and "{'" not in text
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arguments"]["n_models"] == 2 and "2 trials in" in result["plan"][0]


def test_run_help_and_print_config_list_every_parameter(files, capsys):
    from pipelines.config import pipeline_parameters
    from pipelines.registry import PIPELINES

    parameters = pipeline_parameters(PIPELINES["apr-study"])
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for name, parameter in parameters.items():
        assert f"  {name} ({parameter.annotation.__name__}, default " in text, name
    assert main(["run", "apr-study", "--set", "recipe.lr=0.05", "--print-config"]) == 0
    config = capsys.readouterr().out
    assert "\n# n_models (int, default 8)\n" in config
    import yaml

    # The printed config is a config file: every parameter, the values of this run.
    values = yaml.safe_load(config)
    assert set(values) == set(parameters) and values["recipe_overrides"] == {"lr": 0.05}


def test_unknown_key_or_command_says_did_you_mean(files, capsys):
    assert main(["run", "apr-study", "--set", "n_model=2", "--print-config"]) == 2
    assert "did you mean n_models" in capsys.readouterr().err
    assert main(["sampel", "--n", "2"]) == 2
    assert "unknown command 'sampel': did you mean sample?" in capsys.readouterr().err
    assert did_you_mean("n_model", ["n_models", "seed"]) == "did you mean n_models?"
    assert did_you_mean("zzz", ["n_models", "seed"]) == ""


@pytest.mark.parametrize("argv", [["--version"], ["sample", "--version"], ["data", "--version"]])
def test_version(argv, capsys):
    assert main(argv) == 0
    version = importlib.metadata.version("aprflow")
    assert capsys.readouterr().out == f"aprflow {version}\n"


def test_quiet_hides_progress(files, capsys):
    assert main(_sample(files, "-q")) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("wrote 2 specs")
    assert main(_sample(files)) == 0
    assert "[sample" in capsys.readouterr().err


def test_quiet_ends_with_its_command(files, capsys):
    """Progress of code run after a ``-q`` command in the same process (a task) still shows."""
    from components.common.progress import report

    assert main(_sample(files, "-q")) == 0
    capsys.readouterr()
    report("plan", "after a quiet command")
    assert "[plan] after a quiet command" in capsys.readouterr().err


def test_closed_stdout_ends_quietly_with_141(tmp_path):
    """``aprflow ... | head``: the reader is gone before the result is written."""
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write fails, whatever the timing
    try:
        done = subprocess.run(
            [APRFLOW, "recipes", "--json"], stdout=write, stderr=subprocess.PIPE, cwd=tmp_path
        )
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == b""
    # Through a shell pipe: whatever the timing, no complaint.
    piped = subprocess.run(
        ["bash", "-c", f"{APRFLOW} recipes --json | head -c 10"], capture_output=True, cwd=tmp_path
    )
    assert piped.stdout.startswith(b"[") and piped.stderr == b""


def _frame(main_function) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="t")
    add_common_options(parser, json_output=True)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = run_cli(parser, main_function, [])
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def test_frame_error_kinds():
    def raises(error):
        def command(args):
            raise error

        return command

    code, _, err = _frame(raises(UsageError("bad option pair")))
    assert (code, err) == (2, "error: bad option pair\n")
    code, _, err = _frame(raises(OSError(2, "No such file or directory", "/x/y")))
    assert (code, err) == (1, "error: No such file or directory: /x/y\n")
    code, _, err = _frame(raises(ValueError("bad value at http://u:secret@host/x")))
    assert (code, err) == (1, "error: bad value at http://u:***@host/x\n")
    code, _, err = _frame(raises(KeyError("bug")))
    assert code == 1 and err.startswith("error: internal error KeyError: 'bug' (rerun with --debug")
    # A broken pipe that is not stdout (a socket): a failure like any other.
    code, _, err = _frame(raises(BrokenPipeError(32, "Broken pipe")))
    assert code == 1 and err.startswith("error: ")

    def prints(args):
        print_result(args, {"uri": "http://u:secret@host"}, text="plain")

    assert _frame(prints) == (0, "plain\n", "")


def test_progress_follows_the_current_stderr():
    """The local runner's console swaps sys.stderr during a run: progress must follow."""
    configure_logging()
    swapped, saved = io.StringIO(), sys.stderr
    sys.stderr = swapped
    try:
        report("plan", "to the stream of the moment")
    finally:
        sys.stderr = saved
    assert swapped.getvalue() == "[plan] to the stream of the moment\n"


def test_progress_shows_without_a_command_line():
    """A Kubeflow task calls report() without the CLI: INFO lines on stderr all the same."""
    code = "from components.common.progress import report; report('data', 'hello', 0.0)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert (
        done.stdout == "" and done.stderr.startswith("[data | ") and "elapsed] hello" in done.stderr
    )


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["recipes"]])
def test_start_up_is_fast(argv):
    """Best of three (the machine may be busy): the target is 0.5 s, the bound generous."""
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        subprocess.run([APRFLOW, *argv], capture_output=True, check=True)
        times.append(time.perf_counter() - tic)
    print(f"aprflow {' '.join(argv)}: best of 3 {min(times):.3f} s")
    assert min(times) < 1.0
