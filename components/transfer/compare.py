"""Does the cheap ranking predict fine-tuning? Statistics of a transfer study's long table.

Per target dataset:

* **cheap score vs fine-tuned accuracy**: for each cheap score (kNN top-1, kNN top-5
  fraction, LogME, LEEP, linear probe) over the models that have both, Kendall tau-b and
  weighted tau (``scipy.stats.weightedtau``'s hyperbolic weights: do the top models agree),
  each with a percentile bootstrap interval over models; LogME and LEEP are scores (higher is
  better) that the APR analysis skips, so they are compared here. These rankings are **not**
  grouped by source dataset: the score and the fine-tuned accuracy of every model are both
  measured on the target, so models pretrained on different sources are candidates on one
  scale, and "which model should I fine-tune on this target" ranks all of them;
* **cost**: the median seconds of each score over models, and the median seconds of the
  fine-tune it predicts, with their ratio;
* **regime vs source accuracy** (Kornblith, Shlens, Le 2019, "Do Better ImageNet Models
  Transfer Better?", arXiv 1805.08974): for each accuracy regime and **each source dataset**,
  the Pearson r of log-odds and the Spearman rho against the source top-1 of the models
  pretrained there. Source accuracies of different source datasets are not on one scale
  (90 % on digits is not 90 % on ImageNet), so pooling them mixes the between-source
  difference into the correlation: in the tests' table of trials from digits and from faces
  (``tests/transfer/test_transfer_compare_groups.py``) each source alone gives r = 1.00 and
  0.99, the pool -0.73. A source with fewer than ``MIN_MODELS`` models is reported
  undefined, with the reason;
* **families**: the models grouped by family (:func:`family`), with per-family means of
  every score and of fine-tuned accuracy, and the ranking with a family column.

Across targets, per accuracy regime and source dataset, **Kornblith et al.'s headline
statistic** (their Section 3 and Figure 2): the Pearson r, over models, between the log-odds
of source top-1 and the log-odds of transfer accuracy averaged over the target datasets (the
mean of each dataset's log-odds), with a bootstrap interval over models, and the error bars of
their Figure 2 on each model's average: Morey's within-subject 95 % intervals
(:func:`morey_intervals`).

Every interval is ``analysis.stats.interval``'s percentile bootstrap over models, with as
many resamples as its endpoints need to reach ``analysis.stats.MC_TOLERANCE`` (at most
``n_bootstrap``); each carries the Monte-Carlo error reached (``mc_se``), and each statistic
over fewer than ``analysis.stats.MIN_RELIABLE_MODELS`` models carries a ``warning``. The
intervals resample models only: the long table does not hold the test-set sizes that
binomial test-set noise (``analysis.stats.Measured``) would need.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from analysis.stats import (
    CI_LEVEL,
    DEFAULT_RESAMPLES,
    MC_TOLERANCE,
    MIN_MODELS,
    MIN_RELIABLE_MODELS,
    Bootstrap,
    bootstrap_kendall,
    bootstrap_pearson,
    bootstrap_spearman,
    few_models_warning,
    interval,
    logit_accuracy,
    undefined_reason,
)
from analysis.words import plural
from components.train.definition import TRIAL_PREFIX

#: (regime, metric) of each cheap score, in report order.
CHEAP_SCORES = (
    ("knn", "knn_top1"),
    ("knn", "knn_top5_fraction"),
    ("logme", "logme"),
    ("leep", "leep"),
    ("linear", "linear_top1"),
)
ACCURACY_SLICES = (
    ("knn", "knn_top1"),
    ("linear", "linear_top1"),
    ("finetune", "top1"),
    ("scratch", "top1"),
)
TARGET = ("finetune", "top1")
#: The family of every trial: our trials are AnyNet networks.
TRIAL_FAMILY = "anynet"
#: Prefixes of timm names whose weights were ported from another framework (``tf_`` from
#: TensorFlow, ``gluon_`` from MXNet Gluon, ``legacy_`` older ports): the architecture after
#: them is the family's.
PORT_PREFIX = re.compile(r"^(tf|gluon|legacy)_")
#: The family: the shortest run of letters that a version or size number (``50``, ``v3``,
#: ``b0``... after the letters), an underscore or the end of the name follows.
FAMILY_PATTERN = re.compile(r"^[a-z]+?(?=v?\d|_|$)")
#: The figure of Kornblith et al.'s averaged log-odds (:func:`scatter_figures`).
AVERAGED_FIGURE = "averaged_vs_source"


def family(model: str) -> str:
    """A model's family, from its name in the results table.

    ``trial:<id>`` is ``anynet``. A timm name is ``architecture[.pretrained_tag]`` (timm 1.0's
    ``split_model_name_tag``, ``timm/models/_registry.py`` lines 33-45: the tag follows the
    first dot); the family is read from the architecture alone, after a port prefix
    (:data:`PORT_PREFIX`), as the leading letters up to a version or size number, an
    underscore or the end (:data:`FAMILY_PATTERN`): ``resnet50`` -> ``resnet``,
    ``efficientnet_b0`` -> ``efficientnet``, ``deit_small_patch16_224`` -> ``deit``,
    ``vit_base_patch16_224.augreg_in21k`` -> ``vit``, ``mobilenetv3_large_100`` ->
    ``mobilenet``, ``tf_efficientnet_b3`` -> ``efficientnet``. Compound names keep their
    first word (``wide_resnet50_2`` -> ``wide``, ``regnety_016`` -> ``regnety``); a name that
    starts with no letter is its own family.
    """
    if model.startswith(TRIAL_PREFIX):
        return TRIAL_FAMILY
    architecture = PORT_PREFIX.sub("", model.split(".", 1)[0].lower())
    found = FAMILY_PATTERN.match(architecture)
    return found.group(0) if found else architecture


def _values(rows: list[dict], regime: str, metric: str, dataset: str | None) -> dict[str, float]:
    return {
        r["model"]: float(r["value"])
        for r in rows
        if r["regime"] == regime
        and r["metric"] == metric
        and (dataset is None or r["dataset"] == dataset)
        and r["status"] == "ok"
        and r["value"] not in (None, "")
    }


def _seconds(rows: list[dict], regime: str, metric: str, dataset: str) -> list[float]:
    return [
        float(r["seconds"])
        for r in rows
        if (r["regime"], r["metric"], r["dataset"], r["status"]) == (regime, metric, dataset, "ok")
    ]


def source_groups(rows: list[dict]) -> dict[str, dict[str, float]]:
    """``{source dataset: {model: source top-1}}`` from the ``source`` rows."""
    names = sorted({r["dataset"] for r in rows if r["regime"] == "source"})
    groups = {name: _values(rows, "source", "top1", name) for name in names}
    return {name: group for name, group in groups.items() if group}


def log_odds(accuracy: np.ndarray) -> np.ndarray:
    """Log-odds of accuracies in [0, 1], clipped as ``analysis.stats.logit_accuracy`` clips."""
    return logit_accuracy(100.0 * (1.0 - np.asarray(accuracy, dtype=float)))[0]


def _with_warning(result: dict[str, Any], n: int) -> dict[str, Any]:
    warning = few_models_warning(n)
    return result | {"warning": warning} if warning and n > 0 else result


def bootstrap_weighted_tau(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``scipy.stats.weightedtau(x[idx], y[idx])`` of every resample at once.

    scipy's default (``rank=True``, hyperbolic weigher ``1 / (r + 1)``, additive) is the mean
    of two tau-b-like ratios, one per ranking of the elements by decreasing ``(x, y)`` and by
    decreasing ``(y, x)`` (rank 0 the largest), in which a pair of elements weighs ``w_a +
    w_b``: (concordant - discordant weight) / sqrt(weight of the pairs not tied in x * weight
    of those not tied in y). In a resample the ``c_i`` copies of model ``i`` hold consecutive
    ranks from ``r_i`` (the copies of the models ranked above it), so together they weigh
    ``S_i = H(r_i + c_i) - H(r_i)`` (``H`` the harmonic numbers), and the pairs between the
    copies of ``i`` and of ``j`` weigh ``c_j S_i + c_i S_j`` (copies of one model are tied in
    both, so they count nowhere). Summed over the model pairs with a symmetric pair value
    ``M`` (the sign product, or not tied) that is ``Σ_i S_i (M c)_i``: one matrix product per
    ``M``, O(n²) per resample. Copies of one model, and distinct models with equal ``(x, y)``,
    are exchangeable, so their order among equal ranks does not change the value.

    Args:
        x: ``(n,)`` values of the models.
        y: ``(n,)`` values of the models.
        counts: ``(B, n)`` resample counts (``analysis.stats.resample_counts``).

    Returns:
        ``(B,)`` weighted tau; NaN where a resample is constant in x or y.
    """
    n = counts.shape[1]
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    # (B, n) sums over the partners j of model i: c_j times the pair value.
    agreement, untied_x, untied_y = (counts @ value for value in (sx * sy, np.abs(sx), np.abs(sy)))
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
    copies = np.rint(counts).astype(np.int64)
    taus = []
    for a, b in ((x, y), (y, x)):
        place = np.empty(n, dtype=np.int64)
        place[np.lexsort((b, a))] = np.arange(n)
        # before[j, i]: j is ranked above i (larger (a, b); equal ones by index, as lexsort).
        before = (place[:, None] > place[None, :]).astype(float)
        first = np.rint(counts @ before).astype(np.int64)
        weight = harmonic[first + copies] - harmonic[first]
        with np.errstate(invalid="ignore", divide="ignore"):
            taus.append(
                (weight * agreement).sum(axis=1)
                / np.sqrt((weight * untied_x).sum(axis=1) * (weight * untied_y).sum(axis=1))
            )
    return np.clip((taus[0] + taus[1]) / 2.0, -1.0, 1.0)


