"""Loading and validating the tidy results table.

The table has one row per (model, dataset[, seed]). Whatever metric column it carries
(error or accuracy, percent or fraction) is normalised to ``error`` in percent, so every
statistic downstream works on one quantity. Rows that did not produce a usable result
(status ``diverged``/``failed`` or an empty metric cell) are moved to an explicit exclusion
list instead of being dropped silently.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METRIC_COLUMNS = ("error", "top1_error", "accuracy", "top1")
SCALES = ("percent", "fraction")
STATUSES = ("ok", "diverged", "failed")
STAGES = (1, 2, 3, 4)
# Architecture parameter groups: prefix -> meaning. A group is used only when all four
# per-stage columns are present, because the derived features (sums, means) need all stages.
ARCH_GROUPS = {"d": "depth", "w": "width", "b": "bottleneck ratio", "g": "group width"}
EXTRA_ARCH_COLUMNS = ("flops", "params")
# Status given to ok rows whose metric cell is empty: they cannot enter any statistic.
MISSING_METRIC = "missing_metric"


@dataclass(frozen=True)
class ResultsTable:
    """A validated results table.

    Attributes:
        frame: One row per usable result with columns ``model``, ``dataset``, ``error``
            (percent), ``seed`` when ``has_seed``, and the architecture columns.
        excluded: Rows left out of every statistic, with columns ``model``, ``dataset``,
            ``seed`` (or None), ``status`` and ``reason``.
        metric_column: Name of the input column the error was derived from.
        metric_kind: ``"error"`` or ``"accuracy"``.
        scale: ``"percent"`` or ``"fraction"`` (of the input column).
        scale_source: ``"detected"`` or ``"forced"``.
        arch_columns: Architecture columns present (``d1..d4`` etc., ``flops``, ``params``).
        has_seed: Whether the input had a ``seed`` column.
        source: Where the table came from (a path or ``"<DataFrame>"``).
        n_input_rows: Number of data rows in the input.
    """

    frame: pd.DataFrame
    excluded: pd.DataFrame
    metric_column: str
    metric_kind: str
    scale: str
    scale_source: str
    arch_columns: tuple[str, ...]
    has_seed: bool
    source: str
    n_input_rows: int

    @property
    def datasets(self) -> list[str]:
        """Datasets with at least one usable or excluded row, sorted by name."""
        return sorted(set(self.frame["dataset"]) | set(self.excluded["dataset"]))

    @property
    def arch_groups(self) -> tuple[str, ...]:
        """Architecture group prefixes (``d``, ``w``, ``b``, ``g``) with all four stages."""
        return tuple(p for p in ARCH_GROUPS if all(f"{p}{s}" in self.arch_columns for s in STAGES))

    def error_matrix(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Mean error per model and dataset (mean over seeds when there are several).

        Returns:
            ``(models, datasets, errors)``: sorted model ids, sorted dataset names and a
            ``(n_models, n_datasets)`` float array with NaN where a model has no usable
            result on a dataset.
        """
        wide = self.frame.pivot_table(
            index="model", columns="dataset", values="error", aggfunc="mean", sort=True
        )
        datasets = self.datasets
        wide = wide.reindex(columns=datasets)
        return wide.index.to_numpy(dtype=str), datasets, wide.to_numpy(dtype=float)

    def architectures(self) -> pd.DataFrame:
        """Architecture columns per model (index: model id, sorted)."""
        return (
            self.frame[["model", *self.arch_columns]]
            .drop_duplicates("model")
            .set_index("model")
            .sort_index()
        )


