"""Compute every statistic of the APR analysis into one summary dict (no I/O, no plots)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.table import ARCH_GROUPS, ResultsTable

DEFAULT_REFERENCE = "imagenet"
SCHEMA_VERSION = 1
STAGE_PROFILE_GROUPS = {"d": "depth", "w": "width"}


@dataclass(frozen=True)
class Analysis:
    """The summary plus the arrays the figures are drawn from.

    Attributes:
        summary: JSON-ready summary (see ``analysis/README.md`` for its layout).
        models: Sorted model ids (rows of ``errors``).
        datasets: Sorted dataset names (columns of ``errors``).
        errors: ``(n_models, n_datasets)`` mean error over seeds, NaN where missing.
        features: Architecture feature -> per-model values aligned with ``models``.
        profiles: Stage group (``"d"``/``"w"``) -> dataset -> ``(k, 4)`` top-k profile.
    """

    summary: dict
    models: np.ndarray
    datasets: list[str]
    errors: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    profiles: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def choose_reference(counts: dict[str, int], requested: str | None) -> tuple[str, str]:
    """Pick the reference dataset.

    Args:
        counts: Dataset -> number of models with a usable result.
        requested: Explicit choice, or None for the default.

    Returns:
        ``(name, how)``. Default: a dataset named ``imagenet`` (case-insensitive) if present,
        else the dataset with the most models, ties broken by name order.

    Raises:
        ValueError: If the requested dataset is absent or has no usable result.
    """
    usable = {name: n for name, n in counts.items() if n > 0}
    if requested is not None:
        if requested not in counts:
            raise ValueError(
                f"reference dataset {requested!r} is not in the results; "
                f"datasets present: {sorted(counts)}"
            )
        if requested not in usable:
            raise ValueError(f"reference dataset {requested!r} has no usable (status ok) result")
        return requested, "given"
    for name in sorted(usable):
        if name.lower() == DEFAULT_REFERENCE:
            return name, f"default: dataset named {DEFAULT_REFERENCE!r}"
    name = min(usable, key=lambda n: (-usable[n], n))
    return name, "default: dataset with the most models (ties: first by name)"


def compute_analysis(
    table: ResultsTable,
    reference: str | None = None,
    top_k: int = 15,
    n_bootstrap: int = 1000,
    seed: int = 0,
    title: str | None = None,
) -> Analysis:
    """Compute all statistics of the analysis.

    Args:
        table: Validated results.
        reference: Reference dataset (see :func:`choose_reference` for the default).
        top_k: Number of best models per dataset for overlaps and stage profiles.
        n_bootstrap: Bootstrap resamples for confidence intervals (0: no intervals).
        seed: Seed of the bootstrap.
        title: Report title.

    Returns:
        The analysis.

    Raises:
        ValueError: On invalid arguments or an unusable reference.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    models, datasets, errors = table.error_matrix()
    column = {name: errors[:, i] for i, name in enumerate(datasets)}
    counts = {name: int(np.isfinite(column[name]).sum()) for name in datasets}
    ref, how = choose_reference(counts, reference)
    bootstrap = stats.Bootstrap(n_resamples=n_bootstrap, seed=seed)

    summary = {
        "schema_version": SCHEMA_VERSION,
        "title": title or f"APR analysis: {len(datasets)} datasets vs {ref}",
        "input": _input_summary(table, models, errors),
        "settings": {
            "reference": ref,
            "reference_choice": how,
            "top_k": top_k,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "ci_level": stats.CI_LEVEL,
            "logit_clip": stats.LOGIT_EPS,
            "min_models": stats.MIN_MODELS,
        },
        "datasets": _dataset_summaries(table, models, column),
        "exclusions": _exclusions(table, models, column),
        "apr": {
            "reference": ref,
            "targets": {
                name: stats.pair_statistics(
                    models, column[ref], column[name], (ref, name), top_k, bootstrap
                )
                for name in datasets
                if name != ref
            },
        },
        "correlation_matrix": stats.correlation_matrix(errors, datasets),
        "top_k": _top_k_tables(table, models, column, top_k),
    }
    features, profiles, summary["architecture"] = _architecture(table, models, column, top_k)
    summary["seed_variance"] = _seed_summary(table)
    summary["metrics"] = flat_metrics(summary)
    return Analysis(summary, models, datasets, errors, features, profiles)


