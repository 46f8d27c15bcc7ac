"""The transfer study's own report: one self-contained ``report.html`` that answers first.

Order: the question (does a cheap score predict fine-tuned accuracy on each target?), one
sentence per target and cheap score (a verdict that follows Kendall tau-b's bootstrap
interval, Kendall tau-b and weighted tau with their intervals and n, then the cost of the
score against the fine-tune it predicts), the log-odds
Pearson r and Spearman rho of each regime against source accuracy per source dataset,
Kornblith et al.'s log-odds r of the accuracy averaged over targets (a table, a sentence per
source and regime, the figure with Morey's within-dataset error bars), the models' ranking on
each target grouped by family, the fine-tune protocol,
the budgets and checks of every model and target (input sides, test overlap by content,
fine-tune and scratch steps against their schedule and cap, epochs, images seen),
the scatter plots (embedded base64 PNGs), the learning curves of fine-tune against scratch
(test top-1 over steps, with one sentence per target), every result row (status and reason
of failures),
and a link to the APR report of the same table. Numbers come from ``comparison.json``
(:func:`components.transfer.compare.compare`); interval endpoints carry the decimals their
Monte-Carlo error supports and that error (``±``), and every statistic over fewer than
``MIN_RELIABLE_MODELS`` models its warning. The page is written atomically.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2

from analysis.files import write_atomic
from analysis.readings import mc_error, relation
from analysis.stats import MC_TOLERANCE, supported_decimals
from analysis.words import plural
from components.transfer.compare import AVERAGED_FIGURE, CHEAP_SCORES, TARGET
from components.transfer.curves import convergence_sentences

TEMPLATE_DIR = Path(__file__).parent / "templates"
#: Columns of the budgets and checks table (:func:`budgets`).
BUDGET_COLUMNS = (
    "model",
    "target",
    "input px",
    "source px",
    "target px",
    "test overlap",
    "fine-tune steps",
    "fine-tune epochs",
    "fine-tune images",
    "scratch steps",
    "scratch epochs",
    "scratch images",
)
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


def endpoints(stat: dict[str, Any]) -> str:
    """``low to high`` of a statistic's interval, '' without one: the endpoints with the
    decimals their Monte-Carlo error supports (:func:`analysis.stats.supported_decimals`),
    followed by `` ±error`` (rounded up, :func:`analysis.readings.mc_error`) when that error is
    above the tolerance the intervals sentence states (the resample bound stopped first), as
    the APR reports write them."""
    if stat.get("ci_low") is None:
        return ""
    mc_se = stat.get("mc_se")
    digits = supported_decimals(mc_se)
    # + 0.0: an endpoint that rounds to zero from below prints as 0, not -0.
    low, high = (round(stat[end], digits) + 0.0 for end in ("ci_low", "ci_high"))
    text = f"{low:.{digits}f} to {high:.{digits}f}"
    return text + (f" ±{mc_error(mc_se)}" if mc_se is not None and mc_se > MC_TOLERANCE else "")


def _with_interval(name: str, stat: dict[str, Any]) -> str:
    text = f"{name} = {number(stat['value'])}"
    if stat.get("ci_low") is not None:
        text += f" (95% CI {endpoints(stat)})"
    return text


def _caution(result: dict[str, Any]) -> str:
    """The few-models warning of a statistic, as a sentence after it ('' without one)."""
    return f" Caution: {result['warning']}." if result.get("warning") else ""


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
        f"{plural(result['n_models'], 'model')}.{_caution(result)}"
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


def _verdict(pearson: dict[str, Any]) -> str:
    """The relation that a log-odds r's interval supports, in words."""
    sign, word = relation(pearson)
    if sign == 0:
        return "no clear relation"
    return f"{word + ' ' if word else ''}{'positive' if sign > 0 else 'negative'} relation"


def source_sentence(dataset: str, source: str, key: str, result: dict[str, Any]) -> str:
    """A regime's accuracy against the source accuracy of the models from one source dataset
    (Kornblith et al.)."""
    label = LABELS.get(key, key)
    n = plural(result["n_models"], "model")
    where = f"On {dataset}, {label} vs source accuracy on {source}"
    if result.get("pearson_logit") is None:
        return f"{where}: {result['reason']} (n = {n})."
    return (
        f"{where}: {_verdict(result['pearson_logit'])}, log-odds Pearson "
        f"{_with_interval('r', result['pearson_logit'])}, Spearman "
        f"{_with_interval('ρ', result['spearman'])}, n = {n}.{_caution(result)}"
    )


