"""Best-effort trial logging: what MLflow does not take in time is queued in the artifact store
and replayed later, with the trial's real times."""

from __future__ import annotations

import contextlib
import time

from components.common.progress import report
from components.common.tracking.client import (
    TrackingError,
    outage_budget,
    wait_budget,
)
from components.common.tracking.trial import TrialLog, log_trial_run


def queue_key(study: str, trial_id: str) -> str:
    """Where a trial's logging waits while MLflow is away."""
    return f"studies/{study}/tracking-queue/{trial_id}.json"


def log_trial_or_queue(store, study: str, uri: str, log: TrialLog) -> str | None:
    """Logs a trial to MLflow (:func:`~components.common.tracking.trial.log_trial_run`),
    best-effort: never fails the trial.

    When MLflow does not take it within the wait budget (``APRFLOW_MLFLOW_WAIT_S``; for a server
    at most 10 s while the study already has queued loggings), the log is queued at
    :func:`queue_key` in the artifact store and a line says so; once a trial is logged, the
    study's queue is replayed (:func:`replay_queue`). Returns the run id, or None when queued.
    """
    key = queue_key(study, log.trial_id)
    # A queue left by an earlier trial means MLflow was away a moment ago: try it only briefly
    # then, so that a long outage does not cost every trial of a chunk the whole budget.
    outage = bool(store.list(f"studies/{study}/tracking-queue/"))
    try:
        run_id = log_trial_run(uri, log, wait_s=outage_budget(uri) if outage else wait_budget())
    except Exception as e:  # noqa: BLE001 - tracking must never fail a trial
        store.put_json(key, log.to_json() | {"queued_at": time.time(), "error": str(e)[:500]})
        report(
            "tracking",
            f"MLflow logging of trial {log.trial_id} queued at {store.key_uri(key)} ({e}); "
            "it is replayed when MLflow is back (next trial, or analyze)",
        )
        return None
    if store.exists(key):  # an older queued logging of this trial is superseded
        store.delete(key)
    with contextlib.suppress(Exception):  # best-effort: analyze replays what is left
        replay_queue(store, study, uri)
    return run_id


def replay_queue(store, study: str, uri: str, strict: bool = False) -> int:
    """Logs every queued trial of ``study`` to MLflow and removes it from the queue.

    Idempotent (runs are found by their tags), so an entry replayed twice, or by two processes,
    is still one run. Returns how many entries were logged.

    Args:
        strict: raise a TrackingError naming what is left when an entry cannot be logged
            (analyze), instead of stopping quietly (a trial's best-effort replay).
    """
    keys = sorted(store.list(f"studies/{study}/tracking-queue/"))
    done = 0
    for key in keys:
        try:
            log = TrialLog.from_json(store.get_json(key))
            log_trial_run(uri, log, adopt_task_run=False)
        except Exception as e:
            if strict:
                raise TrackingError(
                    f"{len(keys) - done} trial loggings are still queued under "
                    f"{store.key_uri(f'studies/{study}/tracking-queue/')}: {e}"
                ) from None
            return done
        store.delete(key)
        done += 1
    if done:
        report("tracking", f"replayed {done} queued trial loggings into MLflow")
    return done
