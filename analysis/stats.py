"""Statistics of the architecture-performance relationship (APR).

Pure functions on numpy arrays. Errors are in percent throughout; "better" means lower
error. Results are plain dicts of Python scalars so they go straight into ``summary.json``;
a statistic that cannot be computed is ``None`` and its dict carries a ``reason``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_MODELS = 3
CI_LEVEL = 0.95
# Accuracies are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit, so 0 % or 100 %
# accuracy gives a large finite log-odds instead of an infinity (1e-4 = 0.01 % accuracy).
LOGIT_EPS = 1e-4


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap settings shared by all pairwise statistics.

    Attributes:
        n_resamples: Number of bootstrap resamples (0 disables confidence intervals).
        seed: Base seed; each dataset pair derives its own stream from it and the pair's
            names, so a pair's interval does not depend on which other datasets exist.
    """

    n_resamples: int
    seed: int

    def indices(self, n: int, *names: str) -> np.ndarray:
        """Resampled model indices, shape ``(n_resamples, n)``."""
        key = [self.seed, *(zlib.crc32(name.encode()) for name in names)]
        return np.random.default_rng(key).integers(0, n, size=(self.n_resamples, n))


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
    """
    _, group = np.unique(x, return_inverse=True)
    n_resamples, n_groups = counts.shape[0], int(group.max()) + 1
    offsets = (np.arange(n_resamples)[:, None] * n_groups + group[None, :]).ravel()
    per_group = np.bincount(offsets, weights=counts.ravel(), minlength=n_resamples * n_groups)
    per_group = per_group.reshape(n_resamples, n_groups)
    below = np.cumsum(per_group, axis=1) - per_group
    return (below + (per_group + 1.0) / 2.0)[:, group]


def bootstrap_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman rho of every resample (given as :func:`resample_counts`) at once.

    Each value equals ``scipy.stats.spearmanr(x[idx[b]], y[idx[b]])``: the Pearson r of the
    average ranks within the resample.
    """
    return weighted_pearson(resampled_ranks(x, counts), resampled_ranks(y, counts), counts)


def bootstrap_kendall(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every resample (given as :func:`resample_counts`) at once.

    Every pair of resampled positions is a pair of original models (k, l); copies of one
    model are tied in both variables and count nowhere. Hence, with
    ``S = sign(x_k - x_l) * sign(y_k - y_l)``, ``P - Q = c^T S c / 2`` and the tau-b
    denominators are ``c^T |sign(x_k - x_l)| c / 2`` (and the same for y): three
    ``(B, n) @ (n, n)`` products instead of B scipy calls. Each value equals
    ``scipy.stats.kendalltau(x[idx[b]], y[idx[b]])`` (tau-b).
    """
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])

    def quadratic(matrix: np.ndarray) -> np.ndarray:
        return ((counts @ matrix) * counts).sum(axis=1) / 2.0

    with np.errstate(invalid="ignore", divide="ignore"):
        tau = quadratic(sx * sy) / np.sqrt(quadratic(np.abs(sx)) * quadratic(np.abs(sy)))
    return np.clip(tau, -1.0, 1.0)


def bootstrap_pearson(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson r of every resample (given as :func:`resample_counts`) at once."""
    return weighted_pearson(x, y, counts)


def percentile_ci(samples: np.ndarray, level: float = CI_LEVEL) -> dict:
    """Percentile bootstrap interval; resamples with an undefined value are dropped.

    Returns:
        ``{"ci_low", "ci_high", "n_boot_valid"}``, plus ``reason`` when no interval exists.
    """
    valid = samples[np.isfinite(samples)]
    if valid.size < 2:
        return {
            "ci_low": None,
            "ci_high": None,
            "n_boot_valid": int(valid.size),
            "reason": "bootstrap disabled" if samples.size == 0 else "too few valid resamples",
        }
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return {"ci_low": float(low), "ci_high": float(high), "n_boot_valid": int(valid.size)}


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
        return f"only {x.size} model(s) shared by {names[0]} and {names[1]}; need {MIN_MODELS}"
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
) -> dict:
    """All APR statistics of one target dataset against the reference.

    Args:
        models: Model ids, aligned with ``ref`` and ``target``.
        ref: Reference errors (NaN where the model has no result).
        target: Target errors (NaN where the model has no result).
        names: ``(reference name, target name)`` for messages and bootstrap seeding.
        k: Top-k size (capped at the number of shared models).
        bootstrap: Bootstrap settings.

    Returns:
        A dict with ``n_models``, the missing-model lists, ``spearman``, ``kendall``,
        ``pearson_logit``, ``weighted_tau``, ``top_k`` and ``reference_top_ranks``.
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
        keys = ("spearman", "kendall", "pearson_logit", "weighted_tau", "top_k")
        undefined = {key: {"value": None, "reason": reason} for key in keys}
        return result | {"reason": reason, "reference_top_ranks": []} | undefined

    counts = resample_counts(bootstrap.indices(x.size, *names), x.size)
    rho, rho_p = stats.spearmanr(x, y)
    tau, tau_p = stats.kendalltau(x, y)
    lx, clipped_x = logit_accuracy(x)
    ly, clipped_y = logit_accuracy(y)
    r, r_p = stats.pearsonr(lx, ly)
    # weightedtau weighs by rank of decreasing value: pass accuracies so the best models
    # (highest accuracy) get the largest weights.
    wtau = stats.weightedtau(100.0 - x, 100.0 - y).statistic
    result |= {
        "spearman": {"value": float(rho), "p_value": float(rho_p)}
        | percentile_ci(bootstrap_spearman(x, y, counts)),
        "kendall": {"value": float(tau), "p_value": float(tau_p)}
        | percentile_ci(bootstrap_kendall(x, y, counts)),
        "pearson_logit": {
            "value": float(r),
            "p_value": float(r_p),
            "n_clipped": clipped_x + clipped_y,
        }
        | percentile_ci(bootstrap_pearson(lx, ly, counts)),
        "weighted_tau": {"value": float(wtau)},
    }
    result |= top_k_agreement(ids, x, y, k)
    return result


def top_k_agreement(models: np.ndarray, ref: np.ndarray, target: np.ndarray, k: int) -> dict:
    """Top-k overlap and the target ranks of the reference's best models.

    Returns:
        ``top_k``: ``{"k", "value", "chance", "shared"}`` where ``value`` =
        |top-k(ref) ∩ top-k(target)| / k and ``chance`` = k / n is its expectation for
        unrelated rankings; ``reference_top_ranks``: for the reference's top-k, their rank
        (1 = best, ties share the lowest rank) on both datasets.
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
    return {"top_k": overlap, "reference_top_ranks": ranks}


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


