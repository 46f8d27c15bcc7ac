"""The pretraining-factors study's statistics on a constructed table, recomputed with numpy and
scipy: each level's mean over seeds with its interval, each factor's contrast paired by seed,
the answer, the metrics, the layout's checks, and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

POOL = "shapes-p8"
TARGET = "digits-16px"
HELD_OUT = "shapes-h2"
SEED_IDS = (0, 1, 2)
# A seed's share of every accuracy, the same under every variant: the pairing by seed removes
# it, so the contrasts resolve what the level means alone would not.
SEED_SHIFT = (0.0, 3.0, -2.0)
# Each variant's own noise per seed, small and without a trend.
JITTER = {
    POOL: (0.0, 0.3, -0.3),
    f"{POOL}-n40": (0.4, -0.5, 0.2),
    f"{POOL}-n10": (0.2, -0.2, 0.1),
    f"{POOL}-c4": (-0.4, 0.5, -0.2),
    f"{POOL}-coarse3-abc": (0.3, 0.0, -0.4),
    f"{POOL}-b80-c8": (0.1, 0.2, -0.3),
    f"{POOL}-b80-c2": (-0.2, 0.4, 0.1),
}
BASE = {(TARGET, "knn"): 55.0, (TARGET, "linear"): 60.0}
BASE |= {(HELD_OUT, "knn"): 70.0, (HELD_OUT, "linear"): 75.0}
# Fewer images per class costs the linear probe 5 points; nothing else has an effect.
DROP = 5.0


def _layout(**changes):
    from analysis.pretrain_factors import Layout, Variant

    variants = (
        Variant(POOL, "reference", "all 8 classes, fine labels", 8),
        Variant(f"{POOL}-n40", "images_per_class", "40 / class", 8, 40),
        Variant(f"{POOL}-n10", "images_per_class", "10 / class", 8, 10),
        Variant(f"{POOL}-c4", "classes", "4 classes", 4),
        Variant(f"{POOL}-coarse3-abc", "labels", "coarse (3)", 3),
        Variant(f"{POOL}-b80-c8", "budget", "8 x 10", 8, 10),
        Variant(f"{POOL}-b80-c2", "budget", "2 x 40", 2, 40),
    )
    arguments = {
        "source": "shapes",
        "full": "shapes-16px",
        "n_classes": 10,
        "pool_classes": tuple(f"class{i}" for i in range(8)),
        "held_out": HELD_OUT,
        "held_out_classes": ("class8", "class9"),
        "variants": variants,
        "targets": (TARGET,),
        "seed": 4,
    }
    return Layout(**(arguments | changes))


def _frame(drop: float = DROP, seeds: tuple[int, ...] = SEED_IDS) -> pd.DataFrame:
    rows = []
    for variant, jitter in JITTER.items():
        for seed in seeds:
            for (dataset, regime), base in BASE.items():
                value = base + SEED_SHIFT[seed] + jitter[seed]
                if variant == f"{POOL}-n10" and regime == "linear":
                    value -= drop
                rows.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "dataset": dataset,
                        "regime": regime,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


def _pretrain() -> pd.DataFrame:
    rows = [
        {"variant": v, "seed": s, "value": 80.0 + 2 * s + i}
        for i, v in enumerate(JITTER)
        for s in SEED_IDS
    ]
    return pd.DataFrame(rows)


def _summary(**kwargs):
    from analysis.pretrain_factors import compute_pretrain_factors

    return compute_pretrain_factors(_frame(**kwargs), _layout(), _pretrain())


def _values(frame: pd.DataFrame, variant: str, dataset: str, regime: str) -> np.ndarray:
    rows = frame[
        (frame["variant"] == variant) & (frame["dataset"] == dataset) & (frame["regime"] == regime)
    ].sort_values("seed")
    return rows["value"].to_numpy(dtype=float)


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def _contrast(summary, factor: str, dataset: str, regime: str) -> dict:
    (row,) = [
        c
        for c in summary["contrasts"]
        if (c["factor"], c["dataset"], c["regime"]) == (factor, dataset, regime)
    ]
    return row


def test_level_means_and_intervals_match_scipy():
    frame = _frame()
    summary = _summary()
    assert summary["n_seeds"] == 3
    assert [(m["dataset"], m["role"], m["regime"]) for m in summary["measures"]] == [
        (TARGET, "target", "knn"),
        (TARGET, "target", "linear"),
        (HELD_OUT, "induction", "knn"),
        (HELD_OUT, "induction", "linear"),
    ]
    assert len(summary["levels"]) == len(JITTER) * len(BASE)
    for row in summary["levels"]:
        values = _values(frame, row["variant"], row["dataset"], row["regime"])
        low, high = _t_interval(values)
        assert row["values"] == pytest.approx(list(values))
        assert row["value"] == pytest.approx(values.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        assert row["n"] == 3 and row["seeds"] == list(SEED_IDS)


def test_contrasts_are_paired_by_seed_and_resolve_only_the_real_drop():
    frame = _frame()
    summary = _summary()
    fewer = _contrast(summary, "images_per_class", TARGET, "linear")
    assert (fewer["reference"], fewer["extreme"]) == (POOL, f"{POOL}-n10")
    differences = _values(frame, f"{POOL}-n10", TARGET, "linear") - _values(
        frame, POOL, TARGET, "linear"
    )
    low, high = _t_interval(differences)
    assert fewer["value"] == pytest.approx(differences.mean())
    assert (fewer["ci_low"], fewer["ci_high"]) == pytest.approx((low, high))
    assert fewer["ci_high"] < 0 and fewer["direction"] == "lower"
    # The two levels' own intervals overlap (the seeds' shared shift is larger than the drop):
    # only the pairing by seed resolves it.
    assert (
        _t_interval(_values(frame, POOL, TARGET, "linear"))[0]
        < _t_interval(_values(frame, f"{POOL}-n10", TARGET, "linear"))[1]
    )
    budget = _contrast(summary, "budget", TARGET, "linear")
    assert (budget["reference"], budget["extreme"]) == (f"{POOL}-b80-c8", f"{POOL}-b80-c2")
    unresolved = [c for c in summary["contrasts"] if c["direction"] == "unresolved"]
    resolved = {(c["factor"], c["dataset"], c["regime"]) for c in summary["contrasts"]} - {
        (c["factor"], c["dataset"], c["regime"]) for c in unresolved
    }
    assert resolved == {
        ("images_per_class", TARGET, "linear"),
        ("images_per_class", HELD_OUT, "linear"),
    }
    for factor in ("classes", "labels", "budget"):
        assert _contrast(summary, factor, TARGET, "linear")["direction"] == "unresolved"


def test_the_answer_names_exactly_the_resolved_factor():
    from analysis.pretrain_factors_report import paper_direction

    summary = _summary()
    assert summary["answer"].startswith(f"On {TARGET}, linear probe, 1 choice of 4 changed")
    assert "beyond the seeds' noise (images per class):" in summary["answer"]
    assert "(n = 3 seeds per level, 95 % intervals)" in summary["answer"]
    assert paper_direction(summary).startswith(
        "This points against the paper's finding for images per class (lower:"
    )
    assert "the other 3 choices change transfer no more than" in paper_direction(summary)
    flat = _summary(drop=0.0)
    assert "none of the 4 choices changed transfer" in flat["answer"]
    assert paper_direction(flat).startswith("This points the paper's way")


def test_one_seed_has_no_interval_and_resolves_nothing():
    from analysis.pretrain_factors import compute_pretrain_factors
    from analysis.pretrain_factors_report import paper_direction

    summary = compute_pretrain_factors(_frame(seeds=(0,)), _layout())
    assert summary["n_seeds"] == 1 and summary["pretrain"] == []
    rows = summary["levels"] + summary["contrasts"]
    assert all(r["ci_low"] is None and r["ci_high"] is None and r["n"] == 1 for r in rows)
    assert {c["direction"] for c in summary["contrasts"]} == {"unresolved"}
    assert "none of the 4 choices" in summary["answer"] and "(n = 1 seed per" in summary["answer"]
    assert paper_direction(summary).startswith("No contrast has an interval (n = 1 seed)")
    assert not any(key.endswith(("_ci_low", "_ci_high")) for key in summary["metrics"])


def test_equal_values_get_no_interval():
    from analysis.pretrain_factors import direction, t_interval

    # 0.3 - 0.1 and 0.2 differ in the last bit: still the same value on every seed.
    stat = t_interval([0.3 - 0.1, 0.2, 0.2])
    assert stat["value"] == pytest.approx(0.2) and stat["ci_low"] is None
    assert direction(stat) == "unresolved"
    assert t_interval([1.0, 1.5])["ci_low"] is not None


def test_flat_metrics():
    summary = _summary()
    metrics = summary["metrics"]
    # n_seeds, every level, every contrast with its two interval ends.
    assert len(metrics) == 1 + len(summary["levels"]) + 3 * len(summary["contrasts"])
    assert metrics["n_seeds"] == 3
    reference = _values(_frame(), POOL, TARGET, "linear")
    assert metrics[f"acc/{POOL}/{TARGET}/linear"] == pytest.approx(reference.mean())
    fewer = _contrast(summary, "images_per_class", TARGET, "linear")
    key = f"delta/images_per_class/{TARGET}/linear"
    assert metrics[key] == pytest.approx(fewer["value"])
    assert metrics[f"{key}_ci_low"] == pytest.approx(fewer["ci_low"])
    assert metrics[f"{key}_ci_high"] == pytest.approx(fewer["ci_high"])
    assert all(isinstance(v, float) for v in metrics.values())


def test_layout_round_trip_and_checks():
    from analysis.pretrain_factors import Layout, Variant

    layout = _layout()
    assert Layout.from_dict(layout.to_dict()) == layout
    assert Layout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    assert layout.factors == ["images_per_class", "classes", "labels", "budget"]
    assert layout.transfer_datasets == [TARGET, HELD_OUT]
    twice = (*layout.variants, Variant(f"{POOL}-c4", "classes", "4 classes", 4))
    with pytest.raises(ValueError, match=f"same dataset \\({POOL}-c4\\)"):
        _layout(variants=twice)
    with pytest.raises(ValueError, match=f"a target is also a pretraining variant: {POOL}-c4"):
        _layout(targets=(TARGET, f"{POOL}-c4"))
    with pytest.raises(ValueError, match="starts with its reference"):
        _layout(variants=layout.variants[1:])
    with pytest.raises(ValueError, match="unknown factor"):
        Variant("x", "colour", "red", 3)


def test_compute_refuses_a_table_without_accuracy():
    from analysis.pretrain_factors import compute_pretrain_factors

    frame = _frame().assign(value=np.nan)
    with pytest.raises(ValueError, match="no transfer accuracy"):
        compute_pretrain_factors(frame, _layout())
    with pytest.raises(ValueError, match="lacks column\\(s\\) regime"):
        compute_pretrain_factors(_frame().drop(columns="regime"), _layout())


def test_the_figure_orders_each_factor_from_the_reference():
    from analysis.pretrain_factors_report import factor_levels

    summary = _summary()
    names = {f: [v["name"] for v in factor_levels(summary, f)] for f in summary["factors"]}
    assert names == {
        "images_per_class": [POOL, f"{POOL}-n40", f"{POOL}-n10"],
        "classes": [POOL, f"{POOL}-c4"],
        "labels": [POOL, f"{POOL}-coarse3-abc"],
        "budget": [f"{POOL}-b80-c8", f"{POOL}-b80-c2"],
    }


def test_report_opens_with_the_question_and_the_answer(tmp_path):
    from markupsafe import escape

    from analysis.pretrain_factors_report import write_report

    summary = _summary()
    (tmp_path / "results.csv").write_text("kept\n")
    write_report(tmp_path, summary, "Pretraining factors: test")
    assert (tmp_path / "results.csv").read_text() == "kept\n"  # the folder's other files stay
    png = (tmp_path / "figures" / "factors.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 1000
    html = (tmp_path / "report.html").read_text()
    body = html.split("<body>")[1]
    assert f'<p class="answer">{escape(summary["answer"])}</p>' in body
    assert body.index('class="question"') < body.index('class="answer"') < body.index("<h2>")
    assert body.index('class="answer"') < body.index('class="induction"')
    assert body.index('class="induction"') < body.index('class="direction"')
    sections = [
        "Transfer accuracy per factor level",
        "Which choices matter",
        "Induction",
        "Pretraining accuracy",
        "Datasets",
        "How the intervals were computed",
        "Papers",
    ]
    positions = [body.index(f"<h2>{s}</h2>") for s in sections]
    assert positions == sorted(positions)
    assert "data:image/png;base64," in body and "nan" not in body.lower().split("<img")[0]
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# Pretraining factors: test\n\n*Which choices")
    assert f"**{summary['answer']}**" in markdown and "(figures/factors.png)" in markdown
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["figures"] == {"factors": "figures/factors.png"}
    assert stored["answer"] == summary["answer"]


def test_report_leaves_out_what_was_not_measured(tmp_path):
    from analysis.pretrain_factors import compute_pretrain_factors
    from analysis.pretrain_factors_report import write_report

    layout = _layout(held_out="", held_out_classes=())
    frame = _frame()
    summary = compute_pretrain_factors(frame[frame["dataset"] == TARGET], layout)
    write_report(tmp_path, summary, "Pretraining factors: bare")
    markdown = (tmp_path / "report.md").read_text()
    assert "## Induction" not in markdown and "## Pretraining accuracy" not in markdown
    assert "## Which choices matter" in markdown
