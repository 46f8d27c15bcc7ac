"""The seed study's analysis and report: K seeds of one recipe and one architecture, every
checkpoint evaluated on two or more test sets.

Wightman, Touvron, Jégou 2021, "ResNet strikes back: An improved training procedure in timm",
arXiv 2110.00476, §5: 100 seeds of ResNet-50 under procedure A2, the spread of top-1 across
seeds on ImageNet-val and on ImageNet-V2, and how little the two move together: the seed
that looks best on one test set is not the best on the other. A checkpoint is one trial (one
seed); its test sets are its dataset's own test split (``test``), its validation split
(``val``, when the dataset has one) and each extra test set of the trial (``test_sets``).

Per trained dataset and test set: the std of top-1 error across seeds (ddof 1) with a 95 %
interval from the chi-square distribution of ``(K - 1) s² / σ²`` (seed-to-seed errors taken
as normal), beside the binomial standard deviation a test set of that size alone gives at the
mean error (``sqrt(p (1 - p) / n)``): how much of the spread is the finite test set's.
Per pair of test sets: the Pearson r across seeds between the errors of the same checkpoints,
with the 95 % percentile bootstrap interval over checkpoints of
:func:`analysis.stats.seed_study` (``pooled_ci``). The report opens with the question and the
answer in one sentence with its interval and n; ``summary.json`` holds every number.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import stats
from analysis.compute import evaluations_of, metric_name
from analysis.files import replaced_folder, write_atomic
from analysis.readings import fmt, interval, relation
from analysis.report import render_in, to_json
from analysis.table import OWN_TEST_SET, load_results
from analysis.words import plural
from components.analyze.run import ModelLogging, gather_study, publish_study, save_results
from components.common import tracking
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.train.plan import trial_key

TEMPLATE_DIR = Path(__file__).parent / "templates"
# Written by write_report; results.csv, written before, stays (analysis.files.replaced_folder).
OUTPUTS = ("figures", "report.html", "report.md", "summary.json")
FIGURE = "seeds"
PRIMARY_METRIC = "top1_error"
QUESTION = (
    "Does a seed's top-1 error on one test set predict its error on another test set of the "
    "same checkpoints?"
)
PAPER = (
    "Wightman, Touvron, Jégou 2021, “ResNet strikes back: An improved training procedure in "
    "timm”, arXiv 2110.00476, §5 (100 seeds of ResNet-50 under A2: the spread of top-1 on "
    "ImageNet-val and ImageNet-V2 and their weak correlation across seeds)."
)
VALIDATION = "val"


def std_interval(std: float, n_seeds: int, level: float = stats.CI_LEVEL) -> tuple[float, float]:
    """The ``level`` interval of a standard deviation ``std`` of ``n_seeds`` normal draws:
    ``sqrt((K - 1) s² / q)`` at the chi-square quantiles ``q`` with ``K - 1`` degrees of
    freedom (exact for normal draws; Wightman et al.'s seed errors look normal)."""
    df = n_seeds - 1
    tail = (1.0 - level) / 2.0
    high_q, low_q = scipy_stats.chi2.ppf([1.0 - tail, tail], df)
    return std * math.sqrt(df / high_q), std * math.sqrt(df / low_q)


def binomial_sd(error_percent: float, n_images: int) -> float:
    """The standard deviation, in points, of an error measured on ``n_images`` test images
    whose true error is ``error_percent`` (one binomial draw)."""
    p = error_percent / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n_images)


