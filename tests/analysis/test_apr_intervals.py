"""Interval endpoints reproducible to the precision printed, test-set noise, few-model warnings."""

from __future__ import annotations

import re

import numpy as np
import pytest

# A class-subset toy study's shape: 8 models, the reference's errors on 450 test images, the
# target's on 72 (three models tied at 4 of 72 wrong = 5.56 %).
REFERENCE = np.array([4, 9, 15, 22, 31, 40, 52, 66]) / 450 * 100
TARGET = np.array([4, 4, 9, 4, 6, 12, 10, 15]) / 72 * 100
MODELS = np.array([f"m{i}" for i in range(8)])
RERUNS = range(20)
STATISTICS = ("spearman", "kendall", "pearson_logit")
# What the reports print: "[low, high]" (and " ±error" when above the tolerance).
PRINTED = re.compile(r"\[(-?\d+(?:\.(\d+))?), (-?\d+(?:\.\d+)?)\]")


def _runs(n_resamples: int) -> list[dict]:
    from analysis import stats

    return [
        stats.pair_statistics(
            MODELS,
            REFERENCE,
            TARGET,
            ("reference", "target"),
            3,
            stats.Bootstrap(n_resamples, seed),
        )
        for seed in RERUNS
    ]


def _printed_precision(stat: dict) -> float:
    """The precision a report claims for an interval's endpoints: the ``±`` printed beside
    them, else the tolerance its method text promises."""
    from analysis import readings, stats

    if stat["mc_se"] > stats.MC_TOLERANCE:
        return float(readings.mc_error(stat["mc_se"]))
    return stats.MC_TOLERANCE


def _spread_within_printed_precision(runs: list[dict], key: str) -> None:
    """Each endpoint's SD over the seeds is within 1.5 times the precision printed (the
    median over the seeds), and the endpoints as printed differ by at most two of their
    last digits."""
    from analysis import readings

    stats_ = [run[key] for run in runs]
    claimed = float(np.median([_printed_precision(s) for s in stats_]))
    printed = [PRINTED.search(readings.interval(s)) for s in stats_]
    step = max(10.0 ** -len(match.group(2) or "") for match in printed)
    for end, group in (("ci_low", 1), ("ci_high", 3)):
        values = np.array([s[end] for s in stats_])
        assert values.std(ddof=1) <= 1.5 * claimed, (key, end, values.std(ddof=1), claimed)
        shown = np.array([float(match.group(group)) for match in printed])
        assert np.ptp(shown) <= 2 * step + 1e-12, (key, end, shown, step)


@pytest.fixture(scope="module")
def default_runs() -> list[dict]:
    """The pair under 20 bootstrap seeds with the default resample bound."""
    from analysis import stats

    return _runs(stats.DEFAULT_RESAMPLES)


@pytest.mark.parametrize("key", STATISTICS)
def test_endpoints_reproduce_under_20_seeds_within_the_printed_precision(key, default_runs):
    """The default bootstrap at n = 8: as many resamples as the tolerance needs (or the
    bound), and the precision reached is what the report prints."""
    from analysis import stats

    _spread_within_printed_precision(default_runs, key)
    resamples = {run[key]["resamples"] for run in default_runs}
    assert min(resamples) > 100_000 and max(resamples) <= stats.DEFAULT_RESAMPLES


def test_the_precision_check_fails_for_the_old_fixed_1000_resamples():
    """1,000 resamples with the old report: endpoints at 2 decimals, claimed precise to the
    tolerance. Their spread over seeds is far outside that claim (the check above can fail),
    while the precision the reports now print beside them holds."""
    from analysis import stats

    runs = _runs(1000)
    lows = np.array([run["spearman"]["ci_low"] for run in runs])
    assert lows.std(ddof=1) > 5 * stats.MC_TOLERANCE
    assert np.ptp(np.round(lows, 2)) > 2 * 0.01
    with pytest.raises(AssertionError):
        old = [run | {"spearman": run["spearman"] | {"mc_se": 0.0}} for run in runs]
        _spread_within_printed_precision(old, "spearman")
    _spread_within_printed_precision(runs, "spearman")


