"""The class-count study's report: ``report.html`` (self-contained), ``report.md``,
``summary.json`` and the figures, answer first.

Order: the question, the answer in one sentence (the APR correlation with the full set at the
largest and the smallest subset size, intervals, n, and whether the change is resolved), which
way that points against Tuggener et al.'s finding, which of their figures and tables each
section mirrors; then the correlation per number of classes (figure and table), the APR
scatters (their Fig. 7), cumulative depth and width against error (Table 3), the matrix of
every dataset and subset (Fig. 8), the datasets, how the intervals were computed, and what was
left out. The numbers are those of ``summary.json`` (:func:`analysis.class_count.
compute_class_count`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import figures
from analysis.class_count import (
    CORRELATIONS,
    METHOD_PAPER,
    PAPER,
    paper_direction,
    stat_text,
)
from analysis.files import replaced_folder, write_atomic
from analysis.readings import fmt
from analysis.report import render_in, to_json
from analysis.words import plural

TEMPLATE_DIR = Path(__file__).parent
# Written by write_report; results.csv, written before, stays (analysis.files.replaced_folder).
OUTPUTS = ("figures", "report.html", "report.md", "summary.json")
FIGURES = {
    "class_count": "The APR correlation with the full set (left) and Table 3's correlation of "
    "cumulative depth and width with error (right) against the number of classes: each draw "
    "(small dots), the mean over draws with its 95 % interval (bars); the full set at its own "
    "number of classes.",
    "apr_scatter": "Each architecture's error on the full set (x) and on each draw of a "
    "subset size (y, one colour per draw), one panel per size: Tuggener et al.'s Fig. 7.",
    "matrix": "Spearman ρ between the errors on every two datasets of the study (the full "
    "set, every draw of every size, the other datasets) on the architectures they share: "
    "Tuggener et al.'s Fig. 8.",
}
MIRRORS = (
    "It mirrors Tuggener, Schmidhuber, Stadelmann 2021 (arXiv 2103.09108) on ImageNet-X: "
    "Fig. 7 (the APR of each class subset against the full set), Table 3 (cumulative depth "
    "and width vs error per subset) and Fig. 8 (the correlation matrix of datasets and "
    "subsets)."
)
LABELS = {"spearman": "Spearman ρ", "kendall": "Kendall τ", "cum_depth": "cumulative depth"}
LABELS["cum_width"] = "cumulative width"
MAX_CLASS_NAMES = 12


def _draws_text(stat: dict[str, Any]) -> str:
    """Each draw's value, ``0.81, 0.64, n/a``."""
    return ", ".join(fmt(d.get("value")) for d in stat.get("per_draw", []))


def apr_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per size: classes, draws, n, each correlation's mean [CI] and its per-draw values."""
    rows = []
    for entry in summary["apr"]:
        row = [str(entry["classes"]), str(entry["draws"]), str(entry["n_models"])]
        for kind in CORRELATIONS:
            row += [stat_text(entry[kind]), _draws_text(entry[kind])]
        rows.append(row)
    return rows


APR_COLUMNS = (
    "classes",
    "draws",
    "architectures",
    "Spearman ρ, mean [95% CI]",
    "ρ per draw",
    "Kendall τ, mean [95% CI]",
    "τ per draw",
)


def draw_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per subset: classes, draw, dataset, its classes, ρ [CI] and τ [CI] over resampled
    architectures, mean error and test images."""
    datasets = summary["datasets"]
    rows = []
    for entry in summary["apr"]:
        for rho, tau in zip(
            entry["spearman"]["per_draw"], entry["kendall"]["per_draw"], strict=True
        ):
            info = datasets[rho["dataset"]]
            names = info.get("class_names", [])
            shown = ", ".join(names[:MAX_CLASS_NAMES])
            shown += f" … (+{len(names) - MAX_CLASS_NAMES})" if len(names) > MAX_CLASS_NAMES else ""
            rows.append(
                [
                    str(entry["classes"]),
                    str(rho["draw"]),
                    rho["dataset"],
                    shown,
                    stat_text(rho),
                    stat_text(tau),
                    fmt(info.get("mean_error"), 1),
                    "" if info.get("n_test") is None else str(info["n_test"]),
                ]
            )
    return rows


DRAW_COLUMNS = (
    "classes",
    "draw",
    "dataset",
    "classes kept",
    "Spearman ρ [95% CI]",
    "Kendall τ [95% CI]",
    "mean error %",
    "test images",
)


def feature_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Table 3: per size (the full set first), each feature's ρ with error, mean over draws
    [CI], and its per-draw values."""
    architecture = summary["architecture"]
    if not architecture["available"]:
        return [], []
    features = architecture["features"]
    columns = ["classes", "datasets"]
    for feature in features:
        columns += [f"ρ({LABELS.get(feature, feature)}, error) [95% CI]", "per draw"]
    rows = []
    for row in architecture["rows"]:
        full = row["classes"] == summary["n_classes"]
        cells = [f"{row['classes']} (full set)" if full else str(row["classes"])]
        cells.append(str(len(row["datasets"])))
        for feature in features:
            cells += [stat_text(row[feature]), _draws_text(row[feature])]
        rows.append(cells)
    return columns, rows