def _input_summary(table: ResultsTable, models: np.ndarray, errors: np.ndarray) -> dict:
    seeds = table.frame.groupby(["model", "dataset"]).size() if table.has_seed else None
    return {
        "source": table.source,
        "metric_column": table.metric_column,
        "metric_kind": table.metric_kind,
        "scale": table.scale,
        "scale_source": table.scale_source,
        "n_rows": table.n_input_rows,
        "n_rows_used": len(table.frame),
        "n_rows_excluded": len(table.excluded),
        "n_models": int(models.size),
        "n_models_complete": int(np.isfinite(errors).all(axis=1).sum()),
        "n_datasets": errors.shape[1],
        "has_seed": table.has_seed,
        "max_seeds_per_result": int(seeds.max()) if seeds is not None else 1,
        "architecture_columns": list(table.arch_columns),
        "error_definition": "error in percent; mean over seeds when a model has several",
    }


def _dataset_summaries(
    table: ResultsTable, models: np.ndarray, column: dict[str, np.ndarray]
) -> dict:
    excluded = table.excluded["dataset"].value_counts()
    result = {}
    for name, values in column.items():
        entry = stats.describe(values)
        finite = np.isfinite(values)
        if finite.any():
            entry["best_model"] = str(models[finite][np.argmin(values[finite])])
        entry["n_excluded"] = int(excluded.get(name, 0))
        result[name] = entry
    return result


def _exclusions(table: ResultsTable, models: np.ndarray, column: dict[str, np.ndarray]) -> dict:
    """Excluded rows by dataset and status, and models absent from some datasets."""
    excluded = table.excluded
    by_dataset = {
        name: {str(k): int(v) for k, v in group["status"].value_counts().sort_index().items()}
        for name, group in excluded.groupby("dataset")
    }
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in excluded.to_dict("records")
    ]
    absent = {
        name: models[~np.isfinite(values)].tolist()
        for name, values in column.items()
        if not np.isfinite(values).all()
    }
    return {
        "n_rows": len(excluded),
        "by_dataset": by_dataset,
        "rows": rows,
        "models_without_result": absent,
    }


def _top_k_tables(
    table: ResultsTable, models: np.ndarray, column: dict[str, np.ndarray], k: int
) -> dict:
    """Best ``k`` models per dataset with their error and architecture columns."""
    arch = table.architectures().reindex(models)
    result = {}
    for name, values in column.items():
        finite = np.flatnonzero(np.isfinite(values))
        best = finite[stats.top_k(values[finite], k)]
        arch_rows = arch.iloc[best].to_dict("records")
        result[name] = [
            {"rank": rank, "model": str(models[i]), "error": float(values[i])}
            | {c: _scalar(v) for c, v in arch_row.items()}
            for rank, (i, arch_row) in enumerate(zip(best, arch_rows, strict=True), start=1)
        ]
    return result