def averaged_sentence(source: str, key: str, result: dict[str, Any]) -> str:
    """Kornblith et al.'s headline statistic of one regime over the models from one source."""
    label = LABELS.get(key, key)
    n = plural(result["n_models"], "model")
    targets = plural(result["n_datasets"], "target")
    where = f"{_first_upper(label)} averaged over {targets} vs source accuracy on {source}"
    excluded = result["excluded_models"]
    left_out = (
        f" Left out, without a result on every target: {', '.join(excluded)}." if excluded else ""
    )
    if result.get("pearson_logit") is None:
        return f"{where}: {result['reason']} (n = {n}).{left_out}"
    return (
        f"{where} ({', '.join(result['datasets'])}): {_verdict(result['pearson_logit'])}, "
        f"Pearson {_with_interval('r', result['pearson_logit'])} between the source top-1's "
        f"log-odds and the mean of the targets' log-odds, Spearman "
        f"{_with_interval('ρ', result['spearman'])}, n = {n}.{left_out}{_caution(result)}"
    )


#: Columns of the table of Kornblith et al.'s statistic (:func:`averaged`).
AVERAGED_COLUMNS = (
    "source",
    "regime",
    "models",
    "targets",
    "log-odds r",
    "95% CI",
    "Spearman ρ",
    "note",
)
#: Columns of the per-model table behind it, with Morey's intervals.
MOREY_COLUMNS = (
    "source",
    "regime",
    "model",
    "family",
    "source top-1",
    "mean log-odds",
    "Morey 95% interval",
    "as accuracy",
)


def averaged(comparison: dict[str, Any]) -> dict[str, Any]:
    """Kornblith et al.'s averaged log-odds r per source and regime: sentences, a table, and
    each model's mean log-odds with its Morey interval."""
    sentences, table, models = [], [], []
    for source, regimes in comparison["averaged_vs_source"].items():
        for key, result in regimes.items():
            if result["n_models"] == 0 and not result["excluded_models"]:
                continue  # the regime did not run for this source
            sentences.append(averaged_sentence(source, key, result))
            pearson = result.get("pearson_logit") or {}
            table.append(
                [source, key, result["n_models"], result["n_datasets"]]
                + [number(pearson.get("value")), endpoints(pearson)]
                + [number((result.get("spearman") or {}).get("value"))]
                + [result.get("warning") or result.get("reason") or ""]
            )
            for m in result["models"]:
                morey = (
                    f"{m['morey_low']:.2f} to {m['morey_high']:.2f}"
                    if m["morey_low"] is not None
                    else result["morey"].get("reason", "")
                )
                models.append(
                    [source, key, m["model"], m["family"], f"{m['source_top1']:.1%}"]
                    + [f"{m['mean_log_odds']:.2f}", morey, f"{m['mean_accuracy']:.1%}"]
                )
    return {
        "sentences": sentences,
        "columns": AVERAGED_COLUMNS,
        "rows": table,
        "model_columns": MOREY_COLUMNS,
        "models": models,
    }


def intervals_sentence(comparison: dict[str, Any]) -> str:
    """How the intervals were made (``comparison["settings"]``)."""
    settings = comparison["settings"]
    if not settings["n_bootstrap"]:
        return "No intervals: the bootstrap was switched off (0 resamples)."
    return (
        f"Intervals: {settings['ci_level']:.0%} percentile bootstrap over models (resampled "
        f"with replacement), as many resamples as the endpoints need for a Monte-Carlo "
        f"standard error below {settings['bootstrap_tolerance']} (at most "
        f"{settings['n_bootstrap']:,}); where the bound stopped them first, the ± after an "
        "interval is the error reached, and the endpoints have the decimals the error "
        "supports. Models only: the test sets' own noise "
        "is not included (the results table holds no test-set sizes). Statistics over fewer "
        f"than {settings['min_reliable_models']} models carry a caution."
    )


def families(comparison: dict[str, Any]) -> dict[str, Any]:
    """Per-family counts of the study's models and, per target, the ranking by fine-tuned
    top-1 grouped by family (best family first)."""
    counts = "; ".join(
        f"{name}: {plural(len(models), 'model')}" for name, models in comparison["families"].items()
    )
    keys = ["/".join(TARGET)] + [f"{r}/{m}" for r, m in CHEAP_SCORES]
    tables = []
    for dataset, parts in comparison["targets"].items():
        ranking = parts["ranking"]
        if not ranking:
            continue
        shown = [k for k in keys if any(entry.get(k) is not None for entry in ranking)]
        tables.append(
            {
                "name": dataset,
                "columns": ["family", "model", "rank"] + [LABELS.get(k, k) for k in shown],
                "rows": [
                    [entry["family"], entry["model"], entry["rank"]] + [entry.get(k) for k in shown]
                    for entry in ranking
                ],
            }
        )
    return {"counts": counts, "tables": tables}


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


def _setup_cells(values: dict[str, Any]) -> list[str]:
    """Input sides and test overlap of one (model, target), as table cells."""
    if values.get("test_overlap_images") is None:
        overlap = "not checked"
    else:
        overlap = f"{values['test_overlap_images']:.0f} ({values['test_overlap_fraction']:.1%})"
    sides = [values.get(m) for m in ("input_size", "source_input_size", "target_resolution")]
    return [f"{v:.0f}" if v is not None else "" for v in sides] + [overlap]