def seed_variance(frame: pd.DataFrame) -> dict:
    """Spread of the error across seeds, and how seed noise co-varies between datasets.

    Args:
        frame: Usable rows with ``model``, ``dataset``, ``seed`` and ``error``.

    Returns:
        ``per_model``: one record per (model, dataset) with 2+ seeds (n_seeds, mean, std
        with ddof=1, min, max); ``per_dataset``: mean/median/max of those stds;
        ``cross_dataset``: per dataset pair, the Pearson r across shared seeds per model
        (models with 3+ shared seeds) and the pooled within-model r (each model's errors
        centred on its own mean, as in the ResNet-strikes-back val-vs-V2 seed study).
    """
    grouped = frame.groupby(["model", "dataset"])["error"]
    table = grouped.agg(n_seeds="count", mean="mean", std="std", min="min", max="max")
    table = table[table["n_seeds"] > 1].reset_index()
    per_dataset = {
        name: {
            "n_models": len(group),
            "mean_std": float(group["std"].mean()),
            "median_std": float(group["std"].median()),
            "max_std": float(group["std"].max()),
        }
        for name, group in table.groupby("dataset")
    }
    wide = frame.pivot_table(index=["model", "seed"], columns="dataset", values="error")
    cross = []
    names = sorted(per_dataset)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = _seed_pair_correlation(wide[[a, b]].dropna(), a, b)
            if pair is not None:
                cross.append(pair)
    return {
        "per_model": table.astype({"n_seeds": int}).to_dict("records"),
        "per_dataset": per_dataset,
        "cross_dataset": cross,
    }


def _seed_pair_correlation(both: pd.DataFrame, a: str, b: str) -> dict | None:
    """Seed-to-seed correlation of two datasets; None when no model shares 2+ seeds."""
    sizes = both.groupby(level="model").size()
    both = both[both.index.get_level_values("model").isin(sizes.index[sizes >= 2])]
    if both.empty:
        return None
    centred = both - both.groupby(level="model").transform("mean")
    per_model = {}
    for model, group in both.groupby(level="model"):
        x, y = group[a].to_numpy(), group[b].to_numpy()
        if undefined_reason(x, y, (a, b)) is None:
            per_model[str(model)] = float(stats.pearsonr(x, y).statistic)
    x, y = centred[a].to_numpy(), centred[b].to_numpy()
    pooled_reason = undefined_reason(x, y, (a, b))
    pooled = None if pooled_reason else float(stats.pearsonr(x, y).statistic)
    result = {
        "datasets": [a, b],
        "n_models": int(sizes[sizes >= 2].size),
        "n_points": int(len(both)),
        "pooled_within_model_r": pooled,
        "mean_per_model_r": float(np.mean(list(per_model.values()))) if per_model else None,
        "per_model_r": per_model,
    }
    if pooled is None or not per_model:
        result["reason"] = pooled_reason or "no model has 3+ non-constant shared seeds"
    return result
