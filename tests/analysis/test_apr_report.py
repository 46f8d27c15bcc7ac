"""End-to-end analysis: summary.json, figures, reports, exclusions, atomic writing."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import analyze, report

FIGURES = {
    "ecdf",
    "apr_scatter",
    "correlation_matrix",
    "topk_depth_profiles",
    "topk_width_profiles",
    "arch_vs_error",
    "seed_std",
}
MLFLOW_KEY = re.compile(r"^[A-Za-z0-9_\-./ ]+$")


def reject_constant(name: str):
    raise AssertionError(f"summary.json contains {name}")


def nulls_without_reason(node, path="summary") -> list[str]:
    """Paths of None values whose enclosing dict gives no reason."""
    found = []
    if isinstance(node, dict):
        has_reason = "reason" in node
        for key, value in node.items():
            if value is None and not has_reason:
                found.append(f"{path}.{key}")
            found += nulls_without_reason(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += nulls_without_reason(value, f"{path}[{i}]")
    return found


def test_timm_results_give_sane_apr(timm_run):
    summary, out = timm_run
    assert summary["apr"]["reference"] == "imagenet"
    targets = summary["apr"]["targets"]
    assert set(targets) == {"imagenetv2", "sketch", "imagenet-r", "imagenet-a", "imagenet-real"}
    real = targets["imagenet-real"]
    assert real["spearman"]["value"] > 0.9 and real["spearman"]["p_value"] < 1e-6
    assert 0.8 < real["spearman"]["ci_low"] <= real["spearman"]["value"]
    assert real["pearson_logit"]["value"] > 0.9
    for pair in targets.values():
        assert pair["n_models"] == 40 and pair["spearman"]["value"] > 0.5
        assert pair["top_k"]["k"] == 15 and pair["top_k"]["value"] > pair["top_k"]["chance"]
    assert summary["architecture"]["available"] is False
    assert summary["seed_variance"]["available"] is False
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "Spearman ρ = 0.99" in (out / "report.html").read_text()


def test_summary_is_nan_free_and_every_null_has_a_reason(timm_run, synthetic_run):
    for _, out in (timm_run, synthetic_run):
        parsed = json.loads((out / "summary.json").read_text(), parse_constant=reject_constant)
        assert nulls_without_reason(parsed) == []


def test_metrics_are_flat_finite_and_valid_mlflow_keys(synthetic_run):
    metrics = synthetic_run[0]["metrics"]
    assert all(MLFLOW_KEY.match(k) and ".." not in k for k in metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    for key in (
        "spearman_rho/ds01",
        "kendall_tau/ds03",
        "mean_error/imagenet",
        "n_models/imagenet",
        "topk_overlap/ds02",
        "arch_spearman/cum_depth/imagenet",
        "seed_std_mean/ds01",
    ):
        assert key in metrics


def test_synthetic_run_covers_architecture_seeds_and_exclusions(synthetic_run, synthetic_table):
    summary, _ = synthetic_run
    targets = summary["apr"]["targets"]
    # synthetic_results builds agreement 0.95 -> -0.5 with the latent quality.
    rhos = [targets[name]["spearman"]["value"] for name in ("ds01", "ds02", "ds03")]
    assert rhos[0] > 0.3 and rhos[2] < 0 and rhos == sorted(rhos, reverse=True)
    assert targets["ds02"]["missing_on_target"] == ["m0003"]
    assert "m0003" in summary["exclusions"]["models_without_result"]["ds02"]

    failed = synthetic_table[synthetic_table["status"] != "ok"]
    assert summary["exclusions"]["n_rows"] == len(failed) == 5
    assert sum(sum(v.values()) for v in summary["exclusions"]["by_dataset"].values()) == 5
    assert {r["status"] for r in summary["exclusions"]["rows"]} == {"diverged"}

    arch = summary["architecture"]
    assert arch["available"] and {
        "cum_depth",
        "cum_width",
        "mean_bottleneck",
        "mean_group_width",
        "flops",
        "params",
    } == set(arch["features"])
    assert len(arch["stage_profiles"]["imagenet"]["depth_mean"]) == 4
    top = summary["top_k"]["imagenet"]
    assert len(top) == 10 and [r["rank"] for r in top] == list(range(1, 11))
    assert top[0]["error"] == summary["datasets"]["imagenet"]["min_error"]

    seeds = summary["seed_variance"]
    assert seeds["available"] and set(seeds["per_dataset"]) == {"imagenet", "ds01", "ds02", "ds03"}
    assert len(seeds["cross_dataset"]) == 6


def test_error_matrix_uses_mean_over_seeds(synthetic_run, synthetic_table):
    summary, _ = synthetic_run
    ok = synthetic_table[synthetic_table["status"] == "ok"]
    means = ok.groupby(["dataset", "model"])["top1_error"].mean()
    assert summary["datasets"]["ds01"]["mean_error"] == pytest.approx(means["ds01"].mean())


def test_figures_exist_and_are_non_trivial(timm_run, synthetic_run):
    _, out = synthetic_run
    assert {p.stem for p in (out / "figures").glob("*.png")} == FIGURES
    for path in (out / "figures").glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    assert {p.stem for p in (timm_run[1] / "figures").glob("*.png")} == {
        "ecdf",
        "apr_scatter",
        "correlation_matrix",
    }


def test_reports_contain_tables_images_and_readings(synthetic_run):
    summary, out = synthetic_run
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    assert "<script src" not in html and "http" not in html.split("<body>")[1]
    for table_id in ("datasets", "apr", "matrix", "architecture", "seeds", "excluded"):
        assert f'id="table-{table_id}"' in html
    assert "agreement with imagenet" in html
    md = (out / "report.md").read_text()
    assert md.startswith("# Synthetic")
    assert "| target | shared models | Spearman ρ |" in md
    assert "![APR scatter](figures/apr_scatter.png)" in md


def test_report_without_architecture_says_so(timm_run):
    html = (timm_run[1] / "report.html").read_text()
    assert "Architecture analysis skipped: no architecture columns" in html


def test_reference_choice(tmp_path):
    frame = pd.DataFrame(
        {
            "model": list("abcdeabcd"),
            "dataset": ["big"] * 5 + ["alpha"] * 4,
            "error": [1, 2, 3, 4, 5, 2, 1, 4, 3.0],
        }
    )
    summary = analyze(frame, tmp_path / "a", n_bootstrap=20)
    assert summary["apr"]["reference"] == "big"
    assert "most models" in summary["settings"]["reference_choice"]
    summary = analyze(frame, tmp_path / "b", reference="alpha", n_bootstrap=0)
    assert summary["apr"]["targets"]["big"]["spearman"]["ci_low"] is None
    with pytest.raises(ValueError, match="'nope' is not in the results"):
        analyze(frame, tmp_path / "c", reference="nope")
    assert not (tmp_path / "c").exists()


def test_fewer_than_three_models_is_reported_not_nan(tmp_path):
    frame = pd.DataFrame(
        {"model": ["a", "b", "a", "b"], "dataset": ["x", "x", "y", "y"], "error": [1, 2, 2, 1.0]}
    )
    summary = analyze(frame, tmp_path, reference="x")
    pair = summary["apr"]["targets"]["y"]
    assert pair["spearman"]["value"] is None and "need 3" in pair["reason"]
    assert "spearman_rho/y" not in summary["metrics"]
    assert "No comparison with x" in (tmp_path / "report.html").read_text()


def test_single_dataset_runs(tmp_path):
    frame = pd.DataFrame({"model": list("abcd"), "dataset": "only", "error": [1, 2, 3, 4.0]})
    summary = analyze(frame, tmp_path, n_bootstrap=10)
    assert summary["apr"]["targets"] == {}
    assert "nothing to compare" in (tmp_path / "report.html").read_text()


def test_invalid_arguments(tmp_path, timm_csv):
    with pytest.raises(ValueError, match="top_k"):
        analyze(timm_csv, tmp_path, top_k=0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        analyze(timm_csv, tmp_path, n_bootstrap=-1)


def test_failed_run_leaves_no_summary(tmp_path, timm_csv, monkeypatch):
    def broken(name, context):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(report, "render_template", broken)
    with pytest.raises(RuntimeError):
        analyze(timm_csv, tmp_path, n_bootstrap=10)
    assert not (tmp_path / "summary.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_atomic_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", fail)
    with pytest.raises(OSError):
        report.write_atomic(target, b"new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
