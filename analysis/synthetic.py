"""Synthetic results tables with a known APR, for tests, benchmarks and demos."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_results(
    n_models: int = 500,
    n_datasets: int = 10,
    n_seeds: int = 1,
    n_failed: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """A tidy table of AnyNetX-like models whose ranking agrees with dataset ``imagenet``
    to a different, known degree on each other dataset.

    Each model has a latent quality driven by its cumulative depth and width. Dataset ``i``
    mixes that quality with independent noise so that its correlation with the latent
    quality runs from 0.95 (``imagenet``) down to -0.5 (the last dataset).

    Args:
        n_models: Number of models.
        n_datasets: Number of datasets (the first is ``imagenet``, then ``ds01``...).
        n_seeds: Seeds per (model, dataset); > 1 adds a ``seed`` column.
        n_failed: Rows marked ``diverged`` (with an empty metric) to exercise exclusions.
        seed: Random seed.

    Returns:
        Columns ``model, dataset[, seed], top1_error, status, status_reason, d1..d4,
        w1..w4, b1..b4, g1..g4, flops, params``; ``top1_error`` in percent.
    """
    rng = np.random.default_rng(seed)
    depth = rng.integers(1, 17, size=(n_models, 4))
    width = 8 * rng.integers(2, 129, size=(n_models, 4))
    bottleneck = rng.choice([1, 2, 4], size=(n_models, 4))
    group = rng.choice([1, 2, 4, 8, 16, 32], size=(n_models, 4))
    quality = _standardise(np.log(depth.sum(1)) + np.log(width.sum(1))) + 0.5 * rng.normal(
        size=n_models
    )
    quality = _standardise(quality)
    names = ["imagenet", *(f"ds{i:02d}" for i in range(1, n_datasets))]
    agreement = np.linspace(0.95, -0.5, n_datasets)
    arch = {
        f"{p}{s + 1}": v[:, s]
        for p, v in zip("dwbg", (depth, width, bottleneck, group), strict=True)
        for s in range(4)
    }
    # The FLOP band of Tuggener et al. (360-400 MFLOPs); params loosely follow the last width.
    arch["flops"] = 360e6 + 40e6 * rng.random(n_models)
    arch["params"] = 2000.0 * width[:, 3]
    frames = []
    for name, rho, base in zip(names, agreement, np.linspace(20, 60, n_datasets), strict=True):
        latent = rho * quality + np.sqrt(1 - rho**2) * rng.normal(size=n_models)
        for s in range(n_seeds):
            noise = 0.3 * rng.normal(size=n_models)
            frame = pd.DataFrame({"model": [f"m{i:04d}" for i in range(n_models)], "dataset": name})
            if n_seeds > 1:
                frame["seed"] = s
            frame["top1_error"] = np.clip(base - 8.0 * latent + noise, 0.5, 99.5)
            frames.append(frame.assign(**arch))
    table = pd.concat(frames, ignore_index=True)
    table["status"] = "ok"
    table["status_reason"] = ""
    failed = rng.choice(len(table), size=n_failed, replace=False)
    table.loc[failed, ["status", "status_reason"]] = ["diverged", "loss became NaN"]
    table.loc[failed, "top1_error"] = np.nan
    return table


def _standardise(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()
