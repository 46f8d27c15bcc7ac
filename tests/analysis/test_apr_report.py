"""End-to-end analysis: summary.json, figures, reports, exclusions, atomic writing."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

FIGURES = {
    "ecdf",
    "apr_scatter",
    "correlation_matrix",
    "topk_depth_profiles",
    "topk_width_profiles",
    "arch_vs_error",
    "arch_correlation",
    "topk_mean_profiles",
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
    # One evaluation per checkpoint: no test-set pair, and datasets are never correlated by
    # seed number (different checkpoints).
    assert seeds["evaluations"] == {"test": "top1_error"} and seeds["test_set_pairs"] == []
    assert "cross_dataset" not in seeds


def test_error_matrix_uses_mean_over_seeds(synthetic_run, synthetic_table):
    summary, _ = synthetic_run
    ok = synthetic_table[synthetic_table["status"] == "ok"]
    means = ok.groupby(["dataset", "model"])["top1_error"].mean()
    assert summary["datasets"]["ds01"]["mean_error"] == pytest.approx(means["ds01"].mean())


def test_figures_exist_and_are_non_trivial(timm_run, synthetic_run):
    _, out = synthetic_run
    assert {p.stem for p in (out / "figures").glob("*.png")} == FIGURES
    for path in (out / "figures").glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300, path.name
            # Drawn content, not an empty canvas: many distinct colours (antialiased marks).
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 100, path.name
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
    from analysis import analyze

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
    from analysis import analyze

    frame = pd.DataFrame(
        {"model": ["a", "b", "a", "b"], "dataset": ["x", "x", "y", "y"], "error": [1, 2, 2, 1.0]}
    )
    summary = analyze(frame, tmp_path, reference="x")
    pair = summary["apr"]["targets"]["y"]
    assert pair["spearman"]["value"] is None and "need 3" in pair["reason"]
    assert "spearman_rho/y" not in summary["metrics"]
    assert "No comparison with x" in (tmp_path / "report.html").read_text()


def test_dataset_whose_rows_all_failed_is_reported_not_drawn(tmp_path):
    from analysis import analyze

    frame = pd.DataFrame(
        {
            "model": list("abcd") * 2,
            "dataset": ["x"] * 4 + ["y"] * 4,
            "error": [1, 2, 3, 4.0, None, None, None, None],
            "status": ["ok"] * 4 + ["failed"] * 4,
        }
    )
    summary = analyze(frame, tmp_path, reference="x", n_bootstrap=10)
    assert summary["apr"]["targets"]["y"]["n_models"] == 0
    assert summary["exclusions"]["by_dataset"] == {"y": {"failed": 4}}
    assert "apr_scatter" not in summary["figures"]
    assert (
        "y</b>: no answer, only 0 models shared by x and y; need 3"
        in (tmp_path / "report.html").read_text()
    )


def test_single_dataset_runs(tmp_path):
    from analysis import analyze

    frame = pd.DataFrame({"model": list("abcd"), "dataset": "only", "error": [1, 2, 3, 4.0]})
    summary = analyze(frame, tmp_path, n_bootstrap=10)
    assert summary["apr"]["targets"] == {}
    assert "nothing to compare" in (tmp_path / "report.html").read_text()


def test_invalid_arguments(tmp_path, timm_csv):
    from analysis import analyze

    with pytest.raises(ValueError, match="top_k"):
        analyze(timm_csv, tmp_path, top_k=0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        analyze(timm_csv, tmp_path, n_bootstrap=-1)


def test_failed_run_leaves_no_summary(tmp_path, timm_csv, monkeypatch):
    from analysis import analyze, report

    def broken(name, context):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(report, "render_template", broken)
    with pytest.raises(RuntimeError):
        analyze(timm_csv, tmp_path, n_bootstrap=10)
    assert not (tmp_path / "summary.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_atomic_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    from analysis import files

    target = tmp_path / "summary.json"
    target.write_text("old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError):
        files.write_atomic(target, "new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    files.write_atomic(tmp_path / "x.txt", "ü")  # text is written as UTF-8
    assert (tmp_path / "x.txt").read_bytes() == "ü".encode()


def test_report_answers_first(synthetic_run, synthetic_table):
    from analysis import readings

    summary, out = synthetic_run
    html = (out / "report.html").read_text()
    question = "Do architectures that rank well on imagenet rank well on the other datasets?"
    assert html.index(question) < html.index('<h2 id="data">') < html.index("<img")
    # The opening names the paper and the figures the report mirrors, in both formats.
    mirrors = "It mirrors Tuggener, Schmidhuber, Stadelmann 2021"
    assert html.index(mirrors) < html.index('<h2 id="data">')
    md_text = (out / "report.md").read_text()
    assert "arXiv 2103.09108" in md_text[: md_text.index("## Data")]
    ok = synthetic_table[synthetic_table["status"] == "ok"]
    means = ok.groupby(["dataset", "model"])["top1_error"].mean()
    for name in ("ds01", "ds02", "ds03"):
        pair = summary["apr"]["targets"][name]
        both = pd.concat([means["imagenet"], means[name]], axis=1, join="inner").sort_index()
        pick = both.iloc[:, 0].idxmin()  # ties: first model id, as the analysis breaks them
        loss = both.loc[pick].iloc[1] - both.iloc[:, 1].min()
        assert pair["selection"]["pick"] == pick
        assert pair["selection"]["loss"] == pytest.approx(loss)
        rho = pair["spearman"]
        sentence = (
            f"<b>{name}</b>: {readings.answer_word(rho)} (Spearman ρ = {rho['value']:.2f}"
            f"{readings.interval(rho)}, n = {pair['n_models']} models). "
            f"Picking {pick}, the best on imagenet, costs {loss:.2f} points"
        )
        assert sentence in html
    assert summary["settings"]["interval_method"] in html.replace("&#39;", "'")
    md = (out / "report.md").read_text()
    assert md.index(question) < md.index("## Data")


def test_sub_one_percent_errors_stay_sub_one_percent(tmp_path):
    from analysis import analyze, load_results

    errors = [0.4, 0.2, 0.9, 0.5, 0.3, 0.6]
    frame = pd.DataFrame(
        {"model": list("abcdef") * 2, "dataset": ["x"] * 6 + ["y"] * 6, "top1_error": errors * 2}
    )
    with pytest.raises(ValueError, match="ambiguous"):
        analyze(frame, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    summary = analyze(load_results(frame, scale="percent"), tmp_path / "out", n_bootstrap=50)
    assert summary["datasets"]["x"]["mean_error"] == pytest.approx(np.mean(errors))
    assert summary["datasets"]["x"]["min_error"] == pytest.approx(0.2)
    assert summary["input"]["units"] == {
        "top1_error": {"kind": "error", "scale": "percent", "source": "given"}
    }
    # Log-odds of 99.6 % accuracy, not of 60 %.
    pair = summary["apr"]["targets"]["y"]
    assert pair["pearson_logit"]["value"] == pytest.approx(1.0)


def transfer_table(n: int = 30) -> pd.DataFrame:
    """Source accuracy on imagenet and three transfer regimes plus a kNN score on two target
    datasets, in the long layout, accuracies as fractions (as the transfer component writes)."""
    rng = np.random.default_rng(11)
    quality = rng.normal(size=n)
    rows = []
    for m in range(n):
        model = f"m{m:02d}"
        rows.append(("imagenet", "pretrain", "top1", 0.75 + 0.03 * quality[m], model))
        for dataset, agreement in (("cifar", 0.9), ("pets", 0.4)):
            signal = agreement * quality[m]
            for regime, noise in (("linear", 0.2), ("finetune", 0.5), ("scratch", 2.0)):
                acc = 0.8 + 0.02 * (signal + noise * rng.normal())
                rows.append((dataset, regime, "top1", acc, model))
            rows.append((dataset, "knn", "knn_top1", 0.6 + 0.02 * (signal + rng.normal()), model))
            rows.append((dataset, "linear", "linear_C", 10.0 ** rng.integers(-4, 4), model))
    frame = pd.DataFrame(rows, columns=["dataset", "method", "metric", "value", "model"])
    return frame.round(6)


def test_long_table_runs_per_regime_and_metric_with_comparisons(tmp_path):
    from scipy import stats as sps

    from analysis import analyze, load_results

    frame = transfer_table()
    summary = analyze(load_results(frame, scale="fraction"), tmp_path, n_bootstrap=100)
    assert summary["settings"]["slice"] == "pretrain/top1"
    assert summary["input"]["slices"] == [
        "finetune/top1",
        "knn/knn_top1",
        "linear/top1",
        "pretrain/top1",
        "scratch/top1",
    ]
    assert list(summary["input"]["skipped_metrics"]) == ["linear_C"]

    def accuracy(dataset, method, metric):
        rows = frame[(frame["dataset"] == dataset) & (frame["method"] == method)]
        return rows[rows["metric"] == metric].set_index("model")["value"].sort_index()

    source = accuracy("imagenet", "pretrain", "top1").to_numpy()
    logit = lambda a: np.log(a / (1 - a))  # noqa: E731
    targets = summary["apr"]["targets"]
    assert len(targets) == 2 * 4  # 2 datasets x (3 regimes + kNN)
    for regime in ("linear", "finetune", "scratch"):
        pair = targets[f"cifar ({regime}/top1)"]
        target = accuracy("cifar", regime, "top1").to_numpy()
        # Kornblith et al.: Pearson r of log-odds against source accuracy.
        expected = sps.pearsonr(logit(source), logit(target)).statistic
        assert pair["pearson_logit"]["value"] == pytest.approx(expected, abs=1e-9)
        assert pair["n_models"] == 30
    linear_r = targets["cifar (linear/top1)"]["pearson_logit"]["value"]
    assert linear_r > targets["cifar (scratch/top1)"]["pearson_logit"]["value"]

    comparisons = {(c["dataset"], c["a"], c["b"]): c for c in summary["comparisons"]}
    assert len(comparisons) == 2 * 6  # 4 slices per target dataset: 6 pairs each
    cheap = comparisons[("pets", "finetune/top1", "knn/knn_top1")]
    assert cheap["kind"] == "regime and metric"
    knn, tuned = accuracy("pets", "knn", "knn_top1"), accuracy("pets", "finetune", "top1")
    assert cheap["kendall"]["value"] == pytest.approx(sps.kendalltau(tuned, knn).statistic)
    assert cheap["weighted_tau"]["value"] == pytest.approx(
        sps.weightedtau(tuned.to_numpy(), knn.to_numpy()).statistic, abs=1e-9
    )
    assert cheap["reverse_selection"]["pick"] == knn.idxmax()
    assert cheap["reverse_selection"]["loss"] == pytest.approx(
        100 * (tuned.max() - tuned[knn.idxmax()]), abs=1e-6
    )
    assert comparisons[("cifar", "finetune/top1", "linear/top1")]["kind"] == "regimes"
    key = "compare_kendall_tau/finetune/top1 vs knn/knn_top1/pets"
    assert summary["metrics"][key] == pytest.approx(cheap["kendall"]["value"])
    assert summary["metrics"]["pearson_logit_r/linear/top1/cifar"] == pytest.approx(linear_r)
    html = (tmp_path / "report.html").read_text()
    assert 'id="table-comparisons"' in html
    assert "pets: top-1 accuracy, method finetune vs kNN top-1 accuracy, method knn" in html


def test_two_recipes_over_the_same_architectures(tmp_path):
    from scipy import stats as sps

    from analysis import analyze

    rng = np.random.default_rng(5)
    a1 = 20 + 3 * rng.normal(size=40)
    a2 = a1 + rng.normal(size=40)
    frame = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(40)] * 2,
            "dataset": "imagenet",
            "recipe": ["A1"] * 40 + ["A2"] * 40,
            "top1_error": np.round(np.concatenate([a1, a2]), 1),
        }
    )
    summary = analyze(frame, tmp_path, n_bootstrap=100, regime="A2")
    assert summary["settings"]["slice"] == "A2/top1_error"
    assert summary["settings"]["slice_choice"].startswith("given")
    (pair,) = summary["comparisons"]
    assert (pair["a"], pair["b"], pair["kind"]) == ("A1/top1_error", "A2/top1_error", "regimes")
    x, y = frame["top1_error"][:40].to_numpy(), frame["top1_error"][40:].to_numpy()
    assert pair["spearman"]["value"] == pytest.approx(sps.spearmanr(x, y).statistic)
    assert pair["kendall"]["value"] == pytest.approx(sps.kendalltau(x, y).statistic)
    with pytest.raises(ValueError, match="no results for regime 'A3'"):
        analyze(frame, tmp_path / "bad", regime="A3")


def test_model_table_has_every_model_spec_and_safe_run_links(tmp_path, synthetic_table):
    from analysis import analyze

    frame = synthetic_table.copy()
    frame["run_url"] = [f"http://mlflow:5000/#/experiments/1/runs/{i}" for i in range(len(frame))]
    first = frame.index[(frame["model"] == "m0000") & (frame["dataset"] == "imagenet")][0]
    frame.loc[first, "run_url"] = "javascript:alert(1)"
    summary = analyze(frame, tmp_path, top_k=5, n_bootstrap=20)
    html = (tmp_path / "report.html").read_text()
    data = json.loads(html.split('id="model-data">')[1].split("</script>")[0])
    assert data["n"] == summary["input"]["n_models"] == 80
    columns = data["columns"]
    assert columns[:5] == ["model", "imagenet error", "imagenet rank", "ds01 error", "ds01 rank"]
    assert {f"{p}{s}" for p in "dwbg" for s in range(1, 5)} <= set(columns)
    row = data["rows"][1]  # m0001
    raw = frame[(frame["model"] == "m0001") & (frame["status"] == "ok")]
    assert row[columns.index("d1")] == raw["d1"].iloc[0]
    imagenet = raw[raw["dataset"] == "imagenet"]["top1_error"].mean()
    assert row[columns.index("imagenet error")] == pytest.approx(imagenet, abs=1e-4)
    links = data["links"]
    column = str(columns.index("imagenet error"))
    assert column not in links[0], "a javascript: link must not be rendered"
    seed0 = frame[(frame["model"] == "m0001") & (frame["dataset"] == "imagenet")].sort_values(
        "seed"
    )
    assert links[1][column] == seed0["run_url"].iloc[0]
    assert "javascript:" not in html


def _best_models_frame() -> pd.DataFrame:
    """12 models x 3 datasets x 2 seeds; every result ok (the ranks below count them all)."""
    from analysis.synthetic import synthetic_results

    return synthetic_results(n_models=12, n_datasets=3, n_seeds=2, n_failed=0, seed=2)


def test_best_models_table_links_each_logged_model(tmp_path):
    from analysis import analyze

    frame = _best_models_frame()
    frame["model_url"] = ""
    frame = frame.sort_values(["dataset", "top1_error"]).reset_index(drop=True)
    imagenet = frame.index[frame["dataset"] == "imagenet"][:3]
    for version, i in enumerate(imagenet, 1):
        frame.loc[i, "model_url"] = f"http://mlflow:5000/#/models/s-imagenet/versions/{version}"
    # ds01's second best has no link (its model failed to log): the ranks keep the gap.
    ds01 = frame.index[frame["dataset"] == "ds01"][[0, 2]]
    frame.loc[ds01[0], "model_url"] = "javascript:alert(1)"
    frame.loc[ds01[1], "model_url"] = "runs/model.html"  # a relative link: no MLflow page
    analyze(frame.sample(frac=1, random_state=0), tmp_path, n_bootstrap=0)
    html = (tmp_path / "report.html").read_text()
    markdown = (tmp_path / "report.md").read_text()

    section = html.split('id="table-best-models">')[1].split("</table>")[0]
    columns = re.findall(r"<th>([^<]*)</th>", section)
    assert columns == ["dataset", "rank", "model", "seed", "error", "logged model"]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in section.split("<tr>")[2:]]
    expected = [
        ("imagenet (reference)", 1, imagenet[0]),
        ("imagenet (reference)", 2, imagenet[1]),
        ("imagenet (reference)", 3, imagenet[2]),
        ("ds01", 1, ds01[0]),
        ("ds01", 3, ds01[1]),
    ]
    assert len(rows) == len(expected)
    for row, (dataset, rank, i) in zip(rows, expected, strict=True):
        assert row[:4] == [dataset, str(rank), frame.loc[i, "model"], str(frame.loc[i, "seed"])]
        assert float(row[4]) == pytest.approx(frame.loc[i, "top1_error"], abs=1e-3)
    url = frame.loc[imagenet[0], "model_url"]
    assert rows[0][5] == f'<a href="{url}" target="_blank" rel="noopener">models:/s-imagenet/1</a>'
    assert rows[3][5] == "not a web link" and "javascript:" not in html + markdown
    assert rows[4][5].startswith('<a href="runs/model.html"') and ">logged model</a>" in rows[4][5]
    assert "No result of ds02 links to a logged model." in html
    # The Markdown report (the Kubeflow UI's summary) has the same rows and links.
    assert f"| imagenet (reference) | 1 | {frame.loc[imagenet[0], 'model']} |" in markdown
    assert f"[models:/s-imagenet/1]({url})" in markdown
    assert "No result of ds02 links to a logged model." in markdown


@pytest.mark.parametrize("urls", [None, ""], ids=["no model_url column", "empty model_url"])
def test_best_models_table_is_left_out_or_says_why(urls, tmp_path):
    from analysis import analyze

    frame = _best_models_frame()
    if urls is not None:
        frame["model_url"] = urls
    analyze(frame, tmp_path, n_bootstrap=0)
    html = (tmp_path / "report.html").read_text()
    markdown = (tmp_path / "report.md").read_text()
    assert "table-best-models" not in html and "| logged model |" not in markdown
    if urls is None:  # any results table: no such section
        assert "Best models" not in html + markdown
    else:  # a study's table whose study logged no model
        why = "No result links to a logged model: the"
        assert '<h2 id="best-models">Best models</h2>' in html and why in html
        assert "## Best models" in markdown and why in markdown
        assert "best_models=0" in html + markdown


def test_late_links_come_after_the_statistics_and_fill_the_best_models_table(tmp_path, monkeypatch):
    """A study logs its best models while the statistics run: ``late_links`` is called once,
    after the figures are drawn, and its links are the ones the report shows."""
    from analysis import analyze, load_results
    from analysis import report as report_module

    frame = _best_models_frame()
    best = frame.sort_values("top1_error").index[0]
    drawn, calls = [], []
    real_figures = report_module.render_figures

    def render_figures(*args, **kwargs):
        drawn.append(True)
        return real_figures(*args, **kwargs)

    def late_links():
        calls.append(bool(drawn))
        linked = frame.assign(model_url="")
        linked.loc[best, "model_url"] = "http://mlflow:5000/#/models/s-x/versions/4"
        return load_results(linked)

    monkeypatch.setattr(report_module, "render_figures", render_figures)
    analyze(frame, tmp_path, n_bootstrap=0, late_links=late_links)
    assert calls == [True]  # once, after the figures
    html = (tmp_path / "report.html").read_text()
    assert ">models:/s-x/4</a>" in html
    assert html.count('target="_blank" rel="noopener">models:') == 1


def test_source_line_names_the_table(tmp_path):
    from analysis import analyze, load_results

    frame = pd.DataFrame({"model": list("abcd"), "dataset": "x", "error": [1, 2, 3, 4.0]})
    analyze(frame, tmp_path / "a", n_bootstrap=0)
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<code>in-memory table</code>" in html and "DataFrame" not in html
    analyze(load_results(frame, name="studies/s1/results.csv"), tmp_path / "b", n_bootstrap=0)
    assert "<code>studies/s1/results.csv</code>" in (tmp_path / "b" / "report.html").read_text()


def test_many_points_are_drawn_as_a_density():
    from matplotlib.collections import PathCollection, PolyCollection
    from matplotlib.figure import Figure

    from analysis import figures

    ax = Figure().add_subplot()
    many = np.arange(figures.DENSE_POINTS + 1.0)
    figures._points(ax, many, many, 5, label="models")
    assert isinstance(ax.collections[0], PolyCollection)  # the hexbin
    assert ax.collections[0].get_array().sum() == many.size  # every model counted once
    ax = Figure().add_subplot()
    figures._points(ax, many[:100], many[:100], 5)
    assert isinstance(ax.collections[0], PathCollection)
    assert len(ax.collections[0].get_offsets()) == 100


def test_evaluations_of_two_recipes_are_compared_within_recipe_and_within_test_set():
    from analysis import load_results
    from analysis.compute import compute_analysis

    rng = np.random.default_rng(2)
    rows = [
        {
            "model": f"m{m}",
            "dataset": "imagenet",
            "recipe": recipe,
            "top1_error": 20 + m + rng.normal(),
            "top1_error@v2": 30 + m + rng.normal(),
            "top5_error@v2": 10 + m + rng.normal(),
        }
        for m in range(12)
        for recipe in ("a1", "a3")
    ]
    table = load_results(pd.DataFrame(rows), scale="percent")
    summary = compute_analysis(table, n_bootstrap=0, top_k=3).summary
    pairs = {(c["a"], c["b"]): c["kind"] for c in summary["comparisons"]}
    # One step at a time: never a1 top-1 vs a3 top-1 on v2, nor top-1 on test vs top-5 on v2.
    assert pairs == {
        ("a1/top1_error", "a1/top1_error@v2"): "metrics",
        ("a1/top1_error", "a3/top1_error"): "regimes",
        ("a1/top1_error@v2", "a1/top5_error@v2"): "metrics",
        ("a1/top1_error@v2", "a3/top1_error@v2"): "regimes",
        ("a1/top5_error@v2", "a3/top5_error@v2"): "regimes",
        ("a3/top1_error", "a3/top1_error@v2"): "metrics",
        ("a3/top1_error@v2", "a3/top5_error@v2"): "metrics",
    }
