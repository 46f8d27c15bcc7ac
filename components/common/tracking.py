"""Experiment tracking in MLflow: one parent run per study, one nested run per trial.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (on Kubernetes: the chart's MLflow server),
else the embedded default ``sqlite:///<abs>/runs/mlflow.db``. Every call is idempotent: runs are
found again by their ``aprflow.study_id`` / ``aprflow.trial_id`` tags, so a retried task logs
nothing twice.
"""

from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError

TRACKING_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_DB = "runs/mlflow.db"
STUDY_TAG = "aprflow.study_id"
TRIAL_TAG = "aprflow.trial_id"
KFP_RUN_TAG = "kfp.run_id"
PARENT_TAG = "mlflow.parentRunId"


class TrackingError(AprflowError):
    """MLflow cannot be reached."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Returns ``uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite default."""
    uri = uri or os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def check_tracking(uri: str) -> None:
    """Raises TrackingError with a fix if the tracking URI cannot be used.

    HTTP servers are probed on ``/health`` with a short timeout; SQLite needs a writable folder.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it or set "
                f"{TRACKING_ENV} to a reachable server or sqlite:///PATH"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(
                f"cannot create the MLflow database folder {folder}: {e.strerror}; "
                f"set {TRACKING_ENV} to a writable sqlite:///PATH or a server URL"
            ) from None
    elif "://" in uri and not uri.startswith("file://"):
        raise TrackingError(
            f"unsupported tracking URI {uri!r}: use http(s)://HOST:PORT or sqlite:///PATH"
        )


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    check_tracking(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - a concurrent task created it first
        return client.get_experiment_by_name(name).experiment_id


def _find_run(client, experiment_id: str, **tags: str) -> str | None:
    """The id of a run whose tags have these values, or None (tags given as name=value)."""
    same = " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in tags.items())
    runs = client.search_runs([experiment_id], filter_string=same)
    return runs[0].info.run_id if runs else None


def _as_param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _log_batches(client, run_id: str, metrics: list, params: list) -> None:
    """Logs metrics and params in the batch sizes MLflow accepts (1000 metrics, 100 params)."""
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])


def start_study_run(
    uri: str, experiment: str, study_id: str, params: dict[str, Any], kfp_run_id: str = ""
) -> str:
    """Creates (or finds again) the parent run of a study and returns its run id."""
    from mlflow.entities import Param

    client = _client(uri)
    experiment_id = _experiment_id(client, experiment)
    run_id = _find_run(client, experiment_id, **{STUDY_TAG: study_id})
    if run_id is None:
        tags = {STUDY_TAG: study_id, KFP_RUN_TAG: kfp_run_id, "mlflow.runName": study_id}
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        _log_batches(client, run_id, [], [Param(k, _as_param(v)) for k, v in params.items()])
    return run_id


def log_trial_run(
    uri: str,
    parent_run_id: str,
    trial_id: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    history: dict[str, list[float]],
    status: str,
    tags: dict[str, str] | None = None,
) -> str:
    """Logs one finished trial as a nested run under ``parent_run_id`` (once) and returns its id.

    Args:
        uri: tracking URI.
        parent_run_id: the study's run.
        trial_id: the trial's content hash; a run with this tag under the parent is reused.
        run_name: shown in the MLflow UI.
        params: architecture, dataset, recipe, seed.
        metrics: final scalars (top-1 error, FLOPs, params, wall time).
        history: per-epoch series, logged with ``step`` = epoch.
        status: trial status; anything but ``ok`` ends the run as FAILED.
        tags: extra tags (status reason, KFP run id).
    """
    from mlflow.entities import Metric, Param

    client = _client(uri)
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    existing = _find_run(client, experiment_id, **{TRIAL_TAG: trial_id, PARENT_TAG: parent_run_id})
    if existing is not None:
        return existing
    all_tags = {TRIAL_TAG: trial_id, PARENT_TAG: parent_run_id, "mlflow.runName": run_name}
    all_tags |= tags or {}
    run_id = client.create_run(experiment_id, tags=all_tags).info.run_id
    now = int(time.time() * 1000)
    # Non-finite values (a diverged trial's loss) are left out: its status tag says why.
    metric_rows = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(v)]
    for name, series in history.items():
        metric_rows += [
            Metric(name, float(v), now, step)
            for step, v in enumerate(series, 1)
            if math.isfinite(v)
        ]
    param_rows = [Param(k, _as_param(v)) for k, v in params.items()]
    client.set_tag(run_id, "aprflow.status", status)
    _log_batches(client, run_id, metric_rows, param_rows)
    client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")
    return run_id


def finish_study_run(
    uri: str, run_id: str, metrics: dict[str, float], artifact_dir: str | Path | None = None
) -> None:
    """Logs the study's summary metrics and report files to its parent run and ends it."""
    from mlflow.entities import Metric

    client = _client(uri)
    now = int(time.time() * 1000)
    _log_batches(client, run_id, [Metric(k, float(v), now, 0) for k, v in metrics.items()], [])
    if artifact_dir is not None:
        client.log_artifacts(run_id, str(artifact_dir), artifact_path="report")
    client.set_terminated(run_id, "FINISHED")
