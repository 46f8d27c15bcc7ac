"""The prediction's report: ``report.html`` (self-contained) and ``report.md``, answer first.

Order: the answer ("On <target>, <score> predicts the ranking with τ = … [lo, hi] (n = k),
better/worse than the source ranking (τ = …)"), what n is, one table of every predictor
(Kendall τ and weighted τ with 95 % bootstrap intervals, the paired difference to the source
ranking, the regret of picking its predicted best, its cost against training), the random
predictor's null interval, the costs, the figure (predicted rank vs trained rank per
predictor), how the k were chosen, every architecture, what failed, and the closing note:
does any cheap score beat the source ranking, with the numbers. The numbers are those of
``summary.json``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from analysis.files import replaced_folder, write_atomic
from analysis.readings import fmt, interval
from analysis.report import render_in, to_json
from analysis.words import plural
from components.predict.predictors import (
    RANDOM,
    SOURCE,
    SOURCE_PREFIX,
    predicted_order,
    score_keys,
    source_baseline,
)

TEMPLATE_DIR = Path(__file__).parent / "templates"
OUTPUTS = ("figures", "report.html", "report.md", "summary.json")
FIGURE = "predicted_vs_trained"
PAPERS = (
    "Tuggener, Schmidhuber, Stadelmann 2021, “Is it enough to optimize CNN architectures on "
    "ImageNet?”, arXiv 2103.09108 (the source ranking as a predictor).",
    "Kornblith, Shlens, Le 2019, “Do Better ImageNet Models Transfer Better?”, arXiv "
    "1805.08974 (fixed-feature linear probe).",
    "You, Liu, Wang, Long 2021, “LogME: Practical Assessment of Pre-trained Models for "
    "Transfer Learning”, arXiv 2102.11005.",
    "Nguyen, Hassner, Seeger, Archambeau 2020, “LEEP: A New Measure to Evaluate "
    "Transferability of Learned Representations”, arXiv 2002.12462.",
    "Vigna 2015, “A weighted correlation index for rankings with ties”, arXiv 1404.3325 "
    "(weighted τ).",
)


def label(key: str) -> str:
    """A predictor's name in prose."""
    from components.transfer.report import LABELS

    if key == RANDOM:
        return "random"
    if key == SOURCE:
        return "the source ranking (pooled)"
    if key.startswith(SOURCE_PREFIX):
        return f"the source ranking ({key.removeprefix(SOURCE_PREFIX)})"
    return LABELS.get(key, key).removeprefix("the ")


def tau_text(stat: dict[str, Any] | None) -> str:
    """``0.43 [-0.14, 0.86]`` (2 decimals), or ``n/a``."""
    if not stat or stat.get("value") is None:
        return "n/a"
    return f"{fmt(stat['value'])}{interval(stat)}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


def _scores(summary: dict[str, Any]) -> list[str]:
    """The cheap scores that have a Kendall tau, in report order."""
    keys = score_keys(summary["settings"]["scores"])
    return [k for k in keys if (summary["predictors"].get(k) or {}).get("kendall")]


def _best_score(summary: dict[str, Any]) -> str | None:
    scores = _scores(summary)
    if not scores:
        return None
    return max(scores, key=lambda k: summary["predictors"][k]["kendall"]["value"])


def headline(summary: dict[str, Any]) -> str:
    """The report's first sentence: the best cheap score against the source ranking."""
    target = summary["target"]
    predictors = summary["predictors"]
    base = source_baseline(summary["predictions"])
    base_tau = predictors[base].get("kendall")
    base_text = f"τ = {tau_text(base_tau)}" if base_tau else "τ undefined"
    best = _best_score(summary)
    if best is None:
        return (
            f"On {target}, no cheap score could rank the trained architectures; the source "
            f"ranking has {base_text} (n = {predictors[base]['n_models']})."
        )
    tau = predictors[best]["kendall"]
    if base_tau is None or tau["value"] > base_tau["value"]:
        comparison = "better than"
    elif tau["value"] < base_tau["value"]:
        comparison = "worse than"
    else:
        comparison = "as good as"
    return (
        f"On {target}, {label(best)} predicts the ranking with τ = {tau_text(tau)} "
        f"(n = {predictors[best]['n_models']}), {comparison} the source ranking ({base_text})."
    )


