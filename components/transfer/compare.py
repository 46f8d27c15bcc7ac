"""Does the cheap ranking predict fine-tuning? Statistics of a transfer study's long table.

Per target dataset:

* **cheap score vs fine-tuned accuracy**: for each cheap score (kNN top-1, kNN top-5
  fraction, LogME, LEEP, linear probe) over the models that have both, Kendall tau-b with a
  percentile bootstrap interval (``analysis.stats``' resampling) and weighted tau
  (``scipy.stats.weightedtau``, hyperbolic weights: do the top models agree) with its own
  bootstrap interval; LogME and LEEP are scores (higher is better) that the APR analysis
  skips, so they are compared here;
* **cost**: the median seconds of each score over models, and the median seconds of the
  fine-tune it predicts, with their ratio;
* **regime vs source accuracy** (Kornblith et al.): for each accuracy regime, the Pearson r of
  log-odds and the Spearman rho against the models' source top-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from analysis.words import plural

#: (regime, metric) of each cheap score, in report order.
CHEAP_SCORES = (
    ("knn", "knn_top1"),
    ("knn", "knn_top5_fraction"),
    ("logme", "logme"),
    ("leep", "leep"),
    ("linear", "linear_top1"),
)
ACCURACY_SLICES = (
    ("knn", "knn_top1"),
    ("linear", "linear_top1"),
    ("finetune", "top1"),
    ("scratch", "top1"),
)
TARGET = ("finetune", "top1")
MIN_MODELS = 3


def _values(rows: list[dict], regime: str, metric: str, dataset: str | None) -> dict[str, float]:
    return {
        r["model"]: float(r["value"])
        for r in rows
        if r["regime"] == regime
        and r["metric"] == metric
        and (dataset is None or r["dataset"] == dataset)
        and r["status"] == "ok"
        and r["value"] not in (None, "")
    }


def _seconds(rows: list[dict], regime: str, metric: str, dataset: str) -> list[float]:
    return [
        float(r["seconds"])
        for r in rows
        if (r["regime"], r["metric"], r["dataset"], r["status"]) == (regime, metric, dataset, "ok")
    ]


def _interval(samples: np.ndarray) -> dict[str, Any]:
    from analysis.stats import percentile_ci

    return percentile_ci(samples)


def rank_agreement(
    score: np.ndarray, target: np.ndarray, n_bootstrap: int, seed: int, names: tuple[str, str]
) -> dict[str, Any]:
    """Kendall tau-b and weighted tau of ``score`` vs ``target`` with bootstrap intervals."""
    from analysis.stats import Bootstrap, bootstrap_kendall

    n = len(score)
    if n < MIN_MODELS or np.ptp(score) == 0 or np.ptp(target) == 0:
        both = plural(n, "model")
        reason = f"{both} with both, or a constant ranking: need {MIN_MODELS} that differ"
        return {"n_models": n, "kendall": None, "weighted_tau": None, "reason": reason}
    tau = float(stats.kendalltau(score, target).statistic)
    wtau = float(stats.weightedtau(score, target).statistic)
    out: dict[str, Any] = {
        "n_models": n,
        "kendall": {"value": tau},
        "weighted_tau": {"value": wtau},
    }
    if n_bootstrap > 0:
        boot = Bootstrap(n_bootstrap, seed, tolerance=0.0)
        kendall = boot.samples(
            {"kendall": lambda counts: bootstrap_kendall(score, target, counts)}, n, *names
        )["kendall"]
        rng = boot.generator(*names, "weighted")
        weighted = []
        for _ in range(n_bootstrap):
            idx = rng.integers(0, n, n)
            if np.ptp(score[idx]) and np.ptp(target[idx]):
                weighted.append(stats.weightedtau(score[idx], target[idx]).statistic)
        out["kendall"] |= _interval(kendall)
        out["weighted_tau"] |= _interval(np.asarray(weighted, dtype=float))
    return out


def versus_source(
    accuracy: np.ndarray, source: np.ndarray, n_bootstrap: int, seed: int, names: tuple[str, str]
) -> dict[str, Any]:
    """Pearson r of log-odds and Spearman rho of a regime's accuracy vs source accuracy."""
    from analysis.stats import Bootstrap, bootstrap_pearson

    n = len(accuracy)
    if n < MIN_MODELS or np.ptp(accuracy) == 0 or np.ptp(source) == 0:
        return {"n_models": n, "pearson_logit": None, "spearman": None, "reason": "too few models"}
    clip = lambda a: np.clip(a, 1e-4, 1 - 1e-4)  # noqa: E731 - 0 and 1 stay finite
    la, ls = (np.log(clip(a) / (1 - clip(a))) for a in (accuracy, source))
    out: dict[str, Any] = {
        "n_models": n,
        "pearson_logit": {"value": float(stats.pearsonr(la, ls).statistic)},
        "spearman": {"value": float(stats.spearmanr(accuracy, source).statistic)},
    }
    if n_bootstrap > 0:
        samples = Bootstrap(n_bootstrap, seed, tolerance=0.0).samples(
            {"r": lambda counts: bootstrap_pearson(la, ls, counts)}, n, *names
        )["r"]
        out["pearson_logit"] |= _interval(samples)
    return out


