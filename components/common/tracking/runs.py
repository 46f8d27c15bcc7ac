"""Runs found again by their tags, and what a run lacks logged in MLflow's batch sizes.

Every call is idempotent: runs are found again by their ``aprflow.*`` tags, params are
immutable in MLflow so only the missing ones are logged, and two tasks that create the same
run at once converge on the oldest one (the other is deleted).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from components.common.tracking.client import (
    TrackingError,
    first_cause,
    is_sqlite,
    is_transient,
    open_client,
    sqlite_path,
    with_retries,
)
from components.common.uris import redact_uri

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STUDY_TAG = "aprflow.study_id"
TRIAL_TAG = "aprflow.trial_id"
STATUS_TAG = "aprflow.status"
REASON_TAG = "aprflow.reason"
KFP_RUN_TAG = "kfp.run_id"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
OWNER_TAG = "aprflow.run_owner"
PLUGIN_OWNER = "kfp-plugin"
# Set by KFP's MLflow plugin in each task: the task's nested run under the pipeline run's run.
PLUGIN_RUN_ENV = "MLFLOW_RUN_ID"
FINISHED_STATES = ("FINISHED", "FAILED", "KILLED")
# MLflow's limits: param values up to 6000 characters, keys up to 250, log_batch sizes.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
MAX_BATCH_PARAMS = 100
MAX_BATCH_ENTRIES = 1000
_INVALID_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")


def safe_key(name: str) -> str:
    """A valid MLflow param/metric key: characters MLflow rejects become ``_``, no ``..``."""
    key = re.sub(r"\.{2,}", ".", _INVALID_KEY.sub("_", name)).lstrip("/")
    return key[:MAX_KEY] or "_"


def now_ms() -> int:
    return int(time.time() * 1000)


def as_ms(seconds: float | None) -> int | None:
    """Unix seconds as MLflow's milliseconds (None stays None)."""
    return None if seconds is None else int(seconds * 1000)