def n_sentence(summary: dict[str, Any]) -> str:
    """What n is, plainly."""
    n, k = summary["n_trained"], summary["k"]
    total = summary["population"]["architectures"]
    trained = f"{plural(n, 'architecture')} trained on {summary['target']}"
    scope = "every one" if k == total else f"{k} of the population's {total}"
    return (
        f"n = {n}: every τ compares the predicted and the trained ranking of the {trained} "
        f"(k = {scope}, chosen before training); with so few, a 95 % interval is wide, and "
        "τ says how the ranking holds, not which single architecture wins."
    )


def random_sentence(summary: dict[str, Any]) -> str:
    """The random predictor's null interval and expected regret."""
    result = summary["predictors"][RANDOM]
    kendall, weighted = result["kendall"], result["weighted_tau"]
    return (
        f"A random ranking has expected τ = 0: 95 % of {result['n_draws']:,} seeded random "
        f"rankings of these {result['n_models']} architectures have τ in "
        f"[{fmt(kendall['ci_low'])}, {fmt(kendall['ci_high'])}] (weighted τ in "
        f"[{fmt(weighted['ci_low'])}, {fmt(weighted['ci_high'])}]); a predictor inside that "
        f"band does no better than chance at this n. The seeded draw shown has τ = "
        f"{fmt(result['draw']['kendall']['value'])}; a random pick loses "
        f"{fmt(result['regret']['value'], 1)} points of top-1 error on average."
    )


def cost_sentence(summary: dict[str, Any]) -> str:
    """Training against the predictors' cost."""
    costs = summary["costs"]
    devices = ", ".join(summary["devices"]) or "the training tasks' device"
    population = summary["population"]["architectures"]
    how = "measured" if costs["population_on_target_exact"] else "estimated from the k"
    scores = [k for k in _scores(summary) if costs["predictors"][k]["measured"]]
    cheapest = min(scores, key=lambda k: costs["predictors"][k]["seconds"]) if scores else None
    text = (
        f"Training the {plural(summary['n_trained'], 'chosen architecture')} on "
        f"{summary['target']} took {_seconds(costs['k_training_seconds'])} ({devices}); the "
        f"whole population of {population} on {summary['target']} takes "
        f"{_seconds(costs['population_on_target_seconds'])} ({how}), and its training on the "
        f"sources took {_seconds(costs['population_on_sources_seconds'])}."
    )
    if cheapest:
        spent = costs["predictors"][cheapest]
        share = spent["share_of_population_training"]
        of_training = "" if share is None else f", {share:.1%} of training the population there"
        text += (
            f" The cheapest score, {label(cheapest)}, cost {_seconds(spent['seconds'])} over the "
            f"population (feature extraction included){of_training}."
        )
    return text + " The source ranking and random cost nothing beyond what was trained."


