"""The transfer comparison: reproducible intervals at n = 8, comparisons against source
accuracy per source dataset, Kornblith et al.'s dataset-averaged log-odds r with Morey
intervals, and model families."""

from __future__ import annotations

import re

import numpy as np
import pytest

RERUNS = range(20)
# What the report prints for an interval: "low to high" and " ±error" above the tolerance.
PRINTED = re.compile(r"^(-?\d+(?:\.(\d+))?) to (-?\d+(?:\.\d+)?)")


def _row(model: str, dataset: str, regime: str, metric: str, value: float | None) -> dict:
    return {
        "model": model,
        "dataset": dataset,
        "regime": regime,
        "metric": metric,
        "value": value,
        "unit": "fraction",
        "seconds": 1.0,
        "status": "ok" if value is not None else "failed",
        "status_reason": "",
    }


def _logit(p):
    p = np.asarray(p, dtype=float)
    return np.log(p / (1.0 - p))


# Names as timm 1.0 lists them (timm.list_pretrained / list_models), trials as the study names them.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet50", "resnet"),
        ("resnet18.a1_in1k", "resnet"),
        ("efficientnet_b0", "efficientnet"),
        ("tf_efficientnet_b3.ap_in1k", "efficientnet"),
        ("legacy_xception.tf_in1k", "xception"),  # the tag's dot ends the architecture
        ("deit_small_patch16_224", "deit"),
        ("vit_base_patch16_224.augreg_in21k", "vit"),
        ("convnext_tiny", "convnext"),
        ("mobilenetv3_large_100", "mobilenet"),
        ("regnety_016", "regnety"),
        ("densenet121", "densenet"),
        ("trial:3f2a9c0d1e2b4a5c", "anynet"),
    ],
)
def test_family_of_timm_and_trial_names(name, expected):
    from components.transfer.compare import family

    assert family(name) == expected


def test_weighted_tau_of_every_resample_equals_scipy():
    """The vectorised weighted tau equals ``scipy.stats.weightedtau`` on each resample's
    models, copies and ties included (undefined where a resample is constant)."""
    from scipy import stats as sps

    from analysis.stats import resample_counts
    from components.transfer.compare import bootstrap_weighted_tau

    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(3, 11))
        x = np.round(rng.normal(size=n), 1)
        y = np.round(x + rng.normal(size=n), int(rng.integers(0, 2)))
        idx = rng.integers(0, n, size=(25, n))
        got = bootstrap_weighted_tau(x, y, resample_counts(idx, n))
        want = np.array([sps.weightedtau(x[i], y[i]).statistic for i in idx])
        np.testing.assert_allclose(got, want, atol=1e-12, equal_nan=True)


def _eight_models() -> tuple[np.ndarray, np.ndarray]:
    """Source top-1 and fine-tuned top-1 of 8 models, loosely related (as fractions)."""
    source = np.array([0.62, 0.66, 0.70, 0.71, 0.74, 0.77, 0.79, 0.82])
    finetune = np.array([0.55, 0.71, 0.58, 0.69, 0.64, 0.81, 0.70, 0.78])
    return source, finetune


@pytest.fixture(scope="module")
def reruns() -> list[dict]:
    """One comparison of 8 models under 20 bootstrap seeds with the default resample bound:
    a regime vs source accuracy (log-odds r, rho) and a score vs fine-tuning (tau, weighted
    tau)."""
    from analysis.stats import DEFAULT_RESAMPLES
    from components.transfer.compare import rank_agreement, versus_source

    source, finetune = _eight_models()
    return [
        versus_source(finetune, source, DEFAULT_RESAMPLES, seed, ("finetune", "source"))
        | rank_agreement(source, finetune, DEFAULT_RESAMPLES, seed, ("score", "finetune"))
        for seed in RERUNS
    ]


def _claimed(stat: dict) -> float:
    """The precision the report claims for an interval's endpoints: the ± printed beside
    them, else the tolerance its intervals sentence states."""
    from analysis.readings import mc_error
    from analysis.stats import MC_TOLERANCE

    return float(mc_error(stat["mc_se"])) if stat["mc_se"] > MC_TOLERANCE else MC_TOLERANCE


def _check_reproducible(stats_: list[dict]) -> None:
    """Each endpoint's SD over the seeds is within 1.5 times the claimed precision (median
    over the seeds), and the endpoints as printed differ by at most two last digits."""
    from components.transfer.report import endpoints

    claimed = float(np.median([_claimed(s) for s in stats_]))
    printed = [PRINTED.match(endpoints(s)) for s in stats_]
    step = max(10.0 ** -len(match.group(2) or "") for match in printed)
    for end, group in (("ci_low", 1), ("ci_high", 3)):
        values = np.array([s[end] for s in stats_])
        assert values.std(ddof=1) <= 1.5 * claimed, (end, values, claimed)
        shown = np.array([float(match.group(group)) for match in printed])
        assert np.ptp(shown) <= 2 * step + 1e-12, (end, shown, step)


