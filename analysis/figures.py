"""Figures of the APR report, rendered to PNG bytes.

Figures are built with the object-oriented matplotlib API on an explicit Agg canvas: no
pyplot, so no global figure state, no display and nothing left open between calls.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
# Above this many points a scatter becomes a blot: draw a hexbin density instead.
DENSE_POINTS = 2000
HEXBIN_GRID = 45
# Panel titles at a fixed height: left to matplotlib, each panel's title position is solved
# from the tick label extents of its row at draw time, a third of a grid's drawing time.
TITLE_Y = 1.0
PANEL = (3.6, 3.0)  # inches per panel in grids
FEATURE_LABELS = {
    "cum_depth": "cumulative depth (Σ d_i)",
    "cum_width": "cumulative width (Σ w_i)",
    "mean_bottleneck": "mean bottleneck ratio",
    "mean_group_width": "mean group width",
    "flops": "FLOPs",
    "params": "parameters",
}


def _new_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """A figure on its own Agg canvas. Grids of many panels pass ``constrained=False`` and
    fixed margins: the constrained layout solver costs more than drawing them."""
    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # zlib level 3 instead of 6: 8 % less figure time for 3 % larger files.
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def _layout_grid(fig: Figure, rows: int, cols: int, left: float = 0.75) -> None:
    """Fixed margins and gaps in inches (room for labels and two-line titles) for a grid,
    and at most 5 ticks per axis: every tick is several artists, and grids have many axes."""
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - 0.2 / width,
        bottom=0.55 / height,
        top=1 - 0.5 / height,
        wspace=0.75 / max((width - left - 0.2) / cols - 0.75, 0.5),
        hspace=0.85 / max((height - 1.05) / rows - 0.85, 0.5),
    )


def _grid(n_panels: int, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes in rows of at most ``max_cols``; spare axes hidden."""
    cols = min(max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = _new_figure(PANEL[0] * cols, PANEL[1] * rows, constrained=False)
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    _layout_grid(fig, rows, cols)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _points(ax: Axes, x: np.ndarray, y: np.ndarray, size: float, label: str | None = None):
    """One dot per model, or a log-scaled hexbin density when there are many models."""
    if x.size > DENSE_POINTS:
        ax.hexbin(x, y, gridsize=HEXBIN_GRID, mincnt=1, bins="log", cmap="Blues", linewidths=0)
        # A proxy artist keeps the legend entry of the density.
        ax.scatter(
            [], [], marker="h", color="tab:blue", label=f"{label} (density)" if label else None
        )
    else:
        ax.scatter(x, y, s=size, alpha=0.6 if label else 0.5, color="tab:blue", label=label)


def dataset_colors(names: list[str]) -> dict[str, tuple]:
    """A stable colour per dataset (tab10 up to 10 datasets, tab20 beyond)."""
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def ecdf_figure(errors: dict[str, np.ndarray]) -> bytes:
    """One eCDF step curve per dataset: F(e) = fraction of models with error < e."""
    fig = _new_figure(8.5, 4.8, constrained=False)
    # Fixed margins: room for the legend on the right.
    fig.subplots_adjust(left=0.8 / 8.5, right=1 - 2.4 / 8.5, bottom=0.6 / 4.8, top=1 - 0.4 / 4.8)
    ax = fig.add_subplot()
    colors = dataset_colors(list(errors))
    for name, values in errors.items():
        ordered = np.sort(values)
        # F jumps to i/n just after the i-th smallest error (strict "<").
        fractions = np.arange(1, ordered.size + 1) / ordered.size
        ax.step(
            np.concatenate([[ordered[0]], ordered]),
            np.concatenate([[0.0], fractions]),
            where="post",
            color=colors[name],
            label=f"{name} (n={ordered.size})",
        )
    ax.set_xlabel("test error (%)")
    ax.set_ylabel("cumulative fraction of models")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Error eCDF per dataset")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _png(fig)


def apr_scatter_figure(panels: list[dict]) -> bytes:
    """APR scatter per target: x = reference error, y = target error, one dot per model
    (a density above ``DENSE_POINTS`` models, with the reference's top-k still as dots).

    Args:
        panels: Dicts with ``name`` (target), ``reference`` (its reference), ``x``, ``y``,
            ``top`` (bool mask of the reference's top-k) and ``label`` (the correlation text
            for the title).
    """
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        top = panel["top"]
        _points(ax, panel["x"][~top], panel["y"][~top], 10, label="other models")
        ax.scatter(
            panel["x"][top],
            panel["y"][top],
            s=18,
            color="tab:orange",
            label=f"top-{int(top.sum())} on the reference",
        )
        ax.set_title(f"{panel['name']}\n{panel['label']}", fontsize=9, y=TITLE_Y)
        ax.set_xlabel(f"{panel['reference']} error (%)", fontsize=8)
        ax.set_ylabel(f"{panel['name']} error (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return _png(fig)


def _annotated_heatmap(
    rows: list[str],
    columns: list[str],
    matrix: list[list[float | None]],
    title: str,
    label: str,
) -> bytes:
    """Heat map of correlations in [-1, 1], each cell annotated (grey = undefined)."""
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
    # Fixed margins in inches (row labels left, rotated column labels below, colour bar
    # right): the constrained layout solver would take 40 % of the drawing time.
    width = 0.6 * len(columns) + 3.6
    height = 0.45 * len(rows) + 2.2
    fig = _new_figure(width, height, constrained=False)
    fig.subplots_adjust(
        left=1.3 / width, right=1 - 0.3 / width, bottom=1.4 / height, top=1 - 0.5 / height
    )
    ax = fig.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fontsize = 8 if max(len(rows), len(columns)) <= 10 else 6
    for i in range(len(rows)):
        for j in range(len(columns)):
            value = values[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            color = "white" if np.isfinite(value) and abs(value) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    ax.set_title(title)
    return _png(fig)


def correlation_heatmap(names: list[str], matrix: list[list[float | None]]) -> bytes:
    """Annotated heat map of the dataset x dataset Spearman matrix (grey = undefined)."""
    return _annotated_heatmap(
        names, names, matrix, "Dataset × dataset rank correlation", "Spearman ρ of errors"
    )


def feature_correlation_heatmap(correlations: dict[str, dict[str, dict]]) -> bytes:
    """Spearman ρ of each architecture feature with the error, one row per dataset
    (Tuggener et al., Table 3, as a picture)."""
    datasets = list(correlations)
    features = list(correlations[datasets[0]])
    matrix = [[correlations[d][f]["value"] for f in features] for d in datasets]
    labels = [FEATURE_LABELS.get(f, f) for f in features]
    return _annotated_heatmap(
        datasets, labels, matrix, "Architecture feature vs error", "Spearman ρ with error"
    )


def stage_profile_figure(profiles: dict[str, np.ndarray], quantity: str) -> bytes:
    """Per-stage profile of the top-k models: one panel per dataset, one line per model.

    Args:
        profiles: Dataset -> ``(k, 4)`` array of the per-stage values, best model first.
        quantity: Axis label, e.g. ``"depth d_i"``.
    """
    fig, axes = _grid(len(profiles))
    k_max = max(len(v) for v in profiles.values())
    norm = Normalize(vmin=1, vmax=max(k_max, 2))
    cmap = colormaps["viridis"]
    stages = np.arange(1, 5)
    for ax, (name, values) in zip(axes, profiles.items(), strict=True):
        # One collection for the k models (one artist draws faster than k lines); the best
        # model last so it is on top.
        ranks = np.arange(len(values), 0, -1)
        lines = [np.column_stack([stages, values[rank - 1]]) for rank in ranks]
        ax.add_collection(LineCollection(lines, colors=cmap(norm(ranks)), lw=1.2, alpha=0.85))
        ax.scatter(
            np.tile(stages, len(ranks)),
            values[ranks - 1].ravel(),
            s=9,
            c=np.repeat(cmap(norm(ranks)), 4, axis=0),
        )
        # The mean profile shows the trend (e.g. widths growing with the stage) in the tangle.
        ax.plot(
            stages,
            np.nanmean(values, axis=0),
            color="black",
            lw=2.2,
            ls="--",
            label=f"mean of top {len(values)}",
        )
        ax.set_title(f"{name} (top {len(values)})", fontsize=9, y=TITLE_Y)
        ax.set_xticks(stages, [f"stage {s}" for s in stages], fontsize=7)
        ax.set_ylabel(quantity, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=axes,
        shrink=0.8,
        label="rank on the dataset (1 = best)",
    )
    return _png(fig)


def mean_profile_figure(profiles: dict[str, dict[str, np.ndarray]]) -> bytes:
    """Mean per-stage profile of each dataset's top-k models, all datasets in one panel per
    quantity (depth, width): do the best models of each dataset share a shape?

    Args:
        profiles: Quantity label -> dataset -> ``(k, 4)`` per-stage values of its top-k.
    """
    fig, axes = _grid(len(profiles), max_cols=2)
    stages = np.arange(1, 5)
    names = sorted({name for per in profiles.values() for name in per})
    colors = dataset_colors(names)
    for ax, (quantity, per_dataset) in zip(axes, profiles.items(), strict=True):
        for name, values in per_dataset.items():
            ax.plot(
                stages,
                np.nanmean(values, axis=0),
                marker="o",
                ms=3,
                color=colors[name],
                label=f"{name} (top {len(values)})",
            )
        ax.set_xticks(stages, [f"stage {s}" for s in stages], fontsize=7)
        ax.set_ylabel(f"mean {quantity}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.subplots_adjust(right=0.8)
    return _png(fig)


def architecture_scatter_figure(
    features: dict[str, np.ndarray],
    errors: dict[str, np.ndarray],
    correlations: dict[str, dict[str, dict]],
) -> bytes:
    """Architecture feature vs error: one row per dataset, one column per feature.

    Args:
        features: Feature name -> per-model values.
        errors: Dataset -> per-model errors aligned with the features (NaN = missing).
        correlations: Dataset -> feature -> ``{"value": rho or None, ...}``.
    """
    names = list(features)
    fig = _new_figure(3.0 * len(names), 2.4 * len(errors), constrained=False)
    # Shared axes: one set of tick labels per row/column keeps large grids fast and legible.
    axes = fig.subplots(len(errors), len(names), squeeze=False, sharex="col", sharey="row")
    _layout_grid(fig, len(errors), len(names), left=0.95)
    for row, (dataset, err) in enumerate(errors.items()):
        for col, feature in enumerate(names):
            ax = axes[row, col]
            shown = np.isfinite(features[feature]) & np.isfinite(err)
            _points(ax, features[feature][shown], err[shown], 6)
            rho = correlations[dataset][feature]["value"]
            ax.set_title("ρ = n/a" if rho is None else f"ρ = {rho:.2f}", fontsize=8, y=TITLE_Y)
            if row == len(errors) - 1:
                ax.set_xlabel(FEATURE_LABELS.get(feature, feature), fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{dataset}\nerror (%)", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
    return _png(fig)


def seed_std_figure(std_by_dataset: dict[str, np.ndarray]) -> bytes:
    """Box plot of the per-model standard deviation of error across seeds, per dataset."""
    names = list(std_by_dataset)
    fig = _new_figure(max(5.0, 0.8 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot()
    ax.boxplot([std_by_dataset[n] for n in names], tick_labels=names)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_ylabel("std of error across seeds (pp)")
    ax.set_title("Seed-to-seed spread per model")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