def test_capped_interval_prints_its_error_and_rounds_to_what_it_supports():
    from analysis import readings

    stat = {"value": 0.21, "ci_low": -0.0512, "ci_high": 0.6234, "mc_se": 0.0123}
    assert readings.interval(stat) == " [-0.1, 0.6] ±0.02"
    assert readings.interval(stat | {"mc_se": 0.004}) == " [-0.05, 0.62] ±0.004"
    # Within the tolerance: two decimals, no ± (the method text states the tolerance).
    assert readings.interval(stat | {"mc_se": 0.0015}) == " [-0.05, 0.62]"
    # A lumpy rank statistic at n = 8: one decimal at least, and no "-0".
    lumpy = {"ci_low": -0.04, "ci_high": 1.0, "mc_se": 0.07}
    assert readings.interval(lumpy) == " [0.0, 1.0] ±0.07"
    assert readings.mc_error(0.05) == "0.05" and readings.mc_error(0.3) == "0.3"


def test_resamples_are_bounded():
    from analysis import stats

    with pytest.raises(ValueError, match="1,000,000"):
        stats.Bootstrap(stats.MAX_RESAMPLES + 1)
    with pytest.raises(ValueError, match="tolerance"):
        stats.Bootstrap(tolerance=-1)


def test_test_noise_widens_the_interval():
    from analysis import stats

    bootstrap = stats.Bootstrap(20_000, 0)
    plain = stats.pair_statistics(MODELS, REFERENCE, TARGET, ("r", "t"), 3, bootstrap)
    noisy = stats.pair_statistics(MODELS, REFERENCE, TARGET, ("r", "t"), 3, bootstrap, (450, 72))
    for key in STATISTICS:
        assert noisy[key]["value"] == plain[key]["value"]  # the point estimate is unchanged
        width = plain[key]["ci_high"] - plain[key]["ci_low"]
        assert noisy[key]["ci_high"] - noisy[key]["ci_low"] > width + 0.05, key


@pytest.mark.parametrize("n", [12, 40])  # Kendall from every pair, and by inversions
def test_statistics_of_redrawn_values_equal_scipy(n):
    """Test-set noise gives each resample its own values: the vectorised Spearman, Kendall
    and Pearson equal scipy on every resample's redrawn values (heavy ties: 20 images)."""
    from scipy import stats as sps

    from analysis import stats

    rng = np.random.default_rng(4)
    errors = stats.Measured(rng.uniform(5, 60, n), 20)
    idx = rng.integers(0, n, size=(50, n))
    x, y = errors.draw(rng, 50), np.round(rng.uniform(0, 10, n))  # y: one ranking for all
    counts = stats.resample_counts(idx, n)
    spearman = stats.bootstrap_spearman(x, y, counts)
    kendall = stats.bootstrap_kendall(x, y, counts)
    pearson = stats.bootstrap_pearson(x, y, counts)
    for b, rows in enumerate(idx):
        xb, yb = x[b, rows], y[rows]
        if np.ptp(xb) == 0 or np.ptp(yb) == 0:
            assert np.isnan(spearman[b]) and np.isnan(kendall[b])
            continue
        assert spearman[b] == pytest.approx(sps.spearmanr(xb, yb).statistic, abs=1e-12)
        assert kendall[b] == pytest.approx(sps.kendalltau(xb, yb).statistic, abs=1e-12)
        assert pearson[b] == pytest.approx(sps.pearsonr(xb, yb).statistic, abs=1e-12)
    # Both sides redrawn.
    both = stats.bootstrap_kendall(x, x[::-1] + y, counts)
    expected = [sps.kendalltau(x[b, r], (x[::-1] + y)[b, r]).statistic for b, r in enumerate(idx)]
    np.testing.assert_allclose(both, expected, rtol=0, atol=1e-12)


def test_weighted_inversion_count_with_a_ranking_per_row_equals_brute_force():
    from analysis import stats

    rng = np.random.default_rng(9)
    ranks = rng.integers(0, 13, size=(6, 30))
    weights = rng.integers(0, 4, size=(6, 30)).astype(float)
    expected = [
        sum(w[i] * w[j] for i in range(30) for j in range(i + 1, 30) if r[i] > r[j])
        for r, w in zip(ranks, weights, strict=True)
    ]
    np.testing.assert_array_equal(stats._inversions(ranks, weights), expected)