def other_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Fig. 8's other datasets: ρ with the full set, the mean ρ with each size's draws, and
    the number of classes whose subsets (or full set) they agree with most."""
    others = summary["matrix"].get("others", [])
    if not others:
        return [], []
    sizes = [str(size) for size in summary["class_counts"]]
    columns = ["dataset", f"ρ with the full set ({summary['n_classes']} classes)"]
    columns += [f"mean ρ with {size}-class draws" for size in sizes]
    columns.append("closest in classes")
    rows = [
        [other["dataset"], fmt(other["full"])]
        + [fmt(other["by_size"][size]) for size in sizes]
        + ["" if other["best_classes"] is None else str(other["best_classes"])]
        for other in others
    ]
    return columns, rows


def dataset_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Every dataset: role, classes, draw, architectures with a result, error range."""
    return [
        [
            name,
            info["role"],
            "" if info["classes"] is None else str(info["classes"]),
            "" if info["draw"] is None else str(info["draw"]),
            str(info["n_models"]),
            fmt(info["mean_error"], 1),
            fmt(info["min_error"], 1),
            fmt(info["max_error"], 1),
            "" if info.get("n_test") is None else str(info["n_test"]),
        ]
        for name, info in summary["datasets"].items()
    ]


DATASET_COLUMNS = (
    "dataset",
    "role",
    "classes",
    "draw",
    "architectures",
    "mean error %",
    "min",
    "max",
    "test images",
)


def n_sentence(summary: dict[str, Any]) -> str:
    """What n is, and how many draws each mean averages."""
    n, draws = summary["n_models"], summary["draws"]
    text = (
        f"n = {n}: the architectures with a result on the full set and on every subset, each "
        f"trained on all of them; each size's correlation is the mean over its "
        f"{plural(draws, 'seeded draw')} of classes (the draws nest: the classes of draw j "
        "of a smaller size lie within those of draw j of a larger one)."
    )
    if summary["left_out"]:
        text += f" {plural(len(summary['left_out']), 'architecture')} left out (see below)."
    return text


def change_sentence(summary: dict[str, Any]) -> str:
    """Kendall's change beside Spearman's (the answer gives Spearman's)."""
    change = summary["change"]
    if "kendall" not in change:
        return ""
    return (
        f"From {change['from']} to {change['to']} classes: Δρ = "
        f"{stat_text(change['spearman'])}, Δτ = {stat_text(change['kendall'])} (the smaller "
        "size's mean minus the larger's, over the same resampled architectures and draws)."
    )


def notes(summary: dict[str, Any]) -> list[str]:
    """What was left out or undefined, and the few-models warning."""
    out = [f"architecture {m}: {reason}" for m, reason in summary["left_out"].items()]
    warnings = {entry.get("warning") for entry in summary["apr"]} - {None}
    out += sorted(warnings)
    for entry in summary["apr"]:
        for kind in CORRELATIONS:
            for undefined in entry[kind].get("undefined_draws", []):
                out.append(
                    f"{LABELS[kind]} at {entry['classes']} classes, draw {undefined['draw']}: "
                    f"{undefined['reason']} (left out of the mean)"
                )
    architecture = summary["architecture"]
    if not architecture["available"]:
        out.append(f"Table 3 not computed: {architecture['reason']}")
    elif architecture.get("left_out"):
        out.append(
            f"Table 3 leaves out {plural(len(architecture['left_out']), 'named architecture')} "
            "(no AnyNet stage columns)"
        )
    out += [
        f"Fig. 8: {u['datasets'][0]} vs {u['datasets'][1]}: {u['reason']}"
        for u in (summary["matrix"].get("undefined", []))
    ]
    return out


