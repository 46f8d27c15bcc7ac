"""Loading and validating the results table.

Two layouts are read:

- **wide**: one row per (model, dataset[, regime][, seed]) and one or more metric columns,
  e.g. ``top1_error``, plus, for several evaluations of the same checkpoint, ``top5_error``
  and ``<metric>@<test set>`` columns (``top1_error@val``, ``top1_error@imagenet_v2``: the
  same trained model evaluated on its validation split or on another test set);
- **long**: one row per (model, dataset[, regime], metric[, seed]) with the columns
  ``metric`` and ``value`` (transfer results, several regimes and metrics per model).

Both become one canonical frame with a ``regime`` and a ``metric`` per row. Every metric is
normalised to ``error`` in percent, so every statistic downstream works on one quantity. Its
unit is data: given by the caller (``scale=``, ``--scale``), a header line
(``# unit: percent``) or a ``unit`` column; a metric whose values all lie in [0, 1] without
a stated unit is refused, because 0.4 could be 0.4 % or 40 %. Rows that did not produce a
usable result (status ``diverged``/``failed`` or an empty metric cell) are moved to an
explicit exclusion list instead of being dropped silently.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.words import noun, plural

METRIC_COLUMNS = ("error", "top1_error", "accuracy", "top1")
# Read beside the primary metric column of a wide table by default: further evaluations of the
# same checkpoints (top-5 error, other splits or test sets as ``<metric>@<test set>``).
COMPANION_COLUMNS = ("top5_error",)
EVALUATION_SEPARATOR = "@"
# The test set of a plain metric (no ``@<test set>``): the trained dataset's test split.
OWN_TEST_SET = "test"
SCALES = ("percent", "fraction")
STATUSES = ("ok", "diverged", "failed")
# The first of these columns present names the training regime / recipe / transfer method.
REGIME_COLUMNS = ("regime", "recipe", "method")
LONG_COLUMNS = ("metric", "value")
UNIT_COLUMN = "unit"
# Optional link of a row to its tracked run (e.g. the MLflow run of the trial).
RUN_URL_COLUMN = "run_url"
# Optional link of a row to its logged model (e.g. a registered MLflow model version).
MODEL_URL_COLUMN = "model_url"
LINK_COLUMNS = (RUN_URL_COLUMN, MODEL_URL_COLUMN)
STAGES = (1, 2, 3, 4)
# Architecture parameter groups: prefix -> meaning. A group is used only when all four
# per-stage columns are present, because the derived features (sums, means) need all stages.
ARCH_GROUPS = {"d": "depth", "w": "width", "b": "bottleneck ratio", "g": "group width"}
EXTRA_ARCH_COLUMNS = ("flops", "params")
# Status given to ok rows whose metric cell is empty: they cannot enter any statistic.
MISSING_METRIC = "missing_metric"
# "# unit: percent" (every metric) or "# unit top1_error: percent" (one metric).
_UNIT_LINE = re.compile(r"^#\s*unit(?:\s+(?P<metric>[^:\s]+))?\s*:\s*(?P<scale>\S+)\s*$", re.I)


@dataclass(frozen=True)
class Unit:
    """How one metric is read.

    Attributes:
        kind: ``"error"`` or ``"accuracy"`` (from the metric's name).
        scale: ``"percent"`` or ``"fraction"``.
        source: Where the scale came from (argument, header line, unit column, or inferred
            from values above 1, which a fraction cannot have).
    """

    kind: str
    scale: str
    source: str


@dataclass(frozen=True)
class ResultsTable:
    """A validated results table.

    Attributes:
        frame: One row per usable result with columns ``model``, ``dataset``, ``regime``
            (``""`` when the input has none), ``metric``, ``error`` (percent), ``seed`` when
            ``has_seed``, the architecture columns, and ``run_url`` and ``model_url`` when
            present (``""`` in a row without a link).
        excluded: Rows left out of every statistic, with columns ``model``, ``dataset``,
            ``regime``, ``metric``, ``seed`` (or None), ``status`` and ``reason``.
        units: Metric -> :class:`Unit`.
        layout: ``"wide"`` or ``"long"``.
        arch_columns: Architecture columns present (``d1..d4`` etc., ``flops``, ``params``).
        has_seed: Whether the input had a ``seed`` column.
        source: Where the table came from (a path, or the name given for a DataFrame).
        n_input_rows: Number of data rows in the input.
        skipped_metrics: Metric -> why it is not analysed (long tables: neither an error nor
            an accuracy, e.g. a chosen hyper-parameter).
        primary_metric: Wide tables: the metric column named or picked first (the default
            primary slice); None for long tables.
        regime_column: The input column the regimes came from (``regime``, ``recipe`` or
            ``method``: how the reports name a regime), None when there is none.
    """

    frame: pd.DataFrame
    excluded: pd.DataFrame
    units: dict[str, Unit]
    layout: str
    arch_columns: tuple[str, ...]
    has_seed: bool
    source: str
    n_input_rows: int
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    primary_metric: str | None = None
    regime_column: str | None = None

    def _single_unit(self) -> tuple[str, Unit]:
        if len(self.units) != 1:
            raise ValueError(f"the table holds {len(self.units)} metrics; take a slice first")
        return next(iter(self.units.items()))

    @property
    def metric_column(self) -> str:
        """The metric of a one-metric table (its column name in a wide table)."""
        return self._single_unit()[0]

    @property
    def metric_kind(self) -> str:
        """``"error"`` or ``"accuracy"`` of a one-metric table."""
        return self._single_unit()[1].kind

    @property
    def scale(self) -> str:
        """``"percent"`` or ``"fraction"`` of a one-metric table."""
        return self._single_unit()[1].scale

    @property
    def scale_source(self) -> str:
        """Where the scale of a one-metric table came from."""
        return self._single_unit()[1].source

    @property
    def datasets(self) -> list[str]:
        """Datasets with at least one usable or excluded row, sorted by name."""
        names = set(self.frame["dataset"].unique()) | set(self.excluded["dataset"].unique())
        return sorted(str(name) for name in names)

    @property
    def slices(self) -> list[tuple[str, str]]:
        """``(regime, metric)`` pairs with at least one usable row, sorted."""
        pairs = self.frame[["regime", "metric"]].drop_duplicates()
        return sorted(zip(pairs["regime"], pairs["metric"], strict=True))

    @property
    def arch_groups(self) -> tuple[str, ...]:
        """Architecture group prefixes (``d``, ``w``, ``b``, ``g``) with all four stages."""
        return tuple(p for p in ARCH_GROUPS if all(f"{p}{s}" in self.arch_columns for s in STAGES))

    def slice(self, regime: str, metric: str) -> ResultsTable:
        """The rows of one ``(regime, metric)``, as a table of its own."""
        if (regime, metric) not in self.slices:
            raise ValueError(
                f"no usable result for regime {regime!r} and metric {metric!r}; "
                f"present: {[slice_label(*s) for s in self.slices]}"
            )

        def rows(frame: pd.DataFrame) -> pd.DataFrame:
            keep = (frame["regime"] == regime) & (frame["metric"] == metric)
            return frame[keep].reset_index(drop=True)

        return replace(
            self,
            frame=rows(self.frame),
            excluded=rows(self.excluded),
            units={metric: self.units[metric]},
        )

    def error_matrix(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Mean error per model and dataset (mean over seeds when there are several).

        Only for a table with one ``(regime, metric)`` (see :meth:`slice`).

        Returns:
            ``(models, datasets, errors)``: sorted model ids, sorted dataset names and a
            ``(n_models, n_datasets)`` float array with NaN where a model has no usable
            result on a dataset.
        """
        if len(self.slices) > 1:
            raise ValueError(
                f"the table holds {len(self.slices)} (regime, metric) slices; take one first"
            )
        wide = self.frame.pivot_table(
            index="model", columns="dataset", values="error", aggfunc="mean", sort=True
        )
        datasets = self.datasets
        wide = wide.reindex(columns=datasets)
        return wide.index.to_numpy(dtype=str), datasets, wide.to_numpy(dtype=float)

    def error_columns(self) -> pd.DataFrame:
        """Mean error over seeds per model (rows, sorted) and (regime, metric, dataset)."""
        return self.frame.pivot_table(
            index="model",
            columns=["regime", "metric", "dataset"],
            values="error",
            aggfunc="mean",
            sort=True,
        )

    def architectures(self) -> pd.DataFrame:
        """Architecture columns per model (index: model id, sorted)."""
        return (
            self.frame[["model", *self.arch_columns]]
            .drop_duplicates("model")
            .set_index("model")
            .sort_index()
        )

    def run_urls(self) -> dict[tuple[str, str], str]:
        """``(model, dataset)`` -> link of its tracked run (first by regime, metric, seed)."""
        if RUN_URL_COLUMN not in self.frame.columns:
            return {}
        rows = self.frame[self.frame[RUN_URL_COLUMN] != ""].sort_values(
            ["model", "dataset", "regime", "metric", *(["seed"] if self.has_seed else [])]
        )
        first = rows.drop_duplicates(["model", "dataset"])
        return dict(
            zip(
                zip(first["model"], first["dataset"], strict=True),
                first[RUN_URL_COLUMN],
                strict=True,
            )
        )


def slice_label(regime: str, metric: str) -> str:
    """How a ``(regime, metric)`` is named in reports and metric keys: ``regime/metric``."""
    return f"{regime}/{metric}" if regime else metric


def split_evaluation(metric: str) -> tuple[str, str]:
    """``(base metric, test set)`` of a metric name: ``top1_error@imagenet_v2`` ->
    ``("top1_error", "imagenet_v2")``; a plain name is on the trained dataset's ``test``."""
    base, separator, test_set = metric.partition(EVALUATION_SEPARATOR)
    return (base, test_set) if separator and test_set else (metric, OWN_TEST_SET)


def metric_kind(metric: str) -> str | None:
    """``"error"`` if the name contains ``err``, ``"accuracy"`` if it contains ``acc`` or
    ``top``, else None (not a quantity the analysis can put on the error scale)."""
    name = metric.lower()
    if "err" in name:
        return "error"
    if "acc" in name or "top" in name:
        return "accuracy"
    return None


def load_results(
    source: str | Path | pd.DataFrame,
    metric: str | list[str] | None = None,
    scale: str | dict[str, str] | None = None,
    name: str | None = None,
) -> ResultsTable:
    """Load, validate and normalise a results table (wide or long layout).

    Args:
        source: A CSV or Parquet path (``.parquet``/``.pq``), or a DataFrame. CSV lines that
            start with ``#`` are comments; ``# unit: percent`` (or ``# unit METRIC: fraction``)
            states the unit.
        metric: Wide tables: the metric column, or several (default: the first of ``error``,
            ``top1_error``, ``accuracy``, ``top1`` present, plus the evaluation columns
            ``top5_error`` and ``<metric>@<test set>`` when present; the first is the primary
            metric). Long tables (columns ``metric`` and ``value``) read every metric;
            ``metric`` must then be one of them.
        scale: ``"percent"`` or ``"fraction"`` for every metric, or metric -> scale. Without
            it (and without a unit line or ``unit`` column) a metric is read as percent when
            some value exceeds 1 and refused when all values lie in [0, 1].
        name: How the source is named in the outputs (default: the path, or
            ``"in-memory table"`` for a DataFrame).

    Returns:
        The validated table.

    Raises:
        ValueError: On an unreadable file, an empty table, missing or non-numeric
            columns, an ambiguous or conflicting unit, out-of-range values, unknown status
            values, duplicate rows or when no row is usable.
    """
    given = _given_scales(scale)
    raw, origin, header_units = _read(source)
    name = name or origin
    if raw.empty:
        raise ValueError(f"results table {name} is empty (no data rows)")
    missing = [c for c in ("model", "dataset") if c not in raw.columns]
    if missing:
        raise ValueError(
            f"results table {name} lacks required {noun(len(missing), 'column')} {missing}; "
            f"columns present: {list(raw.columns)}"
        )
    layout = "long" if all(c in raw.columns for c in LONG_COLUMNS) else "wide"
    regime_column = next((c for c in REGIME_COLUMNS if c in raw.columns), None)
    df = pd.DataFrame(
        {
            "model": _text_column(raw, "model", name),
            "dataset": _text_column(raw, "dataset", name),
            "regime": _text_column(raw, regime_column, name) if regime_column else "",
        }
    )
    primary = None
    if layout == "long":
        if metric is not None and not isinstance(metric, str):
            raise ValueError("a long table takes one metric (the primary one), not a list")
        metrics = None
        if metric is not None and metric not in set(_text_column(raw, "metric", name)):
            raise ValueError(
                f"metric {metric!r} not in {name}; metrics present: "
                f"{sorted(set(_text_column(raw, 'metric', name)))}"
            )
    else:
        metrics = _pick_metrics(raw, metric, name)
        primary = metrics[0]
        for column in metrics:
            if metric_kind(column) is None:
                raise ValueError(
                    f"metric column {column!r} of {name} is neither an error nor an accuracy "
                    "(its name must contain 'err', 'acc' or 'top')"
                )
    has_seed = "seed" in raw.columns
    if has_seed:
        seed = _numeric_column(raw, "seed", name)
        if seed.isna().any():
            raise ValueError(f"column 'seed' of {name} has empty cells; give every row a seed")
        # Seeds are read as floats (NaN-able); keep integers as integers in the outputs.
        df["seed"] = seed.astype(int) if (seed % 1 == 0).all() else seed
    if layout == "long":
        df["metric"] = _text_column(raw, "metric", name)
    keys = ["model", "dataset", "regime", "metric", *(["seed"] if has_seed else [])]
    row_keys = keys if layout == "long" else [k for k in keys if k != "metric"]
    dupes = df[df.duplicated(row_keys, keep=False)]
    if not dupes.empty:
        shown_keys = [k for k in row_keys if not (k == "regime" and regime_column is None)]
        shown = dupes[shown_keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(
            f"results table {name} has {len(dupes)} rows with duplicate {tuple(shown_keys)}, "
            f"e.g. {shown}; keep one row per {tuple(shown_keys)}"
        )
    df["status"] = _status_column(raw, name)
    reasons = raw["status_reason"] if "status_reason" in raw.columns else pd.Series("", raw.index)
    df["reason"] = reasons.fillna("").astype(str)
    arch_columns = _arch_columns(raw)
    for col in arch_columns:
        df[col] = _numeric_column(raw, col, name)
    for column in LINK_COLUMNS:
        if column in raw.columns:
            df[column] = raw[column].fillna("").astype(str).str.strip()
    unit_cells = raw[UNIT_COLUMN] if UNIT_COLUMN in raw.columns else None
    if layout == "long":
        value = _numeric_column(raw, "value", name)
    else:
        # One row per (input row, metric column): each evaluation is a metric of its own. A
        # further evaluation's empty cell means "not evaluated there" (e.g. a second test set
        # given for one dataset only), and a failed row is excluded once, under the primary
        # metric: only the primary column's rows are kept whatever their value.
        values = [_numeric_column(raw, column, name) for column in metrics]
        keep = [pd.Series(True, index=raw.index)]
        keep += [v.notna() & (df["status"] == "ok") for v in values[1:]]
        df = pd.concat(
            [df[k].assign(metric=column) for column, k in zip(metrics, keep, strict=True)],
            ignore_index=True,
        )
        value = pd.concat([v[k] for v, k in zip(values, keep, strict=True)], ignore_index=True)
        if unit_cells is not None:
            unit_cells = pd.concat([unit_cells[k] for k in keep], ignore_index=True)
    skipped = {
        m: "neither an error nor an accuracy (name without 'err', 'acc' or 'top')"
        for m in sorted(set(df["metric"]))
        if metric_kind(m) is None
    }
    analysed = ~df["metric"].isin(list(skipped))
    empty_metric = analysed & (df["status"] == "ok") & value.isna()
    df.loc[empty_metric, "status"] = MISSING_METRIC
    df.loc[empty_metric, "reason"] = "empty metric value"
    ok = analysed & (df["status"] == "ok")
    if not ok.any():
        raise ValueError(
            f"results table {name} has no usable row: all {int(analysed.sum())} rows of "
            "error/accuracy metrics are diverged/failed or lack a value"
        )
    units = {}
    error = pd.Series(np.nan, index=df.index)
    for m in sorted(set(df.loc[analysed, "metric"])):
        rows = df["metric"] == m
        stated = _stated_scales(m, given, header_units, unit_cells, rows)
        units[m] = _resolve_unit(m, value[rows & ok], stated, name)
        _check_no_fraction_dataset(
            m, units[m], df.loc[rows & ok, "dataset"], value[rows & ok], name
        )
        percent = value[rows] * (100.0 if units[m].scale == "fraction" else 1.0)
        error[rows] = percent if units[m].kind == "error" else 100.0 - percent
    # Rounding removes float noise such as 100 - 90.056 = 9.944000000000003 from the outputs.
    df["error"] = error.round(10)

    _check_constant_architecture(df[ok], arch_columns, name)
    extra = [column for column in LINK_COLUMNS if column in df.columns]
    frame = df.loc[ok, [*keys, "error", *arch_columns, *extra]].reset_index(drop=True)
    bad = analysed & ~ok
    excluded = df.loc[bad, ["model", "dataset", "regime", "metric", "status", "reason"]].copy()
    excluded.insert(4, "seed", df.loc[bad, "seed"] if has_seed else None)
    return ResultsTable(
        frame=frame,
        excluded=excluded.reset_index(drop=True),
        units=units,
        layout=layout,
        arch_columns=arch_columns,
        has_seed=has_seed,
        source=name,
        n_input_rows=len(raw),
        skipped_metrics=skipped,
        primary_metric=primary,
        regime_column=regime_column,
    )


def _given_scales(scale: str | dict[str, str] | None) -> dict[str | None, str]:
    """The caller's scale(s) as metric (None: every metric) -> scale, validated."""
    given = scale if isinstance(scale, dict) else {None: scale} if scale is not None else {}
    for value in given.values():
        if value not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {value!r}")
    return given


def _read(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, dict[str | None, str]]:
    """Read a DataFrame, CSV (``#`` lines are comments or unit lines) or Parquet file.

    Returns:
        ``(frame, name, header units)``; header units map a metric (None: all) to a scale.
    """
    if isinstance(source, pd.DataFrame):
        return source.copy(), "in-memory table", {}
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"results file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path), str(path), {}
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError, ImportError) as exc:
        raise ValueError(f"cannot read results table {path}: {exc}") from exc
    # Drop only whole-line comments: pandas' comment= would also cut a '#' inside an id.
    comments = [line.strip() for line in lines if line.lstrip().startswith("#")]
    text = "".join(line for line in lines if not line.lstrip().startswith("#"))
    units: dict[str | None, str] = {}
    for line in comments:
        match = _UNIT_LINE.match(line)
        if match:
            scale = match["scale"].lower()
            if scale not in SCALES:
                raise ValueError(
                    f"unit line {line!r} of {path} names unit {scale!r}; valid: {list(SCALES)}"
                )
            units[match["metric"]] = scale
    if not text.strip():
        raise ValueError(f"results table {path} is empty (no header, no rows)")
    try:
        return pd.read_csv(io.StringIO(text)), str(path), units
    except pd.errors.ParserError as exc:
        raise ValueError(f"cannot read results table {path}: {exc}") from exc


def _pick_metrics(raw: pd.DataFrame, metric: str | list[str] | None, name: str) -> list[str]:
    """The metric columns of a wide table, the primary one first (see :func:`load_results`)."""
    if metric is not None:
        chosen = [metric] if isinstance(metric, str) else list(metric)
        missing = [m for m in chosen if m not in raw.columns]
        if missing or not chosen:
            raise ValueError(
                f"metric {noun(len(missing or chosen), 'column')} {missing or chosen} not in "
                f"{name}; columns present: "
                f"{list(raw.columns)}"
            )
        if len(set(chosen)) < len(chosen):
            raise ValueError(f"metric columns {chosen} name a column twice")
        return chosen
    for col in METRIC_COLUMNS:
        if col in raw.columns:
            companions = [
                c
                for c in raw.columns
                if c != col
                and (c in COMPANION_COLUMNS or EVALUATION_SEPARATOR in str(c))
                and metric_kind(split_evaluation(str(c))[0]) is not None
            ]
            return [col, *companions]
    raise ValueError(
        f"results table {name} has no metric column: expected one of {list(METRIC_COLUMNS)} "
        f"(or name one with metric=/--metric), or the long layout's 'metric' and 'value'; "
        f"columns present: {list(raw.columns)}"
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
            f"column {col!r} of {name} has {plural(int(bad.sum()), 'non-numeric value')}, "
            f"e.g. {examples}"
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
            f"column 'status' of {name} has unknown {noun(len(unknown), 'value')} {unknown}; "
            f"valid: {list(STATUSES)}"
        )
    return status


def _arch_columns(raw: pd.DataFrame) -> tuple[str, ...]:
    cols = [f"{p}{s}" for p in ARCH_GROUPS for s in STAGES if f"{p}{s}" in raw.columns]
    return tuple(cols) + tuple(c for c in EXTRA_ARCH_COLUMNS if c in raw.columns)


def _stated_scales(
    metric: str,
    given: dict[str | None, str],
    header: dict[str | None, str],
    unit_cells: pd.Series | None,
    rows: pd.Series,
) -> dict[str, str]:
    """Every scale stated for ``metric``: source -> scale."""
    stated = {}
    for source, scales in (("given", given), ("header line", header)):
        scale = scales.get(metric, scales.get(None))
        if scale is not None:
            stated[source] = scale
    if unit_cells is not None:
        cells = unit_cells[rows].dropna().astype(str).str.strip().str.lower()
        values = sorted(set(cells) - {""})
        unknown = sorted(set(values) - set(SCALES))
        if unknown:
            raise ValueError(
                f"column 'unit' has unknown {noun(len(unknown), 'value')} {unknown}; "
                f"valid: {list(SCALES)}"
            )
        if len(values) > 1:
            raise ValueError(f"column 'unit' gives metric {metric!r} several units {values}")
        if values:
            stated["unit column"] = values[0]
    return stated


def _resolve_unit(metric: str, values: pd.Series, stated: dict[str, str], name: str) -> Unit:
    """The scale of one metric: stated (consistently), or inferred only where unambiguous."""
    kind = metric_kind(metric)
    if len(set(stated.values())) > 1:
        raise ValueError(f"conflicting units for {metric!r} in {name}: {stated}")
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    if stated:
        source, scale = next(iter(stated.items()))
    elif high > 1.0:
        source, scale = "inferred: values above 1 cannot be a fraction", "percent"
    else:
        raise ValueError(
            f"unit of {metric!r} in {name} is ambiguous: every value lies in [0, 1], which "
            f"could be a fraction or a percent below 1; state it with --scale "
            f"{'|'.join(SCALES)}, a '# unit: percent' header line or a 'unit' column"
        )
    limit = 1.0 if scale == "fraction" else 100.0
    if low < 0.0 or high > limit:
        raise ValueError(
            f"metric {metric!r} of {name} ranges over [{low:g}, {high:g}], outside "
            f"[0, {limit:g}] for scale {scale!r}"
        )
    return Unit(kind=kind, scale=scale, source=source)


def _check_no_fraction_dataset(
    metric: str, unit: Unit, datasets: pd.Series, values: pd.Series, name: str
) -> None:
    """Refuses a dataset whose values all lie in [0, 1] in a table that a ``# unit: percent``
    header line declares percent while other datasets' values exceed 1: most likely fractions
    pasted among percents (0.3 read as 0.3 % instead of 30 %). A scale stated on the command
    line (``--scale percent``) or per row (a ``unit`` column) is believed: a dataset may truly
    have errors below 1 %."""
    if unit.scale != "percent" or unit.source != "header line":
        return
    highest = values.groupby(datasets.to_numpy()).max()
    below_one = highest[highest <= 1.0]
    if below_one.empty or len(below_one) == len(highest):
        return
    raise ValueError(
        f"dataset {below_one.index[0]!r} in {name}: every {metric!r} value lies in [0, 1] "
        f"while other datasets reach {highest.max():g} and a header line declares percent: it "
        "looks like fractions; convert them to percent, or pass --scale percent if they are "
        "percent below 1"
    )


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
