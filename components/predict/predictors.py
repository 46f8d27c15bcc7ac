"""Predicted rankings of the architectures on the target, and the choice of ``k`` to train.

Every predictor maps each architecture to a *predicted goodness* (higher = predicted to train
better on the target):

* **a cheap score** (kNN top-1, kNN top-5 fraction, LogME, LEEP, linear probe; the transfer
  study's rows of each population model on the target): per source dataset, the mean score of
  an architecture's models (one per training seed) is ranked among the architectures, the rank
  divided by their number; an architecture's goodness is the mean of these normalised ranks
  over the source datasets. With one source dataset this is the score's own ranking; with
  several, no source's score scale dominates.
* **the source ranking** (Tuggener, Schmidhuber, Stadelmann 2021, "Is it enough to optimize
  CNN architectures on ImageNet?", arXiv 2103.09108: what does not carry over): per source
  dataset, minus the mean top-1 error there (``source:<dataset>``); with several sources also
  their pooled ranking (``source``), built like a score's.
* **random**: a seeded random ranking; its agreement is compared with its null distribution
  (:mod:`components.predict.agreement`).

**The choice of k** (:func:`stratified_choice`): the architectures are ordered by the
consensus of the cheap scores (the mean of their normalised ranks; the source ranking when no
score could be computed), best first, cut into ``k`` contiguous strata of as equal size as
possible (``numpy.array_split``), and one architecture is drawn uniformly from each stratum
with a generator seeded by ``seed``. The trained sample then spans the whole predicted range
(top, middle and bottom), so tau measures the ranking, not one end of it; ``k`` = all
architectures trains every one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from components.predict.population import PopulationModel
from components.transfer.compare import CHEAP_SCORES

RANDOM = "random"
SOURCE = "source"
SOURCE_PREFIX = "source:"


def score_keys(regimes: Iterable[str]) -> list[str]:
    """The cheap scores the regimes give, as ``regime/metric`` keys in report order."""
    chosen = set(regimes)
    return [f"{regime}/{metric}" for regime, metric in CHEAP_SCORES if regime in chosen]


def normalized_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each key's rank among ``values`` (1 = lowest value; ties share their mean rank, as
    ``scipy.stats.rankdata``), divided by the number of keys: in (0, 1], 1 = highest."""
    from scipy import stats

    names = sorted(values)
    ranks = stats.rankdata([values[name] for name in names]) / len(names)
    return {name: float(rank) for name, rank in zip(names, ranks, strict=True)}


def pooled(per_group: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean over groups (source datasets, scores) of each architecture's normalised rank
    within the group; an architecture missing from a group is averaged over the others."""
    ranks: dict[str, list[float]] = {}
    for values in per_group.values():
        if values:
            for name, rank in normalized_ranks(values).items():
                ranks.setdefault(name, []).append(rank)
    return {name: float(np.mean(r)) for name, r in sorted(ranks.items())}


def _by_source(
    models: list[PopulationModel], values: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per source dataset, each architecture's mean of ``values`` (by trial id) over its
    models there (its training seeds)."""
    collected: dict[str, dict[str, list[float]]] = {}
    for model in models:
        if model.trial_id in values:
            per_arch = collected.setdefault(model.source, {})
            per_arch.setdefault(model.architecture, []).append(values[model.trial_id])
    return {
        source: {arch: float(np.mean(v)) for arch, v in sorted(per_arch.items())}
        for source, per_arch in sorted(collected.items())
    }


def score_values(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """A cheap score's value per trial id, from the transfer study's rows (``ok`` only)."""
    from components.transfer.features import TRIAL_PREFIX

    regime, metric = key.split("/")
    return {
        row["model"].removeprefix(TRIAL_PREFIX): float(row["value"])
        for row in rows
        if row["regime"] == regime
        and row["metric"] == metric
        and row["status"] == "ok"
        and row["value"] is not None
        and np.isfinite(float(row["value"]))
    }


def score_seconds(rows: list[dict[str, Any]], key: str) -> float:
    """What a cheap score cost over the population: the sum of its rows' seconds (each row's
    feature extraction of the splits it uses included, as the transfer study measures it)."""
    regime, metric = key.split("/")
    return float(
        sum(
            float(row["seconds"])
            for row in rows
            if (row["regime"], row["metric"], row["status"]) == (regime, metric, "ok")
        )
    )


def random_ranking(architectures: Iterable[str], seed: int) -> dict[str, float]:
    """A seeded random goodness per architecture (a permutation of 1..n)."""
    names = sorted(architectures)
    rng = np.random.default_rng([seed, zlib.crc32(RANDOM.encode())])
    return {name: float(r) for name, r in zip(names, rng.permutation(len(names)) + 1, strict=True)}


def predict(
    models: list[PopulationModel], rows: list[dict[str, Any]], scores: list[str], seed: int
) -> dict[str, dict[str, float]]:
    """Every predictor's goodness per architecture (see the module docstring).

    Args:
        models: the population.
        rows: the transfer study's rows of the population on the target.
        scores: ``regime/metric`` keys of the cheap scores (:func:`score_keys`).
        seed: seed of the random ranking.

    Returns:
        Predictor key -> architecture -> goodness (higher = predicted better); a score without
        any usable value is left out.
    """
    out: dict[str, dict[str, float]] = {}
    for key in scores:
        values = pooled(_by_source(models, score_values(rows, key)))
        if values:
            out[key] = values
    sources = _by_source(models, {m.trial_id: -m.source_error for m in models})
    for source, values in sources.items():
        out[f"{SOURCE_PREFIX}{source}"] = values
    if len(sources) > 1:
        out[SOURCE] = pooled(sources)
    out[RANDOM] = random_ranking({m.architecture for m in models}, seed)
    return out


def source_baseline(predictions: dict[str, Any]) -> str:
    """The key of "the source ranking": the pooled one with several source datasets, else the
    one source's."""
    if SOURCE in predictions:
        return SOURCE
    return next(key for key in predictions if key.startswith(SOURCE_PREFIX))


def consensus(predictions: dict[str, dict[str, float]], scores: list[str]) -> dict[str, float]:
    """The cheap scores' consensus (mean normalised rank), or the source ranking when no score
    could be computed: what the choice of k is stratified over."""
    present = {key: predictions[key] for key in scores if key in predictions}
    return pooled(present) if present else predictions[source_baseline(predictions)]


def predicted_order(goodness: dict[str, float]) -> list[str]:
    """Architectures best first (ties: by name, so the order is reproducible)."""
    return sorted(goodness, key=lambda name: (-goodness[name], name))


def stratified_choice(goodness: dict[str, float], k: int, seed: int) -> list[str]:
    """``k`` architectures, one drawn (seeded) from each of ``k`` contiguous strata of the
    predicted order; returned best predicted first.

    Raises:
        ValueError: for k outside [1, number of architectures].
    """
    order = predicted_order(goodness)
    if not 1 <= k <= len(order):
        raise ValueError(f"k={k}: choose between 1 and the {len(order)} ranked architectures")
    rng = np.random.default_rng([seed, zlib.crc32(b"stratified-choice")])
    strata = np.array_split(np.arange(len(order)), k)
    return [order[int(rng.choice(stratum))] for stratum in strata]