def class_count_figure(summary: dict[str, Any]) -> bytes:
    """Left: the APR correlation with the full set against the number of classes (log scale),
    each draw and the mean with its interval, Spearman and Kendall; right: Table 3's
    feature correlations the same way, the full set included."""
    fig = figures._new_figure(9.0, 3.6)
    left, right = fig.subplots(1, 2)
    n_classes = summary["n_classes"]
    ticks = sorted({*summary["class_counts"], n_classes})
    series = [(left, entry, kind) for entry in summary["apr"] for kind in CORRELATIONS]
    colours = {"spearman": "C0", "kendall": "C1", "cum_depth": "C2", "cum_width": "C3"}
    offsets = {"spearman": 0.97, "kendall": 1.03, "cum_depth": 0.97, "cum_width": 1.03}
    architecture = summary["architecture"]
    if architecture["available"]:
        series += [
            (right, row, feature)
            for row in architecture["rows"]
            for feature in architecture["features"]
        ]
    labelled: set[tuple[int, str]] = set()
    for ax, entry, key in series:
        stat, x = entry[key], entry["classes"] * offsets[key]
        draws = [d["value"] for d in stat.get("per_draw", []) if d.get("value") is not None]
        ax.scatter([x] * len(draws), draws, s=10, color=colours[key], alpha=0.45)
        if stat.get("value") is None:
            continue
        low, high = stat.get("ci_low"), stat.get("ci_high")
        error = None if low is None else [[stat["value"] - low], [high - stat["value"]]]
        label = None if (id(ax), key) in labelled else LABELS[key]
        labelled.add((id(ax), key))
        ax.errorbar(
            [x], [stat["value"]], yerr=error, fmt="o", color=colours[key], capsize=3, label=label
        )
    left.scatter([n_classes], [1.0], marker="s", color="grey", label="full set (itself)")
    for ax, title, ylabel in (
        (left, "APR with the full set", "correlation of errors"),
        (right, "Table 3: architecture vs error", "Spearman ρ with error"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.axhline(0.0, color="#999", linewidth=0.8)
        ax.set_xlabel("number of classes")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    if not architecture["available"]:
        right.set_axis_off()
    return figures._png(fig)


def scatter_figure(summary: dict[str, Any], errors: pd.DataFrame) -> bytes:
    """Fig. 7: the error on the full set (x) against the error on each draw of a size (y),
    one panel per size, one colour per draw, the mean ρ in the title."""
    apr = summary["apr"]
    fig = figures._new_figure(3.3 * len(apr), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(apr)))
    models = summary["models"]
    x = errors.loc[models, summary["full"]].to_numpy(dtype=float)
    for ax, entry in zip(axes, apr, strict=True):
        for draw in entry["spearman"]["per_draw"]:
            y = errors.loc[models, draw["dataset"]].to_numpy(dtype=float)
            ax.scatter(x, y, s=14, alpha=0.7, label=f"draw {draw['draw']}")
        ax.set_title(
            f"{entry['classes']} classes: mean ρ = {stat_text(entry['spearman'])}", fontsize=8
        )
        ax.set_xlabel(f"{summary['full']} error (%)", fontsize=8)
        ax.set_ylabel(f"{entry['classes']}-class subset error (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    return figures._png(fig)


def render_figures(summary: dict[str, Any], errors: pd.DataFrame) -> dict[str, bytes]:
    """Every figure of the report, name -> PNG bytes."""
    matrix = summary["matrix"]
    return {
        "class_count": class_count_figure(summary),
        "apr_scatter": scatter_figure(summary, errors),
        "matrix": figures.correlation_heatmap(matrix["datasets"], matrix["spearman"]),
    }


def report_context(summary: dict[str, Any], pngs: dict[str, bytes], title: str) -> dict:
    """Everything the templates show, the sentences already written."""
    feature_columns, features = feature_rows(summary)
    others_columns, others = other_rows(summary)
    return {
        "title": title,
        "question": summary["question"],
        "answer": summary["answer"],
        "direction": paper_direction(summary),
        "mirrors": MIRRORS,
        "n_sentence": n_sentence(summary),
        "change_sentence": change_sentence(summary),
        "apr_columns": APR_COLUMNS,
        "apr_rows": apr_rows(summary),
        "draw_columns": DRAW_COLUMNS,
        "draw_rows": draw_rows(summary),
        "feature_columns": feature_columns,
        "feature_rows": features,
        "others_columns": others_columns,
        "others_rows": others,
        "dataset_columns": DATASET_COLUMNS,
        "dataset_rows": dataset_rows(summary),
        "method": summary["settings"]["interval_method"],
        "notes": notes(summary),
        "captions": FIGURES,
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()},
        "papers": (PAPER + ".", METHOD_PAPER + "."),
    }


def write_report(
    out_dir: str | Path, summary: dict[str, Any], errors: pd.DataFrame, title: str
) -> None:
    """Writes ``report.html``, ``report.md``, ``summary.json`` and ``figures/*.png`` into
    ``out_dir``, replaced as a whole (readers see the old report or the new one; other files
    there, such as ``results.csv``, stay).

    Args:
        out_dir: the report folder.
        summary: :func:`analysis.class_count.compute_class_count`'s summary.
        errors: models x datasets errors (the scatters).
        title: the report's title (the study id).
    """
    pngs = render_figures(summary, errors)
    summary["figures"] = {name: f"figures/{name}.png" for name in pngs}
    context = report_context(summary, pngs, title)
    with replaced_folder(out_dir, OUTPUTS) as out:
        (out / "figures").mkdir()
        for name, png in pngs.items():
            write_atomic(out / "figures" / f"{name}.png", png)
        write_atomic(out / "report.html", render_in(TEMPLATE_DIR, "class_count.html.j2", context))
        write_atomic(out / "report.md", render_in(TEMPLATE_DIR, "class_count.md.j2", context))
        write_atomic(out / "summary.json", to_json(summary))
