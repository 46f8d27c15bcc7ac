"""Fixtures of the fault-injection tests: a tiny trial, and helpers to run aprflow as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.storage import open_store
from components.data.datasets import materialize
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe
from components.train.trial import Trial

ROOT = Path(__file__).resolve().parents[2]
APRFLOW = [sys.executable, "-m", "pipelines"]


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))


def tiny_trial(store, epochs: int = 2) -> Trial:
    """A few-second trial: one small architecture on 8-px faces."""
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    dataset = materialize(store, "faces", resolution=8)
    recipe = resolve_recipe("apr_tiny", {"epochs": epochs})
    return Trial(spec=spec, dataset=dataset, recipe=recipe, seed=0)


def quiet(_: str) -> None:
    """A progress callback that drops lines."""


def aprflow_env(**extra: str) -> dict[str, str]:
    """The environment of an aprflow subprocess: this one's, one torch thread, plus ``extra``."""
    return os.environ | {"APRFLOW_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"} | extra


def start_aprflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Starts ``aprflow ARGS`` in its own process group, stdout and stderr into ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*APRFLOW, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