def rank_agreement(
    score: np.ndarray, target: np.ndarray, n_bootstrap: int, seed: int, names: Sequence[str]
) -> dict[str, Any]:
    """Kendall tau-b and weighted tau of ``score`` vs ``target`` with bootstrap intervals.

    Both intervals come from the same resamples of models (``analysis.stats.interval``:
    adaptive, at most ``n_bootstrap``; 0: none), each with its Monte-Carlo error ``mc_se``;
    ``warning`` below ``MIN_RELIABLE_MODELS`` models.
    """
    n = len(score)
    if n < MIN_MODELS or np.ptp(score) == 0 or np.ptp(target) == 0:
        both = plural(n, "model")
        reason = f"{both} with both, or a constant ranking: need {MIN_MODELS} that differ"
        return {"n_models": n, "kendall": None, "weighted_tau": None, "reason": reason}
    found = interval(
        {
            "kendall": lambda counts, a, b: bootstrap_kendall(a, b, counts),
            "weighted_tau": lambda counts, a, b: bootstrap_weighted_tau(a, b, counts),
        },
        n,
        names,
        Bootstrap(n_bootstrap, seed),
        [np.asarray(score, dtype=float), np.asarray(target, dtype=float)],
    )
    return _with_warning({"n_models": n} | found, n)


