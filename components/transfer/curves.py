"""Learning curves of the transfer study: fine-tune against scratch, test accuracy over steps.

Kornblith, Shlens, Le 2019 ("Do Better ImageNet Models Transfer Better?", arXiv 1805.08974,
Section 4.6, "ImageNet pretraining accelerates convergence") compare how fast a fine-tuned
network and the same architecture trained from scratch reach their accuracy. Each fine-tune /
scratch result of a study records the test accuracy of its reported run (the refit on train +
validation) at step 0 and at up to ``curve_points`` evenly spaced steps
(:func:`components.transfer.finetune.curve_steps`); the last point is the reported ``top1``.

The curves are a side table next to the long results, ``model, dataset, regime, step, top1``
(:data:`CURVE_COLUMNS`): ``studies/<study_id>/curves/chunk-<i>.csv`` per chunk and
``curves.csv`` beside ``results.csv``. :func:`curve_figure` draws one panel per target
(colour: model; solid: fine-tune, dashed: scratch) and :func:`convergence_sentences` says, per
target, how far each regime has come after the first evaluated steps and at the end.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from statistics import median
from typing import Any

from analysis.words import plural

#: Columns of the curves side table.
CURVE_COLUMNS = ("model", "dataset", "regime", "step", "top1")
#: Regimes that record a curve, as drawn: fine-tune solid, scratch dashed.
CURVE_REGIMES = {"finetune": "-", "scratch": "--"}
#: Models named in a panel's legend; with more, colours stay but names are left out.
LEGEND_MODELS = 12

Curves = dict[tuple[str, str, str], list[tuple[int, float]]]


def curve_records(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The side table's records of study rows (:class:`components.transfer.study.Row`)
    that carry a curve (the fine-tune / scratch ``top1`` rows)."""
    return [
        {"model": r.model, "dataset": r.dataset, "regime": r.regime, "step": s, "top1": a}
        for r in rows
        for s, a in r.curve
    ]


def curves_to_csv(records: list[dict[str, Any]]) -> str:
    """The side table as CSV text (accuracies as ``repr`` floats: they read back exactly)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record | {"top1": repr(float(record["top1"]))})
    return buffer.getvalue()


def parse_curves(text: str) -> list[dict[str, Any]]:
    """Records of a side table's CSV text (steps as ints, accuracies as floats)."""
    return [
        row | {"step": int(row["step"]), "top1": float(row["top1"])}
        for row in csv.DictReader(io.StringIO(text))
    ]


def by_run(records: list[dict[str, Any]]) -> Curves:
    """``(dataset, regime, model) -> [(step, top1), ...]`` in step order."""
    curves: Curves = {}
    for r in records:
        curves.setdefault((r["dataset"], r["regime"], r["model"]), []).append(
            (int(r["step"]), float(r["top1"]))
        )
    return {key: sorted(points) for key, points in curves.items()}


def curve_figure(records: list[dict[str, Any]], path: str | Path) -> str | None:
    """One PNG, one panel per target: test top-1 over steps per model, fine-tune solid and
    scratch dashed; None (nothing written) without a curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curves = by_run(records)
    if not curves:
        return None
    datasets = sorted({d for d, _, _ in curves})
    models = sorted({m for _, _, m in curves})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    columns = min(3, len(datasets))
    rows = -(-len(datasets) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, dataset in zip(axes, datasets, strict=False):
        for (d, regime, model), points in sorted(curves.items()):
            if d != dataset:
                continue
            steps, top1 = zip(*points, strict=True)
            ax.plot(steps, top1, CURVE_REGIMES.get(regime, ":"), color=colours[model], lw=1.2)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("test top-1")
        ax.set_ylim(0, 1)
        handles = [Line2D([], [], color="k", ls=ls, label=r) for r, ls in CURVE_REGIMES.items()]
        shown = sorted({m for d, _, m in curves if d == dataset})
        if len(shown) <= LEGEND_MODELS:
            handles += [Line2D([], [], color=colours[m], label=m) for m in shown]
        ax.legend(handles=handles, fontsize=7)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return str(path)


def _median_at(curves: list[list[tuple[int, float]]], index: int) -> tuple[float, set[int]]:
    """Median accuracy of the ``index``-th point of each curve, and the steps it is at."""
    points = [curve[index] for curve in curves]
    return median(a for _, a in points), {s for s, _ in points}


def _at(steps: set[int], words: str) -> str:
    return f"step {next(iter(steps)):,}" if len(steps) == 1 else words


def convergence_sentences(records: list[dict[str, Any]]) -> list[str]:
    """Per target with both regimes' curves for a model: the median test top-1 of fine-tune
    and scratch at the first evaluation after the start and at the end (the reported one)."""
    curves = by_run(records)
    sentences = []
    for dataset in sorted({d for d, _, _ in curves}):
        both = sorted(
            m
            for d, regime, m in curves
            if (d, regime) == (dataset, "finetune") and (dataset, "scratch", m) in curves
        )
        runs = {
            regime: [curves[(dataset, regime, m)] for m in both]
            for regime in ("finetune", "scratch")
        }
        if not both or min(len(c) for c in runs["finetune"] + runs["scratch"]) < 2:
            continue
        early = {r: _median_at(c, 1) for r, c in runs.items()}
        final = {r: _median_at(c, -1) for r, c in runs.items()}
        first = _at(early["finetune"][1] | early["scratch"][1], "the first evaluation")
        last = _at(final["finetune"][1] | final["scratch"][1], "the end")
        sentences.append(
            f"On {dataset}, fine-tuned models reach a median test top-1 of "
            f"{early['finetune'][0]:.3f} at {first} against {early['scratch'][0]:.3f} from "
            f"scratch, and {final['finetune'][0]:.3f} against {final['scratch'][0]:.3f} at "
            f"{last} (n = {plural(len(both), 'model')} with both curves)."
        )
    return sentences