def closing_note(summary: dict[str, Any]) -> str:
    """Does any cheap score beat the source ranking here, with the numbers."""
    predictors = summary["predictors"]
    base = source_baseline(summary["predictions"])
    base_tau = predictors[base].get("kendall")
    scores = _scores(summary)
    if not scores or base_tau is None:
        return "No comparison with the source ranking: a τ is undefined (see the table)."
    beats = [k for k in scores if predictors[k]["kendall"]["value"] > base_tau["value"]]
    resolved = [
        k
        for k in beats
        if (predictors[k].get("versus_source") or {}).get("ci_low") is not None
        and predictors[k]["versus_source"]["ci_low"] > 0
    ]
    listed = "; ".join(
        f"{label(k)} τ = {fmt(predictors[k]['kendall']['value'])}, Δτ = "
        f"{tau_text(predictors[k].get('versus_source'))}"
        for k in beats
    )
    n = predictors[base]["n_models"]
    if not beats:
        best = _best_score(summary)
        return (
            f"No cheap score beats the source ranking on {summary['target']}: the best, "
            f"{label(best)}, has τ = {tau_text(predictors[best]['kendall'])} against the "
            f"source ranking's τ = {tau_text(base_tau)} (n = {n})."
        )
    verdict = (
        f"the paired interval of Δτ excludes 0 for {', '.join(label(k) for k in resolved)}"
        if resolved
        else f"every paired interval of Δτ includes 0, so at n = {n} the data do not settle it"
    )
    return (
        f"Yes, on point estimates: {listed} (source ranking τ = {tau_text(base_tau)}, n = {n}); "
        f"{verdict}."
    )


def selection_sentence(summary: dict[str, Any]) -> str:
    """How the k were chosen (the rule of :func:`~components.predict.predictors.
    stratified_choice`)."""
    k, total = summary["k"], summary["population"]["architectures"]
    if k == total:
        return f"k = {k}: every architecture of the population was trained on the target."
    return (
        f"The {k} trained architectures: the {total} ordered by the cheap scores' consensus "
        f"(mean normalised rank), cut into {k} contiguous strata of equal size (±1), one drawn "
        f"from each with seed {summary['settings']['seed']}: the sample spans the predicted "
        "ranking from top to bottom."
    )


def predictor_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per predictor: name, n, Kendall τ, weighted τ, Δτ vs the source ranking,
    regret, pick, seconds, share of training the population on the target."""
    rows = []
    for key, result in summary["predictors"].items():
        cost = summary["costs"]["predictors"][key]
        regret = result.get("regret") or {}
        if key == RANDOM:
            pick = "uniform (expected)"
        else:
            pick = f"{regret.get('pick', '')[:8]} ({fmt(regret.get('pick_error'), 1)} %)"
        share = cost["share_of_population_training"]
        rows.append(
            [
                label(key),
                str(result["n_models"]),
                tau_text(result.get("kendall")),
                tau_text(result.get("weighted_tau")),
                tau_text(result.get("versus_source")) if "versus_source" in result else "",
                fmt(regret.get("value"), 1) if regret else "n/a",
                pick,
                _seconds(cost["seconds"]),
                "" if share is None or not cost["measured"] else f"{share:.1%}",
            ]
        )
    return rows


PREDICTOR_COLUMNS = (
    "predictor",
    "n",
    "Kendall τ [95% CI]",
    "weighted τ [95% CI]",
    "Δτ vs source [95% CI]",
    "regret (points)",
    "picks (error)",
    "cost",
    "of training the population",
)


def architecture_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every architecture: trained error and rank (if trained), each predictor's rank."""
    predictions = summary["predictions"]
    trained = summary["trained"]
    ranks = {key: predicted_order(values) for key, values in predictions.items()}
    trained_order = sorted(trained, key=lambda a: (trained[a], a))
    columns = ["architecture", "trained error %", "trained rank"] + [
        f"{label(key)} rank" for key in predictions
    ]
    rows = []
    for arch in predicted_order(summary["consensus"]):
        row = [arch[:12]]
        if arch in trained:
            row += [fmt(trained[arch], 1), str(trained_order.index(arch) + 1)]
        else:
            row += ["not trained", ""]
        row += [
            str(ranks[key].index(arch) + 1) if arch in ranks[key] else "" for key in predictions
        ]
        rows.append(row)
    return columns, rows


def notes(summary: dict[str, Any]) -> list[str]:
    """What failed or was left out."""
    out = []
    for key, failed in summary["failed_scores"].items():
        out.append(
            f"{label(key)}: no value for {plural(failed['count'], 'model')} ({failed['reason']})."
        )
    for arch, reason in summary["failed_training"].items():
        out.append(f"architecture {arch[:12]} did not train on {summary['target']}: {reason}.")
    for reason, count in summary["population"]["left_out"].items():
        out.append(f"{plural(count, 'trial')} of the population left out: {reason}.")
    return out