@pytest.mark.parametrize("key", ["pearson_logit", "spearman", "kendall", "weighted_tau"])
def test_interval_reproduces_under_20_seeds_within_the_printed_precision(key, reruns):
    from analysis.stats import DEFAULT_RESAMPLES

    stats_ = [run[key] for run in reruns]
    _check_reproducible(stats_)
    # As many resamples as the tolerance needs: at n = 8 about the default bound.
    assert all(100_000 < s["resamples"] <= DEFAULT_RESAMPLES for s in stats_)
    assert all(run["warning"].startswith("only 8 models (fewer than 10)") for run in reruns)


def test_fixed_1000_resamples_printed_as_precise_fail_the_check():
    """The old transfer comparison: 1,000 resamples whatever the precision, printed with 3
    decimals. Claimed precise (no ±), its endpoints spread beyond the check above."""
    from components.transfer.compare import versus_source

    source, finetune = _eight_models()
    runs = [versus_source(finetune, source, 1000, s, ("a", "b")) for s in RERUNS]
    old = [run["pearson_logit"] | {"mc_se": 0.0} for run in runs]
    with pytest.raises(AssertionError):
        _check_reproducible(old)
    _check_reproducible([run["pearson_logit"] for run in runs])  # with the error it reached


def _two_sources() -> list[dict]:
    """A ``trials:all``-style table: trials from two source datasets fine-tuned on two
    targets. Within each source, the better trials on the source fine-tune better; across
    sources, the faces trials have the lower source accuracy and the higher target accuracy,
    so a pooled correlation mixes that difference in. One timm model from a third source."""
    digits = {"trial:d1": 0.90, "trial:d2": 0.93, "trial:d3": 0.95, "trial:d4": 0.97}
    faces = {"trial:f1": 0.52, "trial:f2": 0.58, "trial:f3": 0.63}
    targets = {
        "shapes": {
            **dict(zip(digits, (0.41, 0.47, 0.52, 0.60), strict=True)),
            **dict(zip(faces, (0.70, 0.77, 0.85), strict=True)),
            "resnet18": 0.66,
        },
        "letters": {
            **dict(zip(digits, (0.35, 0.38, 0.49, 0.51), strict=True)),
            **dict(zip(faces, (0.66, 0.70, 0.81), strict=True)),
            "resnet18": 0.61,
        },
    }
    rows = [_row(m, "digits", "source", "top1", v) for m, v in digits.items()]
    rows += [_row(m, "faces", "source", "top1", v) for m, v in faces.items()]
    rows.append(_row("resnet18", "imagenet", "source", "top1", 0.70))
    for dataset, values in targets.items():
        for m, v in values.items():
            rows.append(_row(m, dataset, "finetune", "top1", v))
            rows.append(_row(m, dataset, "knn", "knn_top1", v - 0.2))
    return rows


def test_trials_from_two_sources_are_compared_per_source():
    from scipy import stats as sps

    from components.transfer.compare import compare, comparison_metrics

    rows = _two_sources()
    result = compare(rows, n_bootstrap=2000)
    by_source = result["targets"]["shapes"]["regimes_vs_source"]
    assert sorted(by_source) == ["digits", "faces", "imagenet"]
    for source, models in (("digits", 4), ("faces", 3)):
        finetune = by_source[source]["finetune/top1"]
        mine = sorted(r["model"] for r in rows if r["dataset"] == source)
        acc = np.array([_value(rows, m, "shapes", "finetune") for m in mine])
        top1 = np.array([_source(rows, m) for m in mine])
        assert finetune["n_models"] == models == len(mine)
        expected = sps.pearsonr(_logit(acc), _logit(top1)).statistic
        assert finetune["pearson_logit"]["value"] == pytest.approx(expected)
        assert finetune["pearson_logit"]["value"] > 0.9  # within a source: the better, better
        assert finetune["spearman"]["value"] == pytest.approx(1.0)
        assert finetune["warning"].startswith(f"only {models} models")
    # Pooled over every source, as the comparison read them before: the between-source
    # difference dominates, and the sign flips.
    pooled = sorted(r["model"] for r in rows if r["regime"] == "source")
    acc = np.array([_value(rows, m, "shapes", "finetune") for m in pooled])
    top1 = np.array([_source(rows, m) for m in pooled])
    assert sps.pearsonr(_logit(acc), _logit(top1)).statistic < -0.5
    # One model from imagenet: undefined, with the reason.
    lone = by_source["imagenet"]["finetune/top1"]
    assert lone["pearson_logit"] is None and lone["n_models"] == 1
    assert lone["reason"] == (
        "only 1 model shared by finetune/top1 on shapes and source top-1 on imagenet; need 3"
    )
    # Kornblith et al.'s averaged statistic is per source as well.
    assert sorted(result["averaged_vs_source"]) == ["digits", "faces", "imagenet"]
    assert result["averaged_vs_source"]["faces"]["finetune/top1"]["n_models"] == 3
    metrics = comparison_metrics(result)
    assert "pearson_logit_vs_source/digits/finetune/top1/shapes" in metrics
    assert "pearson_logit_averaged_vs_source/faces/finetune/top1" in metrics
    assert not any("imagenet" in name for name in metrics)  # undefined: not logged