def load_results(
    source: str | Path | pd.DataFrame, metric: str | None = None, scale: str | None = None
) -> ResultsTable:
    """Load, validate and normalise a tidy results table.

    Args:
        source: A CSV or Parquet path (``.parquet``/``.pq``), or a DataFrame. CSV lines that
            start with ``#`` are comments.
        metric: Column holding the metric. Default: the first of ``error``, ``top1_error``,
            ``accuracy``, ``top1`` present. A name containing ``err`` is read as an error,
            anything else as an accuracy.
        scale: ``"percent"`` or ``"fraction"``. Default: detected, fraction when every
            value lies in [0, 1].

    Returns:
        The validated table.

    Raises:
        ValueError: On an unreadable file, an empty table, missing or non-numeric
            columns, out-of-range values, unknown status values, duplicate
            (model, dataset[, seed]) rows or when no row is usable.
    """
    if scale is not None and scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    raw, name = _read(source)
    if raw.empty:
        raise ValueError(f"results table {name} is empty (no data rows)")
    missing = [c for c in ("model", "dataset") if c not in raw.columns]
    if missing:
        raise ValueError(
            f"results table {name} lacks required column(s) {missing}; "
            f"columns present: {list(raw.columns)}"
        )
    metric = _pick_metric(raw, metric, name)
    df = pd.DataFrame(
        {
            "model": _text_column(raw, "model", name),
            "dataset": _text_column(raw, "dataset", name),
        }
    )
    has_seed = "seed" in raw.columns
    if has_seed:
        seed = _numeric_column(raw, "seed", name)
        if seed.isna().any():
            raise ValueError(f"column 'seed' of {name} has empty cells; give every row a seed")
        # Seeds are read as floats (NaN-able); keep integers as integers in the outputs.
        df["seed"] = seed.astype(int) if (seed % 1 == 0).all() else seed
    keys = ["model", "dataset", "seed"] if has_seed else ["model", "dataset"]
    dupes = df[df.duplicated(keys, keep=False)]
    if not dupes.empty:
        shown = dupes[keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(
            f"results table {name} has {len(dupes)} rows with duplicate {tuple(keys)}, "
            f"e.g. {shown}; keep one row per {tuple(keys)}"
        )
    df["status"] = _status_column(raw, name)
    reasons = raw["status_reason"] if "status_reason" in raw.columns else pd.Series("", raw.index)
    df["reason"] = reasons.fillna("").astype(str)
    value = _numeric_column(raw, metric, name)
    arch_columns = _arch_columns(raw)
    for col in arch_columns:
        df[col] = _numeric_column(raw, col, name)

    empty_metric = (df["status"] == "ok") & value.isna()
    df.loc[empty_metric, "status"] = MISSING_METRIC
    df.loc[empty_metric, "reason"] = f"empty '{metric}' cell"
    ok = df["status"] == "ok"
    if not ok.any():
        raise ValueError(
            f"results table {name} has no usable row: all {len(df)} rows are "
            f"diverged/failed or lack a '{metric}' value"
        )
    resolved_scale, scale_source = _resolve_scale(value[ok], scale, metric, name)
    kind = "error" if "err" in metric.lower() else "accuracy"
    percent = value * (100.0 if resolved_scale == "fraction" else 1.0)
    error = percent if kind == "error" else 100.0 - percent
    # Rounding removes float noise such as 100 - 90.056 = 9.944000000000003 from the outputs.
    df["error"] = error.round(10)

    _check_constant_architecture(df[ok], arch_columns, name)
    frame = df.loc[ok, [*keys, "error", *arch_columns]].reset_index(drop=True)
    excluded = df.loc[~ok, ["model", "dataset", "status", "reason"]].copy()
    excluded.insert(2, "seed", df.loc[~ok, "seed"] if has_seed else None)
    return ResultsTable(
        frame=frame,
        excluded=excluded.reset_index(drop=True),
        metric_column=metric,
        metric_kind=kind,
        scale=resolved_scale,
        scale_source=scale_source,
        arch_columns=arch_columns,
        has_seed=has_seed,
        source=name,
        n_input_rows=len(df),
    )


def _read(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Read a DataFrame, CSV (skipping ``#`` comment lines) or Parquet file."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), "<DataFrame>"
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"results file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path), str(path)
        # Drop only whole-line comments: pandas' comment= would also cut a '#' inside an id.
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        text = "".join(line for line in lines if not line.lstrip().startswith("#"))
        if not text.strip():
            raise ValueError(f"results table {path} is empty (no header, no rows)")
        return pd.read_csv(io.StringIO(text)), str(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ImportError) as exc:
        raise ValueError(f"cannot read results table {path}: {exc}") from exc


def _pick_metric(raw: pd.DataFrame, metric: str | None, name: str) -> str:
    if metric is not None:
        if metric not in raw.columns:
            raise ValueError(
                f"metric column {metric!r} not in {name}; columns present: {list(raw.columns)}"
            )
        return metric
    for col in METRIC_COLUMNS:
        if col in raw.columns:
            return col
    raise ValueError(
        f"results table {name} has no metric column: expected one of {list(METRIC_COLUMNS)} "
        f"(or name one with metric=/--metric); columns present: {list(raw.columns)}"
    )


def _text_column(raw: pd.DataFrame, col: str, name: str) -> pd.Series:
    values = raw[col]
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any():
        rows = list(raw.index[blank][:5])
        raise ValueError(f"column {col!r} of {name} has empty cells (rows {rows})")
    return values.astype(str).str.strip()


def _numeric_column(raw: pd.DataFrame, col: str, name: str) -> pd.Series:
    """Convert a column to float; empty cells become NaN, anything else must parse."""
    values = pd.to_numeric(raw[col], errors="coerce").astype(float)
    bad = values.isna() & raw[col].notna() & (raw[col].astype(str).str.strip() != "")
    if bad.any():
        examples = raw.loc[bad, col].astype(str).head(3).tolist()
        raise ValueError(
            f"column {col!r} of {name} has {int(bad.sum())} non-numeric value(s), e.g. {examples}"
        )
    if np.isinf(values).any():
        raise ValueError(f"column {col!r} of {name} contains infinite values")
    return values


def _status_column(raw: pd.DataFrame, name: str) -> pd.Series:
    if "status" not in raw.columns:
        return pd.Series("ok", index=raw.index)
    status = raw["status"].fillna("ok").astype(str).str.strip().str.lower()
    status = status.replace("", "ok")
    unknown = sorted(set(status) - set(STATUSES))
    if unknown:
        raise ValueError(
            f"column 'status' of {name} has unknown value(s) {unknown}; valid: {list(STATUSES)}"
        )
    return status


def _arch_columns(raw: pd.DataFrame) -> tuple[str, ...]:
    cols = [f"{p}{s}" for p in ARCH_GROUPS for s in STAGES if f"{p}{s}" in raw.columns]
    return tuple(cols) + tuple(c for c in EXTRA_ARCH_COLUMNS if c in raw.columns)


def _resolve_scale(values: pd.Series, scale: str | None, metric: str, name: str) -> tuple[str, str]:
    """Detect (or check the forced) scale of the metric column."""
    low, high = float(values.min()), float(values.max())
    if scale is None:
        scale = "fraction" if low >= 0.0 and high <= 1.0 else "percent"
        source = "detected"
    else:
        source = "forced"
    limit = 1.0 if scale == "fraction" else 100.0
    if low < 0.0 or high > limit:
        raise ValueError(
            f"column {metric!r} of {name} ranges over [{low:g}, {high:g}], outside [0, {limit:g}] "
            f"for scale {scale!r}"
        )
    return scale, source


def _check_constant_architecture(ok: pd.DataFrame, arch_columns: tuple[str, ...], name: str):
    """An architecture is one model: its columns must agree across datasets and seeds."""
    if not arch_columns:
        return
    varying = ok.groupby("model")[list(arch_columns)].nunique(dropna=False).gt(1)
    if varying.to_numpy().any():
        model = varying.index[varying.any(axis=1)][0]
        cols = list(varying.columns[varying.loc[model]])
        raise ValueError(
            f"model {model!r} in {name} has different values of {cols} across rows; "
            "architecture columns must be identical for every row of a model"
        )
