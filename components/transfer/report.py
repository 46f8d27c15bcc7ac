"""The transfer study's own report: one self-contained ``report.html`` that answers first.

Order: the question (does a cheap score predict fine-tuned accuracy on each target?), one
sentence per target and cheap score (a verdict that follows Kendall tau-b's bootstrap
interval, Kendall tau-b and weighted tau with their intervals and n, then the cost of the
score against the fine-tune it predicts), the log-odds
Pearson r and Spearman rho of each regime against source accuracy, the fine-tune protocol,
the scatter plots (embedded base64 PNGs), every result row (status and reason of failures),
and a link to the APR report of the same table. Numbers come from ``comparison.json``
(:func:`components.transfer.compare.compare`); the page is written atomically.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2

from analysis.files import write_atomic
from analysis.readings import relation
from analysis.words import plural
from components.transfer.compare import CHEAP_SCORES, TARGET

TEMPLATE_DIR = Path(__file__).parent / "templates"
#: How each cheap score / regime slice is named in the sentences.
LABELS = {
    "knn/knn_top1": "kNN top-1",
    "knn/knn_top5_fraction": "kNN top-5 fraction",
    "logme/logme": "LogME",
    "leep/leep": "LEEP",
    "linear/linear_top1": "the linear probe",
    "finetune/top1": "fine-tuned top-1",
    "scratch/top1": "scratch top-1",
}


def number(value: float | None) -> str:
    """A statistic as written in the sentences: 3 decimals, ``n/a`` for none."""
    return "n/a" if value is None else f"{value:.3f}"


def cell(value: Any) -> str:
    """A table cell: floats with 3 decimals (3 significant digits when very large or small)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value and not 1e-3 <= abs(value) < 1000:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def _with_interval(name: str, stat: dict[str, Any]) -> str:
    text = f"{name} = {number(stat['value'])}"
    if stat.get("ci_low") is not None:
        text += f" (95% CI {number(stat['ci_low'])} to {number(stat['ci_high'])})"
    return text


def _first_upper(text: str) -> str:
    """``text`` starting a sentence; a name spelled with an inner capital (kNN) stays."""
    return text if text[1:2].isupper() else text[:1].upper() + text[1:]


def _measured(result: dict[str, Any]) -> bool:
    """Whether the study produced the slice at all (a regime not run has no row)."""
    return result["n_models"] > 0 or result.get("median_seconds") is not None


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} s"


def score_sentence(dataset: str, key: str, result: dict[str, Any]) -> str:
    """One answer: how well a cheap score ranks the models by fine-tuned accuracy. The
    verdict follows the sign that Kendall τ's 95% interval supports
    (:func:`analysis.readings.relation`; τ runs smaller than ρ, so no strength words)."""
    label = LABELS.get(key, key)
    if result.get("kendall") is None:
        return f"On {dataset}, {label} cannot be compared with fine-tuning: {result['reason']}."
    sign, _ = relation(result["kendall"])
    verdict = {
        1: "ranks the models like fine-tuned top-1",
        0: "shows no clear relation to fine-tuned top-1",
        -1: "ranks the models in reverse of fine-tuned top-1",
    }[sign]
    return (
        f"On {dataset}, {label} {verdict}: Kendall "
        f"{_with_interval('τ', result['kendall'])} and weighted "
        f"{_with_interval('τ', result['weighted_tau'])}, n = "
        f"{plural(result['n_models'], 'model')}."
    )


def cost_sentence(key: str, result: dict[str, Any]) -> str:
    """What the score costs against the fine-tune it predicts (median seconds per model)."""
    ratio = result.get("cost_ratio")
    share = "" if ratio is None else f", {ratio:.2%} of it"
    return (
        f"{_first_upper(LABELS.get(key, key))} costs {_seconds(result['median_seconds'])} per "
        f"model (median) against {_seconds(result['finetune_median_seconds'])} for the "
        f"fine-tune{share}."
    )


def source_sentence(dataset: str, key: str, result: dict[str, Any]) -> str:
    """A regime's accuracy against the models' source accuracy (Kornblith et al.)."""
    label = LABELS.get(key, key)
    n = plural(result["n_models"], "model")
    if result.get("pearson_logit") is None:
        return f"On {dataset}, {label} vs source accuracy: {result['reason']} (n = {n})."
    sign, word = relation(result["pearson_logit"])
    if sign == 0:
        verdict = "no clear relation"
    else:
        verdict = f"{word + ' ' if word else ''}{'positive' if sign > 0 else 'negative'} relation"
    return (
        f"On {dataset}, {label} vs source accuracy: {verdict}, log-odds Pearson "
        f"{_with_interval('r', result['pearson_logit'])}, Spearman ρ = "
        f"{number(result['spearman']['value'])}, n = {n}."
    )


def protocol_sentence(rows: list[dict]) -> str:
    """How the reported fine-tuned accuracies were obtained (from ``finetune_refit`` rows)."""
    flags = {
        float(r["value"])
        for r in rows
        if r["metric"] == "finetune_refit" and r["status"] == "ok" and r["value"] is not None
    }
    grid = "learning rate x weight decay chosen on the validation split"
    if flags == {1.0}:
        return f"Fine-tune and scratch: {grid}, then refit on train + validation; test top-1."
    if flags == {0.0}:
        return f"Fine-tune and scratch: {grid}, trained on train only (no refit); test top-1."
    if flags:
        return f"Fine-tune and scratch: {grid}; some results refit on train + validation."
    return "No fine-tune or scratch result."


def report_context(
    title: str,
    rows: list[dict],
    comparison: dict[str, Any],
    figures: list[str | Path],
    apr_link: str = "",
) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows, the sentences already written."""
    targets = []
    for dataset, parts in comparison.items():
        scores = parts["scores_vs_finetune"]
        targets.append(
            {
                "name": dataset,
                "question": f"Does a cheap score predict fine-tuned accuracy on {dataset}?",
                "answers": [
                    {
                        "score": score_sentence(dataset, key, scores[key]),
                        "cost": cost_sentence(key, scores[key]),
                    }
                    for key in (f"{r}/{m}" for r, m in CHEAP_SCORES)
                    if key in scores and _measured(scores[key])
                ],
                "not_measured": [
                    LABELS.get(key, key)
                    for key in (f"{r}/{m}" for r, m in CHEAP_SCORES)
                    if key in scores and not _measured(scores[key])
                ],
                "vs_source": [
                    source_sentence(dataset, key, result)
                    for key, result in parts["regimes_vs_source"].items()
                    if result["n_models"] > 0
                ],
            }
        )
    images = [
        {"name": Path(p).stem, "data": base64.b64encode(Path(p).read_bytes()).decode("ascii")}
        for p in figures
    ]
    columns = ("model", "dataset", "regime", "metric", "value", "unit", "seconds", "status")
    return {
        "title": title,
        "target": "/".join(TARGET),
        "targets": targets,
        "protocol": protocol_sentence(rows),
        "images": images,
        "columns": columns + ("status_reason",),
        "rows": [[r.get(c) for c in columns] + [r.get("status_reason", "")] for r in rows],
        "apr_link": apr_link,
    }


def write_report(
    path: str | Path,
    title: str,
    rows: list[dict],
    comparison: dict[str, Any],
    figures: list[str | Path],
    apr_link: str = "",
) -> str:
    """Renders the report and writes it atomically to ``path``; returns the HTML."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    html = env.get_template("report.html.j2").render(
        **report_context(title, rows, comparison, figures, apr_link)
    )
    write_atomic(path, html)
    return html