def _small_study(n_models: int):
    from analysis.synthetic import synthetic_results

    return synthetic_results(n_models=n_models, n_datasets=2, seed=3)


def test_few_models_warn_in_summary_and_reports(tmp_path):
    from analysis import analyze

    summary = analyze(_small_study(8), tmp_path / "few", n_bootstrap=2000)
    (target,) = summary["apr"]["targets"].values()
    assert "only 8 models" in target["warning"]
    assert {w["section"] for w in summary["warnings"]} >= {"apr", "correlation_matrix"}
    assert all(w["n_models"] == 8 for w in summary["warnings"])
    assert summary["settings"]["min_reliable_models"] == 10
    html = (tmp_path / "few" / "report.html").read_text()
    assert 'id="few-models"' in html and "fewer than 10: indicative only" in html
    assert "Warning: few models." in (tmp_path / "few" / "report.md").read_text()

    enough = analyze(_small_study(10), tmp_path / "enough", n_bootstrap=2000)
    assert enough["warnings"] == []
    assert "warning" not in next(iter(enough["apr"]["targets"].values()))
    assert 'id="few-models"' not in (tmp_path / "enough" / "report.html").read_text()


def test_test_noise_option_is_recorded_and_reported(tmp_path):
    from analysis import analyze

    table = _small_study(12)
    sizes = {"imagenet": 50_000, "ds01": 72}
    noisy = analyze(table, tmp_path / "noisy", n_bootstrap=5000, test_sizes=sizes)
    assert noisy["settings"]["test_noise"] == "binomial"
    assert noisy["settings"]["test_sizes"] == {"ds01": 72, "imagenet": 50_000}
    (target,) = noisy["apr"]["targets"].values()
    assert target["test_sizes"] == [50_000, 72]
    assert "Binomial(n_test, error)" in noisy["settings"]["interval_method"]
    assert "binomial" in (tmp_path / "noisy" / "report.md").read_text()

    plain = analyze(table, tmp_path / "plain", n_bootstrap=5000, test_noise="none")
    assert plain["settings"]["test_noise"] == "none" and plain["settings"]["test_sizes"] == {}
    wide = target["spearman"]["ci_high"] - target["spearman"]["ci_low"]
    (narrow,) = plain["apr"]["targets"].values()
    assert wide > narrow["spearman"]["ci_high"] - narrow["spearman"]["ci_low"]
    # auto without sizes: none, and the report says why.
    auto = analyze(table, tmp_path / "auto", n_bootstrap=0)
    assert auto["settings"]["test_noise_choice"] == "none: no test-set sizes given"
    with pytest.raises(ValueError, match="missing: \\['imagenet'\\]"):
        analyze(table, tmp_path / "x", test_noise="binomial", test_sizes={"ds01": 72})
    with pytest.raises(ValueError, match="not in the results"):
        analyze(table, tmp_path / "x", test_sizes={"cifar": 72})
    with pytest.raises(ValueError, match="positive whole"):
        analyze(table, tmp_path / "x", test_sizes={"ds01": 0})


def test_cli_test_noise_and_bounds(tmp_path, capsys):
    from analysis.cli import main

    path = tmp_path / "results.csv"
    _small_study(12).to_csv(path, index=False)
    out = tmp_path / "out"
    args = [str(path), "--out-dir", str(out), "--bootstrap", "3000", "--json"]
    assert main([*args, "--test-size", "imagenet=50000", "--test-size", "ds01=72"]) == 0
    assert '"test_noise": "binomial"' in capsys.readouterr().out
    assert main([*args, "--test-noise", "binomial", "--test-size", "ds01=72"]) == 1
    assert "missing: ['imagenet']" in capsys.readouterr().err
    assert main([*args, "--bootstrap", "1000001"]) == 2
    assert "1,000,000" in capsys.readouterr().err
    assert main([*args, "--test-size", "ds01"]) == 2
    assert "DATASET=N" in capsys.readouterr().err