def figure(summary: dict[str, Any]) -> bytes:
    """Predicted rank (x) against trained rank (y) of the trained architectures, one panel
    per predictor; on the diagonal the prediction was right."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trained = summary["trained"]
    keys = list(summary["predictions"])
    columns = min(4, len(keys))
    rows = -(-len(keys) // columns)
    fig = Figure(figsize=(2.8 * columns, 2.7 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    true_order = sorted(trained, key=lambda a: (trained[a], a))
    n = len(true_order)
    for ax, key in zip(axes, keys, strict=False):
        goodness = {a: v for a, v in summary["predictions"][key].items() if a in trained}
        order = predicted_order(goodness)
        x = [order.index(a) + 1 for a in order]
        y = [true_order.index(a) + 1 for a in order]
        ax.plot([1, n], [1, n], color="#bbb", linewidth=1)
        ax.scatter(x, y, s=18)
        ax.set_xlim(0.5, n + 0.5)
        ax.set_ylim(n + 0.5, 0.5)  # rank 1 (the best) at the top
        result = summary["predictors"][key]
        # The random panel shows its seeded draw, whose tau the table does not list.
        stat = result["draw"]["kendall"] if key == RANDOM else result.get("kendall")
        name = "random (one seeded draw)" if key == RANDOM else label(key)
        ax.set_title(f"{name}\nτ = {fmt(stat['value'])}" if stat else name, fontsize=8)
        ax.set_xlabel("predicted rank", fontsize=8)
        ax.set_ylabel("trained rank", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def report_context(summary: dict[str, Any], png: bytes) -> dict[str, Any]:
    """Everything the templates show, the sentences already written."""
    columns, rows = architecture_rows(summary)
    population = summary["population"]
    return {
        "title": f"Which architectures train best on {summary['target']}? {summary['study_id']}",
        "headline": headline(summary),
        "n_sentence": n_sentence(summary),
        "random_sentence": random_sentence(summary),
        "cost_sentence": cost_sentence(summary),
        "selection_sentence": selection_sentence(summary),
        "closing_note": closing_note(summary),
        "population_sentence": (
            f"Population: {plural(population['models'], 'trained model')} of "
            f"{plural(population['architectures'], 'architecture')} on "
            f"{', '.join(population['sources'])}; the target trials use their recipe "
            f"{population['recipe']} ({plural(population['epochs'], 'epoch')}, seeds "
            f"{population['seeds']}, {population['resolution']} px), shared by "
            f"{population['setup_shared_by']} of the population's trials."
        ),
        "predictor_columns": PREDICTOR_COLUMNS,
        "predictor_rows": predictor_rows(summary),
        "architecture_columns": columns,
        "architecture_rows": rows,
        "notes": notes(summary),
        "figure": FIGURE,
        "figure_data": base64.b64encode(png).decode("ascii"),
        "papers": PAPERS,
    }


def write_report(out_dir: str | Path, summary: dict[str, Any]) -> str:
    """Writes ``report.html``, ``report.md``, ``summary.json`` and the figure into ``out_dir``
    (replaced as a whole: readers see the old report or the new one); returns the HTML."""
    png = figure(summary)
    context = report_context(summary, png)
    html = render_in(TEMPLATE_DIR, "report.html.j2", context)
    with replaced_folder(out_dir, OUTPUTS) as out:
        (out / "figures").mkdir()
        write_atomic(out / "figures" / f"{FIGURE}.png", png)
        write_atomic(out / "report.html", html)
        write_atomic(out / "report.md", render_in(TEMPLATE_DIR, "report.md.j2", context))
        write_atomic(out / "summary.json", to_json(summary))
    return html
