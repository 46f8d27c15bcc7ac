"""End to end: `python -m components.transfer` on a trained trial, and its errors."""

import csv
import subprocess
import sys

import pytest

from components.transfer.cli import main
from components.transfer.run import evaluate_transfer


def test_cli_on_a_trial(trained_trial, tmp_path, capsys):
    uri, trial_id = trained_trial
    out = tmp_path / "results" / "transfer.csv"
    code = main(
        [
            "--backbone",
            f"trial:{trial_id}",
            "--datasets",
            "digits",
            "faces",
            "--resolution",
            "16",
            "--store",
            uri,
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err
    assert "knn_top5_fraction" in printed and "linear_top1" in printed
    assert "[transfer" in captured.err and "[transfer" not in printed  # progress on stderr
    assert f"wrote {out}" in captured.err
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "dataset", "method", "metric", "value"]
    got = {(r["dataset"], r["method"], r["metric"]) for r in rows}
    assert got == {
        (dataset, method, metric)
        for dataset in ("digits", "faces")
        for method, metric in [
            ("knn", "knn_top1"),
            ("knn", "knn_top5_fraction"),
            ("linear", "linear_top1"),
            ("linear", "linear_C"),
        ]
    }
    assert {r["model"] for r in rows} == {f"trial:{trial_id}"}
    for r in rows:
        if r["metric"] != "linear_C":
            assert 0.0 <= float(r["value"]) <= 1.0
    # Faces is what the trial was trained on: its features are better than chance.
    faces = {r["metric"]: float(r["value"]) for r in rows if r["dataset"] == "faces"}
    assert faces["knn_top1"] > 0.6
    assert not list(out.parent.glob(".*.tmp"))


def test_knn_only(trained_trial):
    uri, trial_id = trained_trial
    rows = evaluate_transfer(f"trial:{trial_id}", ["faces"], 12, uri, methods="knn", k=3)
    assert [r["metric"] for r in rows] == ["knn_top1", "knn_top3_fraction"]
    assert rows[0] == {
        "backbone": f"trial:{trial_id}",
        "dataset": "faces",
        "method": "knn",
        "metric": "knn_top1",
        "value": rows[0]["value"],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "trial:0123abcd", "--datasets", "faces"], "no trial '0123abcd'"),
        (
            ["--backbone", "timm:resnet18", "--datasets", "imagenet"],
            "unknown or missing dataset(s) imagenet",
        ),
        (["--backbone", "resnet18", "--datasets", "faces"], "unknown backbone 'resnet18'"),
    ],
)
def test_cli_errors(args, message, tmp_path, capsys):
    assert main([*args, "--store", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "store" / "datasets").exists()  # rejected before any data is written


def test_regimes_are_space_separated_choices(tmp_path, capsys):
    """The same option, values and form as ``transfer study``: a usage error (2) otherwise."""
    argv = ["--backbone", "timm:resnet18", "--datasets", "faces", "--store", str(tmp_path)]
    for regimes in (["svm"], ["knn,linear"]):
        assert main([*argv, "--regimes", *regimes]) == 2
        assert "argument --regimes: invalid choice" in capsys.readouterr().err
    assert main([*argv, "--methods", "knn"]) == 2  # the old name is gone
    assert not (tmp_path / "datasets").exists()


def test_k_larger_than_the_training_set(trained_trial, capsys):
    uri, trial_id = trained_trial
    code = main(
        ["--backbone", f"trial:{trial_id}", "--datasets", "faces", "--resolution", "12"]
        + ["--store", uri, "--regimes", "knn", "--k", "500"]
    )
    assert code == 1
    assert "k=500 exceeds the 150 training images of 'faces'" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "components.transfer", "--backbone", "timm:not_a_model"]
        + ["--datasets", "faces", "--store", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip().splitlines() == [
        "error: unknown timm model 'not_a_model' (see timm.list_models())"
    ]