def local_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/<name>-<hash>``
    beside the database file, so that one folder holds a local run's whole MLflow store (and
    removing it leaves nothing behind). MLflow would choose ``./mlruns/<experiment id>`` in
    whichever folder the creating process runs (mlflow/mlflow v3.17.2:
    mlflow/tracking/_tracking_service/utils.py, ``_get_sqlalchemy_store``, line 194,
    ``DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH``). None for a tracking server, whose
    ``--default-artifact-root`` decides.
    """
    if not is_sqlite(tracking_uri):
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-.")[:64] or "experiment"
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]  # names that slug alike
    folder = sqlite_path(tracking_uri).resolve().parent / "mlruns" / f"{slug}-{digest}"
    return folder.as_uri()


def experiment_id(client, name: str) -> str:
    """The experiment's id (created if needed, its artifacts where
    :func:`local_artifact_location` says), tagged as model development.

    Raises:
        TrackingError: MLflow refused to create the experiment for another reason than a
            concurrent task creating it first (a full disk, a read-only database), naming it.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=local_artifact_location(client.tracking_uri, name),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except Exception as e:
            if is_transient(e):
                raise  # retried by with_retries
            # A concurrent task created it first: MLflow answers RESOURCE_ALREADY_EXISTS
            # (mlflow/mlflow v3.17.2: mlflow/store/tracking/sqlalchemy_store.py, line 645 in
            # SqlAlchemyStore.create_experiment; the REST server sends the same error code).
            if getattr(e, "error_code", None) == "RESOURCE_ALREADY_EXISTS":
                experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise TrackingError(
                    f"MLflow could not create experiment {name!r} at "
                    f"{redact_uri(client.tracking_uri)}: {first_cause(e)}"
                ) from None
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or use "
            "another study name"
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def search(client, experiment: str, filter_string: str) -> Iterator:
    """Every run of ``experiment`` (an id) matching ``filter_string``, page by page (MLflow
    pages at 1000 runs)."""
    token = None
    while True:
        page = client.search_runs(
            [experiment], filter_string=filter_string, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def find_run(client, experiment: str, **tags: str | None):
    """The oldest run whose tags have these values (given as name=value; None: the run has no
    such tag), or None."""
    same = " and ".join(
        f"tags.`{tag}` IS NULL" if value is None else f"tags.`{tag}` = '{value}'"
        for tag, value in tags.items()
    )
    runs = sorted(
        search(client, experiment, same), key=lambda r: (r.info.start_time, r.info.run_id)
    )
    return runs[0] if runs else None


def create_run_once(
    client,
    experiment: str,
    tags: dict[str, str],
    run_name: str,
    start_time: int | None = None,
    **keys: str | None,
):
    """Creates a run with ``tags`` (started at ``start_time``, milliseconds; default now),
    unless one whose ``keys`` tags match exists; two processes that create it at once converge
    on the oldest run (the newer one is deleted)."""
    run = client.create_run(experiment, start_time=start_time, tags=tags, run_name=run_name)
    oldest = find_run(client, experiment, **keys)
    if oldest is not None and oldest.info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return oldest
    return run


def plugin_run(client):
    """The task's run of KFP's MLflow plugin (``MLFLOW_RUN_ID``), or None outside it."""
    run_id = os.environ.get(PLUGIN_RUN_ENV, "").strip()
    return client.get_run(run_id) if run_id else None


def run_status(status: str, killed: bool = False) -> str:
    """A trial's MLflow run status: ``FINISHED`` when ``ok``, ``KILLED`` when its process was
    killed (out of memory, its time limit), else ``FAILED`` (diverged, failed)."""
    if killed:
        return "KILLED"
    return "FINISHED" if status == "ok" else "FAILED"


def set_tags(client, run, tags: Mapping[str, str]) -> None:
    """Sets the tags whose value ``run`` does not hold yet, in one call."""
    from mlflow.entities import RunTag

    new = [RunTag(k, str(v)) for k, v in tags.items() if run.data.tags.get(k) != str(v)]
    if new:
        client.log_batch(run.info.run_id, tags=new)


def as_param(value: Any) -> str:
    """A param value: lists and mappings as JSON, cut to MLflow's 6000 characters."""
    text = json.dumps(value) if isinstance(value, list | tuple | Mapping) else str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def is_number(value: Any) -> bool:
    """A finite real number (numpy scalars included; bools, None, NaN and text are not)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def log_new(
    client,
    run,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    history: Mapping[str, Sequence[float]] | None = None,
    times: Sequence[float] = (),
    step: int = 0,
    at: float | None = None,
) -> None:
    """Logs what ``run`` does not hold yet, in the batch sizes MLflow accepts.

    Params are immutable in MLflow: one already logged keeps its value. A scalar metric is
    logged (at ``step``, timestamp ``at`` in Unix seconds, default now) when its latest value
    differs, so a re-run adds nothing. A history series has one value per epoch (``step`` =
    epoch, 1 = the first) stamped with ``times[epoch - 1]`` (the epoch's end, Unix seconds;
    now without it); a series whose latest value is already its last is left alone, another is
    logged whole: the points the run holds (streamed while it trained) are the same key, value,
    timestamp and step, which MLflow stores once (mlflow/mlflow v3.17.2:
    mlflow/store/tracking/sqlalchemy_store.py, ``_log_metrics_once``, lines 1429-1438).
    Non-finite values (a diverged trial's loss) are left out: the status tag says why.
    """
    from mlflow.entities import Metric, Param

    now = now_ms()
    stamp = as_ms(at) or now
    logged_params, logged_metrics = run.data.params, run.data.metrics
    # Dicts by safe key: two names that sanitise alike must not reach one batch twice.
    new_params = {safe_key(k): v for k, v in (params or {}).items() if v is not None}
    param_rows = [Param(k, as_param(v)) for k, v in new_params.items() if k not in logged_params]
    new_metrics = {safe_key(k): v for k, v in (metrics or {}).items() if is_number(v)}
    metric_rows = [
        Metric(k, float(v), stamp, step)
        for k, v in new_metrics.items()
        if logged_metrics.get(k) != float(v)
    ]
    for name, series in (history or {}).items():
        # Only per-epoch lists are series; anything else in a history is not a metric.
        if not isinstance(series, list | tuple):
            continue
        key = safe_key(name)
        points = [(epoch, float(v)) for epoch, v in enumerate(series, 1) if is_number(v)]
        if not points or logged_metrics.get(key) == points[-1][1]:
            continue
        metric_rows += [
            Metric(key, value, as_ms(times[epoch - 1]) if epoch <= len(times) else now, epoch)
            for epoch, value in points
        ]
    for params_part, metrics_part in batches(param_rows, metric_rows):
        client.log_batch(run.info.run_id, metrics=metrics_part, params=params_part)


def batches(params: list, metrics: list) -> Iterator[tuple[list, list]]:
    """Params and metrics packed into as few ``log_batch`` calls as MLflow's limits allow
    (at most 100 params and 1000 entries in all per call): a trial's params and its whole
    per-epoch history usually go in one call, which keeps a 15k-trial study's logging fast."""
    while params or metrics:
        params_part = params[:MAX_BATCH_PARAMS]
        metrics_part = metrics[: MAX_BATCH_ENTRIES - len(params_part)]
        params, metrics = params[len(params_part) :], metrics[len(metrics_part) :]
        yield params_part, metrics_part


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of ``a.b`` keys (lists stay whole, as JSON)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flat_params(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def child_runs(uri: str, parent_run_id: str) -> list:
    """Every nested run of a parent run (MLflow ``Run`` objects)."""

    def find() -> list:
        mlflow = open_client(uri)
        experiment = mlflow.get_run(parent_run_id).info.experiment_id
        return list(search(mlflow, experiment, f"tags.`{PARENT_TAG}` = '{parent_run_id}'"))

    return with_retries(find, f"listing the trial runs of {parent_run_id}")
