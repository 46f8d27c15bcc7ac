"""Compute every statistic of the APR analysis into one summary dict (no I/O, no plots)."""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.table import (
    ARCH_GROUPS,
    COMPANION_COLUMNS,
    OWN_TEST_SET,
    ResultsTable,
    slice_label,
    split_evaluation,
)
from analysis.words import plural

DEFAULT_REFERENCE = "imagenet"
SCHEMA_VERSION = 2
STAGE_PROFILE_GROUPS = {"d": "depth", "w": "width"}


@dataclass(frozen=True)
class Analysis:
    """The summary plus the arrays the figures are drawn from.

    Attributes:
        summary: JSON-ready summary (see ``analysis/README.md`` for its layout).
        table: The primary ``(regime, metric)`` slice of the input the analysis is about.
        models: Sorted model ids (rows of ``errors``).
        datasets: Sorted dataset names (columns of ``errors``).
        errors: ``(n_models, n_datasets)`` mean error over seeds, NaN where missing.
        features: Architecture feature -> per-model values aligned with ``models``.
        profiles: Stage group (``"d"``/``"w"``) -> dataset -> ``(k, 4)`` top-k profile.
        columns: Mean error per model over every ``(regime, metric, dataset)`` of the input
            (for the comparisons across regimes and metrics).
    """

    summary: dict
    table: ResultsTable
    models: np.ndarray
    datasets: list[str]
    errors: np.ndarray
    columns: pd.DataFrame = field(default_factory=pd.DataFrame)
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


def choose_slice(
    table: ResultsTable, reference: str, regime: str | None, metric: str | None
) -> tuple[tuple[str, str], str]:
    """Pick the primary ``(regime, metric)``: the one the reference comparison is about.

    Args:
        table: Validated results.
        reference: The reference dataset.
        regime: Requested regime, or None.
        metric: Requested metric, or None.

    Returns:
        ``((regime, metric), how)``. Default: among the slices with a result on the
        reference (of a wide table's primary metric column when it has one), the one with the
        most usable rows (ties: first by name).

    Raises:
        ValueError: If no slice matches the request or has a result on the reference.
    """
    frame = table.frame
    rows = frame.groupby(["regime", "metric"]).size()
    on_reference = set(
        frame.loc[frame["dataset"] == reference, ["regime", "metric"]].itertuples(index=False)
    )
    matching = [
        s
        for s in table.slices
        if (regime is None or s[0] == regime) and (metric is None or s[1] == metric)
    ]
    if not matching:
        raise ValueError(
            f"no results for regime {regime!r} / metric {metric!r}; present: "
            f"{[slice_label(*s) for s in table.slices]}"
        )
    candidates = [s for s in matching if tuple(s) in on_reference]
    if not candidates:
        raise ValueError(
            f"reference dataset {reference!r} has no usable result under "
            f"{[slice_label(*s) for s in matching]}"
        )
    how = "given" if regime is not None or metric is not None else "default"
    # A wide table's first metric column is its primary metric; further evaluations of the
    # same checkpoints (top-5, other test sets) are compared with it, not chosen over it.
    own = [s for s in candidates if s[1] == table.primary_metric]
    if metric is None and own and len(own) < len(candidates):
        candidates = own
        how += f" (the table's metric column {table.primary_metric!r})"
    chosen = min(candidates, key=lambda s: (-int(rows[s]), s))
    if len(table.slices) == 1:
        return chosen, "the only one"
    return chosen, f"{how}: most usable rows with a result on {reference}"