def _value(rows: list[dict], model: str, dataset: str, regime: str) -> float:
    (value,) = (
        r["value"]
        for r in rows
        if (r["model"], r["dataset"], r["regime"]) == (model, dataset, regime)
    )
    return value


def _source(rows: list[dict], model: str) -> float:
    (value,) = (r["value"] for r in rows if r["model"] == model and r["regime"] == "source")
    return value


def test_report_sentences_name_each_source(tmp_path):
    from components.transfer.compare import compare
    from components.transfer.report import write_report

    rows = _two_sources()
    html = write_report(tmp_path / "r.html", "t", rows, compare(rows, n_bootstrap=200), [])
    text = re.sub(r"\s+", " ", html)
    for source in ("digits", "faces"):
        assert f"On shapes, fine-tuned top-1 vs source accuracy on {source}: " in text
    assert (
        "On shapes, fine-tuned top-1 vs source accuracy on imagenet: only 1 model shared by "
        "finetune/top1 on shapes and source top-1 on imagenet; need 3 (n = 1 model)." in text
    )
    assert "Fine-tuned top-1 averaged over 2 targets vs source accuracy on digits " in text


def _kornblith_rows() -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Six models from one source on three targets (fine-tune), plus a seventh model without
    a result on one target."""
    source = np.array([0.70, 0.74, 0.76, 0.79, 0.81, 0.84])
    accuracy = np.array(
        [
            [0.61, 0.42, 0.88],
            [0.66, 0.40, 0.90],
            [0.64, 0.51, 0.93],
            [0.72, 0.49, 0.92],
            [0.70, 0.58, 0.95],
            [0.79, 0.55, 0.97],
        ]
    )
    targets = ("aircraft", "birds", "flowers")
    rows = []
    for i, (top1, accs) in enumerate(zip(source, accuracy, strict=True)):
        rows.append(_row(f"m{i}", "imagenet", "source", "top1", float(top1)))
        rows += [
            _row(f"m{i}", t, "finetune", "top1", float(a))
            for t, a in zip(targets, accs, strict=True)
        ]
    rows.append(_row("m6", "imagenet", "source", "top1", 0.9))
    rows += [_row("m6", t, "finetune", "top1", 0.9) for t in targets[:2]]
    rows.append(_row("m6", targets[2], "finetune", "top1", None))  # failed
    return rows, source, accuracy


def test_kornblith_averaged_log_odds_r_by_hand():
    """Pearson r over models of the source's log-odds against the mean over targets of the
    log-odds of transfer accuracy, as numpy and scipy compute it; the model without every
    target is left out and listed."""
    from scipy import stats as sps

    from components.transfer.compare import compare

    rows, source, accuracy = _kornblith_rows()
    result = compare(rows, n_bootstrap=5000)["averaged_vs_source"]["imagenet"]["finetune/top1"]
    mean = np.log(accuracy / (1 - accuracy)).mean(axis=1)
    assert result["n_models"] == 6 and result["n_datasets"] == 3
    assert result["excluded_models"] == ["m6"]
    assert result["datasets"] == ["aircraft", "birds", "flowers"]
    r = sps.pearsonr(np.log(source / (1 - source)), mean).statistic
    assert result["pearson_logit"]["value"] == pytest.approx(r, abs=1e-12)
    # Not the r of the averaged accuracy, nor the mean of the per-target r.
    assert abs(sps.pearsonr(source, accuracy.mean(axis=1)).statistic - r) > 1e-3
    per_target = [sps.pearsonr(_logit(source), _logit(a)).statistic for a in accuracy.T]
    assert abs(np.mean(per_target) - r) > 1e-3
    assert result["spearman"]["value"] == pytest.approx(sps.spearmanr(source, mean).statistic)
    pearson = result["pearson_logit"]
    assert pearson["ci_low"] < r < pearson["ci_high"] and pearson["mc_se"] is not None
    assert [m["mean_log_odds"] for m in result["models"]] == pytest.approx(mean)


def test_morey_interval_by_hand():
    """Cousineau's normalisation (each dataset centred on its mean over models, plus the grand
    mean), Morey's sqrt(J / (J - 1)) for J models, a t interval over the D datasets."""
    from scipy import stats as sps

    from components.transfer.compare import compare, morey_intervals

    rows, _, accuracy = _kornblith_rows()
    logits = np.log(accuracy / (1 - accuracy))
    n_models, n_datasets = logits.shape
    grand = logits.mean()
    low, high = [], []
    for i in range(n_models):
        normalised = [
            logits[i, d] - np.mean([logits[k, d] for k in range(n_models)]) + grand
            for d in range(n_datasets)
        ]
        sd = np.std(normalised, ddof=1) * np.sqrt(n_models / (n_models - 1))
        half = sps.t.ppf(0.975, n_datasets - 1) * sd / np.sqrt(n_datasets)
        low.append(np.mean(normalised) - half)
        high.append(np.mean(normalised) + half)
    got = morey_intervals(logits)
    assert got["correction"] == pytest.approx(np.sqrt(6 / 5))
    assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
    assert got["mean"] == pytest.approx(logits.mean(axis=1))
    # Each model's interval is narrower than one over the raw log-odds (dataset difficulty).
    raw = sps.t.ppf(0.975, 2) * logits.std(axis=1, ddof=1) / np.sqrt(3)
    assert np.all(np.array(high) - np.array(low) < 2 * raw)
    # In the comparison, per model.
    result = compare(rows, n_bootstrap=0)["averaged_vs_source"]["imagenet"]["finetune/top1"]
    assert [m["morey_low"] for m in result["models"]] == pytest.approx(low)
    assert [m["morey_high"] for m in result["models"]] == pytest.approx(high)
    assert "reason" in morey_intervals(logits[:, :1])  # one dataset: no spread across


