"""Population summaries of sampled specs: summary.json, summary.md and histograms.png.

matplotlib is imported only when the plot is drawn, so the module stays cheap to import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from components.common.files import atomic_write_text
from components.sample.samplers import SampleResult
from components.sample.space import AnyNetSpec, complexity

# metric -> (plot title, scale applied for display)
_METRICS = {
    "flops": ("FLOPs (M)", 1e-6),
    "params": ("params (M)", 1e-6),
    "cumulative_depth": ("cumulative depth", 1),
    "cumulative_width": ("cumulative width", 1),
    "bottleneck_ratio": ("bottleneck ratio b (per stage)", 1),
    "group_width": ("group width g (per stage)", 1),
}


def population_metrics(specs: list[AnyNetSpec]) -> dict[str, np.ndarray]:
    """Per-spec complexity (224 px, own stem) and size, and per-stage b and g values.

    Returns:
        Dict keyed like the summary's metrics; b and g hold one value per stage and spec.
    """
    cxs = [complexity(spec, resolution=224, small_input=False) for spec in specs]
    return {
        "flops": np.array([cx.flops for cx in cxs]),
        "params": np.array([cx.params for cx in cxs]),
        "cumulative_depth": np.array([spec.cumulative_depth for spec in specs]),
        "cumulative_width": np.array([spec.cumulative_width for spec in specs]),
        "bottleneck_ratio": np.array([b for spec in specs for b in spec.bottleneck_ratios]),
        "group_width": np.array([g for spec in specs for g in spec.group_widths]),
    }


def summarize(result: SampleResult, metrics: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """JSON-ready summary: sampling arguments, statistics and min/median/mean/max per metric.

    Args:
        result: The sampled population.
        metrics: Its :func:`population_metrics`, if already computed.
    """
    metrics = population_metrics(result.specs) if metrics is None else metrics
    return {
        "space": result.space,
        "n": len(result.specs),
        "flops_range": list(result.flops_range),
        "seed": result.seed,
        "stats": result.stats.to_dict(),
        "population": {
            name: {
                "min": float(values.min()),
                "median": float(np.median(values)),
                "mean": float(values.mean()),
                "max": float(values.max()),
            }
            for name, values in metrics.items()
        },
    }


def _markdown(summary: dict[str, Any]) -> str:
    low, high = summary["flops_range"]
    lines = [
        f"# {summary['space']}: {summary['n']} specs, FLOPs in [{low:.4g}, {high:.4g}], "
        f"seed {summary['seed']}",
        "",
        "| metric | min | median | mean | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in summary["population"].items():
        title, scale = _METRICS[name]
        values = " | ".join(f"{row[k] * scale:.4g}" for k in ("min", "median", "mean", "max"))
        lines.append(f"| {title} | {values} |")
    stats = summary["stats"]
    lines += [
        "",
        f"tried {stats['tried']}, accepted {stats['accepted']} "
        f"(rate {stats['acceptance_rate']:.4f}), rejected: {stats['rejected_by_flops']} by "
        f"FLOPs, {stats['rejected_by_constraints']} by constraints, "
        f"{stats['rejected_duplicate']} duplicates; {stats['seconds']:.2f} s",
        "",
    ]
    return "\n".join(lines)


def _plot(metrics: dict[str, np.ndarray], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: pipeline pods have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (name, values) in zip(axes.flat, metrics.items(), strict=True):
        label, scale = _METRICS[name]
        if name in ("bottleneck_ratio", "group_width"):
            # Few discrete values: one bar per value reads better than bins.
            keys, counts = np.unique(values, return_counts=True)
            ax.bar([f"{k:g}" for k in keys], counts)
        else:
            ax.hist(values * scale, bins=30)
        ax.set_title(label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(directory: str | os.PathLike, result: SampleResult) -> list[Path]:
    """Writes summary.json, summary.md and histograms.png into ``directory`` (created).

    Returns:
        The written paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metrics = population_metrics(result.specs)
    summary = summarize(result, metrics)
    paths = [directory / "summary.json", directory / "summary.md", directory / "histograms.png"]
    atomic_write_text(paths[0], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths[1], _markdown(summary))
    title = f"{result.space}: {len(result.specs)} specs"
    _plot(metrics, title, paths[2])
    return paths
