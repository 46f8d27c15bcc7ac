"""How well each predictor ranked the architectures that were trained on the target.

For every predictor, over the trained architectures it ranks (n = the k trained, fewer when a
score failed for some): Kendall tau-b and weighted tau (hyperbolic weights: do the best agree)
of the predicted goodness against trained accuracy (100 - mean top-1 error over the training
seeds), with percentile bootstrap intervals over architectures
(:func:`components.transfer.compare.rank_agreement`, ``analysis.stats``' resampling); the
**regret** of picking the predicted best of the trained architectures: its error minus the
best trained error, in points; and, against the source ranking, the paired bootstrap interval
of the difference in tau (both taus on the same resamples).

The **random** predictor is judged by its null distribution: its expected tau is 0 (a random
ranking is as likely reversed as not), and the 95 % interval of ``random_draws`` seeded random
rankings' taus at the same n says how far chance alone reaches; its regret is the expected
regret of a uniform pick. The seeded draw that the report shows is one of them.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from scipy import stats

from components.predict.predictors import RANDOM


def _aligned(
    predicted: dict[str, float], trained: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted(set(predicted) & set(trained))
    goodness = np.array([predicted[name] for name in names], dtype=float)
    accuracy = np.array([100.0 - trained[name] for name in names], dtype=float)
    return names, goodness, accuracy


def regret(predicted: dict[str, float], trained: dict[str, float]) -> dict[str, Any] | None:
    """The predicted best of the trained architectures against the best trained one.

    Returns:
        ``{"pick", "pick_error", "best", "best_error", "value"}`` (``value``: points of top-1
        error lost by the pick; ties in the prediction go to the first by name), or None when no
        trained architecture is predicted.
    """
    names = sorted(set(predicted) & set(trained))
    if not names:
        return None
    pick = min(names, key=lambda name: (-predicted[name], name))
    best = min(names, key=lambda name: (trained[name], name))
    return {
        "pick": pick,
        "pick_error": trained[pick],
        "best": best,
        "best_error": trained[best],
        "value": trained[pick] - trained[best],
    }


def evaluate(
    key: str,
    predicted: dict[str, float],
    trained: dict[str, float],
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """Kendall tau-b and weighted tau with bootstrap intervals, n, and the regret."""
    from components.transfer.compare import rank_agreement

    _, goodness, accuracy = _aligned(predicted, trained)
    result = rank_agreement(goodness, accuracy, n_bootstrap, seed, (key, "trained"))
    return result | {"regret": regret(predicted, trained)}


def random_null(
    trained: dict[str, float], draws: int, seed: int, drawn: dict[str, float]
) -> dict[str, Any]:
    """The random predictor: expected tau 0 with the 95 % interval of ``draws`` random
    rankings' taus, the seeded draw ``drawn``'s own taus, and the expected regret.

    Args:
        trained: trained top-1 error per architecture.
        draws: random rankings in the null distribution.
        seed: their seed.
        drawn: the random predictor's own ranking (goodness per architecture).
    """
    from analysis.stats import percentile_ci

    names = sorted(trained)
    accuracy = np.array([100.0 - trained[name] for name in names])
    n = len(names)
    rng = np.random.default_rng([seed, zlib.crc32(b"random-null")])
    kendall, weighted = np.empty(draws), np.empty(draws)
    for i in range(draws):
        ranking = rng.permutation(n).astype(float)
        kendall[i] = stats.kendalltau(ranking, accuracy).statistic
        weighted[i] = stats.weightedtau(ranking, accuracy).statistic
    own = evaluate(RANDOM, drawn, trained, 0, seed)
    errors = np.array([trained[name] for name in names])
    return {
        "n_models": n,
        "kendall": {"value": 0.0, "mean_of_draws": float(np.nanmean(kendall))}
        | percentile_ci(kendall),
        "weighted_tau": {"value": 0.0, "mean_of_draws": float(np.nanmean(weighted))}
        | percentile_ci(weighted),
        "n_draws": draws,
        "draw": {"kendall": own["kendall"], "weighted_tau": own["weighted_tau"]},
        "regret": {
            "value": float(errors.mean() - errors.min()),
            "expected": True,
            "best": min(names, key=lambda name: (trained[name], name)),
            "best_error": float(errors.min()),
        },
    }


def versus_source(
    score: dict[str, float],
    source: dict[str, float],
    trained: dict[str, float],
    n_bootstrap: int,
    seed: int,
    names: tuple[str, str],
) -> dict[str, Any] | None:
    """Kendall tau of ``score`` minus that of ``source`` over the architectures both rank, with
    a paired bootstrap interval (the same resamples of architectures for both), or None with
    fewer than three shared architectures or without resamples."""
    from analysis.stats import MIN_MODELS, Bootstrap, bootstrap_kendall, interval

    shared = sorted(set(score) & set(source) & set(trained))
    if len(shared) < MIN_MODELS or n_bootstrap < 1:
        return None
    a = np.array([score[name] for name in shared], dtype=float)
    b = np.array([source[name] for name in shared], dtype=float)
    target = np.array([100.0 - trained[name] for name in shared])
    if np.ptp(a) == 0 or np.ptp(b) == 0 or np.ptp(target) == 0:
        return None
    value = stats.kendalltau(a, target).statistic - stats.kendalltau(b, target).statistic

    def difference(counts: np.ndarray) -> np.ndarray:
        return bootstrap_kendall(a, target, counts) - bootstrap_kendall(b, target, counts)

    # Adaptive like every interval of the project: resamples until the endpoints are precise.
    ci = interval({"delta": difference}, len(shared), names, Bootstrap(n_bootstrap, seed))
    return {"n_models": len(shared)} | ci["delta"] | {"value": float(value)}