def _log_odds_correlations(
    values: np.ndarray,
    logits: np.ndarray,
    source: np.ndarray,
    n_bootstrap: int,
    seed: int,
    names: Sequence[str],
) -> dict[str, Any]:
    """Pearson r of ``logits`` (the log-odds of ``values``) with the log-odds of ``source``,
    and Spearman rho of ``values`` with ``source``, each with its bootstrap interval (one set
    of resamples of the models for both)."""
    return interval(
        {
            "pearson_logit": lambda counts, v, lv, s, ls: bootstrap_pearson(lv, ls, counts),
            "spearman": lambda counts, v, lv, s, ls: bootstrap_spearman(v, s, counts),
        },
        len(values),
        names,
        Bootstrap(n_bootstrap, seed),
        [values, logits, source, log_odds(source)],
    )


def versus_source(
    accuracy: np.ndarray,
    source: np.ndarray,
    n_bootstrap: int,
    seed: int,
    names: Sequence[str],
) -> dict[str, Any]:
    """Pearson r of log-odds and Spearman rho of a regime's accuracy vs source accuracy, over
    models of **one** source dataset, with bootstrap intervals.

    Args:
        accuracy: the regime's accuracies (fractions) of the models.
        source: their source top-1 (fractions), all on the same source dataset.
        n_bootstrap: most resamples (0: no interval).
        seed: bootstrap seed.
        names: ``(what is compared, the source)`` in words: the reason of an undefined
            result names them, and they seed the resamples.
    """
    accuracy, source = np.asarray(accuracy, dtype=float), np.asarray(source, dtype=float)
    n = len(accuracy)
    reason = undefined_reason(accuracy, source, (names[0], names[-1]))
    if reason is not None:
        return {"n_models": n, "pearson_logit": None, "spearman": None, "reason": reason}
    found = _log_odds_correlations(accuracy, log_odds(accuracy), source, n_bootstrap, seed, names)
    return _with_warning({"n_models": n} | found, n)


