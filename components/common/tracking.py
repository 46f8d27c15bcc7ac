"""Experiment tracking in MLflow: one parent run per study, one nested run per trial.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (on Kubernetes: the chart's MLflow server),
else the embedded default ``sqlite:///<abs>/runs/mlflow.db``.

What MLflow's views need is written here, in one place:

* every experiment carries ``mlflow.experimentKind = custom_model_development``, so MLflow 3
  opens the training-runs view, not its GenAI overview;
* a study's parent run holds the study's parameters, its summary metrics and the report files,
  so MLflow's compare view compares two studies;
* a trial's nested run has a readable name, the architecture as params, its dataset as a
  logged input and the tags of the report (``aprflow.status``, ``aprflow.dataset`` ...).

Every call is idempotent: runs are found again by their ``aprflow.study_id`` /
``aprflow.trial_id`` tags, params are immutable in MLflow so only the missing ones are logged,
and a trial run that a killed task left RUNNING is completed, not duplicated.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError

TRACKING_ENV = "MLFLOW_TRACKING_URI"
# Where the MLflow UI of a SQLite store is browsed (`mlflow ui`'s default address); set it to
# the address users open when the tracking URI is not one (a cluster-internal service).
UI_URL_ENV = "APRFLOW_MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
DEFAULT_TRACKING_DB = "runs/mlflow.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STUDY_TAG = "aprflow.study_id"
TRIAL_TAG = "aprflow.trial_id"
STATUS_TAG = "aprflow.status"
REASON_TAG = "aprflow.reason"
KFP_RUN_TAG = "kfp.run_id"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
FINISHED_STATES = ("FINISHED", "FAILED")
# MLflow's limits: param values up to 6000 characters, keys up to 250, log_batch sizes.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
MAX_DIGEST = 36
_INVALID_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")


class TrackingError(AprflowError):
    """MLflow cannot be reached or cannot hold what aprflow logs."""


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


def safe_key(name: str) -> str:
    """A valid MLflow param/metric key: characters MLflow rejects become ``_``, no ``..``."""
    key = re.sub(r"\.{2,}", ".", _INVALID_KEY.sub("_", name)).lstrip("/")
    return key[:MAX_KEY] or "_"


def trial_run_name(model: str, dataset: str, recipe: str, seed: int, status: str) -> str:
    """``<model short id>-<dataset>-<recipe>-s<seed>``, plus ``-<status>`` unless ``ok``."""
    name = f"{model[:8]}-{dataset}-{recipe}-s{seed}"
    return name if status == "ok" else f"{name}-{status}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The link to a run in the MLflow UI.

    An http(s) tracking URI is the UI itself; for a SQLite store the link assumes ``mlflow ui``
    on its default address (``http://127.0.0.1:5000``) unless ``APRFLOW_MLFLOW_UI_URL`` names
    another.
    """
    base = os.environ.get(UI_URL_ENV) or (
        uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL
    )
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    check_tracking(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    """The experiment's id (created if needed), tagged as model development."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - a concurrent task created it first
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted: restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or use "
            "another study name"
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _search(client, experiment_id: str, filter_string: str) -> Iterator:
    """Every run matching ``filter_string``, page by page (MLflow pages at 1000 runs)."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _find_run(client, experiment_id: str, **tags: str):
    """The oldest run whose tags have these values (given as name=value), or None."""
    same = " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in tags.items())
    runs = sorted(_search(client, experiment_id, same), key=lambda r: r.info.start_time)
    return runs[0] if runs else None


def _as_param(value: Any) -> str:
    """A param value: lists and mappings as JSON, cut to MLflow's 6000 characters."""
    text = json.dumps(value) if isinstance(value, list | tuple | Mapping) else str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _is_number(value: Any) -> bool:
    """A finite real number (numpy scalars included; bools, None, NaN and text are not)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_new(
    client,
    run,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    history: Mapping[str, list[float]] | None = None,
) -> None:
    """Logs what ``run`` does not hold yet, in the batch sizes MLflow accepts.

    Params are immutable in MLflow: one already logged keeps its value. A metric is logged when
    its latest value differs, so a re-run adds nothing; a history series only when the run has
    none of it. Non-finite values (a diverged trial's loss) are left out: the status tag says why.
    """
    from mlflow.entities import Metric, Param

    now = _now_ms()
    logged_params, logged_metrics = run.data.params, run.data.metrics
    # Dicts by safe key: two names that sanitise alike must not reach one batch twice.
    new_params = {safe_key(k): v for k, v in (params or {}).items() if v is not None}
    param_rows = [Param(k, _as_param(v)) for k, v in new_params.items() if k not in logged_params]
    new_metrics = {safe_key(k): v for k, v in (metrics or {}).items() if _is_number(v)}
    metric_rows = [
        Metric(k, float(v), now, 0)
        for k, v in new_metrics.items()
        if logged_metrics.get(k) != float(v)
    ]
    for name, series in (history or {}).items():
        key = safe_key(name)
        if key not in logged_metrics:
            metric_rows += [
                Metric(key, float(v), now, step)
                for step, v in enumerate(series, 1)
                if _is_number(v)
            ]
    run_id = run.info.run_id
    for start in range(0, len(metric_rows), 1000):
        client.log_batch(run_id, metrics=metric_rows[start : start + 1000])
    for start in range(0, len(param_rows), 100):
        client.log_batch(run_id, params=param_rows[start : start + 100])


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


def start_study_run(
    uri: str,
    experiment: str,
    study_id: str,
    params: dict[str, Any],
    kfp_run_id: str = "",
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Creates (or finds again) the parent run of a study and returns its run id.

    Args:
        uri: tracking URI.
        experiment: experiment name (created and tagged as model development if needed).
        study_id: the study's id; a run with this tag in the experiment is reused.
        params: the study's parameters (population, recipe per dataset, ...).
        kfp_run_id: tagged on the run.
        config: the full resolved study config: logged as ``config.<key>`` params and as the
            artifact ``config.json`` (whole, whatever the param length limit cuts).
        tags: extra tags (e.g. ``aprflow.kind``).
    """
    client = _client(uri)
    experiment_id = _experiment_id(client, experiment)
    run = _find_run(client, experiment_id, **{STUDY_TAG: study_id})
    if run is None:
        all_tags = {STUDY_TAG: study_id, KFP_RUN_TAG: kfp_run_id, "aprflow.kind": "study"}
        run = client.create_run(experiment_id, tags=all_tags | dict(tags or {}), run_name=study_id)
    all_params = dict(params)
    if config is not None:
        all_params |= flat_params(config, "config.")
        client.log_dict(run.info.run_id, dict(config), "config.json")
    _log_new(client, run, params=all_params)
    return run.info.run_id


def dataset_version(record: Mapping[str, Any]) -> str:
    """A dataset record's version: ``version`` when it has one, else its ``content_hash``."""
    return str(record.get("version") or record.get("content_hash") or "")


def dataset_input(record: Mapping[str, Any], source_uri: str, context: str = "train"):
    """The MLflow dataset input of a trial's dataset record (name, version and size).

    The digest is the dataset's version (``version`` when the record has one, else its
    ``content_hash``), so two runs on the same data show the same dataset in MLflow; every
    scalar field of the record goes to the profile.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    version = dataset_version(record)
    profile = {
        k: v for k, v in record.items() if isinstance(v, str | int | float) and v is not None
    }
    source_type = "s3" if source_uri.startswith("s3://") else "local"
    dataset = Dataset(
        name=str(record["name"]),
        digest=version[:MAX_DIGEST] or "unversioned",
        source_type=source_type,
        source=json.dumps({"uri": source_uri}),
        profile=json.dumps(profile, sort_keys=True),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


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
    inputs: list | None = None,
) -> str:
    """Logs one finished trial as a nested run under ``parent_run_id`` and returns its id.

    A finished run of the trial under this parent with the same status is returned as it is;
    a run left RUNNING (its task was killed while logging), or one whose trial was recomputed
    to another status (a corrupt result set aside), is completed in place: tags and name are
    updated, the missing params, metrics and inputs logged, and the run ended again.

    Args:
        uri: tracking URI.
        parent_run_id: the study's run.
        trial_id: the trial's content hash; a run with this tag under the parent is reused.
        run_name: shown in the MLflow UI (see :func:`trial_run_name`).
        params: architecture, dataset, recipe, seed.
        metrics: final scalars (top-1 error, FLOPs, params, wall time).
        history: per-epoch series, logged with ``step`` = epoch.
        status: trial status (tag ``aprflow.status``); anything but ``ok`` ends the run FAILED.
        tags: extra tags (status reason, KFP run id, the report's columns).
        inputs: MLflow dataset inputs (:func:`dataset_input`), logged once.
    """
    client = _client(uri)
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    keys = {TRIAL_TAG: trial_id, PARENT_TAG: parent_run_id}
    run = _find_run(client, experiment_id, **keys)
    if (
        run is not None
        and run.info.status in FINISHED_STATES
        and run.data.tags.get(STATUS_TAG) == status
    ):
        return run.info.run_id
    all_tags = keys | {STUDY_TAG: parent.data.tags.get(STUDY_TAG, ""), STATUS_TAG: status}
    all_tags |= tags or {}
    if run is None:
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    else:
        for key, value in (all_tags | {RUN_NAME_TAG: run_name}).items():
            client.set_tag(run.info.run_id, key, value)
    if inputs and not run.inputs.dataset_inputs:
        client.log_inputs(run.info.run_id, datasets=inputs)
    _log_new(client, run, params=params, metrics=metrics, history=history)
    client.set_terminated(run.info.run_id, "FINISHED" if status == "ok" else "FAILED")
    return run.info.run_id


def child_runs(uri: str, parent_run_id: str) -> list:
    """Every nested run of a parent run (MLflow ``Run`` objects)."""
    client = _client(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return list(_search(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'"))


def trial_run_links(uri: str, parent_run_id: str) -> dict[str, dict[str, str]]:
    """``{trial_id: {"run_id": ..., "run_url": ...}}`` for the trial runs of a study."""
    links = {}
    for run in child_runs(uri, parent_run_id):
        trial_id = run.data.tags.get(TRIAL_TAG)
        if trial_id:
            url = run_url(uri, run.info.experiment_id, run.info.run_id)
            links[trial_id] = {"run_id": run.info.run_id, "run_url": url}
    return links


def finish_study_run(
    uri: str,
    run_id: str,
    metrics: dict[str, float],
    artifact_dir: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Logs the study's summary metrics, params and report files to its parent run and ends it.

    Nested runs still RUNNING (their task was killed while logging) are ended, so no run of a
    finished study stays RUNNING: their ``aprflow.status`` tag (set first, from the trial's
    result) decides FINISHED or FAILED, a run without one is ``failed``, and the tag
    ``aprflow.logging = incomplete`` says that metrics may be missing.

    Args:
        uri: tracking URI.
        run_id: the study's parent run.
        metrics: study-level scalars (every finite number is logged under an MLflow-safe key;
            other values are left out).
        artifact_dir: folder logged as the run's ``report/`` artifacts (HTML, summary JSON,
            results table, figures).
        params: params known only after the analysis (the reference dataset, top-k).
    """
    client = _client(uri)
    _log_new(client, client.get_run(run_id), params=params, metrics=metrics)
    if artifact_dir is not None:
        client.log_artifacts(run_id, str(artifact_dir), artifact_path="report")
    for child in child_runs(uri, run_id):
        if child.info.status not in FINISHED_STATES:
            status = child.data.tags.get(STATUS_TAG)
            if status is None:
                status = "failed"
                client.set_tag(child.info.run_id, STATUS_TAG, status)
                client.set_tag(child.info.run_id, REASON_TAG, "its task ended before logging")
            client.set_tag(child.info.run_id, "aprflow.logging", "incomplete")
            client.set_terminated(child.info.run_id, "FINISHED" if status == "ok" else "FAILED")
    client.set_terminated(run_id, "FINISHED")
