"""Command line: exit codes, one-line errors, ``python -m analysis`` (= ``aprflow analyze``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_cli_writes_all_outputs(tmp_path, timm_csv, capsys):
    from analysis.cli import main

    out = tmp_path / "out"
    code = main(
        [
            str(timm_csv),
            "--reference",
            "imagenet-real",
            "--out-dir",
            str(out),
            "--top-k",
            "5",
            "--bootstrap",
            "50",
            "--title",
            "timm",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["apr"]["reference"] == "imagenet-real"
    assert summary["settings"]["top_k"] == 5 and summary["settings"]["n_bootstrap"] == 50
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "reference imagenet-real" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("model,dataset\na,x\n", [], "no metric column"),
        ("model,dataset,top1\na,x,high\n", [], "non-numeric"),
        ("model,dataset,top1\na,x,90\nb,x,80\nc,x,70\n", ["--reference", "cifar"], "cifar"),
        ("model,dataset,top1\na,x,90\na,x,80\n", [], "duplicate"),
        ("# nothing\n", [], "empty"),
        ("model,dataset,top1\na,x,90\n", ["--scale", "fraction"], "outside"),
        ("model,dataset,top1_error\na,x,0.4\nb,x,0.2\n", [], "is ambiguous"),
        ("model,dataset,metric,value\na,x,top1,80\n", ["--regime", "A1"], "regime 'A1'"),
    ],
)
def test_cli_bad_input_prints_one_error_line_and_exits_1(tmp_path, capsys, content, extra, message):
    from analysis.cli import main

    path = tmp_path / "results.csv"
    path.write_text(content)
    code = main([str(path), "--out-dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_python_dash_m_entry_point(tmp_path, timm_csv):
    env = os.environ | {"PYTHONPATH": str(ROOT), "MPLBACKEND": "TkAgg"}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis",
            str(tmp_path / "missing.csv"),
            "--out-dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert (
        bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    )
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis",
            str(timm_csv),
            "--out-dir",
            str(tmp_path / "o"),
            "--bootstrap",
            "20",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    # MPLBACKEND asks for a GUI backend that cannot start here: the figures must not care.
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "o" / "figures" / "ecdf.png").is_file()


def test_cli_scale_keeps_sub_one_percent_errors(tmp_path, capsys):
    from analysis.cli import main

    path = tmp_path / "results.csv"
    path.write_text("model,dataset,top1_error\na,x,0.4\nb,x,0.2\nc,x,0.9\n")
    assert main([str(path), "--out-dir", str(tmp_path / "out"), "--scale", "percent"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["datasets"]["x"]["mean_error"] == pytest.approx(0.5)
    assert summary["input"]["units"]["top1_error"]["source"] == "given"


def test_cli_long_table_with_primary_regime_and_metric(tmp_path):
    from scipy import stats as sps

    from analysis.cli import main

    rows = ["# unit: percent", "model,dataset,recipe,metric,value"]
    for i in range(6):
        for recipe, shift in (("A1", 0), ("A2", 1)):
            rows.append(f"m{i},imagenet,{recipe},top1_error,{20 + i + shift * (i % 2)}")
            rows.append(f"m{i},cifar,{recipe},top1_error,{5 + (i * 7) % 6}")
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main([str(path), "--out-dir", str(out), "--regime", "A2", "--metric", "top1_error"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["layout"] == "long"
    assert summary["settings"]["slice"] == "A2/top1_error"
    # Each recipe's datasets are compared with imagenet under the same recipe.
    other = summary["apr"]["targets"]["cifar (A1/top1_error)"]
    assert other["reference_slice"] == "A1/top1_error"
    a1 = [20 + i for i in range(6)], [5 + (i * 7) % 6 for i in range(6)]
    assert other["kendall"]["value"] == pytest.approx(sps.kendalltau(*a1).statistic)
    assert summary["apr"]["targets"]["cifar"]["reference_slice"] == "A2/top1_error"
    assert {(c["dataset"], c["a"], c["b"]) for c in summary["comparisons"]} == {
        ("cifar", "A1/top1_error", "A2/top1_error"),
        ("imagenet", "A1/top1_error", "A2/top1_error"),
    }
