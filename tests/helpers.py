"""Helpers that tests import (``from helpers import ...``); fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def kfp_local_session(store_uri: str, root: Path) -> Iterator[None]:
    """kfp.local with SubprocessRunner in this environment; tasks see the store at
    ``store_uri``, an MLflow SQLite file under ``root`` and one torch thread each."""
    from kfp import local

    saved = dict(os.environ)
    os.environ["APRFLOW_STORE_URI"] = store_uri
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["APRFLOW_TORCH_THREADS"] = "1"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
