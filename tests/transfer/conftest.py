"""Shared by the transfer tests: one torch thread, and a trial trained for one epoch.

One thread because the test machines have two cores and run other work beside the tests:
a multi-threaded torch there made these tests three times slower (the KFP component test
does the same for its tasks with APRFLOW_TORCH_THREADS).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

THREADS_ENV = "APRFLOW_TORCH_THREADS"


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch and the code under test (through APRFLOW_TORCH_THREADS) use one thread."""
    import torch

    threads, saved = torch.get_num_threads(), os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if saved is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def trained_trial(tmp_path_factory) -> tuple[str, str]:
    """Returns ``(store_uri, trial_id)`` of a 1-epoch AnyNetX trial on faces at 12 px."""
    from components.common.storage import open_store
    from components.data.datasets import prepare_all
    from components.sample.samplers import sample_specs
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial, run_trial

    uri = str(tmp_path_factory.mktemp("transfer-store"))
    (faces,) = prepare_all(["faces"], 12, 0, uri)
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=0).specs[0].to_dict()
    recipe = resolve_recipe("apr_tiny", {"epochs": 1})
    trial = Trial(spec=spec, dataset=faces, recipe=recipe, seed=0)
    with single_thread():
        result = run_trial(open_store(uri), trial, progress=lambda message: None)
    assert result["status"] == "ok", result["reason"]
    return uri, result["trial_id"]
