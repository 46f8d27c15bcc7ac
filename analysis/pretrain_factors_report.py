"""The pretraining-factors study's report: ``report.html`` (self-contained), ``report.md``,
``summary.json`` and the figure, answer first.

Order: the question, the answer in one sentence (which choices change transfer on the primary
measure, with intervals and n), the induction sentence, which of Huh et al.'s findings the
study mirrors and whether the numbers point its way; then the transfer accuracy per factor
level (figure and table), which choices matter (the contrasts), the held-out classes, each
variant's accuracy on its own pretraining task, the datasets, how the intervals were computed,
what failed, and the paper. The numbers are those of ``summary.json``
(:func:`analysis.pretrain_factors.compute_pretrain_factors`).
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis import figures
from analysis.files import replaced_folder, write_atomic
from analysis.pretrain_factors import (
    FACTOR_NAMES,
    PAPER,
    REFERENCE,
    UNRESOLVED,
    measure_name,
    primary_measure,
    stat_text,
)
from analysis.report import render_in, to_json
from analysis.words import plural

TEMPLATE_DIR = Path(__file__).parent
# Written by write_report; results.csv, written before, stays (analysis.files.replaced_folder).
OUTPUTS = ("figures", "report.html", "report.md", "summary.json")
FIGURES = {
    "factors": "Transfer accuracy (%) at each level of each factor, one panel per factor (the "
    "reference, all the pool's classes with fine labels, first; the budget's levels split the "
    "same number of images): each seed (small dots), the mean over seeds with its 95 % "
    "interval (bars), one colour per target dataset and transfer regime.",
}
FINDING = (
    "Huh et al. find that most choices about the pretraining data long thought critical "
    "change transfer little: half the images per class cost 1.5 mAP on PASCAL detection, an "
    "order of magnitude fewer classes (127 instead of 1000) 2.8 mAP, and features trained on "
    "coarse classes still separate fine classes they never saw"
)
MIRRORS = (
    "It mirrors Huh, Agrawal, Efros 2016 (arXiv 1608.08614): how many images per class and "
    "how many classes pretraining needs, coarse against fine labels (and the induction test on "
    "classes held out of pretraining), and how a fixed budget of images is best split between "
    "classes and images per class."
)
# Enough held-out class names to recognise the draw; summary.json lists them all.
MAX_CLASS_NAMES = 30
# Level names wrap at this many characters under the figure's panels.
TICK_WIDTH = 14


def _factor_name(factor: str) -> str:
    """The factor in words; the reference as ``reference``."""
    return FACTOR_NAMES.get(factor, factor)


def paper_direction(summary: Mapping[str, Any]) -> str:
    """Whether the contrasts on the primary measure point the way Huh et al. report (most
    choices change transfer little): the resolved contrasts are named as against it."""
    measure = primary_measure(summary)
    if measure is None:
        return f"No target accuracy: nothing to compare with the paper. {FINDING}."
    rows = [
        c
        for c in summary["contrasts"]
        if c["dataset"] == measure["dataset"] and c["regime"] == measure["regime"]
    ]
    if not rows:
        return f"No factor was varied: nothing to compare with the paper. {FINDING}."
    if all(c["ci_low"] is None for c in rows):
        n = summary["n_seeds"]
        return (
            f"No contrast has an interval (n = {plural(n, 'seed')}): nothing to compare with "
            f"the paper. {FINDING}."
        )
    resolved = [c for c in rows if c["direction"] != UNRESOLVED]
    if not resolved:
        return (
            f"This points the paper's way (on {measure_name(measure)}, no choice changes "
            f"transfer beyond the seeds' noise at this n). {FINDING}."
        )
    named = "; ".join(
        f"{FACTOR_NAMES[c['factor']]} ({c['direction']}: {stat_text(c)} points)" for c in resolved
    )
    others = len(rows) - len(resolved)
    rest = (
        f"; the other {plural(others, 'choice')} {'changes' if others == 1 else 'change'} "
        "transfer no more than the seeds' noise, as the paper finds"
        if others
        else ""
    )
    return (
        f"This points against the paper's finding for {named} on {measure_name(measure)}"
        f"{rest}. {FINDING}."
    )


def factor_levels(summary: Mapping[str, Any], factor: str) -> list[dict[str, Any]]:
    """A factor's levels in the report's order: the reference, then the factor's variants in
    the summary's order (the budget's own variants only: the reference is not a split of the
    budget)."""
    own = [v for v in summary["variants"] if v["factor"] == factor]
    if factor == "budget":
        return own
    return [v for v in summary["variants"] if v["factor"] == REFERENCE] + own


def _level_stats(summary: Mapping[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The level rows by (variant, dataset, regime)."""
    return {(r["variant"], r["dataset"], r["regime"]): r for r in summary["levels"]}


