"""The class-count study's statistics on constructed tables, recomputed with scipy: the APR
correlation per subset size (per draw and the mean over draws), its change, Table 3's feature
correlations, Fig. 8's matrix, the crossed bootstrap's draw resampling, and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

FULL = "d10"
SIZES = (5, 2)
DRAWS = 2


def _layout(draws: int = DRAWS, others: tuple[str, ...] = ()):
    from analysis.class_count import Layout, Subset

    subsets = tuple(
        Subset(f"d10-c{k}-d{d}", k, d, tuple(f"class{i}" for i in range(k)))
        for k in SIZES
        for d in range(draws)
    )
    return Layout("digits", FULL, 10, subsets, others)


def _table(errors: dict[str, np.ndarray], n: int, seed: int = 0):
    """A results table of ``n`` AnyNet-like models with the given errors per dataset."""
    from analysis.table import load_results

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arch = {f"d{s}": int(rng.integers(1, 9)) for s in (1, 2, 3, 4)}
        arch |= {f"w{s}": int(rng.integers(8, 400)) for s in (1, 2, 3, 4)}
        for name, values in errors.items():
            row = {"model": f"m{i:02d}", "dataset": name, "recipe": "r", "top1_error": values[i]}
            rows.append(row | arch)
    table = load_results(pd.DataFrame(rows), metric="top1_error", scale="percent")
    return table.slice(*table.slices[0])


def _errors(layout, n: int, noise: dict[int, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Errors with a shared architecture effect plus per-dataset noise of the size's scale."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    errors = {layout.full: 30 + 5 * base + rng.normal(scale=noise[10], size=n)}
    for subset in layout.subsets:
        errors[subset.name] = 30 + 5 * base + rng.normal(scale=noise[subset.classes], size=n)
    for other in layout.others:
        errors[other] = 40 + 5 * base + rng.normal(scale=3, size=n)
    return {name: np.clip(values, 0.0, 100.0) for name, values in errors.items()}


def test_correlations_and_table3_match_scipy():
    from scipy import stats

    from analysis.class_count import compute_class_count
    from analysis.stats import architecture_features

    layout = _layout(others=("other",))
    errors = _errors(layout, 14, {10: 1.0, 5: 3.0, 2: 8.0})
    table = _table(errors, 14)
    summary = compute_class_count(table, layout, n_bootstrap=400)

    assert summary["n_models"] == 14 and summary["class_counts"] == [5, 2]
    means = {}
    for entry, size in zip(summary["apr"], SIZES, strict=True):
        assert entry["classes"] == size and entry["draws"] == DRAWS
        for kind, function in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
            expected = [
                function(errors[FULL], errors[f"d10-c{size}-d{d}"]).statistic for d in range(DRAWS)
            ]
            per_draw = [d["value"] for d in entry[kind]["per_draw"]]
            assert per_draw == pytest.approx(expected)
            assert entry[kind]["value"] == pytest.approx(np.mean(expected))
            means[(size, kind)] = np.mean(expected)
            low, high = entry[kind]["ci_low"], entry[kind]["ci_high"]
            assert -1 <= low < high <= 1
    for kind in ("spearman", "kendall"):
        delta = summary["change"][kind]["value"]
        assert delta == pytest.approx(means[(2, kind)] - means[(5, kind)])

    arch = table.architectures().reindex(summary["models"])
    features = architecture_features(arch, table.arch_groups)
    rows = {row["classes"]: row for row in summary["architecture"]["rows"]}
    assert list(rows) == [10, 5, 2]
    for feature in ("cum_depth", "cum_width"):
        full = stats.spearmanr(features[feature], errors[FULL]).statistic
        assert rows[10][feature]["value"] == pytest.approx(full)
        draws = [
            stats.spearmanr(features[feature], errors[f"d10-c2-d{d}"]).statistic
            for d in range(DRAWS)
        ]
        assert rows[2][feature]["value"] == pytest.approx(np.mean(draws))

    matrix = summary["matrix"]
    names = matrix["datasets"]
    assert names == [FULL, "d10-c5-d0", "d10-c5-d1", "d10-c2-d0", "d10-c2-d1", "other"]
    i, j = names.index("d10-c2-d1"), names.index("other")
    expected = stats.spearmanr(errors["d10-c2-d1"], errors["other"]).statistic
    assert matrix["spearman"][i][j] == pytest.approx(expected)
    (other,) = matrix["others"]
    assert other["by_size"]["2"] == pytest.approx(
        np.mean([matrix["spearman"][names.index(f"d10-c2-d{d}")][j] for d in range(DRAWS)])
    )
    assert summary["metrics"]["spearman_mean/c5"] == pytest.approx(means[(5, "spearman")])


def test_draws_are_resampled_in_the_interval_of_the_mean():
    """Two draws, one ranking the models as the full set does (ρ = 1), one reversed (ρ = -1):
    resampling the models alone leaves the mean at 0; resampling the draws puts both
    extremes in the interval. Identical draws: the mean's interval is each draw's."""
    from analysis.class_count import compute_class_count

    layout = _layout()
    full = np.linspace(10, 50, 12)
    errors = {FULL: full}
    for size in SIZES:
        errors[f"d10-c{size}-d0"] = full
        errors[f"d10-c{size}-d1"] = full[::-1]
    summary = compute_class_count(_table(errors, 12), layout, n_bootstrap=2000)
    rho = summary["apr"][0]["spearman"]
    assert rho["value"] == pytest.approx(0.0)
    assert [d["value"] for d in rho["per_draw"]] == pytest.approx([1.0, -1.0])
    assert rho["ci_low"] < -0.99 and rho["ci_high"] > 0.99

    same = {FULL: full} | {f"d10-c{k}-d{d}": full + d for k in SIZES for d in range(DRAWS)}
    noisy = {name: v + np.random.default_rng(1).normal(0, 8, 12) for name, v in same.items()}
    noisy[FULL] = full
    for k in SIZES:
        noisy[f"d10-c{k}-d1"] = noisy[f"d10-c{k}-d0"]
    summary = compute_class_count(_table(noisy, 12), layout, n_bootstrap=2000)
    rho = summary["apr"][0]["spearman"]
    draw = rho["per_draw"][0]
    assert (rho["ci_low"], rho["ci_high"]) == pytest.approx((draw["ci_low"], draw["ci_high"]))


def test_a_clear_fall_is_resolved_and_said_plainly():
    from analysis.class_count import FALLS, compute_class_count, paper_direction

    layout = _layout(draws=3)
    errors = _errors(layout, 40, {10: 0.1, 5: 0.5, 2: 20.0}, seed=3)
    summary = compute_class_count(_table(errors, 40), layout, n_bootstrap=3000)
    change = summary["change"]
    assert change["direction"] == FALLS and change["spearman"]["ci_high"] < 0
    answer = summary["answer"]
    assert answer.startswith("On digits (10 classes), Spearman ρ")
    assert "n = 40 architectures" in answer and "falls as classes fall" in answer
    assert "[" in answer  # an interval
    assert paper_direction(summary).startswith("This points the paper's way, and the interval")


def test_direction_reads_the_interval():
    from analysis.class_count import FALLS, RISES, UNRESOLVED, direction

    assert direction({"value": -0.3, "ci_low": -0.5, "ci_high": -0.1}) == FALLS
    assert direction({"value": 0.3, "ci_low": 0.1, "ci_high": 0.5}) == RISES
    assert direction({"value": -0.3, "ci_low": -0.6, "ci_high": 0.1}) == UNRESOLVED
    assert direction({"value": -0.3, "ci_low": None, "ci_high": None}) == FALLS
    assert direction({"value": None}) == UNRESOLVED


def test_missing_results_and_constant_draws_are_left_out_and_named():
    from analysis.class_count import compute_class_count

    layout = _layout()
    errors = _errors(layout, 10, {10: 1.0, 5: 2.0, 2: 4.0})
    errors["d10-c2-d1"] = np.full(10, 50.0)  # every model at chance: ρ undefined
    errors["d10-c5-d0"][3] = np.nan  # one model without a result there
    table = _table(errors, 10)
    summary = compute_class_count(table, layout, n_bootstrap=300)
    assert summary["n_models"] == 9 and list(summary["left_out"]) == ["m03"]
    assert "d10-c5-d0" in summary["left_out"]["m03"]
    rho = summary["apr"][1]["spearman"]
    assert rho["draws_defined"] == 1 and rho["per_draw"][1]["value"] is None
    assert rho["value"] == pytest.approx(rho["per_draw"][0]["value"])
    assert "same value" in rho["undefined_draws"][0]["reason"]

    few = {name: values[:2] for name, values in errors.items()}
    with pytest.raises(ValueError, match="only 2 architectures with .* need 3"):
        compute_class_count(_table(few, 2), layout, n_bootstrap=0)


def test_test_set_noise_widens_the_intervals():
    from analysis.class_count import compute_class_count

    layout = _layout()
    errors = _errors(layout, 15, {10: 0.5, 5: 1.0, 2: 2.0}, seed=2)
    table = _table(errors, 15)
    plain = compute_class_count(table, layout, n_bootstrap=3000)
    noisy = compute_class_count(
        table, layout, n_bootstrap=3000, test_sizes=dict.fromkeys(layout.datasets, 50)
    )
    assert noisy["settings"]["test_noise"] == "binomial"
    assert "Binomial(n_test, error)" in noisy["settings"]["interval_method"]
    for a, b in zip(plain["apr"], noisy["apr"], strict=True):
        assert a["spearman"]["value"] == b["spearman"]["value"]  # the observed value stays
        width = a["spearman"]["ci_high"] - a["spearman"]["ci_low"]
        assert b["spearman"]["ci_high"] - b["spearman"]["ci_low"] > width


def test_layout_round_trip_and_its_checks():
    from analysis.class_count import Layout, Subset

    layout = _layout(others=("shapes",))
    assert Layout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    assert layout.sizes == [5, 2] and layout.draws == DRAWS
    assert layout.datasets[0] == FULL and layout.datasets[-1] == "shapes"
    uneven = (Subset("a", 5, 0), Subset("b", 5, 1), Subset("c", 2, 0))
    with pytest.raises(ValueError, match="same draws of every size"):
        Layout("digits", FULL, 10, uneven)
    with pytest.raises(ValueError, match=r"must lie in \[2, 9\]"):
        Layout("digits", FULL, 10, (Subset("a", 10, 0),))
    with pytest.raises(ValueError, match="names a dataset twice"):
        Layout("digits", FULL, 10, (Subset("a", 5, 0),), others=("a",))


def test_report_opens_with_the_question_and_the_answer(tmp_path):
    from analysis.class_count import compute_class_count, error_frame
    from analysis.class_count_report import write_report

    layout = _layout(others=("other",))
    errors = _errors(layout, 10, {10: 1.0, 5: 3.0, 2: 8.0})
    table = _table(errors, 10)
    summary = compute_class_count(table, layout, n_bootstrap=300)
    (tmp_path / "results.csv").write_text("kept\n")
    write_report(tmp_path, summary, error_frame(table), "Class count: test")
    assert (tmp_path / "results.csv").read_text() == "kept\n"  # the folder's other files stay
    for name in ("class_count", "apr_scatter", "matrix"):
        assert (tmp_path / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "report.html").read_text()
    body = html.split("<body>")[1]
    assert body.index('class="question"') < body.index('class="answer"') < body.index("<h2>")
    assert summary["answer"].replace("'", "&#39;") in html
    assert "Fig. 7" in html and "Table 3" in html and "Fig. 8" in html
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# Class count: test\n\n*Does the architecture ranking")
    assert "(figures/class_count.png)" in markdown
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["answer"] == summary["answer"] and "nan" not in html.lower().split("<img")[0]