def _budget_cells(values: dict[str, Any]) -> list[str]:
    """Steps (of the schedule, and the cap when it cut), epochs and images of one result."""
    if values.get("finetune_steps") is None:
        return ["", "", ""]
    steps = f"{values['finetune_steps']:.0f}"
    if values.get("finetune_capped"):
        steps += (
            f" of {values['finetune_schedule_steps']:.0f} (cap {values['finetune_max_steps']:.0f})"
        )
    return [steps, f"{values['finetune_epochs']:.3g}", f"{values['finetune_images_seen']:.0f}"]


def budgets(rows: list[dict]) -> dict[str, Any]:
    """The budgets and checks of every (model, target): input sides, test overlap, fine-tune
    and scratch steps / epochs / images, and sentences on what deserves a caveat."""
    from components.transfer.study import BUDGET_METRICS, SETUP

    pairs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    refused = []
    for r in rows:
        regime = r["regime"]
        if regime == SETUP or (r["metric"] in BUDGET_METRICS and r["status"] == "ok"):
            pair = pairs.setdefault((r["model"], r["dataset"]), {})
            pair.setdefault(regime, {})[r["metric"]] = r["value"]
        if r["status"] != "ok" and r.get("status_reason", "").startswith("leakage:"):
            refused.append((r["model"], r["dataset"]))
    table = [
        [model, dataset]
        + _setup_cells(parts.get(SETUP, {}))
        + _budget_cells(parts.get("finetune", {}))
        + _budget_cells(parts.get("scratch", {}))
        for (model, dataset), parts in sorted(pairs.items())
    ]
    setups = [parts[SETUP] for parts in pairs.values() if SETUP in parts]
    runs = [parts[g] for parts in pairs.values() for g in ("finetune", "scratch") if g in parts]
    notes = []
    capped = sum(1 for run in runs if run.get("finetune_capped"))
    if capped:
        notes.append(
            f"{plural(capped, 'fine-tune or scratch result')} of {len(runs)} stopped at the step "
            "cap (max_steps) before their schedule ended: those targets are under-trained."
        )
    changed = sum(1 for v in setups if v.get("input_size_changed"))
    if changed:
        notes.append(
            f"{plural(changed, 'model-target pair')} fed another input size than the weights "
            "were made for (input_size); a trial's LEEP is refused there."
        )
    if refused:
        notes.append(
            f"{plural(len(set(refused)), 'model-target pair')} refused for leakage: more of "
            "the target's test images than max_overlap are the model's training images."
        )
    unchecked = sum(1 for v in setups if v.get("test_overlap_images") is None)
    if unchecked:
        notes.append(
            f"Test overlap not checked for {plural(unchecked, 'model-target pair')}: no source "
            "images known (a model list's source_hashes column gives them)."
        )
    return {"columns": BUDGET_COLUMNS, "rows": table, "notes": notes}


def _image(path: str | Path) -> dict[str, str]:
    """A PNG embedded in the page: its name and base64 bytes."""
    return {"name": Path(path).stem, "data": base64.b64encode(Path(path).read_bytes()).decode()}


def report_context(
    title: str,
    rows: list[dict],
    comparison: dict[str, Any],
    figures: list[str | Path],
    apr_link: str = "",
    curves: list[dict] | None = None,
    curves_figure: str | Path | None = None,
) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows, the sentences already written (``curves``: the
    learning curves' records and ``curves_figure`` their PNG, :mod:`components.transfer.curves`).
    """
    targets = []
    for dataset, parts in comparison["targets"].items():
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
                    source_sentence(dataset, source, key, result)
                    for source, regimes in parts["regimes_vs_source"].items()
                    for key, result in regimes.items()
                    if result["n_models"] > 0
                ],
            }
        )
    images = [_image(p) for p in figures]
    columns = ("model", "dataset", "regime", "metric", "value", "unit", "seconds", "status")
    return {
        "title": title,
        "target": "/".join(TARGET),
        "targets": targets,
        "intervals": intervals_sentence(comparison),
        "averaged": averaged(comparison)
        | {"image": next((i for i in images if i["name"] == AVERAGED_FIGURE), None)},
        "families": families(comparison),
        "protocol": protocol_sentence(rows),
        "budgets": budgets(rows),
        "images": [i for i in images if i["name"] != AVERAGED_FIGURE],
        "columns": columns + ("status_reason",),
        "rows": [[r.get(c) for c in columns] + [r.get("status_reason", "")] for r in rows],
        "apr_link": apr_link,
        "convergence": {
            "sentences": convergence_sentences(curves or []),
            "image": _image(curves_figure) if curves_figure else None,
        },
    }


def write_report(
    path: str | Path,
    title: str,
    rows: list[dict],
    comparison: dict[str, Any],
    figures: list[str | Path],
    apr_link: str = "",
    curves: list[dict] | None = None,
    curves_figure: str | Path | None = None,
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
        **report_context(title, rows, comparison, figures, apr_link, curves, curves_figure)
    )
    write_atomic(path, html)
    return html
