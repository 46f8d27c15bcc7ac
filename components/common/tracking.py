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
and a trial run that a killed task left RUNNING is completed, not duplicated. Two tasks that
create the same run at once converge on the oldest one (the other is deleted).

Reliability:

* an HTTP server is probed on ``/health`` with retries, backoff and jitter for at most
  ``APRFLOW_MLFLOW_WAIT_S`` seconds (default 60); every tracking call is retried the same way on
  transient failures (connection errors, timeouts, 5xx, SQLite ``database is locked``) and cut
  off at that budget, so an outage never hangs a task;
* a trial's logging is best-effort (:func:`log_trial_or_queue`): what cannot be logged within the
  budget is queued as JSON in the artifact store (``studies/<study>/tracking-queue/``) and
  replayed by the next trial's logging or by ``analyze`` (:func:`replay_queue`);
* a SQLite database is created in a temporary file under an exclusive file lock and renamed
  into place, so a kill or a second run during MLflow's schema migrations never leaves a
  half-migrated ``mlflow.db``; one found half-migrated without runs is moved aside;
* under the KFP MLflow plugin (``MLFLOW_RUN_ID`` set in the task), the study's parent is the
  plugin's pipeline run and a trial is logged into the task's run instead of a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import numbers
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError
from components.common.progress import report
from components.common.uris import carries_credentials, redact_uri

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
MAX_BATCH_PARAMS = 100
MAX_BATCH_ENTRIES = 1000
# A trial run's resolved recipe, whole (params hold it field by field, cut at MLflow's limits).
RECIPE_ARTIFACT = "recipe.json"
MAX_DIGEST = 36
_INVALID_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
# How long tracking waits for MLflow (health probes and retried calls) before giving up.
WAIT_ENV = "APRFLOW_MLFLOW_WAIT_S"
DEFAULT_WAIT_S = 60.0
# Set by KFP's MLflow plugin in each task: the task's nested run under the pipeline run's run.
PLUGIN_RUN_ENV = "MLFLOW_RUN_ID"
# A trial's logging budget while its study has queued loggings (MLflow was away a moment ago).
OUTAGE_WAIT_S = 10.0
OWNER_TAG = "aprflow.run_owner"
PLUGIN_OWNER = "kfp-plugin"
# MLflow's own HTTP client retries for minutes by default; aprflow's retry loop bounds the
# total, so each request is kept short (set these variables to override).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
TRANSIENT = (
    "database is locked",
    "connection",
    "timed out",
    "timeout",
    "max retries exceeded",
    "temporarily unavailable",
    "503",
    "502",
    "504",
    "429",
)


class TrackingError(AprflowError):
    """MLflow cannot be reached or cannot hold what aprflow logs."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Returns ``uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite default."""
    uri = uri or os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def wait_budget() -> float:
    """Seconds tracking waits for MLflow: ``APRFLOW_MLFLOW_WAIT_S``, default 60."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise TrackingError(f"{WAIT_ENV}={raw!r} must be a number of seconds >= 0")
    return value


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: up to 0.5, 1, 2, 4, 8 s, then 8 s."""
    return random.uniform(0.1, min(8.0, 0.5 * 2**attempt))