def compute_analysis(
    table: ResultsTable,
    reference: str | None = None,
    top_k: int = 15,
    n_bootstrap: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    title: str | None = None,
    regime: str | None = None,
    metric: str | None = None,
    test_noise: str = "auto",
    test_sizes: Mapping[str, int] | None = None,
) -> Analysis:
    """Compute all statistics of the analysis.

    The per-dataset statistics, eCDFs, correlation matrix, architecture and seed analyses
    are about the primary ``(regime, metric)`` (:func:`choose_slice`). The reference
    comparison covers every other dataset of the primary slice and every dataset of the
    other slices (e.g. transfer regimes: Kornblith et al.'s log-odds r against source
    accuracy); ``comparisons`` correlate every two slices on each dataset they share (two
    training recipes over the same architectures, a cheap score vs fine-tuned accuracy).

    Args:
        table: Validated results.
        reference: Reference dataset (see :func:`choose_reference` for the default).
        top_k: Number of best models per dataset for overlaps and stage profiles.
        n_bootstrap: Most bootstrap resamples per comparison (0: no intervals; at most
            ``stats.MAX_RESAMPLES``); fewer once the endpoints are precise to
            ``stats.MC_TOLERANCE`` (:class:`analysis.stats.Bootstrap`).
        seed: Seed of the bootstrap.
        title: Report title.
        regime: Primary regime (default: see :func:`choose_slice`).
        metric: Primary metric (default: see :func:`choose_slice`).
        test_noise: ``"binomial"``: the intervals include the noise of each dataset's finite
            test set (:class:`analysis.stats.Measured`; needs ``test_sizes`` of every
            dataset); ``"none"``: they resample the models only; ``"auto"``: binomial for the
            datasets in ``test_sizes``.
        test_sizes: Dataset -> images in its test split (the metrics on its own test set;
            evaluations on other test sets have no test-set noise).

    Returns:
        The analysis.

    Raises:
        ValueError: On invalid arguments or an unusable reference.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    bootstrap = stats.Bootstrap(n_resamples=n_bootstrap, seed=seed)
    sizes, noise_choice = noise_sizes(test_noise, test_sizes, table.datasets)
    usable_models = table.frame.groupby("dataset")["model"].nunique()
    counts = {name: int(usable_models.get(name, 0)) for name in table.datasets}
    ref, how = choose_reference(counts, reference)
    primary, primary_how = choose_slice(table, ref, regime, metric)
    part = table.slice(*primary)
    models, datasets, errors = part.error_matrix()
    column = {name: errors[:, i] for i, name in enumerate(datasets)}
    columns = table.error_columns()
    targets = {
        name: _target_keys(name, *primary)
        | {"reference_slice": slice_label(*primary)}
        | _pair(
            models,
            column[ref],
            column[name],
            (ref, name),
            top_k,
            bootstrap,
            (_test_size(sizes, ref, primary[1]), _test_size(sizes, name, primary[1])),
        )
        for name in datasets
        if name != ref
    }
    targets |= _cross_slice_targets(columns, primary, ref, top_k, bootstrap, sizes)

    summary = {
        "schema_version": SCHEMA_VERSION,
        "title": title or f"APR analysis: {plural(len(table.datasets), 'dataset')} vs {ref}",
        "input": _input_summary(table, part, models, errors),
        "settings": {
            "reference": ref,
            "reference_choice": how,
            "regime": primary[0],
            "metric": primary[1],
            "slice": slice_label(*primary),
            "slice_choice": primary_how,
            "top_k": top_k,
            "n_bootstrap": n_bootstrap,
            "max_resamples": stats.MAX_RESAMPLES,
            "bootstrap_tolerance": bootstrap.tolerance,
            "bootstrap_pilot": stats.PILOT_RESAMPLES,
            "test_noise": "binomial" if sizes else "none",
            "test_noise_choice": noise_choice,
            "test_sizes": sizes,
            "interval_method": interval_method(sizes),
            "seed": seed,
            "ci_level": stats.CI_LEVEL,
            "logit_clip": stats.LOGIT_EPS,
            "min_models": stats.MIN_MODELS,
            "min_reliable_models": stats.MIN_RELIABLE_MODELS,
        },
        "datasets": _dataset_summaries(part, models, column),
        "exclusions": _exclusions(table, models, column),
        "apr": {"reference": ref, "slice": slice_label(*primary), "targets": targets},
        "correlation_matrix": stats.correlation_matrix(errors, datasets),
        "top_k": _top_k_tables(part, models, column, top_k),
    }
    features, profiles, summary["architecture"] = _architecture(part, models, column, top_k)
    summary["seed_variance"] = _seed_summary(table, *primary, bootstrap)
    summary["slices"] = _slice_summaries(columns)
    summary["comparisons"] = _slice_comparisons(columns, top_k, bootstrap, sizes)
    summary["warnings"] = few_model_statistics(summary)
    summary["metrics"] = flat_metrics(summary)
    return Analysis(summary, part, models, datasets, errors, columns, features, profiles)


def noise_sizes(
    test_noise: str, test_sizes: Mapping[str, int] | None, datasets: list[str]
) -> tuple[dict[str, int], str]:
    """The test-set sizes whose binomial noise the intervals include, and why.

    Args:
        test_noise: ``"auto"``, ``"binomial"`` or ``"none"`` (see :func:`compute_analysis`).
        test_sizes: Dataset -> test images, as given.
        datasets: The datasets of the results.

    Returns:
        ``(sizes, choice)``: dataset -> test images (empty: no test-set noise) and how that
        was decided, in words.

    Raises:
        ValueError: An unknown mode, a size that is not a positive whole number, a size of a
            dataset the results lack, or ``"binomial"`` without the size of every dataset.
    """
    if test_noise not in stats.TEST_NOISE:
        raise ValueError(f"test_noise must be one of {stats.TEST_NOISE}, got {test_noise!r}")
    sizes = dict(test_sizes or {})
    unknown = sorted(set(sizes) - set(datasets))
    if unknown:
        raise ValueError(
            f"test-set sizes given for datasets not in the results: {unknown}; datasets "
            f"present: {sorted(datasets)}"
        )
    invalid = {
        name: n
        for name, n in sizes.items()
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
    }
    if invalid:
        raise ValueError(f"test-set sizes must be positive whole numbers of images: {invalid}")
    if test_noise == "none":
        return {}, "none, as requested"
    missing = sorted(set(datasets) - set(sizes))
    if test_noise == "binomial" and missing:
        raise ValueError(
            f"binomial test-set noise needs the test-set size of every dataset; missing: "
            f"{missing} (give them, e.g. --test-size {missing[0]}=10000, or use 'auto')"
        )
    if not sizes:
        return {}, "none: no test-set sizes given"
    how = "as requested" if test_noise == "binomial" else "the test-set sizes given"
    without = f"; none for {', '.join(missing)} (size not given)" if missing else ""
    return {name: int(sizes[name]) for name in sorted(sizes)}, f"binomial, {how}{without}"


def interval_method(sizes: Mapping[str, int]) -> str:
    """How the intervals are computed, in words (``sizes``: see :func:`noise_sizes`)."""
    if sizes:
        listed = ", ".join(f"{name} {n:,}" for name, n in sizes.items())
        noise = (
            "; with binomial test-set noise: in each resample every model's error is redrawn "
            f"from Binomial(n_test, error) / n_test (test images: {listed}; evaluations on "
            "other test sets without)"
        )
    else:
        noise = (
            "; without test-set noise (they cover which models were sampled, not the finite "
            "test sets the errors were measured on)"
        )
    return (
        "95% percentile bootstrap over models (resampled with replacement)"
        f"{noise}; Spearman, Kendall tau-b and log-odds r recomputed exactly on each "
        f"resample; after a pilot of "
        f"{stats.PILOT_RESAMPLES} resamples, more in rounds until the Monte-Carlo standard "
        f"error of every endpoint (estimated from the resamples around it) is below "
        f"{stats.MC_TOLERANCE}, up to the requested number (at most "
        f"{stats.MAX_RESAMPLES:,}); where that number stops it first, the endpoints' error is "
        "printed beside them (±); endpoints are rounded to the decimals their error supports"
    )


def _test_size(sizes: Mapping[str, int], dataset: str, metric: str) -> int | None:
    """The test images behind a dataset's metric: its test split's for a metric on its own
    test set, None for an evaluation on another one (its size is not known)."""
    return sizes.get(dataset) if split_evaluation(metric)[1] == OWN_TEST_SET else None


def _pair(
    models: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    names: tuple[str, str],
    k: int,
    bootstrap: stats.Bootstrap,
    test_sizes: tuple[int | None, int | None],
) -> dict:
    """:func:`stats.pair_statistics` with the test-set sizes behind each side (``None``: no
    test-set noise), which the result records as ``test_sizes``."""
    pair = stats.pair_statistics(models, x, y, names, k, bootstrap, test_sizes)
    return pair | {"test_sizes": list(test_sizes)}


def few_model_statistics(summary: dict) -> list[dict]:
    """Every statistic of the summary that rests on fewer than ``MIN_RELIABLE_MODELS``
    models: ``{"section", "name", "n_models"}`` (reference comparisons, comparisons across
    slices, correlation-matrix cells, architecture correlations per dataset)."""
    floor = stats.MIN_RELIABLE_MODELS
    found = []
    ref = summary["apr"]["reference"]
    for name, pair in summary["apr"]["targets"].items():
        if "warning" in pair:
            found.append(
                {"section": "apr", "name": f"{ref} vs {name}", "n_models": pair["n_models"]}
            )
    for c in summary["comparisons"]:
        if "warning" in c:
            name = f"{c['dataset']}: {c['a']} vs {c['b']}"
            found.append({"section": "comparisons", "name": name, "n_models": c["n_models"]})
    matrix = summary["correlation_matrix"]
    names = matrix["datasets"]
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            n = matrix["n_shared"][i][j]
            if matrix["spearman"][i][j] is not None and n < floor:
                found.append(
                    {"section": "correlation_matrix", "name": f"{a} vs {names[j]}", "n_models": n}
                )
    for dataset, per_feature in summary["architecture"].get("spearman", {}).items():
        defined = [e["n_models"] for e in per_feature.values() if e["value"] is not None]
        if defined and min(defined) < floor:
            found.append({"section": "architecture", "name": dataset, "n_models": min(defined)})
    return found


def _cross_slice_targets(
    columns: pd.DataFrame,
    primary: tuple[str, str],
    ref: str,
    k: int,
    bootstrap: stats.Bootstrap,
    sizes: Mapping[str, int],
) -> dict[str, dict]:
    """Every dataset of every other slice against the reference: the reference in the same
    slice when the slice has it (e.g. a second training recipe), else the reference in the
    primary slice (e.g. transfer regimes against source accuracy, Kornblith et al.)."""
    models = columns.index.to_numpy(dtype=str)
    targets = {}
    for regime, metric, dataset in columns.columns:
        # The reference dataset under another regime is a slice comparison (below).
        if (regime, metric) == primary or dataset == ref:
            continue
        own = (regime, metric, ref) in columns.columns
        ref_slice = (regime, metric) if own else primary
        reference = columns[(*ref_slice, ref)].to_numpy(dtype=float)
        names = (f"{ref} ({slice_label(*ref_slice)})", f"{dataset} ({slice_label(regime, metric)})")
        targets[names[1]] = (
            _target_keys(dataset, regime, metric)
            | {"reference_slice": slice_label(*ref_slice)}
            | _pair(
                models,
                reference,
                columns[(regime, metric, dataset)].to_numpy(dtype=float),
                names,
                k,
                bootstrap,
                (_test_size(sizes, ref, ref_slice[1]), _test_size(sizes, dataset, metric)),
            )
        )
    return targets


def _target_keys(dataset: str, regime: str, metric: str) -> dict:
    return {
        "dataset": dataset,
        "regime": regime,
        "metric": metric,
        "slice": slice_label(regime, metric),
    }


def _slice_summaries(columns: pd.DataFrame) -> dict[str, dict]:
    """Per ``(regime, metric)``: the error summary of each dataset."""
    result: dict[str, dict] = {}
    for regime, metric, dataset in columns.columns:
        values = columns[(regime, metric, dataset)].to_numpy(dtype=float)
        entry = result.setdefault(
            slice_label(regime, metric), {"regime": regime, "metric": metric, "datasets": {}}
        )
        entry["datasets"][dataset] = stats.describe(values)
    return result


def _slice_comparisons(
    columns: pd.DataFrame, k: int, bootstrap: stats.Bootstrap, sizes: Mapping[str, int]
) -> list[dict]:
    """Every two ``(regime, metric)`` slices on each dataset they share, over the same
    models: Spearman, Kendall tau and weighted tau (do the top models agree?), log-odds r,
    top-k overlap and what choosing by the first costs on the second. Further evaluations of
    the checkpoints (top-5, another test set) are compared one step at a time: within a
    regime, the same metric on two test sets or two metrics on one test set; across regimes,
    the same metric only."""
    models = columns.index.to_numpy(dtype=str)
    by_dataset: dict[str, list[tuple[str, str]]] = {}
    for regime, metric, dataset in columns.columns:
        by_dataset.setdefault(dataset, []).append((regime, metric))
    result = []
    for dataset, slices in sorted(by_dataset.items()):
        for i, first in enumerate(slices):
            for second in slices[i + 1 :]:
                a, b = slice_label(*first), slice_label(*second)
                evaluations = _is_evaluation(first[1]) or _is_evaluation(second[1])
                if first[1] == second[1]:
                    kind = "regimes"  # e.g. two training recipes (ResNet strikes back)
                elif first[0] == second[0]:
                    if evaluations and not _one_step_apart(first[1], second[1]):
                        continue
                    kind = "metrics"
                elif evaluations:
                    # Recipe A's error on one test set vs recipe B's on another says nothing
                    # the "regimes" and "metrics" pairs do not; with several recipes and
                    # evaluations these pairs would grow quadratically.
                    continue
                else:
                    kind = "regime and metric"  # e.g. a cheap score vs fine-tuned accuracy
                x = columns[(*first, dataset)].to_numpy(dtype=float)
                y = columns[(*second, dataset)].to_numpy(dtype=float)
                pair = _pair(
                    models,
                    x,
                    y,
                    (f"{dataset} ({a})", f"{dataset} ({b})"),
                    k,
                    bootstrap,
                    (_test_size(sizes, dataset, first[1]), _test_size(sizes, dataset, second[1])),
                )
                if pair.get("reason") is None:
                    # Choosing is directional: also what choosing by B costs on A.
                    shared = np.isfinite(x) & np.isfinite(y)
                    reverse = stats.top_k_agreement(models[shared], y[shared], x[shared], k)
                    pair["reverse_selection"] = reverse["selection"]
                result.append({"dataset": dataset, "a": a, "b": b, "kind": kind} | pair)
    return result


def _is_evaluation(metric: str) -> bool:
    """A further evaluation of the trained checkpoints (``top5_error``, ``<m>@<test set>``)."""
    return metric in COMPANION_COLUMNS or split_evaluation(metric)[1] != OWN_TEST_SET


def _one_step_apart(first: str, second: str) -> bool:
    """Two evaluations that differ in one thing only: the metric on one test set
    (``top1_error`` vs ``top5_error``), or one metric on two test sets (``top1_error`` vs
    ``top1_error@v2``); ``top1_error`` vs ``top5_error@v2`` differs in both."""
    (base_a, set_a), (base_b, set_b) = split_evaluation(first), split_evaluation(second)
    return base_a == base_b or set_a == set_b


def _input_summary(
    table: ResultsTable, part: ResultsTable, models: np.ndarray, errors: np.ndarray
) -> dict:
    seeds = table.frame.groupby(["model", "dataset", "regime", "metric"]).size()
    return {
        "source": table.source,
        "layout": table.layout,
        "metric_column": part.metric_column,
        "metric_kind": part.metric_kind,
        "scale": part.scale,
        "scale_source": part.scale_source,
        "units": {
            name: {"kind": unit.kind, "scale": unit.scale, "source": unit.source}
            for name, unit in table.units.items()
        },
        "slices": [slice_label(*s) for s in table.slices],
        "skipped_metrics": table.skipped_metrics,
        "n_rows": table.n_input_rows,
        "n_rows_used": len(table.frame),
        "n_rows_excluded": len(table.excluded),
        "n_models": int(models.size),
        "n_models_complete": int(np.isfinite(errors).all(axis=1).sum()),
        "n_datasets": errors.shape[1],
        "has_seed": table.has_seed,
        "max_seeds_per_result": int(seeds.max()) if table.has_seed else 1,
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
        | {"slice": slice_label(row["regime"], row["metric"])}
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
    stages = [c for c in table.arch_columns if c[0] in ARCH_GROUPS and c[1:].isdigit()]
    # A model without stage values (a named timm model among sampled AnyNets) has no AnyNet
    # features: left out here rather than counted by its FLOPs alone.
    staged = arch[stages].notna().all(axis=1).to_numpy() if stages else np.ones(len(models), bool)
    column = {name: np.where(staged, values, np.nan) for name, values in column.items()}
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
    if not staged.all():
        summary["left_out"] = {
            "models": [str(m) for m in models[~staged]],
            "reason": "named architectures such as timm models: no AnyNet stage columns, so no "
            "depth, width, bottleneck ratio or group width",
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


def evaluations_of(metrics: list[str], metric: str) -> dict[str, str]:
    """The evaluations of the same checkpoints as ``metric``: test set -> metric, ``metric``
    first, then the other metrics with the same base (``top1_error`` ->
    ``top1_error@val``, ``top1_error@imagenet_v2``) by name."""
    base = split_evaluation(metric)[0]
    others = sorted(m for m in metrics if m != metric and split_evaluation(m)[0] == base)
    return {split_evaluation(m)[1]: m for m in [metric, *others]}


def _seed_summary(
    table: ResultsTable, regime: str, metric: str, bootstrap: stats.Bootstrap
) -> dict:
    """The seed study (:func:`stats.seed_study`) of the primary regime: spread of each
    evaluation of the primary metric across seeds, and the correlation across seeds between
    two test sets of the same checkpoints."""
    if not table.has_seed:
        return {"available": False, "reason": "no seed column in the input"}
    frame = table.frame[table.frame["regime"] == regime]
    evaluations = evaluations_of(sorted(set(frame["metric"])), metric)
    frame = frame[frame["metric"].isin(list(evaluations.values()))]
    if frame.groupby(["model", "dataset", "metric"]).size().max() < 2:
        return {"available": False, "reason": "every model has a single seed per dataset"}
    return {"available": True, "regime": regime} | stats.seed_study(frame, evaluations, bootstrap)


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
        # Targets of the primary slice keep the dataset name; others add their slice.
        where = (
            (name,)
            if pair["slice"] == summary["apr"]["slice"]
            else (pair["slice"], pair["dataset"])
        )
        candidates[metric_name("n_models_shared", *where)] = pair["n_models"]
        for key, stat, field_name in (
            ("spearman_rho", "spearman", "value"),
            ("spearman_ci_low", "spearman", "ci_low"),
            ("spearman_ci_high", "spearman", "ci_high"),
            ("kendall_tau", "kendall", "value"),
            ("kendall_ci_low", "kendall", "ci_low"),
            ("kendall_ci_high", "kendall", "ci_high"),
            ("pearson_logit_r", "pearson_logit", "value"),
            ("weighted_tau", "weighted_tau", "value"),
            ("topk_overlap", "top_k", "value"),
            ("selection_loss", "selection", "loss"),
        ):
            candidates[metric_name(key, *where)] = pair[stat].get(field_name)
    for pair in summary["comparisons"]:
        where = (f"{pair['a']} vs {pair['b']}", pair["dataset"])
        for key, stat in (
            ("compare_spearman_rho", "spearman"),
            ("compare_kendall_tau", "kendall"),
            ("compare_weighted_tau", "weighted_tau"),
        ):
            candidates[metric_name(key, *where)] = pair[stat]["value"]
    for name, per_feature in summary["architecture"].get("spearman", {}).items():
        for feature, entry in per_feature.items():
            candidates[metric_name("arch_spearman", feature, name)] = entry["value"]
    seeds = summary["seed_variance"]
    for name, entry in seeds.get("per_dataset", {}).items():
        candidates[metric_name("seed_std_mean", name)] = entry["mean_std"]
        for test_set, spread in entry["test_sets"].items():
            if test_set != entry["test_set"]:
                candidates[metric_name("seed_std_mean", name, test_set)] = spread["mean_std"]
    for pair in seeds.get("test_set_pairs", []):
        where = (pair["dataset"], " vs ".join(pair["test_sets"]))
        candidates[metric_name("seed_pair_r", *where)] = pair["pooled_within_model_r"]
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
