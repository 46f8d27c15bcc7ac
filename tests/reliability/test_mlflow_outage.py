"""MLflow outage: a private ``mlflow server`` is paused (SIGSTOP, the whole process group) for
30 s in the middle of a tiny study. Training goes on, the trials' logging is queued in the
artifact store and replayed once the server is back, and every trial ends up in MLflow exactly
once, none left RUNNING.

Figures: the test prints ``MLflow paused 30 s: ...``; reproduce with
``pytest tests/reliability/test_mlflow_outage.py -s``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import wait_for
from helpers import free_port, mlflow_server_command, wait_for_http

from components.common import tracking
from components.common.storage import open_store
from components.data.datasets import materialize
from components.sample.samplers import sample_specs

PAUSE_S = 30
WAIT_S = 6  # the trials' MLflow budget in this test (APRFLOW_MLFLOW_WAIT_S)


@contextlib.contextmanager
def private_mlflow_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """An ``mlflow server`` of this test alone, in its own process group (its workers are
    paused with it; the shared ``mlflow_server`` must not be)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = mlflow_server_command(folder, port)
    with open(folder / "mlflow-server.log", "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_http(f"{url}/health", process, timeout=180)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)  # a stopped process cannot terminate
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _tracking_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aprflow-tracking"]


@pytest.mark.slow
@pytest.mark.extended
def test_mlflow_paused_30s_mid_study_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from components.analyze.run import analyze_study
    from components.train.run import plan_study, train_trial

    monkeypatch.setenv("APRFLOW_TORCH_THREADS", "1")
    monkeypatch.setenv(tracking.WAIT_ENV, str(WAIT_S))
    monkeypatch.chdir(tmp_path)
    store_uri = str(tmp_path / "store")
    store = open_store(store_uri)
    dataset = materialize(store, "faces", resolution=8)
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 5, (150e6, 250e6), seed=3).specs]
    with private_mlflow_server(tmp_path) as (url, server):
        ids, study, parent = plan_study(
            specs, [dataset.to_dict()], "outage", "apr_tiny", {"epochs": 1}, [0], "torch",
            store_uri, url,
        )  # fmt: skip
        assert train_trial(ids[0], study, store_uri, url)["status"] == "ok"

        os.killpg(server.pid, signal.SIGSTOP)
        resume = threading.Timer(PAUSE_S, os.killpg, (server.pid, signal.SIGCONT))
        resume.start()
        paused_at = time.monotonic()
        try:
            for trial_id in ids[1:3]:  # trained while MLflow is away: queued, not failed
                tic = time.monotonic()
                assert train_trial(trial_id, study, store_uri, url)["status"] == "ok"
                assert time.monotonic() - tic < PAUSE_S, "the trial did not hang on MLflow"
                assert store.exists(tracking.queue_key(study, trial_id))
            queued_during_pause = time.monotonic() - paused_at < PAUSE_S
        finally:
            resume.join()
        # The next trial's logging replays the queue (ids[4] is never trained: its task "died").
        assert train_trial(ids[3], study, store_uri, url)["status"] == "ok"
        assert not store.list(f"studies/{study}/tracking-queue/")
        assert tracking.replay_queue(store, study, url, strict=True) == 0  # what analyze calls
        # Loggings cut off during the pause finish in their threads: harmless, they converge.
        wait_for(lambda: not _tracking_threads(), timeout=60, what="abandoned logging threads")

        runs = tracking.child_runs(url, parent)
        by_trial = sorted(r.data.tags[tracking.TRIAL_TAG] for r in runs)
        print(
            f"\nMLflow paused {PAUSE_S} s mid-study: {len(runs)} trials trained, 2 loggings "
            f"queued and replayed, {len(runs)} trial runs (one each), none RUNNING"
        )
        assert queued_during_pause, "both queued trials really ran during the pause"
        assert by_trial == sorted(ids[:4]), "every trained trial in MLflow exactly once"
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all("top1_error" in r.data.metrics for r in runs)
        # A re-run adds nothing.
        train_trial(ids[1], study, store_uri, url)
        assert len(tracking.child_runs(url, parent)) == len(ids) - 1
        # analyze gives the trial that never ran a failed run, and closes the study.
        analyze_study(ids, study, parent, None, store_uri, url, tmp_path / "analysis")
        runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in tracking.child_runs(url, parent)}
        assert sorted(runs) == sorted(ids)
        never = runs[ids[4]]
        assert never.info.status == "FAILED" and never.data.tags[tracking.STATUS_TAG] == "failed"
        assert MlflowClient(tracking_uri=url).get_run(parent).info.status == "FINISHED"
        assert {r.info.status for r in runs.values()} == {"FINISHED", "FAILED"}
