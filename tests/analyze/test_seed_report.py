"""The seed study's analysis and report (components/analyze/seeds.py) on results tables made
here: the spread across seeds with its interval, the correlation between test sets of the same
checkpoints, the answer sentence and the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SEED_COUNT = 8


def _table(v2_errors: list[float] | None, statuses: list[str] | None = None) -> pd.DataFrame:
    """Gathered results of one timm model trained on ``shapes`` with 8 seeds, each evaluated
    on its test split and, given ``v2_errors``, on ``shapes_v2``."""
    from components.analyze.run import result_row

    test = [5.0, 6.0, 4.0, 7.5, 5.5, 6.5, 4.5, 8.0]
    rows = []
    for seed in range(SEED_COUNT):
        status = (statuses or ["ok"] * SEED_COUNT)[seed]
        evaluations = {"test": {"top1_error": test[seed]}}
        if v2_errors is not None:
            evaluations["shapes_v2"] = {"top1_error": v2_errors[seed]}
        result = {
            "trial_id": f"t{seed}",
            "spec": {"timm": "resnet10t"},
            "dataset": {"name": "shapes"},
            "recipe": {"name": "apr_tiny"},
            "seed": seed,
            "status": status,
            "reason": "" if status == "ok" else "loss became nan",
            "top1_error": test[seed] if status == "ok" else None,
            "evaluations": evaluations if status == "ok" else {},
            "wall_time_s": 1.0,
        }
        rows.append(result_row(result))
    return pd.DataFrame(rows)


SIZES = {"shapes": {"test": 300, "shapes_v2": 300}}


def _summary(table: pd.DataFrame) -> dict:
    from analysis import stats
    from components.analyze.seeds import summarize

    return summarize(table, SIZES, stats.Bootstrap(n_resamples=20_000, seed=1), "toy")


def test_the_std_interval_covers_at_its_level():
    """Simulated: 95 % of the chi-square intervals of 8 normal draws hold the true sd."""
    from components.analyze.seeds import std_interval

    rng = np.random.default_rng(0)
    stds = rng.normal(10.0, 2.0, size=(40_000, SEED_COUNT)).std(axis=1, ddof=1)
    low, high = std_interval(1.0, SEED_COUNT)  # the interval scales with the std
    covered = (stds * low <= 2.0) & (stds * high >= 2.0)
    assert covered.mean() == pytest.approx(0.95, abs=0.004)
    assert np.mean(stds * low > 2.0) == pytest.approx(0.025, abs=0.003)  # each tail 2.5 %


def test_binomial_sd_is_the_test_sets_noise():
    from components.analyze.seeds import binomial_sd

    assert binomial_sd(10.0, 100) == pytest.approx(3.0)
    assert binomial_sd(50.0, 10_000) == pytest.approx(0.5)


def test_spread_and_correlation_of_the_same_checkpoints():
    from scipy import stats as scipy_stats

    v2 = [6.0, 6.5, 4.5, 9.0, 5.0, 7.5, 5.5, 8.5]
    summary = _summary(_table(v2))
    test, other = summary["spread"]
    assert (test["test_set"], other["test_set"]) == ("test", "shapes_v2")  # the primary first
    frame = _table(v2)
    assert test["std"] == pytest.approx(frame["top1_error"].std())
    assert other["std"] == pytest.approx(frame["top1_error@shapes_v2"].std())
    assert test["std_ci_low"] < test["std"] < test["std_ci_high"]
    p = frame["top1_error"].mean() / 100
    assert test["binomial_sd"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 300))
    (pair,) = summary["pairs"]
    r = scipy_stats.pearsonr(frame["top1_error"], frame["top1_error@shapes_v2"]).statistic
    assert pair["value"] == pytest.approx(r) and pair["n_seeds"] == SEED_COUNT
    assert pair["ci_low"] < pair["value"] < pair["ci_high"]
    headline = summary["headline"]
    assert headline.startswith("Yes") and "n = 8 seeds of resnet10t trained on shapes" in headline
    assert f"r = {pair['value']:.2f} [" in headline and "points on shapes_v2" in headline
    metrics = summary["metrics"]
    assert metrics["seed_pair_r/shapes/test vs shapes_v2"] == pytest.approx(r)
    assert metrics["seed_std/shapes/test"] == pytest.approx(test["std"])


def test_without_a_second_test_set_the_answer_says_why():
    summary = _summary(_table(None))
    assert summary["pairs"] == []
    assert summary["headline"].startswith("Not measured: no checkpoint was evaluated on a second")


def test_failed_seeds_are_listed_and_left_out():
    statuses = ["ok"] * 6 + ["diverged", "failed"]
    summary = _summary(_table([5.0] * 3 + [6.0] * 5, statuses))
    assert summary["trials"]["ok"] == 6 and len(summary["trials"]["failed"]) == 2
    assert summary["spread"][0]["n_seeds"] == 6
    with pytest.raises(ValueError, match="no trial of seed study toy finished ok"):
        _summary(_table(None, ["failed"] * SEED_COUNT))


def test_the_report_opens_with_the_question_and_the_answer(tmp_path):
    from components.analyze.seeds import QUESTION, write_report

    table = _table([6.0, 6.5, 4.5, 9.0, 5.0, 7.5, 5.5, 8.5])
    summary = _summary(table)
    write_report(tmp_path / "report", summary, table)
    markdown = (tmp_path / "report" / "report.md").read_text().splitlines()
    assert markdown[0] == f"# {QUESTION}" and markdown[2] == f"**{summary['headline']}**"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<img" in html and "arXiv 2110.00476" in html
    assert (tmp_path / "report" / "figures" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