def test_families_in_the_comparison_and_the_report(tmp_path):
    """Per-family means of fine-tuned accuracy and of each score; the ranking grouped by
    family (best mean first), best first within a family; counts in the report."""
    from components.transfer.compare import compare
    from components.transfer.report import write_report

    finetune = {
        "resnet18": 0.60,
        "resnet50.a1_in1k": 0.72,
        "vit_small_patch16_224.augreg_in21k": 0.81,
        "vit_base_patch16_224": 0.79,
        "trial:abc": 0.50,
    }
    rows = []
    for i, (m, v) in enumerate(finetune.items()):
        rows += [_row(m, "digits", "finetune", "top1", v), _row(m, "digits", "logme", "logme", i)]
    result = compare(rows, n_bootstrap=0)
    assert result["families"] == {
        "anynet": ["trial:abc"],
        "resnet": ["resnet18", "resnet50.a1_in1k"],
        "vit": ["vit_base_patch16_224", "vit_small_patch16_224.augreg_in21k"],
    }
    families = result["targets"]["digits"]["families"]
    assert list(families) == ["vit", "resnet", "anynet"]  # best mean fine-tuned top-1 first
    assert families["vit"]["means"]["finetune/top1"] == {"mean": pytest.approx(0.80), "n_models": 2}
    assert families["resnet"]["means"]["logme/logme"]["mean"] == pytest.approx(0.5)
    ranking = result["targets"]["digits"]["ranking"]
    assert [(e["family"], e["model"], e["rank"]) for e in ranking] == [
        ("vit", "vit_small_patch16_224.augreg_in21k", 1),
        ("vit", "vit_base_patch16_224", 2),
        ("resnet", "resnet50.a1_in1k", 3),
        ("resnet", "resnet18", 4),
        ("anynet", "trial:abc", 5),
    ]
    html = write_report(tmp_path / "r.html", "t", rows, result, [])
    text = re.sub(r"\s+", " ", html)
    assert "Models per family: anynet: 1 model; resnet: 2 models; vit: 2 models." in text
    table = text.split('<table class="ranking">')[1].split("</table>")[0]
    assert "<th>family</th><th>model</th><th>rank</th><th>fine-tuned top-1</th>" in table
    cells = re.findall(r"<tr><td>(\w+)</td><td>([^<]+)</td>", table)
    assert cells == [(e["family"], e["model"]) for e in ranking]


def test_few_models_warning_only_below_ten(tmp_path):
    from components.transfer.compare import rank_agreement

    rng = np.random.default_rng(0)
    x = rng.normal(size=10)
    assert "warning" not in rank_agreement(x, x + rng.normal(size=10), 500, 0, ("a", "b"))
    few = rank_agreement(x[:9], x[:9] + 1, 500, 0, ("a", "b"))
    assert few["warning"].startswith("only 9 models (fewer than 10)")