def morey_intervals(log_odds_table: np.ndarray, level: float = CI_LEVEL) -> dict[str, Any]:
    """Within-subject intervals of each model's mean log-odds over datasets.

    Cousineau (2005), "Confidence intervals in within-subject designs: A simpler solution to
    Loftus and Masson's method", with the correction of Morey (2008), "Confidence Intervals
    from Normalized Data: A correction to Cousineau (2005)", Tutorials in Quantitative Methods
    for Psychology 4(2), the error bars of Kornblith et al.'s Figure 2. The datasets are the
    subjects and the ``J`` models the conditions measured on each: every dataset's log-odds are
    centred on its mean over models (plus the grand mean), which removes how hard the dataset
    is (the between-subject variance that would swamp the differences between models); the
    spread of a model's centred values over the ``D`` datasets, inflated by Morey's
    ``sqrt(J / (J - 1))`` (the centring removes a share ``1/J`` of the variance), gives its
    standard error, and the interval is ``mean ± t(D - 1) · sd · sqrt(J / (J - 1)) /
    sqrt(D)``.

    Args:
        log_odds_table: ``(J models, D datasets)`` log-odds, complete.
        level: confidence level.

    Returns:
        ``{"level", "correction", "n_datasets", "mean", "low", "high", "half_width"}`` (the last
        four per model), or ``{"level", "reason"}`` with fewer than two models or datasets.
    """
    n_models, n_datasets = log_odds_table.shape
    if n_models < 2 or n_datasets < 2:
        return {
            "level": level,
            "reason": f"{plural(n_models, 'model')} on {plural(n_datasets, 'target dataset')}: "
            "a within-dataset interval needs 2 of each",
        }
    centred = log_odds_table - log_odds_table.mean(axis=0) + log_odds_table.mean()
    correction = float(np.sqrt(n_models / (n_models - 1)))
    spread = centred.std(axis=1, ddof=1) * correction / np.sqrt(n_datasets)
    half = stats.t.ppf(0.5 + level / 2.0, n_datasets - 1) * spread
    mean = centred.mean(axis=1)
    return {
        "level": level,
        "correction": correction,
        "n_datasets": n_datasets,
        "mean": mean.tolist(),
        "low": (mean - half).tolist(),
        "high": (mean + half).tolist(),
        "half_width": half.tolist(),
    }


def averaged_table(
    per_target: Mapping[str, Mapping[str, float]], source: Mapping[str, float]
) -> dict[str, Any]:
    """The complete (model x target) log-odds table of one regime over models of one source.

    The targets are those where the regime has a result of a model of this source; the
    models, those with a result on every one of them (an average over other targets would
    mix in their difficulty); the others are listed as ``excluded``.

    Returns:
        ``{"datasets", "models", "excluded", "log_odds"}`` (``(models, datasets)`` array).
    """
    datasets = sorted(d for d, values in per_target.items() if set(values) & set(source))
    models = sorted(m for m in source if datasets and all(m in per_target[d] for d in datasets))
    excluded = sorted(
        m for m in source if m not in models and any(m in per_target[d] for d in datasets)
    )
    table = np.array([[per_target[d][m] for d in datasets] for m in models], dtype=float)
    return {
        "datasets": datasets,
        "models": models,
        "excluded": excluded,
        "log_odds": log_odds(table.reshape(len(models), len(datasets))),
    }