def _architecture(
    table: ResultsTable, models: np.ndarray, column: dict[str, np.ndarray], k: int
) -> tuple[dict, dict, dict]:
    """Architecture features vs error (Tuggener et al. Table 3) and top-k stage profiles."""
    if not table.arch_columns:
        reason = (
            "no architecture columns in the input (expected d1..d4, w1..w4, b1..b4, g1..g4, "
            "flops, params)"
        )
        return {}, {}, {"available": False, "reason": reason}
    arch = table.architectures().reindex(models)
    features = stats.architecture_features(arch, table.arch_groups)
    summary = {
        "available": True,
        "stage_groups": [ARCH_GROUPS[p] for p in table.arch_groups],
        "features": list(features),
        "spearman": {
            name: stats.feature_correlations(features, values, name)
            for name, values in column.items()
        },
    }
    if not features:
        summary["reason"] = "stage columns incomplete (need all four stages of a group)"
    profiles: dict[str, dict[str, np.ndarray]] = {}
    means: dict[str, dict[str, list[float | None]]] = {name: {} for name in column}
    for prefix, label in STAGE_PROFILE_GROUPS.items():
        if prefix not in table.arch_groups:
            continue
        stage_values = arch[[f"{prefix}{s}" for s in (1, 2, 3, 4)]].to_numpy(dtype=float)
        profiles[prefix] = {}
        for name, values in column.items():
            finite = np.flatnonzero(np.isfinite(values))
            if finite.size == 0:
                continue
            top = stage_values[finite[stats.top_k(values[finite], k)]]
            profiles[prefix][name] = top
            means[name][f"{label}_mean"] = [_scalar(v) for v in np.nanmean(top, axis=0)]
    summary["stage_profiles"] = {name: m for name, m in means.items() if m}
    return features, profiles, summary


def _seed_summary(table: ResultsTable) -> dict:
    if not table.has_seed:
        return {"available": False, "reason": "no seed column in the input"}
    if table.frame.groupby(["model", "dataset"]).size().max() < 2:
        return {"available": False, "reason": "every model has a single seed per dataset"}
    return {"available": True} | stats.seed_variance(table.frame)


def _scalar(value) -> float | None:
    """A JSON-ready float: NaN (missing architecture value) becomes None."""
    value = float(value)
    return None if np.isnan(value) else value


_METRIC_NAME_INVALID = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    """A valid MLflow metric key from parts joined with ``/`` (invalid characters -> ``_``)."""
    name = _METRIC_NAME_INVALID.sub("_", "/".join(parts))
    # MLflow rejects keys that look like relative paths.
    return re.sub(r"\.{2,}", ".", name)


def flat_metrics(summary: dict) -> dict[str, float]:
    """Scalar metrics for MLflow / KFP Metrics; undefined values are left out."""
    candidates: dict[str, float | None] = {
        "n_datasets": summary["input"]["n_datasets"],
        "n_models_total": summary["input"]["n_models"],
        "n_models_complete": summary["input"]["n_models_complete"],
        "n_rows_excluded": summary["input"]["n_rows_excluded"],
    }
    for name, entry in summary["datasets"].items():
        for key in ("n_models", "n_excluded", "mean_error", "median_error", "min_error"):
            candidates[metric_name(key, name)] = entry.get(key)
    for name, pair in summary["apr"]["targets"].items():
        candidates[metric_name("n_models_shared", name)] = pair["n_models"]
        for key, stat, field_name in (
            ("spearman_rho", "spearman", "value"),
            ("spearman_ci_low", "spearman", "ci_low"),
            ("spearman_ci_high", "spearman", "ci_high"),
            ("kendall_tau", "kendall", "value"),
            ("pearson_logit_r", "pearson_logit", "value"),
            ("weighted_tau", "weighted_tau", "value"),
            ("topk_overlap", "top_k", "value"),
        ):
            candidates[metric_name(key, name)] = pair[stat].get(field_name)
    for name, per_feature in summary["architecture"].get("spearman", {}).items():
        for feature, entry in per_feature.items():
            candidates[metric_name("arch_spearman", feature, name)] = entry["value"]
    for name, entry in summary["seed_variance"].get("per_dataset", {}).items():
        candidates[metric_name("seed_std_mean", name)] = entry["mean_std"]
    metrics: dict[str, float] = {}
    for key, value in candidates.items():
        if value is None or not np.isfinite(value):
            continue
        # Two dataset names may sanitise to the same key; keep both rather than overwrite.
        unique, suffix = key, 2
        while unique in metrics:
            unique, suffix = f"{key}_{suffix}", suffix + 1
        metrics[unique] = float(value)
    return metrics
