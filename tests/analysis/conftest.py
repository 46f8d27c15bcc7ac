"""Shared fixtures of the analysis tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TIMM_CSV = FIXTURES / "timm_top1.csv"


@pytest.fixture(scope="session")
def timm_csv() -> Path:
    """Path of the public timm fixture (comment header names its source)."""
    return TIMM_CSV


@pytest.fixture(scope="session")
def timm_run(tmp_path_factory) -> tuple[dict, Path]:
    """The whole analysis on the public timm results (40 models x 6 ImageNet test sets)."""
    from analysis import analyze

    out = tmp_path_factory.mktemp("timm")
    return analyze(TIMM_CSV, out, n_bootstrap=300), out


@pytest.fixture(scope="session")
def synthetic_table() -> pd.DataFrame:
    """80 AnyNetX-like models x 4 datasets x 3 seeds, with 5 diverged rows and one model
    missing from one dataset."""
    from analysis.synthetic import synthetic_results

    table = synthetic_results(n_models=80, n_datasets=4, n_seeds=3, n_failed=5, seed=1)
    return table[~((table["model"] == "m0003") & (table["dataset"] == "ds02"))]


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory, synthetic_table) -> tuple[dict, Path]:
    """The whole analysis on the synthetic table (architecture columns and seeds)."""
    from analysis import analyze

    out = tmp_path_factory.mktemp("synthetic")
    return analyze(synthetic_table, out, top_k=10, n_bootstrap=200, title="Synthetic"), out