def averaged_versus_source(
    per_target: Mapping[str, Mapping[str, float]],
    source: Mapping[str, float],
    n_bootstrap: int,
    seed: int,
    names: Sequence[str],
) -> dict[str, Any]:
    """Kornblith et al.'s headline statistic for one regime and one source dataset.

    Per model the mean over the target datasets of its accuracy's log-odds (Kornblith,
    Shlens, Le 2019, arXiv 1805.08974: Section 3 compares accuracies across datasets in
    log-odds, and Figure 2's y-axis is their average); over models, the Pearson r of that
    mean with the log-odds of source
    top-1 (and the Spearman rho), with bootstrap intervals over models; per model the Morey
    interval of its mean (:func:`morey_intervals`, Figure 2's error bars).

    Args:
        per_target: ``{target dataset: {model: accuracy}}`` of the regime.
        source: ``{model: source top-1}`` of the models of one source dataset.
        n_bootstrap: most resamples (0: no interval).
        seed: bootstrap seed.
        names: ``(the regime averaged, the source)`` in words (reasons, resample seed).

    Returns:
        ``{"n_models", "n_datasets", "datasets", "excluded_models", "pearson_logit",
        "spearman", "morey", "models"}`` (``models``: per model its family, source top-1 and
        log-odds, mean log-odds, the accuracy of that mean and its Morey interval); ``reason``
        when the correlation is undefined, ``warning`` below ``MIN_RELIABLE_MODELS`` models.
    """
    table = averaged_table(per_target, source)
    models, datasets = table["models"], table["datasets"]
    mean = table["log_odds"].mean(axis=1) if datasets else np.zeros(len(models))
    top1 = np.array([source[m] for m in models], dtype=float)
    morey = morey_intervals(table["log_odds"])
    result: dict[str, Any] = {
        "n_models": len(models),
        "n_datasets": len(datasets),
        "datasets": datasets,
        "excluded_models": table["excluded"],
        "morey": {k: v for k, v in morey.items() if k not in ("mean", "low", "high", "half_width")},
        "models": [
            {
                "model": m,
                "family": family(m),
                "source_top1": float(top1[i]),
                "source_log_odds": float(log_odds(top1[i])),
                "mean_log_odds": float(mean[i]),
                "mean_accuracy": float(1.0 / (1.0 + np.exp(-mean[i]))),
                "morey_low": morey["low"][i] if "low" in morey else None,
                "morey_high": morey["high"][i] if "high" in morey else None,
            }
            for i, m in enumerate(models)
        ],
    }
    reason = (
        f"no target result for the models with {names[-1]}"
        if not datasets
        else undefined_reason(mean, top1, (names[0], names[-1]))
    )
    if reason is not None:
        return result | {"pearson_logit": None, "spearman": None, "reason": reason}
    found = _log_odds_correlations(mean, mean, top1, n_bootstrap, seed, names)
    return _with_warning(result | found, len(models))


def family_summary(
    values: Mapping[str, Mapping[str, float]], key: str = "/".join(TARGET)
) -> dict[str, Any]:
    """Models grouped by family (:func:`family`) on one target.

    Args:
        values: ``{score or regime key: {model: value}}`` measured on the target.
        key: the key the ranking follows (fine-tuned top-1).

    Returns:
        ``families``: per family (best mean ``key`` first) its models and, per key, the mean
        over its models that have a value and their number; ``ranking``: one record per model
        (``model``, ``family``, ``rank`` by ``key``, 1 = best, ties sharing the best rank, and
        every value), grouped by family in that order, best first within a family.
    """
    models = sorted({m for per_model in values.values() for m in per_model})
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(family(m), []).append(m)
    ranked = values.get(key, {})
    order = sorted(ranked, key=lambda m: -ranked[m])
    ranks = dict(zip(order, stats.rankdata([-ranked[m] for m in order], method="min"), strict=True))
    families = {}
    for name, members in groups.items():
        means = {}
        for k, per_model in values.items():
            found = [per_model[m] for m in members if m in per_model]
            means[k] = {"mean": float(np.mean(found)) if found else None, "n_models": len(found)}
        families[name] = {"n_models": len(members), "models": members, "means": means}

    def best(name: str) -> tuple[bool, float, str]:
        mean = families[name]["means"].get(key, {}).get("mean")
        return (mean is None, -(mean or 0.0), name)

    families = {name: families[name] for name in sorted(families, key=best)}
    ranking = [
        {"model": m, "family": name, "rank": int(ranks[m]) if m in ranks else None}
        | {k: per_model.get(m) for k, per_model in values.items()}
        for name, entry in families.items()
        for m in sorted(entry["models"], key=lambda m: (m not in ranked, -ranked.get(m, 0.0), m))
    ]
    return {"families": families, "ranking": ranking}