def level_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every variant once (the reference, then each factor's levels): factor, level, dataset,
    then per measure the mean accuracy [CI] and n."""
    columns = ["factor", "level", "variant dataset"]
    for measure in summary["measures"]:
        columns += [f"{measure_name(measure)}: accuracy % [95% CI]", "n"]
    stats = _level_stats(summary)
    variants = [v for v in summary["variants"] if v["factor"] == REFERENCE]
    variants += [v for f in summary["factors"] for v in summary["variants"] if v["factor"] == f]
    rows = []
    for variant in variants:
        row = [_factor_name(variant["factor"]), variant["level"]]
        row.append(variant["name"])
        for measure in summary["measures"]:
            stat = stats[(variant["name"], measure["dataset"], measure["regime"])]
            row += [stat_text(stat), str(stat["n"])]
        rows.append(row)
    return columns, rows


def contrast_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per factor: its contrast, then per measure the difference in points [CI] and its
    direction (lower, higher, unresolved)."""
    columns = ["factor", "contrast (extreme vs reference)"]
    for measure in summary["measures"]:
        columns += [f"{measure_name(measure)}: difference, points [95% CI]", "direction"]
    contrasts = {(c["factor"], c["dataset"], c["regime"]): c for c in summary["contrasts"]}
    rows = []
    for factor in summary["factors"]:
        # The same two levels on every measure: any of the factor's rows names them.
        pair = next(c for c in summary["contrasts"] if c["factor"] == factor)
        row = [FACTOR_NAMES[factor], f"{pair['extreme_level']} vs {pair['reference_level']}"]
        for measure in summary["measures"]:
            contrast = contrasts[(factor, measure["dataset"], measure["regime"])]
            row += [stat_text(contrast), contrast["direction"]]
        rows.append(row)
    return columns, rows


def pretrain_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Each variant's accuracy on its own pretraining task's test split, mean [CI] and n."""
    variants = {v["name"]: v for v in summary["variants"]}
    return [
        [
            row["variant"],
            _factor_name(variants[row["variant"]]["factor"]),
            variants[row["variant"]]["level"],
            stat_text(row),
            str(row["n"]),
        ]
        for row in summary["pretrain"]
    ]


PRETRAIN_COLUMNS = ("variant dataset", "factor", "level", "own test accuracy % [95% CI]", "n")


def dataset_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Every pretraining variant: name, factor, level, classes, images per class."""
    return [
        [
            v["name"],
            _factor_name(v["factor"]),
            v["level"],
            str(v["classes"]),
            str(v["images_per_class"]) if v["images_per_class"] else "all",
        ]
        for v in summary["variants"]
    ]


DATASET_COLUMNS = ("dataset", "factor", "level", "classes", "training images per class")


def source_sentence(summary: Mapping[str, Any]) -> str:
    """Where the variants come from."""
    held = len(summary["held_out_classes"])
    pool = (
        f"a pool of {summary['pool_classes']} of its classes ({plural(held, 'class', 'classes')} "
        f"held out as {summary['held_out']})"
        if summary["held_out"]
        else "all its classes"
    )
    return (
        f"Every variant derives from {summary['source']} ({summary['n_classes']} classes), "
        f"{pool}, and is pretrained under {plural(summary['n_seeds'], 'seed')}."
    )


def held_out_sentence(summary: Mapping[str, Any]) -> str:
    """The held-out classes, by name (the first :data:`MAX_CLASS_NAMES`)."""
    names = summary["held_out_classes"]
    shown = ", ".join(names[:MAX_CLASS_NAMES])
    if len(names) > MAX_CLASS_NAMES:
        shown += f" … (+{len(names) - MAX_CLASS_NAMES}, all in summary.json)"
    return (
        f"{summary['held_out']}: {plural(len(names), 'class', 'classes')} held out of every "
        f"pretraining variant ({shown}). Every pretrained model is evaluated on them with their "
        "fine labels; the coarse-labels contrast on them is the induction test."
    )


def notes(summary: Mapping[str, Any]) -> list[str]:
    """The failed evaluations and pretraining trials (filled in by the pipeline's step)."""
    out = [
        f"{row['variant']}, seed {row['seed']}, {row['dataset']} ({row['regime']}): "
        f"{row['status_reason']}"
        for row in summary.get("failed", [])
    ]
    failed_trials = summary.get("failed_trials", [])
    if failed_trials:
        out.append(
            f"{plural(len(failed_trials), 'pretraining trial')} failed and left out: "
            + ", ".join(failed_trials)
        )
    return out


def factors_figure(summary: Mapping[str, Any]) -> bytes:
    """One panel per factor: its levels (x) against the transfer accuracy (y), each seed and
    the mean with its interval, one line per measure."""
    factors = summary["factors"]
    measures = summary["measures"]
    fig = figures._new_figure(3.4 * len(factors) + 0.6, 3.8)
    axes = fig.subplots(1, len(factors), squeeze=False)[0]
    stats = _level_stats(summary)
    # Side by side at each level, so that the measures' bars and dots do not hide each other.
    spread = 0.25 / max(len(measures), 1)
    for ax, factor in zip(axes, factors, strict=True):
        levels = factor_levels(summary, factor)
        for i, measure in enumerate(measures):
            offset = (i - (len(measures) - 1) / 2) * spread
            colour = f"C{i % 10}"
            xs, means, bars = [], [], []
            for x, variant in enumerate(levels):
                stat = stats[(variant["name"], measure["dataset"], measure["regime"])]
                ax.scatter(
                    [x + offset] * len(stat["values"]), stat["values"], s=8, color=colour, alpha=0.4
                )
                if stat["value"] is None:
                    continue
                xs.append(x + offset)
                means.append(stat["value"])
                if stat["ci_low"] is not None:
                    bars.append((x + offset, stat["value"], stat["ci_low"], stat["ci_high"]))
            ax.plot(xs, means, "o-", color=colour, markersize=4, label=measure_name(measure))
            # A level without an interval (one seed, or equal values) gets no bar: a bar of
            # width 0 would read as a precise mean.
            if bars:
                x, mean, low, high = (list(column) for column in zip(*bars, strict=True))
                below = [m - lo for m, lo in zip(mean, low, strict=True)]
                above = [hi - m for m, hi in zip(mean, high, strict=True)]
                ax.errorbar(x, mean, yerr=[below, above], fmt="none", ecolor=colour, capsize=3)
        ax.set_xticks(
            range(len(levels)),
            [textwrap.fill(v["level"], TICK_WIDTH) for v in levels],
            fontsize=7,
        )
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_title(FACTOR_NAMES[factor], fontsize=9)
        ax.set_ylabel("transfer accuracy (%)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    return figures._png(fig)


def render_figures(summary: Mapping[str, Any]) -> dict[str, bytes]:
    """Every figure of the report, name -> PNG bytes (none when no factor was varied or
    nothing was measured)."""
    if not summary["factors"] or not summary["measures"]:
        return {}
    return {"factors": factors_figure(summary)}


def report_context(summary: dict[str, Any], pngs: dict[str, bytes], title: str) -> dict:
    """Everything the templates show, the sentences already written."""
    level_columns, levels = level_table(summary)
    contrast_columns, contrasts = contrast_table(summary)
    return {
        "title": title,
        "question": summary["question"],
        "answer": summary["answer"],
        "induction": summary["induction"],
        "direction": paper_direction(summary),
        "mirrors": MIRRORS,
        "level_columns": level_columns,
        "level_rows": levels,
        "contrast_columns": contrast_columns,
        "contrast_rows": contrasts,
        "held_out": held_out_sentence(summary) if summary["held_out"] else "",
        "pretrain_columns": PRETRAIN_COLUMNS,
        "pretrain_rows": pretrain_rows(summary),
        "source": source_sentence(summary),
        "dataset_columns": DATASET_COLUMNS,
        "dataset_rows": dataset_rows(summary),
        "method": summary["settings"]["interval_method"],
        "notes": notes(summary),
        "captions": FIGURES,
        "images": {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()},
        "papers": (PAPER + ".",),
    }


def write_report(out_dir: str | Path, summary: dict[str, Any], title: str) -> None:
    """Writes ``report.html``, ``report.md``, ``summary.json`` and ``figures/*.png`` into
    ``out_dir``, replaced as a whole (readers see the old report or the new one; other files
    there, such as ``results.csv``, stay).

    Args:
        out_dir: the report folder.
        summary: :func:`analysis.pretrain_factors.compute_pretrain_factors`'s summary; its
            ``figures`` (name -> path in the folder) is set here.
        title: the report's title (the study id).
    """
    pngs = render_figures(summary)
    summary["figures"] = {name: f"figures/{name}.png" for name in pngs}
    context = report_context(summary, pngs, title)
    with replaced_folder(out_dir, OUTPUTS) as out:
        (out / "figures").mkdir()
        for name, png in pngs.items():
            write_atomic(out / "figures" / f"{name}.png", png)
        write_atomic(
            out / "report.html", render_in(TEMPLATE_DIR, "pretrain_factors.html.j2", context)
        )
        write_atomic(out / "report.md", render_in(TEMPLATE_DIR, "pretrain_factors.md.j2", context))
        write_atomic(out / "summary.json", to_json(summary))