def test_set_sizes(store: ArtifactStore, table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images of every test set of each trained dataset, from its first trial's plan:
    ``{dataset: {"test": n, "val": n, <test set>: n}}``."""
    sizes = {}
    for name, trial_id in table.drop_duplicates("dataset")[["dataset", "trial_id"]].values:
        planned = store.get_json(trial_key(trial_id))
        own = planned["dataset"]
        found = {OWN_TEST_SET: int(own["n_test"])}
        found |= {VALIDATION: int(own["n_val"])} if own.get("n_val") else {}
        found |= {extra["name"]: int(extra["n_test"]) for extra in planned.get("test_sets", [])}
        sizes[str(name)] = found
    return sizes


def summarize(
    table: pd.DataFrame,
    sizes: dict[str, dict[str, int]],
    bootstrap: stats.Bootstrap,
    study: str = "",
) -> dict[str, Any]:
    """Every number of the report (``summary.json``) from a gathered results table.

    Raises:
        ValueError: when no trial finished ``ok``, or no checkpoint has 2 seeds.
    """
    if not (table["status"] == "ok").any():
        reasons = "; ".join(sorted(set(table["status_reason"].astype(str))))
        raise ValueError(f"no trial of seed study {study} finished ok: {reasons}")
    results = load_results(table, scale="percent", name=f"seed study {study}")
    frame = results.frame
    evaluations = evaluations_of(sorted(set(frame["metric"])), PRIMARY_METRIC)
    frame = frame[frame["metric"].isin(list(evaluations.values()))]
    found = stats.seed_study(frame, evaluations, bootstrap)
    spread = []
    for record in found["per_model"]:
        n_images = sizes.get(record["dataset"], {}).get(record["test_set"])
        low, high = std_interval(record["std"], record["n_seeds"])
        spread.append(
            {
                "model": str(record["model"]),
                "dataset": str(record["dataset"]),
                "test_set": record["test_set"],
                "n_images": n_images,
                "n_seeds": record["n_seeds"],
                "mean": record["mean"],
                "std": record["std"],
                "std_ci_low": low,
                "std_ci_high": high,
                "min": record["min"],
                "max": record["max"],
                "binomial_sd": binomial_sd(record["mean"], n_images) if n_images else None,
            }
        )
    if not spread:
        raise ValueError(
            f"seed study {study}: no checkpoint has 2 seeds that finished ok, so there is no "
            "spread across seeds"
        )
    order = list(evaluations)  # the primary test set first, as the analysis orders them
    spread.sort(key=lambda r: (r["dataset"], r["model"], order.index(r["test_set"])))
    pairs = []
    for pair in found["test_set_pairs"]:
        for model, per in pair["per_model"].items():
            pooled = pair.get("pooled_ci", {})
            pairs.append(
                {
                    "model": model,
                    "dataset": pair["dataset"],
                    "test_sets": pair["test_sets"],
                    "n_seeds": per["n_seeds"],
                    "value": per["pearson_r"],
                    "p_value": per["p_value"],
                    # One architecture: the pooled within-model r is this model's r, and its
                    # interval resamples this model's checkpoints.
                    **(pooled if pair["n_models"] == 1 else {}),
                    **({"reason": per["reason"]} if "reason" in per else {}),
                }
            )
    planned = table.drop_duplicates("trial_id")
    failed = planned[planned["status"] != "ok"]
    summary = {
        "study_id": study,
        "question": QUESTION,
        "paper": PAPER,
        "models": sorted(str(m) for m in planned["model"].unique()),
        "recipes": sorted(str(r) for r in planned["recipe"].unique()),
        "datasets": sorted(str(d) for d in planned["dataset"].unique()),
        "seeds": sorted(int(s) for s in planned["seed"].unique()),
        "trials": {
            "planned": len(planned),
            "ok": int((planned["status"] == "ok").sum()),
            "failed": [
                {
                    "trial_id": row.trial_id,
                    "seed": int(row.seed),
                    "status": row.status,
                    "reason": str(row.status_reason),
                }
                for row in failed.itertuples()
            ],
        },
        "evaluations": evaluations,
        "test_set_sizes": sizes,
        "spread": spread,
        "pairs": pairs,
        "seed_study": found,
        "bootstrap": {
            "max_resamples": bootstrap.n_resamples,
            "seed": bootstrap.seed,
            "tolerance": bootstrap.tolerance,
            "ci_level": stats.CI_LEVEL,
        },
    }
    summary["headline"] = headline(summary)
    summary["metrics"] = flat_metrics(summary)
    return summary


def _std_text(record: dict[str, Any]) -> str:
    return (
        f"{fmt(record['std'])} [{fmt(record['std_ci_low'])}, {fmt(record['std_ci_high'])}] "
        f"points on {record['test_set']}"
    )


def headline(summary: dict[str, Any]) -> str:
    """The answer in one sentence: the first pair's r with its interval and n, and the std
    across seeds on each of its two test sets with theirs."""
    spread = summary["spread"]
    defined = [p for p in summary["pairs"] if p["value"] is not None]
    if not defined:
        first = spread[0]
        why = (
            summary["pairs"][0]["reason"]
            if summary["pairs"]
            else ("no checkpoint was evaluated on a second test set (set the dataset's test_sets)")
        )
        return (
            f"Not measured: {why}; the std across {first['n_seeds']} seeds of "
            f"{first['model']} trained on {first['dataset']} is {_std_text(first)}."
        )
    pair = defined[0]
    a, b = pair["test_sets"]
    sign, word = relation(pair)
    if sign > 0:
        answer = f"Yes ({word} relation)" if word else "Yes, weakly"
    elif sign < 0:
        answer = "No: they move in opposite directions"
    else:
        answer = f"Not resolved at n = {pair['n_seeds']} (the interval includes 0)"
    own = {
        r["test_set"]: r
        for r in spread
        if r["model"] == pair["model"] and r["dataset"] == pair["dataset"]
    }
    stds = [_std_text(own[a]), _std_text(own[b])]
    recipes = ", ".join(summary["recipes"])
    return (
        f"{answer}: across n = {pair['n_seeds']} seeds of {pair['model']} trained on "
        f"{pair['dataset']} ({recipes}), a seed's top-1 error on {a} and on {b} correlate with "
        f"r = {fmt(pair['value'])}{interval(pair)}; the std across seeds is "
        f"{' and '.join(stds)}."
    )


def noise_sentences(summary: dict[str, Any]) -> list[str]:
    """Per test set, the spread across seeds against the binomial noise of its size."""
    lines = []
    for record in summary["spread"]:
        if record["binomial_sd"] is None:
            continue
        ratio = record["std"] / record["binomial_sd"] if record["binomial_sd"] else None
        lines.append(
            f"{record['test_set']} ({record['n_images']:,} images, mean error "
            f"{fmt(record['mean'])} %): a test set of that size alone varies by "
            f"{fmt(record['binomial_sd'])} points (binomial sd at the mean error); the seeds "
            f"vary by {fmt(record['std'])}"
            + (f", {fmt(ratio, 1)} times that." if ratio is not None else ".")
        )
    return lines


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of the study run: ``seed_std[_ci_low|_ci_high]/<dataset>/<test set>``,
    ``seed_pair_r[_ci_low|_ci_high]/<dataset>/<a> vs <b>`` (defined values only)."""
    metrics = {"n_seeds_ok": float(summary["trials"]["ok"])}
    for r in summary["spread"]:
        for key in ("std", "std_ci_low", "std_ci_high"):
            metrics[metric_name(f"seed_{key}", r["dataset"], r["test_set"])] = r[key]
    for p in summary["pairs"]:
        where = (p["dataset"], " vs ".join(p["test_sets"]))
        for key, name in (("value", "seed_pair_r"), ("ci_low", "seed_pair_r_ci_low")):
            if p.get(key) is not None:
                metrics[metric_name(name, *where)] = p[key]
        if p.get("ci_high") is not None:
            metrics[metric_name("seed_pair_r_ci_high", *where)] = p["ci_high"]
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def figure(summary: dict[str, Any], table: pd.DataFrame) -> bytes:
    """The first trained dataset's checkpoints. Left: every seed's error on each test set
    (dots), the mean ± the std across seeds (black) and ± the binomial sd of the test set's
    size (grey band). Right, when a pair of test sets has an r: one point per seed on the two,
    the paper's question drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = summary["spread"][0]
    model, dataset = first["model"], first["dataset"]
    rows = table[(table["status"] == "ok") & (table["model"] == model)]
    rows = rows[rows["dataset"] == dataset]
    records = [r for r in summary["spread"] if r["model"] == model and r["dataset"] == dataset]
    pair = next(
        (
            p
            for p in summary["pairs"]
            if p["model"] == model and p["dataset"] == dataset and p["value"] is not None
        ),
        None,
    )
    fig = Figure(figsize=(9.5 if pair else 5.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if pair else 1, squeeze=False).ravel()
    ax = axes[0]
    metric = summary["evaluations"]
    for x, record in enumerate(records):
        values = rows[metric[record["test_set"]]].dropna().to_numpy(dtype=float)
        if record["binomial_sd"]:
            low, high = (record["mean"] + sign * record["binomial_sd"] for sign in (-1, 1))
            ax.fill_between([x - 0.3, x + 0.3], low, high, color="#ddd")
        ax.errorbar(x + 0.22, record["mean"], yerr=record["std"], fmt="o", color="black")
        ax.scatter(x + np.linspace(-0.12, 0.12, len(values)), values, s=14, zorder=3)
    ax.set_xticks(range(len(records)), [r["test_set"] for r in records], fontsize=8)
    ax.set_ylabel("top-1 error (%)", fontsize=8)
    ax.set_title(f"{model} on {dataset}: {plural(first['n_seeds'], 'seed')}", fontsize=9)
    ax.tick_params(labelsize=7)
    if pair:
        a, b = pair["test_sets"]
        both = rows[["seed", metric[a], metric[b]]].dropna()
        axes[1].scatter(both[metric[a]], both[metric[b]], s=18)
        for seed, x, y in both.itertuples(index=False):
            axes[1].annotate(
                str(seed), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
        axes[1].set_xlabel(f"top-1 error on {a} (%)", fontsize=8)
        axes[1].set_ylabel(f"top-1 error on {b} (%)", fontsize=8)
        axes[1].set_title(f"r = {fmt(pair['value'])}{interval(pair)}", fontsize=9)
        axes[1].tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


SPREAD_COLUMNS = (
    "trained on",
    "model",
    "test set",
    "images",
    "seeds",
    "mean error %",
    "std [95% CI]",
    "binomial sd",
    "min",
    "max",
)
PAIR_COLUMNS = ("trained on", "model", "test sets", "seeds", "Pearson r [95% CI]", "p-value")


def report_context(summary: dict[str, Any], png: bytes) -> dict[str, Any]:
    """Everything the templates show, the sentences already written."""
    spread_rows = [
        [
            r["dataset"],
            r["model"],
            r["test_set"],
            "" if r["n_images"] is None else f"{r['n_images']:,}",
            str(r["n_seeds"]),
            fmt(r["mean"]),
            f"{fmt(r['std'])} [{fmt(r['std_ci_low'])}, {fmt(r['std_ci_high'])}]",
            fmt(r["binomial_sd"]),
            fmt(r["min"]),
            fmt(r["max"]),
        ]
        for r in summary["spread"]
    ]
    pair_rows = [
        [
            p["dataset"],
            p["model"],
            " vs ".join(p["test_sets"]),
            str(p["n_seeds"]),
            f"{fmt(p['value'])}{interval(p)}" if p["value"] is not None else p["reason"],
            fmt(p["p_value"], 3),
        ]
        for p in summary["pairs"]
    ]
    trials = summary["trials"]
    failed = [
        f"seed {f['seed']} (trial {f['trial_id']}) ended {f['status']}: {f['reason']}"
        for f in trials["failed"]
    ]
    return {
        "title": summary["question"],
        "study_id": summary["study_id"],
        "headline": summary["headline"],
        "setup": (
            f"{plural(trials['planned'], 'trial')} ({trials['ok']} ok): "
            f"{', '.join(summary['models'])} trained with {', '.join(summary['recipes'])} on "
            f"{', '.join(summary['datasets'])}, seeds {summary['seeds'][0]}-"
            f"{summary['seeds'][-1]}; every checkpoint evaluated on "
            f"{', '.join(summary['evaluations'])}."
        ),
        "noise": noise_sentences(summary),
        "spread_columns": SPREAD_COLUMNS,
        "spread_rows": spread_rows,
        "pair_columns": PAIR_COLUMNS,
        "pair_rows": pair_rows,
        "failed": failed,
        "figure": FIGURE,
        "figure_data": base64.b64encode(png).decode("ascii"),
        "paper": summary["paper"],
    }


def write_report(out_dir: Path, summary: dict[str, Any], table: pd.DataFrame) -> None:
    """Writes ``report.html`` (self-contained), ``report.md``, ``summary.json`` and the figure
    into ``out_dir``, replacing the previous ones at once."""
    png = figure(summary, table)
    context = report_context(summary, png)
    with replaced_folder(out_dir, OUTPUTS) as out:
        (out / "figures").mkdir()
        write_atomic(out / "figures" / f"{FIGURE}.png", png)
        write_atomic(out / "report.html", render_in(TEMPLATE_DIR, "seed_report.html.j2", context))
        write_atomic(out / "report.md", render_in(TEMPLATE_DIR, "seed_report.md.j2", context))
        write_atomic(out / "summary.json", to_json(summary))


def analyze_seed_study(
    trial_ids: list[str],
    study: str,
    parent_run_id: str,
    store_uri: str | None,
    tracking_uri: str | None,
    out_dir: str | Path,
    best_models: int = 1,
    n_bootstrap: int = stats.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Gathers the seed study's trials, logs the ``best_models`` best as MLflow models, writes
    the report to ``out_dir`` and ``studies/<study>/``, closes the MLflow parent run with the
    std and r metrics, and returns the summary.

    Raises:
        ValueError: no trial finished ok, or ``n_bootstrap`` / ``best_models`` out of range.
    """
    bootstrap = stats.Bootstrap(n_resamples=n_bootstrap)
    store = open_store(store_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    out_dir = Path(out_dir)
    with ModelLogging(uri, store_uri, study, best_models) as models:
        table, started = gather_study(store, uri, study, parent_run_id, trial_ids)
        models.submit(table)
        summary = summarize(table, test_set_sizes(store, table), bootstrap, study)
        write_report(out_dir, summary, table)
        save_results(table, models.urls(), out_dir)
    report("analyze", summary["headline"], started)
    params = {"analysis.best_models": best_models, "analysis.n_bootstrap": n_bootstrap}
    publish_study(store, uri, study, parent_run_id, out_dir, summary["metrics"], params)
    report("analyze", f"report at {store.key_uri(f'studies/{study}/report.html')}", started)
    return summary