def compare(
    rows: list[dict], n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """All the study's comparisons (see the module docstring).

    Args:
        rows: the long results table's rows (``components.transfer.study`` columns).
        n_bootstrap: most bootstrap resamples per interval (fewer once its endpoints are
            precise to ``MC_TOLERANCE``; 0: no intervals).
        seed: bootstrap seed.

    Returns:
        ``targets``: per target dataset ``scores_vs_finetune`` (per cheap score),
        ``regimes_vs_source`` (per source dataset, per accuracy regime), ``families`` and
        ``ranking`` (:func:`family_summary`); ``averaged_vs_source``: per source dataset and
        accuracy regime, Kornblith et al.'s statistic (:func:`averaged_versus_source`);
        ``families``: the study's models per family; ``settings``: how the intervals were made.
    """
    sources = source_groups(rows)
    datasets = sorted({r["dataset"] for r in rows if r["regime"] != "source"})
    targets: dict[str, Any] = {}
    for dataset in datasets:
        target = _values(rows, *TARGET, dataset)
        finetune_seconds = _seconds(rows, *TARGET, dataset)
        scores = {}
        for regime, metric in CHEAP_SCORES:
            values = _values(rows, regime, metric, dataset)
            shared = sorted(set(values) & set(target))
            result = rank_agreement(
                np.array([values[m] for m in shared]),
                np.array([target[m] for m in shared]),
                n_bootstrap,
                seed,
                (f"{regime}/{metric}", dataset),
            )
            seconds = _seconds(rows, regime, metric, dataset)
            cost = float(np.median(seconds)) if seconds else None
            ft_cost = float(np.median(finetune_seconds)) if finetune_seconds else None
            result["median_seconds"] = cost
            result["finetune_median_seconds"] = ft_cost
            result["cost_ratio"] = cost / ft_cost if cost is not None and ft_cost else None
            scores[f"{regime}/{metric}"] = result
        by_source: dict[str, dict[str, Any]] = {}
        for source_name, source in sources.items():
            regimes = {}
            for regime, metric in ACCURACY_SLICES:
                values = _values(rows, regime, metric, dataset)
                shared = sorted(set(values) & set(source))
                regimes[f"{regime}/{metric}"] = versus_source(
                    np.array([values[m] for m in shared]),
                    np.array([source[m] for m in shared]),
                    n_bootstrap,
                    seed,
                    (f"{regime}/{metric} on {dataset}", f"source top-1 on {source_name}"),
                )
            by_source[source_name] = regimes
        keyed = {
            f"{regime}/{metric}": _values(rows, regime, metric, dataset)
            for regime, metric in (TARGET, *CHEAP_SCORES)
        }
        targets[dataset] = {
            "scores_vs_finetune": scores,
            "regimes_vs_source": by_source,
        } | family_summary({k: v for k, v in keyed.items() if v})
    averaged = {
        source_name: {
            f"{regime}/{metric}": averaged_versus_source(
                {d: _values(rows, regime, metric, d) for d in datasets},
                source,
                n_bootstrap,
                seed,
                (f"{regime}/{metric} averaged over targets", f"source top-1 on {source_name}"),
            )
            for regime, metric in ACCURACY_SLICES
        }
        for source_name, source in sources.items()
    }
    models = sorted({r["model"] for r in rows})
    families: dict[str, list[str]] = {}
    for m in models:
        families.setdefault(family(m), []).append(m)
    return {
        "targets": targets,
        "averaged_vs_source": averaged,
        "families": dict(sorted(families.items())),
        "settings": {
            "n_bootstrap": n_bootstrap,
            "bootstrap_tolerance": MC_TOLERANCE,
            "seed": seed,
            "ci_level": CI_LEVEL,
            "min_reliable_models": MIN_RELIABLE_MODELS,
            "test_noise": "none",
        },
    }


def comparison_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """The comparison's headline values as flat MLflow metric names: ``kendall/<score>/<target>``
    and ``weighted_tau/...``, ``pearson_logit_vs_source/<source>/<regime>/<target>`` and
    Kornblith et al.'s ``pearson_logit_averaged_vs_source/<source>/<regime>``."""
    metrics: dict[str, float] = {}
    for dataset, parts in comparison["targets"].items():
        for score, result in parts["scores_vs_finetune"].items():
            for stat in ("kendall", "weighted_tau"):
                if result.get(stat):
                    metrics[f"{stat}/{score}/{dataset}"] = result[stat]["value"]
        for source, regimes in parts["regimes_vs_source"].items():
            for regime, result in regimes.items():
                if result.get("pearson_logit"):
                    name = f"pearson_logit_vs_source/{source}/{regime}/{dataset}"
                    metrics[name] = result["pearson_logit"]["value"]
    for source, regimes in comparison["averaged_vs_source"].items():
        for regime, result in regimes.items():
            if result.get("pearson_logit"):
                name = f"pearson_logit_averaged_vs_source/{source}/{regime}"
                metrics[name] = result["pearson_logit"]["value"]
    return metrics


def scatter_figures(rows: list[dict], out_dir: str | Path) -> list[str]:
    """One PNG per target: each cheap score (x) against fine-tuned accuracy (y); and
    ``averaged_vs_source.png`` (:data:`AVERAGED_FIGURE`) when some regime has an average over
    targets: per accuracy regime, source top-1 (x) against the mean over targets (y), both in
    log-odds, with each model's Morey interval, one colour per source dataset (Kornblith et
    al.'s Figure 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    datasets = sorted({r["dataset"] for r in rows if r["regime"] == TARGET[0]})
    for dataset in datasets:
        target = _values(rows, *TARGET, dataset)
        figure = Figure(figsize=(3.2 * len(CHEAP_SCORES), 3.0), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, len(CHEAP_SCORES), squeeze=False)[0]
        for ax, (regime, metric) in zip(axes, CHEAP_SCORES, strict=True):
            values = _values(rows, regime, metric, dataset)
            shared = sorted(set(values) & set(target))
            ax.scatter([values[m] for m in shared], [target[m] for m in shared], s=14)
            ax.set_xlabel(metric)
            ax.set_ylabel("fine-tuned top-1")
            ax.set_title(f"{dataset}: {regime}", fontsize=9)
        path = out_dir / f"scores_vs_finetune_{dataset}.png"
        figure.savefig(path, dpi=90)
        written.append(str(path))
    averaged = _averaged_figure(rows, out_dir / f"{AVERAGED_FIGURE}.png")
    return written + ([averaged] if averaged else [])


def _averaged_figure(rows: list[dict], path: Path) -> str | None:
    """Kornblith et al.'s Figure 2 of this study (see :func:`scatter_figures`), or None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sources = source_groups(rows)
    datasets = sorted({r["dataset"] for r in rows if r["regime"] != "source"})
    panels = []
    for regime, metric in ACCURACY_SLICES:
        per_target = {d: _values(rows, regime, metric, d) for d in datasets}
        groups = {name: averaged_table(per_target, source) for name, source in sources.items()}
        groups = {name: g for name, g in groups.items() if g["models"] and g["datasets"]}
        if groups:
            panels.append((f"{regime}/{metric}", groups))
    if not panels:
        return None
    figure = Figure(figsize=(3.4 * len(panels), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, groups) in zip(axes, panels, strict=True):
        for name, group in groups.items():
            mean = group["log_odds"].mean(axis=1)
            morey = morey_intervals(group["log_odds"])
            x = log_odds(np.array([sources[name][m] for m in group["models"]]))
            errors = morey.get("half_width")
            ax.errorbar(x, mean, yerr=errors, fmt="o", ms=4, capsize=2, label=name)
        ax.set_xlabel("source top-1 (log-odds)")
        ax.set_ylabel("mean log-odds over targets")
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7, title="source", title_fontsize=7)
    figure.savefig(path, dpi=90)
    return str(path)