def _probe(url: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        response.read()


def check_tracking(uri: str, wait_s: float = 0.0) -> None:
    """Raises TrackingError with a fix if the tracking URI cannot be used.

    HTTP servers are probed on ``/health``, retried with backoff and jitter for up to ``wait_s``
    seconds (0: one probe, as preflight does); SQLite needs a writable folder. A URI holding
    credentials is refused: it is printed, logged and tagged, and MLflow reads them from
    MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (mlflow/mlflow v3.17.2:
    mlflow/utils/credentials.py, read_mlflow_creds).
    """
    if carries_credentials(uri):
        raise TrackingError(
            f"the MLflow tracking URI {redact_uri(uri)} carries credentials: remove them and set "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (on Kubernetes: the chart's secret)"
        )
    if uri.startswith(("http://", "https://")):
        deadline = time.monotonic() + wait_s
        attempt = 0
        while True:
            try:
                _probe(f"{uri.rstrip('/')}/health", timeout=5.0)
                return
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                pause = _backoff(attempt)
                if time.monotonic() + pause >= deadline:
                    waited = f" for {wait_s:.0f} s" if wait_s else ""
                    raise TrackingError(
                        redact_uri(
                            f"MLflow tracking server {uri} is unreachable{waited} ({reason}); "
                            f"start it, set {TRACKING_ENV} to a reachable server or "
                            f"sqlite:///PATH, or wait longer with {WAIT_ENV}"
                        )
                    ) from None
                time.sleep(pause)
                attempt += 1
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
            f"unsupported tracking URI {redact_uri(uri)!r}: use http(s)://HOST:PORT or "
            "sqlite:///PATH"
        )


@functools.cache
def _schema_head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _schema_state(db: Path) -> tuple[str | None, int]:
    """``(alembic revision or None, number of runs)`` of an existing SQLite database."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("select version_num from alembic_version").fetchone()
            revision = row[0] if row else None
        runs = (
            connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
        )
    return revision, runs


def _create_schema(db: Path) -> None:
    """Runs MLflow's schema migrations in a temporary file next to ``db``, then renames it into
    place: a kill leaves at most a temporary file, never a half-migrated database."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in db.parent.glob(f"{db.name}.init-*"):  # a killed creation's (we hold the lock)
        stale.unlink(missing_ok=True)
    temporary = db.with_name(f"{db.name}.init-{os.getpid()}").resolve()
    SqlAlchemyStore(f"sqlite:///{temporary}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    _forget_engines(temporary)
    os.replace(temporary, db)
    descriptor = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _forget_engines(db: Path) -> None:
    """Closes this process's MLflow connections to the file ``db`` before it is renamed or
    replaced (MLflow caches one engine per URI; an engine on a replaced file writes nowhere)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for uri in list(SqlAlchemyStore._engine_map):
        if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).resolve() == db:
            SqlAlchemyStore._engine_map.pop(uri).dispose()


_PREPARED: set[Path] = set()


def prepare_sqlite(db: Path) -> None:
    """Makes ``db`` a complete MLflow database, once per process and path.

    Under an exclusive lock on ``<db>.lock`` (two runs starting at once take turns): a missing
    or empty database is created by :func:`_create_schema`; one whose migrations stopped half
    way (killed by an older aprflow or another tool) and that holds no runs is moved aside to
    ``<db>.half-migrated-<time>`` and created again; one with runs at another schema version is
    one clear error with the fix.
    """
    db = db.resolve()
    if db in _PREPARED:
        return
    try:
        import alembic  # noqa: F401 - MLflow's SQL store migrates with these
        import sqlalchemy  # noqa: F401
    except ImportError:
        # The GPU image carries the MLflow client only (mlflow-skinny): its pods log to a server.
        raise TrackingError(
            f"the tracking store sqlite:///{db} needs the full mlflow package (SQLAlchemy, "
            f"alembic), which this environment lacks (mlflow-skinny): set {TRACKING_ENV} to an "
            "MLflow server (the chart's aprflow-mlflow)"
        ) from None
    with open(db.with_name(f"{db.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if db.exists() and db.stat().st_size > 0:
                revision, runs = _schema_state(db)
                if revision != _schema_head():
                    if runs:
                        raise TrackingError(
                            f"the MLflow database {db} holds {runs} runs at schema version "
                            f"{revision}, not {_schema_head()}: back it up, then run `mlflow db "
                            f"upgrade sqlite:///{db}`; if that fails too (a migration killed half "
                            f"way), move the file aside (its runs stay readable with an older "
                            f"MLflow) or set {TRACKING_ENV} to another database"
                        )
                    aside = db.with_name(
                        f"{db.name}.half-migrated-{time.strftime('%Y%m%d-%H%M%S')}"
                    )
                    _forget_engines(db)
                    os.replace(db, aside)
                    report(
                        "tracking",
                        f"the MLflow database {db} was half-migrated (schema {revision}) and held "
                        f"no runs: moved aside to {aside.name}, creating a new one",
                    )
            if not db.exists() or db.stat().st_size == 0:
                _create_schema(db)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _PREPARED.add(db)


def _is_transient(error: Exception) -> bool:
    """A failure worth retrying: the server or the database is busy or away for a moment."""
    if isinstance(error, OSError | TimeoutError):
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in TRANSIENT)


def _with_retries(call, what: str, wait_s: float | None = None):
    """Runs ``call()``, retrying transient failures with backoff and jitter; the whole, retries
    and a call that hangs on a paused server included, is cut off after ``wait_s`` seconds
    (default :func:`wait_budget`) with a TrackingError.

    The call runs in a daemon thread so that a hung request cannot block the task; one cut off
    may still finish later, which is harmless: every tracking call is idempotent.
    """
    wait_s = wait_budget() if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        outcome: dict[str, Any] = {}

        def target(outcome: dict[str, Any] = outcome) -> None:
            try:
                outcome["value"] = call()
            except Exception as e:  # noqa: BLE001 - judged below
                outcome["error"] = e

        thread = threading.Thread(target=target, name="aprflow-tracking", daemon=True)
        thread.start()
        thread.join(max(0.1, deadline - time.monotonic()))
        if thread.is_alive():
            raise TrackingError(f"{what}: MLflow did not answer within {wait_s:.0f} s ({WAIT_ENV})")
        if "error" not in outcome:
            return outcome.get("value")
        error = outcome["error"]
        if isinstance(error, TrackingError) or not _is_transient(error):
            raise error
        pause = _backoff(attempt)
        if time.monotonic() + pause >= deadline:
            # MLflow's message quotes the request URL, the tracking URI's userinfo included.
            raise TrackingError(
                f"{what}: still failing after {wait_s:.0f} s: {redact_uri(str(error))}"
            ) from None
        time.sleep(pause)
        attempt += 1


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


def _client(uri: str, wait_s: float | None = None):
    """An MlflowClient for ``uri``, once the server answers or the SQLite database is complete."""
    from mlflow.tracking import MlflowClient

    check_tracking(uri, wait_budget() if wait_s is None else wait_s)
    if uri.startswith("sqlite:///"):
        prepare_sqlite(Path(uri.removeprefix("sqlite:///")))
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


def _first_cause(error: BaseException) -> str:
    """The innermost cause of ``error``, first line: ``database or disk is full`` for the
    SQLite error that MLflow wraps twice (in SQLAlchemy's error, then in MlflowException)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def _experiment_id(client, name: str) -> str:
    """The experiment's id (created if needed), tagged as model development.

    Raises:
        TrackingError: MLflow refused to create the experiment for another reason than a
            concurrent task creating it first (a full disk, a read-only database), naming it.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception as e:
            if _is_transient(e):
                raise  # retried by _with_retries
            # A concurrent task created it first: MLflow answers RESOURCE_ALREADY_EXISTS
            # (mlflow/mlflow v3.17.2: mlflow/store/tracking/sqlalchemy_store.py, line 645 in
            # SqlAlchemyStore.create_experiment; the REST server sends the same error code).
            if getattr(e, "error_code", None) == "RESOURCE_ALREADY_EXISTS":
                experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise TrackingError(
                    f"MLflow could not create experiment {name!r} at "
                    f"{redact_uri(client.tracking_uri)}: {_first_cause(e)}"
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
    runs = sorted(
        _search(client, experiment_id, same), key=lambda r: (r.info.start_time, r.info.run_id)
    )
    return runs[0] if runs else None


def _create_run_once(client, experiment_id: str, tags: dict[str, str], run_name: str, **keys):
    """Creates a run with ``tags``, unless one whose ``keys`` tags match exists; two processes
    that create it at once converge on the oldest run (the newer one is deleted)."""
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    oldest = _find_run(client, experiment_id, **keys)
    if oldest is not None and oldest.info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return oldest
    return run


def plugin_run(client):
    """The task's run of KFP's MLflow plugin (``MLFLOW_RUN_ID``), or None outside it."""
    run_id = os.environ.get(PLUGIN_RUN_ENV, "").strip()
    return client.get_run(run_id) if run_id else None


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
    its latest value differs, so a re-run adds nothing; a history series (one value per epoch,
    ``step`` = epoch, 1 = the first) only when the run has none of it. Non-finite values (a
    diverged trial's loss) are left out: the status tag says why. Everything goes in as few
    ``log_batch`` calls as MLflow accepts (:func:`_batches`).
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
        # Only per-epoch lists are series; anything else in a history is not a metric.
        if key not in logged_metrics and isinstance(series, list | tuple):
            metric_rows += [
                Metric(key, float(v), now, step)
                for step, v in enumerate(series, 1)
                if _is_number(v)
            ]
    for params_part, metrics_part in _batches(param_rows, metric_rows):
        client.log_batch(run.info.run_id, metrics=metrics_part, params=params_part)


def _batches(params: list, metrics: list) -> Iterator[tuple[list, list]]:
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
    return _with_retries(
        lambda: _start_study_run(uri, experiment, study_id, params, kfp_run_id, config, tags),
        f"opening the MLflow run of study {study_id}",
    )


def _start_study_run(uri, experiment, study_id, params, kfp_run_id, config, tags) -> str:
    client = _client(uri)
    all_tags = {STUDY_TAG: study_id, KFP_RUN_TAG: kfp_run_id, "aprflow.kind": "study"}
    all_tags |= dict(tags or {})
    task_run = plugin_run(client)
    if task_run is not None:
        # KFP's MLflow plugin opened a run for the pipeline run and nested this task's run in
        # it: that pipeline run is the study's parent (the plugin ends it, not aprflow).
        run = client.get_run(task_run.data.tags.get(PARENT_TAG) or task_run.info.run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        for key, value in all_tags.items():
            if run.data.tags.get(key) != value and value:
                client.set_tag(run.info.run_id, key, value)
    else:
        experiment_id = _experiment_id(client, experiment)
        run = _find_run(client, experiment_id, **{STUDY_TAG: study_id})
        if run is None:
            run = _create_run_once(
                client, experiment_id, all_tags, study_id, **{STUDY_TAG: study_id}
            )
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
    adopt_task_run: bool = True,
    wait_s: float | None = None,
    recipe: Mapping[str, Any] | None = None,
    engine_options: Mapping[str, Any] | None = None,
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
        adopt_task_run: under KFP's MLflow plugin, log into the task's run when no other trial
            has it (False for loggings replayed or made up by another task, e.g. analyze).
        wait_s: how long to retry MLflow (default :func:`wait_budget`).
        recipe: the trial's resolved recipe (every field): the artifact ``recipe.json`` and
            the params ``recipe.<field>`` (:func:`recipe_params`).
        engine_options: the trial's engine options (ZeRO stage, precision): params
            ``engine.<option>``.
    """
    params = dict(params) | recipe_params(recipe or {})
    params |= {f"engine.{k}": v for k, v in (engine_options or {}).items()}
    return _with_retries(
        lambda: _log_trial_run(
            uri,
            parent_run_id,
            trial_id,
            run_name,
            params,
            metrics,
            history,
            status,
            tags,
            inputs,
            adopt_task_run,
            recipe,
        ),
        f"logging trial {trial_id} to MLflow",
        wait_s,
    )


# A trial result's final scalars logged as metrics of its run (when present).
RESULT_METRICS = (
    "top1_error",
    "top5_error",
    "ema_top1_error",
    "test_loss",
    "flops",
    "params",
    "flops_trained",
    "params_trained",
    "train_images_per_s",
    "wall_time_s",
    "micro_batch_size",
    "oom_retries",
    "attempt",
)


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A trial result's final scalars as run metrics: :data:`RESULT_METRICS` and each of its
    ``evaluations`` as ``<evaluation>/<metric>`` (``test/top5_error``, ``val/top1_error``,
    ``imagenet_v2/top1_error``: the same checkpoint on another split or test set)."""
    metrics = {key: result[key] for key in RESULT_METRICS if _is_number(result.get(key))}
    for name, values in (result.get("evaluations") or {}).items():
        for key, value in values.items():
            if _is_number(value):
                metrics[f"{name}/{key}"] = value
    return metrics


def recipe_params(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved recipe as params ``recipe.<field>``: every field, an unset one (None) as
    ``None`` so that MLflow's compare view shows it too; lists as JSON, values cut at MLflow's
    6000 characters (the ``recipe.json`` artifact keeps them whole)."""
    return {
        key: "None" if value is None else value
        for key, value in flat_params(recipe, "recipe.").items()
    }


def _log_trial_run(
    uri,
    parent_run_id,
    trial_id,
    run_name,
    params,
    metrics,
    history,
    status,
    tags,
    inputs,
    adopt,
    recipe,
) -> str:
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
    adopted = run is not None and run.data.tags.get(OWNER_TAG) == PLUGIN_OWNER
    task_run = plugin_run(client) if run is None and adopt else None
    if (
        task_run is not None
        and task_run.data.tags.get(PARENT_TAG) == parent_run_id
        and task_run.data.tags.get(TRIAL_TAG, trial_id) == trial_id
    ):
        # The plugin's run of this task is the trial's run (the first trial of a chunk task;
        # the chunk's other trials get runs of their own beside it). The plugin ends it.
        run, adopted = task_run, True
    if adopted:
        all_tags[OWNER_TAG] = PLUGIN_OWNER
    if run is None:
        run = _create_run_once(client, experiment_id, all_tags, run_name, **keys)
    for key, value in (all_tags | {RUN_NAME_TAG: run_name}).items():
        if run.data.tags.get(key) != value:
            client.set_tag(run.info.run_id, key, value)
    if inputs and not run.inputs.dataset_inputs:
        client.log_inputs(run.info.run_id, datasets=inputs)
    _log_new(client, run, params=params, metrics=metrics, history=history)
    if recipe:
        client.log_dict(run.info.run_id, dict(recipe), RECIPE_ARTIFACT)
    if not adopted:
        client.set_terminated(run.info.run_id, "FINISHED" if status == "ok" else "FAILED")
    return run.info.run_id


def queue_key(study: str, trial_id: str) -> str:
    """Where a trial's logging waits while MLflow is away."""
    return f"studies/{study}/tracking-queue/{trial_id}.json"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and other number-likes of a queued record."""
    return value.item() if hasattr(value, "item") else str(value)


def _log_entry(
    uri: str, entry: Mapping[str, Any], adopt_task_run: bool = True, wait_s: float | None = None
) -> str:
    """Logs a trial record of :func:`log_trial_or_queue` (its dataset as an MLflow input)."""
    inputs = [dataset_input(entry["dataset"], entry["dataset_source"])] if entry["dataset"] else []
    keys = ("parent_run_id", "trial_id", "run_name", "params", "metrics", "history", "status")
    kwargs = {k: entry[k] for k in keys} | {"tags": entry["tags"], "inputs": inputs}
    # Entries queued by an older aprflow have no recipe or engine options.
    kwargs |= {"recipe": entry.get("recipe"), "engine_options": entry.get("engine_options")}
    return log_trial_run(uri, **kwargs, adopt_task_run=adopt_task_run, wait_s=wait_s)


def trial_entry(
    parent_run_id: str,
    trial_id: str,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    history: dict[str, list[float]],
    status: str,
    tags: dict[str, str],
    dataset: Mapping[str, Any] | None = None,
    dataset_source: str = "",
    recipe: Mapping[str, Any] | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A trial's logging as plain JSON (what :func:`log_trial_or_queue` logs or queues); the
    arguments are those of :func:`log_trial_run`, with the dataset record and its source URI
    instead of the MLflow input."""
    entry = {
        "parent_run_id": parent_run_id,
        "trial_id": trial_id,
        "run_name": run_name,
        "params": params,
        "metrics": metrics,
        "history": history,
        "status": status,
        "tags": tags,
        "dataset": dict(dataset or {}),
        "dataset_source": dataset_source,
        "recipe": dict(recipe or {}),
        "engine_options": dict(engine_options or {}),
    }
    return json.loads(json.dumps(entry, default=_plain))


def log_trial_or_queue(store, study: str, uri: str, entry: Mapping[str, Any]) -> str | None:
    """Logs a trial (:func:`trial_entry`) to MLflow, best-effort: never fails the trial.

    When MLflow does not take it within the wait budget (``APRFLOW_MLFLOW_WAIT_S``; at most
    10 s while the study already has queued loggings), the entry is queued at
    :func:`queue_key` in the artifact store and a line says so; once a trial is logged, the
    study's queue is replayed (:func:`replay_queue`). Returns the run id, or None when queued.
    """
    key = queue_key(study, entry["trial_id"])
    # A queue left by an earlier trial means MLflow was away a moment ago: try it only briefly
    # then, so that a long outage does not cost every trial of a chunk the whole budget.
    outage = bool(store.list(f"studies/{study}/tracking-queue/"))
    try:
        run_id = _log_entry(
            uri, entry, wait_s=min(wait_budget(), OUTAGE_WAIT_S) if outage else None
        )
    except Exception as e:  # noqa: BLE001 - tracking must never fail a trial
        store.put_json(key, dict(entry) | {"queued_at": time.time(), "error": str(e)[:500]})
        report(
            "tracking",
            f"MLflow logging of trial {entry['trial_id']} queued at {store.key_uri(key)} ({e}); "
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
            _log_entry(uri, store.get_json(key), adopt_task_run=False)
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


LIVE_TAG = "aprflow.live_run"
# The chunk execution that opened a live run last: the one that ends it.
LIVE_OWNER_TAG = "aprflow.live_owner"
# How long the end of a live run may wait for the system-metrics thread's last logging.
LIVE_FINISH_S = 30.0


@contextlib.contextmanager
def live_run(
    uri: str, parent_run_id: str, name: str, tags: Mapping[str, str] | None = None
) -> Iterator[str | None]:
    """A run that is RUNNING while the block trains, with MLflow's system metrics on.

    A trial's own run is written after it trained (from its result, or later from the queue),
    so the run that exists *during* training is this one: a nested run of the study named
    ``name`` (found again by its ``aprflow.live_run`` tag, so a re-run of a chunk resumes its
    steps), or, under KFP's MLflow plugin, the task's run. MLflow's system-metrics monitor
    (``log_system_metrics``: CPU, memory, disk, network, GPU through psutil/pynvml, keys
    ``system/...``, every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds, default 10)
    samples the whole machine, so it covers the trial processes a chunk starts. The run is
    ended FINISHED, or FAILED when the block raises (the plugin's run is left to the plugin).

    Two runs of a study at once share the run: the chunk execution that opened it last
    (tag ``aprflow.live_owner``) ends it, so the other neither ends it under it nor leaves a
    FAILED mark that the study's analysis set meanwhile (it ends live runs still RUNNING).

    Best-effort like every trial logging: when MLflow does not answer within the outage budget
    (at most 10 s), a line says so and the block runs without a live run (yields None); the
    end still looks for the run, since an opening cut off by that budget may complete later
    (e.g. behind the other run's lock on a SQLite database). A monitor that stalls at the end
    is left behind after 30 s.

    Args:
        uri: tracking URI.
        parent_run_id: the study's run.
        name: the run's name and key, e.g. ``chunk-3``.
        tags: extra tags.

    Yields:
        The live run's id, or None.
    """
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    run_id, owned, monitor = None, True, None
    try:
        run_id, owned = _with_retries(
            lambda: _open_live_run(uri, parent_run_id, name, dict(tags or {}), owner),
            f"opening the live MLflow run {name}",
            min(wait_budget(), OUTAGE_WAIT_S),
        )
        monitor = _start_system_metrics(uri, run_id)
    except Exception as e:  # noqa: BLE001 - tracking must never fail training
        report("tracking", f"no live MLflow run {name} (system metrics off): {e}")
    failed = False
    try:
        yield run_id if monitor is not None else None
    except BaseException:
        failed = True
        raise
    finally:
        if monitor is not None:
            finisher = threading.Thread(
                target=monitor.finish, name="aprflow-sysmetrics", daemon=True
            )
            finisher.start()
            finisher.join(LIVE_FINISH_S)
        if owned:
            with contextlib.suppress(Exception):  # best-effort; analyze ends runs left RUNNING
                _with_retries(
                    lambda: _end_live_run(uri, parent_run_id, name, owner, failed),
                    f"ending the live MLflow run {name}",
                    min(wait_budget(), OUTAGE_WAIT_S),
                )


def _open_live_run(
    uri: str, parent_run_id: str, name: str, tags: dict, owner: str
) -> tuple[str, bool]:
    """``(run id, owned)``: the plugin's task run (not owned), else the study's nested run
    ``name``, created or set RUNNING again, with ``owner`` as its owner."""
    client = _client(uri)
    task_run = plugin_run(client)
    if task_run is not None:
        return task_run.info.run_id, False
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    keys = {LIVE_TAG: name, PARENT_TAG: parent_run_id}
    all_tags = keys | {STUDY_TAG: parent.data.tags.get(STUDY_TAG, ""), "aprflow.kind": "live"}
    run = _find_run(client, experiment_id, **keys)
    if run is None:
        run = _create_run_once(
            client, experiment_id, all_tags | dict(tags) | {LIVE_OWNER_TAG: owner}, name, **keys
        )
    if run.data.tags.get(LIVE_OWNER_TAG) != owner:  # found, or created by another at once
        client.set_tag(run.info.run_id, LIVE_OWNER_TAG, owner)
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id, True


def _end_live_run(uri: str, parent_run_id: str, name: str, owner: str, failed: bool) -> None:
    """Ends the live run ``name`` FINISHED (FAILED if ``failed``) if ``owner`` opened it last."""
    client = _client(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = _find_run(client, experiment_id, **{LIVE_TAG: name, PARENT_TAG: parent_run_id})
    if run is not None and run.data.tags.get(LIVE_OWNER_TAG) == owner:
        client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")


def _start_system_metrics(uri: str, run_id: str):
    """MLflow's system-metrics monitor on ``run_id``, started (what ``mlflow.start_run(...,
    log_system_metrics=True)`` starts), resuming the run's steps."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=uri)
    monitor.start()
    return monitor


def child_runs(uri: str, parent_run_id: str) -> list:
    """Every nested run of a parent run (MLflow ``Run`` objects)."""

    def search() -> list:
        client = _client(uri)
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        return list(_search(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'"))

    return _with_retries(search, f"listing the trial runs of {parent_run_id}")


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
    ``aprflow.logging = incomplete`` says that metrics may be missing; a live run
    (:func:`live_run`) left RUNNING by a killed chunk is ended FAILED.

    Args:
        uri: tracking URI.
        run_id: the study's parent run.
        metrics: study-level scalars (every finite number is logged under an MLflow-safe key;
            other values are left out).
        artifact_dir: folder logged as the run's ``report/`` artifacts (HTML, summary JSON,
            results table, figures).
        params: params known only after the analysis (the reference dataset, top-k).
    """
    _with_retries(
        lambda: _finish_study_run(uri, run_id, metrics, artifact_dir, params),
        f"finishing the MLflow run {run_id} of the study",
    )


def _finish_study_run(uri, run_id, metrics, artifact_dir, params) -> None:
    client = _client(uri)
    _log_new(client, client.get_run(run_id), params=params, metrics=metrics)
    if artifact_dir is not None:
        client.log_artifacts(run_id, str(artifact_dir), artifact_path="report")
    plugin = bool(os.environ.get(PLUGIN_RUN_ENV))
    for child in child_runs(uri, run_id):
        tags = child.data.tags
        if plugin and (TRIAL_TAG not in tags or tags.get(OWNER_TAG) == PLUGIN_OWNER):
            continue  # a run of KFP's MLflow plugin: the plugin ends it with its task
        if child.info.status not in FINISHED_STATES and LIVE_TAG in tags:
            client.set_terminated(child.info.run_id, "FAILED")  # its chunk was killed
        elif child.info.status not in FINISHED_STATES:
            status = child.data.tags.get(STATUS_TAG)
            if status is None:
                status = "failed"
                client.set_tag(child.info.run_id, STATUS_TAG, status)
                client.set_tag(child.info.run_id, REASON_TAG, "its task ended before logging")
            client.set_tag(child.info.run_id, "aprflow.logging", "incomplete")
            client.set_terminated(child.info.run_id, "FINISHED" if status == "ok" else "FAILED")
    if not os.environ.get(PLUGIN_RUN_ENV):  # KFP's MLflow plugin ends its pipeline run itself
        client.set_terminated(run_id, "FINISHED")
