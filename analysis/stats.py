"""Statistics of the architecture-performance relationship (APR).

Pure functions on numpy arrays. Errors are in percent throughout; "better" means lower
error. Results are plain dicts of Python scalars so they go straight into ``summary.json``;
a statistic that cannot be computed is ``None`` and its dict carries a ``reason``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.words import plural

MIN_MODELS = 3
# Statistics over fewer models than this carry a warning in summary.json and the reports. The
# percentile interval stays honest in simulations down to 8 models, but it is wide (a 95 %
# interval of rho over 8 models spans about half of [-1, 1]), every model moves the statistic
# in coarse steps (one of 8 models takes part in 7 of Kendall's 28 pairs), and a resample of n
# models holds only about 1 - (1 - 1/n)^n = 66 % distinct ones (5 of 8), so the bootstrap
# distribution is lumpy and its tails rest on a handful of models. Around 10 models the steps
# and the lumps become small against the interval: the usual rule of thumb for a rank
# correlation.
MIN_RELIABLE_MODELS = 10
CI_LEVEL = 0.95
# Accuracies are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, so 0 % or 100 %
# accuracy gives a large finite log-odds instead of an infinity (1e-4 = 0.01 % accuracy).
LOGIT_EPS = 1e-4
# Precision-driven bootstrap (see Bootstrap): a pilot of PILOT_RESAMPLES, then more until the
# Monte-Carlo standard error of each 95 % percentile endpoint (endpoint_se) is below
# MC_TOLERANCE, at most DEFAULT_RESAMPLES (or what the caller allows, up to MAX_RESAMPLES).
# For a roughly normal bootstrap distribution with standard deviation sd that takes about
# (2.67 sd / MC_TOLERANCE)^2 resamples (2.67 = sqrt(0.025 * 0.975) / phi(1.96)): ~140,000 for
# a rank correlation of 8 models (sd ~ 0.28), ~2,000 for 500 models, the pilot for 15,625.
# A resample costs about n cells of work, so the count needed costs about the same at every n
# but the smallest, where a resample is cheapest (200,000 resamples of 8 models: ~0.4 s for
# Spearman, Kendall and log-odds r). The hard bound keeps a user-set count from running for
# hours: 1,000,000 resamples of 8 models take ~2 s, of 500 models minutes.
PILOT_RESAMPLES = 200
MC_TOLERANCE = 0.002
DEFAULT_RESAMPLES = 200_000
MAX_RESAMPLES = 1_000_000
# Each round after the pilot draws enough resamples for the tolerance by the last estimate
# (the standard error falls as 1 / sqrt(B)), with a margin, growing the total by at least
# ROUND_GROWTH (a low estimate costs one more round, not many) and at most ROUND_JUMP (a
# high estimate from the few resamples of the pilot cannot overshoot by much: the next round
# estimates again from more).
ROUND_MARGIN = 1.1
ROUND_GROWTH = 1.25
ROUND_JUMP = 4.0
# Normal scores at which endpoint_se evaluates the resamples' quantile function.
SE_GRID = np.linspace(-3.0, 3.0, 25)
# Resamples are processed in batches of about this many (resample, model) cells.
BATCH_ELEMENTS = 2_000_000
# The statistics of a batch are computed in blocks of about this many cells, which keeps their
# temporaries in the CPU's cache, and of at least BLOCK_ROWS resamples, which keeps the calls
# per block few at tens of thousands of models.
BLOCK_ELEMENTS = 65_536
BLOCK_ROWS = 128
# Up to this many models, Kendall's tau of the resamples compares every pair of models at
# once (n^2 cells per resample, no sort per resample): 2-3x faster than the O(n log n)
# inversion count at 8-16 models with test-set noise, still faster at 48 (2 cores).
PAIRWISE_MAX_MODELS = 32
# How the intervals may include the noise of a finite test set (see Measured): "binomial"
# redraws each measured error per resample, "none" resamples the models only, "auto" is
# "binomial" where the test-set size is known.
TEST_NOISE = ("auto", "binomial", "none")

#: A statistic of the bootstrap: ``(counts, *values) -> (B,)`` values, where ``counts`` is the
#: ``(B, n)`` count matrix of :func:`resample_counts` and each of ``values`` is ``(n,)`` or,
#: for a :class:`Measured` input, ``(B, n)`` (its values redrawn per resample).
Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Measured:
    """Per-model proportions measured on a finite test set, for binomial test-set noise.

    A model's error on ``n_test`` test images is one draw of ``Binomial(n_test, p) / n_test``
    around its true error ``p``; with 72 test images an error of 5.6 % has a standard error of
    2.7 points. Each bootstrap resample redraws every model's value from that binomial at the
    measured value (a parametric bootstrap of the test set on top of the resampling of the
    models; copies of one model in a resample share its draw). Per-image correctness would
    allow resampling the test images themselves; results tables hold one error per model.

    Attributes:
        values: ``(n,)`` proportions (errors or accuracies) in units of ``scale``.
        n_test: test images each value was measured on.
        scale: 100 for percent, 1 for fractions.
    """

    values: np.ndarray
    n_test: int
    scale: float = 100.0

    def __post_init__(self) -> None:
        if int(self.n_test) != self.n_test or self.n_test < 1:
            raise ValueError(f"n_test must be a positive whole number of images, got {self.n_test}")

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, n)`` values redrawn from their binomial, in units of ``scale``."""
        p = np.clip(np.asarray(self.values, dtype=float) / self.scale, 0.0, 1.0)
        n_test = int(self.n_test)
        return rng.binomial(n_test, p, size=(size, p.size)) * (self.scale / n_test)


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap settings shared by all pairwise statistics.

    Attributes:
        n_resamples: Most bootstrap resamples per pair (0 disables confidence intervals; at
            most ``MAX_RESAMPLES``).
        seed: Base seed; each dataset pair derives its own stream from it and the pair's
            names, so a pair's interval does not depend on which other datasets exist.
        tolerance: Monte-Carlo precision to reach: after a pilot of ``PILOT_RESAMPLES``,
            resamples are added in rounds until the standard error of every interval endpoint
            (:func:`endpoint_se`) is below ``tolerance`` or ``n_resamples`` are drawn; the
            intervals then carry the precision reached (``mc_se``, :func:`percentile_ci`).
            0: always draw ``n_resamples``.

    Raises:
        ValueError: ``n_resamples`` outside ``[0, MAX_RESAMPLES]`` or a negative tolerance.
    """

    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    tolerance: float = MC_TOLERANCE

    def __post_init__(self) -> None:
        if not 0 <= self.n_resamples <= MAX_RESAMPLES:
            raise ValueError(
                f"n_bootstrap (resamples) must be between 0 and {MAX_RESAMPLES:,}, got "
                f"{self.n_resamples:,} (the intervals stop earlier once their endpoints are "
                f"precise to {MC_TOLERANCE})"
            )
        if not self.tolerance >= 0:
            raise ValueError(f"bootstrap tolerance must be >= 0, got {self.tolerance}")

    def generator(self, *names: str) -> np.random.Generator:
        """The random stream of one pair (seeded by ``seed`` and the pair's names)."""
        return np.random.default_rng([self.seed, *(zlib.crc32(name.encode()) for name in names)])

    def indices(self, n: int, *names: str) -> np.ndarray:
        """All ``n_resamples`` resampled model indices of a pair, shape ``(n_resamples, n)``."""
        return self.generator(*names).integers(0, n, size=(self.n_resamples, n))

    def samples(
        self,
        statistics: Mapping[str, Statistic],
        n: int,
        *names: str,
        data: Sequence[np.ndarray | Measured] = (),
    ) -> dict[str, np.ndarray]:
        """Bootstrap distribution of each statistic, resampling ``n`` models.

        Args:
            statistics: Name -> function of the ``(B, n)`` count matrix and the resampled
                ``data`` (:data:`Statistic`) returning ``(B,)`` values.
            n: Number of models.
            names: The pair's names (seed of its stream).
            data: Per-model inputs passed to every statistic after the counts: arrays as they
                are, :class:`Measured` values redrawn per resample (test-set noise).

        Returns:
            Name -> values of the resamples drawn (all ``n_resamples`` with a zero tolerance,
            else as many as the tolerance needs, at most ``n_resamples``; see the class
            docstring). The pilot is the start of the same stream, so stopping early never
            changes the resamples drawn.
        """
        rng = self.generator(*names)
        drawn: dict[str, list[np.ndarray]] = {key: [] for key in statistics}

        def draw(size: int) -> None:
            # Batches keep the (B, n) count matrices small at tens of thousands of models.
            step = max(1, BATCH_ELEMENTS // max(n, 1))
            for start in range(0, size, step):
                rows = min(step, size - start)
                counts = resample_counts(rng.integers(0, n, size=(rows, n)), n)
                values = [d.draw(rng, rows) if isinstance(d, Measured) else d for d in data]
                # The statistics are row by row: blocks of rows give the same values, from
                # temporaries that stay in the CPU's cache (about 1.5x faster at 8 models).
                block = max(BLOCK_ROWS, BLOCK_ELEMENTS // max(n, 1))
                for first in range(0, rows, block):
                    part = slice(first, first + block)
                    inputs = [v[part] if np.ndim(v) == 2 else v for v in values]
                    for key, function in statistics.items():
                        drawn[key].append(function(counts[part], *inputs))

        total = min(self.n_resamples, PILOT_RESAMPLES) if self.tolerance > 0 else self.n_resamples
        draw(total)
        while total < self.n_resamples:
            worst = max((endpoint_se(np.concatenate(v)) or 0.0 for v in drawn.values()), default=0)
            if worst <= self.tolerance:
                break
            needed = total * ROUND_MARGIN * (worst / self.tolerance) ** 2
            grown = np.clip(needed, total * ROUND_GROWTH, total * ROUND_JUMP)
            more = min(self.n_resamples, int(np.ceil(grown)))
            draw(more - total)
            total = more
        return {key: np.concatenate(v) if v else np.empty(0) for key, v in drawn.items()}


def interval(
    statistics: Mapping[str, Statistic],
    n: int,
    names: Sequence[str],
    bootstrap: Bootstrap,
    data: Sequence[np.ndarray | Measured] = (),
) -> dict[str, dict]:
    """Each statistic's value and percentile interval with the Monte-Carlo precision reached.

    Args:
        statistics: Name -> :data:`Statistic` (a function of the counts and ``data``).
        n: Number of models.
        names: Names that seed the stream (the two sides compared, say).
        bootstrap: Resample count, seed and tolerance.
        data: Per-model inputs of the statistics (:meth:`Bootstrap.samples`).

    Returns:
        Name -> ``{"value", "ci_low", "ci_high", "n_boot_valid", "resamples", "mc_se"}``:
        ``value`` is the statistic of the models as observed (every count 1, no test-set
        noise), the rest :func:`percentile_ci` of its resamples.
    """
    observed = [d.values if isinstance(d, Measured) else d for d in data]
    drawn = bootstrap.samples(statistics, n, *names, data=data)
    return {
        key: {"value": float(function(np.ones((1, n)), *observed)[0])} | percentile_ci(drawn[key])
        for key, function in statistics.items()
    }


def endpoint_se(samples: np.ndarray, level: float = CI_LEVEL) -> float | None:
    """Monte-Carlo standard error of a percentile interval's endpoints (the larger of two).

    Estimated from the resamples themselves, without assuming a shape of the bootstrap
    distribution (skewed at small n, lumpy where a rank statistic takes few values), after
    Maritz and Jarrett (1978), "A note on estimating the variance of the sample median": an
    endpoint is the resample at quantile level ``q`` (0.025 or 0.975), and the level that the
    resample of that rank has in the bootstrap distribution varies from run to run by about
    ``d = sqrt(q (1 - q) / B)`` (the order statistic's Beta distribution, near normal). So
    the standard deviation of ``Q(q + d z)`` over ``z ~ N(0, 1)``, with ``Q`` the resamples'
    quantile function, is the endpoint's: for a smooth distribution the slope of ``Q`` times
    ``d``; in a lumpy one, 0 well inside a lump (the same endpoint under any seed) and up to
    half the gap to the next lump at its edge (one seed gives the one, the next the other).

    Returns:
        The standard error, or None with fewer than 2 finite resamples.
    """
    valid = samples[np.isfinite(samples)]
    if valid.size < 2:
        return None
    tail = (1.0 - level) / 2.0
    d = np.sqrt(tail * (1.0 - tail) / valid.size)
    weights = np.exp(-(SE_GRID**2) / 2.0)
    weights /= weights.sum()
    levels = np.clip(np.concatenate([tail + d * SE_GRID, 1.0 - tail + d * SE_GRID]), 0.0, 1.0)
    values = np.percentile(valid, 100.0 * levels).reshape(2, -1)
    spread = values - (values @ weights)[:, None]
    return float(np.sqrt((spread**2 @ weights).max()))


def supported_decimals(mc_se: float | None, most: int = 3) -> int:
    """How many decimals of an interval endpoint its Monte-Carlo error supports.

    The most decimals whose last digit (``10**-d``) is at least twice the standard error, so
    that another bootstrap seed changes a printed endpoint by one last digit at most in most
    runs; ``most`` when the error is 0 or unknown.
    """
    if not mc_se:
        return most
    return int(min(most, max(0, np.floor(-np.log10(2.0 * mc_se)))))


def few_models_warning(n: int) -> str | None:
    """The warning for a statistic over ``n`` models, or None from ``MIN_RELIABLE_MODELS``."""
    if n >= MIN_RELIABLE_MODELS:
        return None
    return (
        f"only {plural(n, 'model')} (fewer than {MIN_RELIABLE_MODELS}): the value moves in "
        "coarse steps with single models and the interval is wide; read it as indicative"
    )


def ecdf(errors: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Empirical CDF ``F(e) = #{models with error < e} / n`` evaluated on ``grid``."""
    ordered = np.sort(np.asarray(errors, dtype=float))
    return np.searchsorted(ordered, grid, side="left") / ordered.size


def describe(errors: np.ndarray) -> dict:
    """Count, mean, std and quantiles of one dataset's errors (NaN entries ignored)."""
    values = np.asarray(errors, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n_models": 0, "reason": "no model with a usable result"} | dict.fromkeys(
            (
                "mean_error",
                "std_error",
                "min_error",
                "q25_error",
                "median_error",
                "q75_error",
                "max_error",
            )
        )
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {
        "n_models": int(values.size),
        "mean_error": float(values.mean()),
        # ddof=0 so a single model gives 0 rather than an undefined value.
        "std_error": float(values.std()),
        "min_error": float(values.min()),
        "q25_error": float(q25),
        "median_error": float(median),
        "q75_error": float(q75),
        "max_error": float(values.max()),
    }


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` models occurs in each resample: ``(B, n)`` floats.

    A bootstrap resample is a multiset of the original models, so every statistic below is
    computed from these counts with array operations on all resamples at once.
    """
    n_resamples = idx.shape[0]
    offsets = (np.arange(n_resamples)[:, None] * n + idx).ravel()
    counts = np.bincount(offsets, minlength=n_resamples * n).reshape(n_resamples, n)
    return counts.astype(float)


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r per row of ``weights`` (``(B, n)``), each model weighted by its count.

    ``x`` and ``y`` are ``(n,)`` or ``(B, n)``. With integer counts this equals the plain
    Pearson r of the resample with every model repeated ``count`` times. Rows where either
    side is constant give NaN (the correlation is undefined there).
    """
    total = weights.sum(axis=1, keepdims=True)
    xc = x - (weights * x).sum(axis=1, keepdims=True) / total
    yc = y - (weights * y).sum(axis=1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (weights * xc * yc).sum(1) / np.sqrt(
            (weights * xc * xc).sum(1) * (weights * yc * yc).sum(1)
        )
    return np.clip(r, -1.0, 1.0)


def resampled_ranks(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average rank (ties share the mean position, as in ``scipy.stats.rankdata``) of each
    original model within each resample: ``(B, n)``.

    The rank of a value is ``#smaller + (#equal + 1) / 2``, counted with multiplicities;
    grouping equal values and a cumulative sum over the groups gives it for all resamples.
    ``x`` is ``(n,)``, or ``(B, n)`` with each resample's own values (test-set noise).
    """
    group = _dense_ranks(x)
    per_group = _group_sums(group, counts)
    below = np.cumsum(per_group, axis=1) - per_group
    return _take(below + (per_group + 1.0) / 2.0, group)


def bootstrap_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman rho of every resample (given as :func:`resample_counts`) at once.

    Each value equals ``scipy.stats.spearmanr(x[idx[b]], y[idx[b]])``: the Pearson r of the
    average ranks within the resample. ``x`` and ``y`` are ``(n,)`` or ``(B, n)``.
    """
    return weighted_pearson(resampled_ranks(x, counts), resampled_ranks(y, counts), counts)


def bootstrap_kendall(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every resample (given as :func:`resample_counts`) at once.

    Each value equals ``scipy.stats.kendalltau(x[idx[b]], y[idx[b]])`` (tau-b), computed as
    scipy does, ``(n0 - n1 - n2 + n3 - 2 * discordant) / sqrt((n0 - n1) * (n0 - n2))``, from
    pair counts weighted by how often each model occurs: ``n0`` all pairs, ``n1``/``n2``
    pairs tied in x/y, ``n3`` tied in both (copies of one model are tied in both) and the
    discordant pairs as a weighted inversion count of y in x order (:func:`_inversions`),
    O(n log n) per resample and vectorised over the resamples; up to
    :data:`PAIRWISE_MAX_MODELS` models, from every pair at once (:func:`_pairwise_kendall`,
    the same value). ``x`` and ``y`` are ``(n,)`` or ``(B, n)`` (each resample's own values:
    test-set noise, sorted per resample).
    """
    if counts.shape[1] <= PAIRWISE_MAX_MODELS:
        return _pairwise_kendall(x, y, counts)
    return _inversion_kendall(x, y, counts)


def _inversion_kendall(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`bootstrap_kendall` by a weighted inversion count, O(n log n) per resample."""
    n = counts.shape[1]
    rx, ry = _dense_ranks(x), _dense_ranks(y)
    rows = max(rx.shape[0], ry.shape[0])
    rx, ry = np.broadcast_to(rx, (rows, n)), np.broadcast_to(ry, (rows, n))
    # Models in x order, ties by y: within a run of equal x the y ranks ascend, so tied-x
    # pairs are never inversions.
    xy = rx * n + ry
    order = np.argsort(xy, axis=1, kind="stable")
    n0 = _tied_pairs(counts.sum(axis=1, keepdims=True))
    n1 = _tied_pairs(_group_sums(rx, counts))
    n2 = _tied_pairs(_group_sums(ry, counts))
    n3 = _tied_pairs(_group_sums(_dense_ranks(xy), counts))
    discordant = _inversions(_take(ry, order), _take(counts, order))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (n0 - n1 - n2 + n3 - 2.0 * discordant) / np.sqrt((n0 - n1) * (n0 - n2))
    return np.clip(tau, -1.0, 1.0)


def _pairwise_kendall(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`bootstrap_kendall` from every pair of models ``i < j``: with ``w_ij = c_i c_j``
    and the signs ``s_ij`` of ``x_i - x_j`` and ``t_ij`` of ``y_i - y_j``, concordant minus
    discordant pairs are ``sum w s t``, and the pairs tied in x are ``sum w [s = 0]`` plus
    the pairs of copies of one model, ``sum c_i (c_i - 1) / 2`` (tied in both). Integer sums:
    the same value as the inversion count, exactly. Rows are taken in blocks of about
    :data:`BLOCK_ELEMENTS` cells of ``(rows, pairs)``."""
    n_rows, n = counts.shape
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    first, second = np.triu_indices(n, 1)
    tau = np.empty(n_rows)
    step = max(1, BLOCK_ELEMENTS // max(first.size, 1))
    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        c = counts[rows]
        sx, sy = (np.sign(v[:, first] - v[:, second]) for v in (_rows(x, rows), _rows(y, rows)))
        weights = c[:, first] * c[:, second]
        size = c.sum(axis=1)
        copies = ((c * c).sum(axis=1) - size) / 2.0
        n0 = size * (size - 1.0) / 2.0
        n1 = (weights * (sx == 0)).sum(axis=1) + copies
        n2 = (weights * (sy == 0)).sum(axis=1) + copies
        score = (weights * (sx * sy)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau[rows] = score / np.sqrt((n0 - n1) * (n0 - n2))
    return np.clip(tau, -1.0, 1.0)


def _rows(values: np.ndarray, rows: slice) -> np.ndarray:
    """Those ``rows`` of ``(B, n)`` values; ``(1, n)`` values (one for every row) as they are."""
    return values if values.shape[0] == 1 else values[rows]


def _dense_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of each row's values, equal values sharing one: ``(1, n)`` for ``(n,)``
    values (one ranking for every resample), ``(B, n)`` for ``(B, n)`` values (redrawn per
    resample)."""
    values = np.atleast_2d(values)
    if values.shape[0] == 1:
        return np.unique(values[0], return_inverse=True)[1].reshape(1, -1)
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    steps = np.zeros(ordered.shape, dtype=np.int64)
    steps[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.cumsum(steps, axis=1), axis=1)
    return ranks


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[b, index[b]]`` for every row ``b``; an index of one row serves every row (a
    plain column selection, faster than a gather per row)."""
    if index.shape[0] == 1:
        return values[:, index[0]]
    return np.take_along_axis(values, index, axis=1)


def _group_sums(group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(B, groups)`` sums of each row's counts per group id (``group``: ``(1, n)`` or
    ``(B, n)`` ids from 0)."""
    n_rows, n_groups = counts.shape[0], int(group.max()) + 1
    offsets = (np.arange(n_rows)[:, None] * n_groups + group).ravel()
    sums = np.bincount(offsets, weights=counts.ravel(), minlength=n_rows * n_groups)
    return sums.reshape(n_rows, n_groups)


def _tied_pairs(group_sizes: np.ndarray) -> np.ndarray:
    """Pairs within groups, summed per row: ``sum s (s - 1) / 2``."""
    return (group_sizes * (group_sizes - 1.0)).sum(axis=1) / 2.0


def _inversions(ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted inversion count ``sum_{k < l} w_k w_l [r_k > r_l]`` per row of ``weights``.

    An inversion is counted at the highest bit where the two ranks differ: at bit ``j``,
    among positions with the same higher bits (a stable sort by ``r >> (j + 1)`` keeps their
    order), each position with bit 0 pairs with the earlier positions with bit 1. A running
    sum per group gives that for all rows at once: O(n) per bit, O(n log n) in all.

    Args:
        ranks: ``(n,)``, ``(1, n)`` or ``(B, n)`` non-negative integer ranks in sequence
            order (one sequence for all rows, or one per row).
        weights: ``(B, n)`` weights (counts) in the same order.
    """
    ranks = np.atleast_2d(ranks)
    n_rows, n = weights.shape
    # float32 halves the memory traffic and stays exact while counts and their running sums
    # (integers up to the resample size n) are below 2**24; the products are summed in float64.
    dtype = np.float32 if n < 2**24 else np.float64
    weights = weights.astype(dtype)
    total = np.zeros(n_rows)
    ones_before = np.zeros((n_rows, n + 1), dtype=dtype)
    position = np.arange(n)
    for level in range(max(1, int(ranks.max()).bit_length())):
        prefix = ranks >> (level + 1)
        order = np.argsort(prefix, axis=1, kind="stable")
        bit = (_take(ranks >> level, order) & 1).astype(bool)
        prefix = _take(prefix, order)
        # Where each position's group (run of equal prefix) starts.
        starts = np.where(prefix != np.roll(prefix, 1, axis=1), position, 0)
        starts[:, 0] = 0
        group_start = np.maximum.accumulate(starts, axis=1)
        w = _take(weights, order)
        np.cumsum(np.where(bit, w, dtype(0.0)), axis=1, out=ones_before[:, 1:])
        if bit.shape[0] == 1:
            # One order for all rows: only the bit-0 positions, as columns.
            zero = np.flatnonzero(~bit[0])
            earlier_ones = ones_before[:, zero] - ones_before[:, group_start[0, zero]]
            total += np.einsum("ij,ij->i", w[:, zero], earlier_ones, dtype=np.float64)
        else:
            earlier_ones = ones_before[:, :n] - np.take_along_axis(ones_before, group_start, 1)
            zero_weights = np.where(bit, dtype(0.0), w)
            total += np.einsum("ij,ij->i", zero_weights, earlier_ones, dtype=np.float64)
    return total


def bootstrap_pearson(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson r of every resample (given as :func:`resample_counts`) at once."""
    return weighted_pearson(x, y, counts)


def percentile_ci(samples: np.ndarray, level: float = CI_LEVEL) -> dict:
    """Percentile bootstrap interval; resamples with an undefined value are dropped.

    Returns:
        ``{"ci_low", "ci_high", "n_boot_valid", "resamples", "mc_se"}``: ``resamples`` drawn,
        ``n_boot_valid`` of them defined, ``mc_se`` the endpoints' Monte-Carlo standard error
        (:func:`endpoint_se`); plus ``reason`` when no interval exists.
    """
    valid = samples[np.isfinite(samples)]
    counts = {"n_boot_valid": int(valid.size), "resamples": int(samples.size)}
    if valid.size < 2:
        return {
            "ci_low": None,
            "ci_high": None,
            **counts,
            "mc_se": None,
            "reason": "bootstrap disabled" if samples.size == 0 else "too few valid resamples",
        }
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return {
        "ci_low": float(low),
        "ci_high": float(high),
        **counts,
        "mc_se": endpoint_se(valid, level),
    }


def logit_accuracy(errors: np.ndarray) -> tuple[np.ndarray, int]:
    """Log-odds of accuracy (Kornblith et al.) from errors in percent.

    Returns:
        ``(logits, n_clipped)``: the number of accuracies clipped away from 0 or 1.
    """
    accuracy = 1.0 - np.asarray(errors, dtype=float) / 100.0
    clipped = np.clip(accuracy, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(clipped / (1.0 - clipped)), int(np.sum(clipped != accuracy))


def top_k(errors: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest errors, best first; ties keep input (model-name) order."""
    return np.argsort(errors, kind="stable")[:k]


def undefined_reason(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> str | None:
    """Why a correlation between ``x`` and ``y`` is undefined, or None if it is defined."""
    if x.size < MIN_MODELS:
        shared = plural(x.size, "model")
        return f"only {shared} shared by {names[0]} and {names[1]}; need {MIN_MODELS}"
    for values, name in zip((x, y), names, strict=True):
        if np.ptp(values) == 0:
            return f"all shared models have the same value on {name}"
    return None


def pair_statistics(
    models: np.ndarray,
    ref: np.ndarray,
    target: np.ndarray,
    names: tuple[str, str],
    k: int,
    bootstrap: Bootstrap,
    test_sizes: tuple[int | None, int | None] = (None, None),
) -> dict:
    """All APR statistics of one target dataset against the reference.

    Args:
        models: Model ids, aligned with ``ref`` and ``target``.
        ref: Reference errors (NaN where the model has no result).
        target: Target errors (NaN where the model has no result).
        names: ``(reference name, target name)`` for messages and bootstrap seeding.
        k: Top-k size (capped at the number of shared models).
        bootstrap: Bootstrap settings.
        test_sizes: Test images behind the reference's and the target's errors: a side with
            a size has binomial test-set noise in the intervals (:class:`Measured`).

    Returns:
        A dict with ``n_models``, the missing-model lists, ``spearman``, ``kendall``,
        ``pearson_logit`` (each with its interval, :func:`interval`), ``weighted_tau``,
        ``top_k`` and ``reference_top_ranks``; ``warning`` below ``MIN_RELIABLE_MODELS``.
    """
    on_ref, on_target = np.isfinite(ref), np.isfinite(target)
    shared = on_ref & on_target
    x, y, ids = ref[shared], target[shared], models[shared]
    result = {
        "n_models": int(shared.sum()),
        "missing_on_target": models[on_ref & ~on_target].tolist(),
        "missing_on_reference": models[on_target & ~on_ref].tolist(),
    }
    reason = undefined_reason(x, y, names)
    if reason is not None:
        keys = ("spearman", "kendall", "pearson_logit", "weighted_tau", "top_k", "selection")
        undefined = {key: {"value": None, "reason": reason} for key in keys}
        return result | {"reason": reason, "reference_top_ranks": []} | undefined

    warning = few_models_warning(x.size)
    if warning is not None:
        result["warning"] = warning
    clipped = logit_accuracy(x)[1] + logit_accuracy(y)[1]
    # weightedtau weighs by rank of decreasing value: pass accuracies so the best models
    # (highest accuracy) get the largest weights.
    wtau = stats.weightedtau(100.0 - x, 100.0 - y).statistic
    data = [
        values if size is None else Measured(values, size)
        for values, size in zip((x, y), test_sizes, strict=True)
    ]
    intervals = interval(
        {
            "spearman": lambda counts, a, b: bootstrap_spearman(a, b, counts),
            "kendall": lambda counts, a, b: bootstrap_kendall(a, b, counts),
            "pearson_logit": lambda counts, a, b: bootstrap_pearson(
                logit_accuracy(a)[0], logit_accuracy(b)[0], counts
            ),
        },
        x.size,
        names,
        bootstrap,
        data,
    )
    p_values = {
        "spearman": stats.spearmanr(x, y).pvalue,
        "kendall": stats.kendalltau(x, y).pvalue,
        "pearson_logit": stats.pearsonr(logit_accuracy(x)[0], logit_accuracy(y)[0]).pvalue,
    }
    result |= {key: intervals[key] | {"p_value": float(p)} for key, p in p_values.items()}
    result["pearson_logit"]["n_clipped"] = clipped
    result["weighted_tau"] = {"value": float(wtau)}
    result |= top_k_agreement(ids, x, y, k)
    return result


def top_k_agreement(models: np.ndarray, ref: np.ndarray, target: np.ndarray, k: int) -> dict:
    """Top-k overlap, the target ranks of the reference's best models, and what choosing
    by the reference costs on the target.

    Returns:
        ``top_k``: ``{"k", "value", "chance", "shared"}`` where ``value`` =
        |top-k(ref) ∩ top-k(target)| / k and ``chance`` = k / n is its expectation for
        unrelated rankings; ``reference_top_ranks``: for the reference's top-k, their rank
        (1 = best, ties share the lowest rank) on both datasets; ``selection``: the model
        picked by the reference (its best), its error and rank on the target, the target's
        best, the ``loss`` (picked minus best target error, percentage points) and the mean
        loss of the reference's top-k.
    """
    k_eff = min(k, models.size)
    best_ref, best_target = top_k(ref, k_eff), top_k(target, k_eff)
    shared = sorted(set(models[best_ref]) & set(models[best_target]))
    ref_rank = stats.rankdata(ref, method="min")
    target_rank = stats.rankdata(target, method="min")
    ranks = [
        {
            "model": str(models[i]),
            "reference_rank": int(ref_rank[i]),
            "target_rank": int(target_rank[i]),
            "reference_error": float(ref[i]),
            "target_error": float(target[i]),
        }
        for i in best_ref
    ]
    overlap = {
        "k": k_eff,
        "value": len(shared) / k_eff,
        "chance": k_eff / models.size,
        "shared": shared,
    }
    best = int(best_target[0])
    pick = int(best_ref[0])
    selection = {
        "pick": str(models[pick]),
        "pick_error": float(target[pick]),
        "pick_rank": int(target_rank[pick]),
        "best": str(models[best]),
        "best_error": float(target[best]),
        "loss": float(target[pick] - target[best]),
        "top_k_mean_loss": float(target[best_ref].mean() - target[best]),
    }
    return {"top_k": overlap, "reference_top_ranks": ranks, "selection": selection}


def correlation_matrix(errors: np.ndarray, names: list[str]) -> dict:
    """Spearman rho between every pair of datasets on the models they share.

    Args:
        errors: ``(n_models, n_datasets)`` with NaN for missing results.
        names: Dataset names (columns of ``errors``).

    Returns:
        ``{"datasets", "spearman", "n_shared"}`` as nested lists; cells that are undefined
        (fewer than 3 shared models, constant errors) are None and listed in ``undefined``.
    """
    n = len(names)
    rho = np.full((n, n), np.nan)
    shared = np.zeros((n, n), dtype=int)
    undefined = []
    for i in range(n):
        for j in range(i, n):
            mask = np.isfinite(errors[:, i]) & np.isfinite(errors[:, j])
            shared[i, j] = shared[j, i] = int(mask.sum())
            x, y = errors[mask, i], errors[mask, j]
            reason = undefined_reason(x, y, (names[i], names[j]))
            if reason is None:
                rho[i, j] = rho[j, i] = 1.0 if i == j else stats.spearmanr(x, y).statistic
            elif i < j:
                undefined.append({"datasets": [names[i], names[j]], "reason": reason})
    result = {
        "datasets": list(names),
        "spearman": [[None if np.isnan(v) else float(v) for v in row] for row in rho],
        "n_shared": shared.tolist(),
        "undefined": undefined,
    }
    if np.isnan(rho).any():
        result["reason"] = "null cells: see 'undefined' (diagonal: dataset has < 3 models)"
    return result


# Derived architecture features: name -> (column prefix, reduction over the four stages).
STAGE_FEATURES = {
    "cum_depth": ("d", np.sum),
    "cum_width": ("w", np.sum),
    "mean_bottleneck": ("b", np.mean),
    "mean_group_width": ("g", np.mean),
}


def architecture_features(arch: pd.DataFrame, groups: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-model scalar features: cumulative depth/width, mean bottleneck/group width, and
    ``flops``/``params`` when present. Rows follow ``arch.index``."""
    features = {}
    for name, (prefix, reduce) in STAGE_FEATURES.items():
        if prefix in groups:
            columns = [f"{prefix}{s}" for s in (1, 2, 3, 4)]
            features[name] = reduce(arch[columns].to_numpy(dtype=float), axis=1)
    for name in ("flops", "params"):
        if name in arch.columns:
            features[name] = arch[name].to_numpy(dtype=float)
    return features


def feature_correlations(
    features: dict[str, np.ndarray], errors: np.ndarray, dataset: str
) -> dict[str, dict]:
    """Spearman rho (and p-value) of each architecture feature with one dataset's errors."""
    result = {}
    for name, values in features.items():
        mask = np.isfinite(values) & np.isfinite(errors)
        x, y = values[mask], errors[mask]
        reason = undefined_reason(x, y, (name, dataset))
        if reason is None:
            rho, p = stats.spearmanr(x, y)
            result[name] = {"value": float(rho), "p_value": float(p), "n_models": int(x.size)}
        else:
            result[name] = {
                "value": None,
                "p_value": None,
                "n_models": int(x.size),
                "reason": reason,
            }
    return result


def seed_study(
    frame: pd.DataFrame, evaluations: dict[str, str], bootstrap: Bootstrap | None = None
) -> dict:
    """Seed-to-seed spread of the error, and how the seed noise of one checkpoint co-varies
    between two test sets: "ResNet strikes back"'s seed study (100 seeds of A2: std 0.1 on
    ImageNet-val, 0.23 on ImageNet-V2, the two only weakly correlated per seed).

    A checkpoint is one (model, dataset, seed) row group: the model trained on ``dataset``
    with that seed. Its evaluations are the metrics named in ``evaluations`` (its own test
    split, its validation split, other test sets with the same classes), so a correlation
    between two test sets is always between the errors of the *same* checkpoints across
    seeds; different trained datasets are never correlated with each other here.

    Args:
        frame: Usable rows of one regime with ``model``, ``dataset``, ``seed``, ``metric``
            and ``error``.
        evaluations: Test set label -> metric, e.g. ``{"test": "top1_error",
            "imagenet_v2": "top1_error@imagenet_v2"}``; the first is the primary one.
        bootstrap: Resampling of the pooled within-model r's interval (None: no interval).

    Returns:
        ``per_model``: one record per (model, dataset, test set) with 2+ seeds (``n_seeds``,
        ``mean``, ``std`` with ddof=1, ``min``, ``max``); ``per_dataset``: per trained
        dataset, the mean/median/max of those stds on the primary test set and, under
        ``test_sets``, on each test set; ``test_set_pairs``: per trained dataset and pair of
        test sets ``[a, b]``, per model with 2+ seeds evaluated on both each one's std
        (``std_a``, ``std_b``) and, from 3 seeds, the Pearson r (and p-value) of the two
        errors across seeds, their means over models, and the within-model r pooled over
        models (each model's errors centred on its own mean; equal to the per-model r when
        there is one model, as in RSB) with its percentile interval over checkpoints
        (``pooled_ci``: ``ci_low``, ``ci_high``, ``resamples``, ``mc_se``).
    """
    labels = list(evaluations)
    primary = labels[0]
    by_metric = {metric: label for label, metric in evaluations.items()}
    rows = frame[frame["metric"].isin(list(by_metric))]
    wide = rows.pivot_table(
        index=["model", "dataset", "seed"], columns="metric", values="error", aggfunc="first"
    ).rename(columns=by_metric)
    long = rows.assign(test_set=rows["metric"].map(by_metric))
    grouped = long.groupby(["model", "dataset", "test_set"])["error"]
    table = grouped.agg(n_seeds="count", mean="mean", std="std", min="min", max="max")
    table = table[table["n_seeds"] > 1].reset_index()
    per_dataset = {}
    for dataset, group in table.groupby("dataset"):
        spreads = {
            label: _spread(group[group["test_set"] == label]["std"])
            for label in labels
            if (group["test_set"] == label).any()
        }
        main = spreads.get(primary) or {
            "n_models": 0,
            "mean_std": None,
            "median_std": None,
            "max_std": None,
            "reason": f"no model has 2+ seeds on {primary}",
        }
        per_dataset[str(dataset)] = main | {"test_set": primary, "test_sets": spreads}
    pairs = []
    for dataset, both in wide.groupby(level="dataset"):
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                if a in both.columns and b in both.columns:
                    pair = _test_set_pair(
                        both[[a, b]].dropna().droplevel("dataset"), a, b, bootstrap, str(dataset)
                    )
                    if pair is not None:
                        pairs.append({"dataset": str(dataset)} | pair)
    return {
        "evaluations": dict(evaluations),
        "per_model": table.astype({"n_seeds": int}).to_dict("records"),
        "per_dataset": per_dataset,
        "test_set_pairs": pairs,
    }


def _spread(stds: pd.Series) -> dict:
    """Summary of per-model seed stds: how many models, mean, median and max."""
    return {
        "n_models": int(stds.size),
        "mean_std": float(stds.mean()),
        "median_std": float(stds.median()),
        "max_std": float(stds.max()),
    }


def _test_set_pair(
    both: pd.DataFrame, a: str, b: str, bootstrap: Bootstrap | None, dataset: str
) -> dict | None:
    """Seed-to-seed correlation of one trained dataset's checkpoints on test sets ``a`` and
    ``b`` (``both``: index (model, seed), columns a and b); None when no model has 2+ seeds
    on both.

    The pooled r's interval resamples the checkpoints (centred on their model's mean) as
    independent pairs: the centring's own uncertainty, a few degrees of freedom per model, is
    left out, so with few seeds per model the interval is somewhat too narrow."""
    sizes = both.groupby(level="model").size()
    both = both[both.index.get_level_values("model").isin(sizes.index[sizes >= 2])]
    if both.empty:
        return None
    per_model = {}
    for model, group in both.groupby(level="model"):
        x, y = group[a].to_numpy(), group[b].to_numpy()
        entry = {"n_seeds": int(x.size), "std_a": float(x.std(ddof=1))}
        entry["std_b"] = float(y.std(ddof=1))
        reason = undefined_reason(x, y, (a, b))
        if reason is None:
            r, p = stats.pearsonr(x, y)
            entry |= {"pearson_r": float(r), "p_value": float(p)}
        else:
            entry |= {"pearson_r": None, "p_value": None, "reason": reason}
        per_model[str(model)] = entry
    centred = both - both.groupby(level="model").transform("mean")
    x, y = centred[a].to_numpy(), centred[b].to_numpy()
    pooled_reason = undefined_reason(x, y, (a, b))
    pooled = None if pooled_reason else float(stats.pearsonr(x, y).statistic)
    defined = [m["pearson_r"] for m in per_model.values() if m["pearson_r"] is not None]
    result = {
        "test_sets": [a, b],
        "n_models": len(per_model),
        "n_seeds": int(len(both)),
        "pooled_within_model_r": pooled,
        "mean_per_model_r": float(np.mean(defined)) if defined else None,
        "mean_std_a": float(np.mean([m["std_a"] for m in per_model.values()])),
        "mean_std_b": float(np.mean([m["std_b"] for m in per_model.values()])),
        "per_model": per_model,
    }
    if pooled is None or not defined:
        result["reason"] = pooled_reason or "no model has 3+ non-constant seeds on both"
    elif bootstrap is not None and bootstrap.n_resamples > 0:
        pearson = {"r": lambda counts, x, y: bootstrap_pearson(x, y, counts)}
        ci = interval(pearson, x.size, ("seed-pair", dataset, a, b), bootstrap, (x, y))["r"]
        result["pooled_ci"] = {key: value for key, value in ci.items() if key != "value"}
    return result