def compare(rows: list[dict], n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All the study's comparisons, per target dataset (see the module docstring).

    Args:
        rows: the long results table's rows (``components.transfer.study`` columns).
        n_bootstrap: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed.
    """
    source = _values(rows, "source", "top1", None)
    datasets = sorted({r["dataset"] for r in rows if r["regime"] not in ("source",)})
    out: dict[str, Any] = {}
    for dataset in datasets:
        target = _values(rows, *TARGET, dataset)
        finetune_seconds = _seconds(rows, *TARGET, dataset)
        scores = {}
        for regime, metric in CHEAP_SCORES:
            values = _values(rows, regime, metric, dataset)
            shared = sorted(set(values) & set(target))
            result = rank_agreement(
                np.array([values[m] for m in shared]),
                np.array([target[m] for m in shared]),
                n_bootstrap,
                seed,
                (f"{regime}/{metric}", dataset),
            )
            seconds = _seconds(rows, regime, metric, dataset)
            cost = float(np.median(seconds)) if seconds else None
            ft_cost = float(np.median(finetune_seconds)) if finetune_seconds else None
            result["median_seconds"] = cost
            result["finetune_median_seconds"] = ft_cost
            result["cost_ratio"] = cost / ft_cost if cost is not None and ft_cost else None
            scores[f"{regime}/{metric}"] = result
        regimes = {}
        for regime, metric in ACCURACY_SLICES:
            values = _values(rows, regime, metric, dataset)
            shared = sorted(set(values) & set(source))
            regimes[f"{regime}/{metric}"] = versus_source(
                np.array([values[m] for m in shared]),
                np.array([source[m] for m in shared]),
                n_bootstrap,
                seed,
                (f"{regime}/{metric}", dataset, "source"),
            )
        out[dataset] = {"scores_vs_finetune": scores, "regimes_vs_source": regimes}
    return out


def scatter_figures(rows: list[dict], out_dir) -> list[str]:
    """One PNG per target: each cheap score (x) against fine-tuned accuracy (y)."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    datasets = sorted({r["dataset"] for r in rows if r["regime"] == TARGET[0]})
    for dataset in datasets:
        target = _values(rows, *TARGET, dataset)
        figure = Figure(figsize=(3.2 * len(CHEAP_SCORES), 3.0), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, len(CHEAP_SCORES), squeeze=False)[0]
        for ax, (regime, metric) in zip(axes, CHEAP_SCORES, strict=True):
            values = _values(rows, regime, metric, dataset)
            shared = sorted(set(values) & set(target))
            ax.scatter([values[m] for m in shared], [target[m] for m in shared], s=14)
            ax.set_xlabel(metric)
            ax.set_ylabel("fine-tuned top-1")
            ax.set_title(f"{dataset}: {regime}", fontsize=9)
        path = out_dir / f"scores_vs_finetune_{dataset}.png"
        figure.savefig(path, dpi=90)
        written.append(str(path))
    return written
