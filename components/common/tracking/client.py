"""The tracking URI, MLflow's reachability, and calls retried within a time budget."""

from __future__ import annotations

import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from components.common.errors import AprflowError
from components.common.uris import carries_credentials, redact_uri

TRACKING_ENV = "MLFLOW_TRACKING_URI"
# Where the MLflow UI of a SQLite store is browsed (`mlflow ui`'s default address); set it to
# the address users open when the tracking URI is not one (a cluster-internal service).
UI_URL_ENV = "APRFLOW_MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
DEFAULT_TRACKING_DB = "runs/mlflow.db"
# How long tracking waits for MLflow (health probes and retried calls) before giving up.
WAIT_ENV = "APRFLOW_MLFLOW_WAIT_S"
DEFAULT_WAIT_S = 60.0
# A server's logging budget while it looks away (a trial's study has queued loggings, or a
# chunk's system-metrics run): an outage must not cost every trial the whole budget. A SQLite
# file is never away, only busy: its calls keep the whole budget (see outage_budget).
OUTAGE_WAIT_S = 10.0
# MLflow's own HTTP client retries for minutes by default; aprflow's retry loop bounds the
# total, so each request is kept short (set these variables to override).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    # A run ended against a server prints two "View run/experiment" lines to stdout, which
    # carries results only (mlflow/mlflow v3.17.2: mlflow/tracking/_tracking_service/client.py,
    # lines 755-786).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
TRANSIENT = (
    "database is locked",
    "connection",
    "timed out",
    "timeout",
    "max retries exceeded",
    "temporarily unavailable",
    # Two tasks inserting the same row at once (the dataset that two trials log as their input):
    # the retry finds the row the other inserted.
    "unique constraint failed",
    "duplicate key value",
)
# HTTP statuses worth retrying, as whole numbers: a run id, a port or a timestamp may hold the
# same digits ("a5029f...", ":15030", "1796502334879").
TRANSIENT_STATUS = re.compile(r"\b(429|502|503|504)\b")
# Where SQLAlchemy's message goes on from the failure to the statement, then its parameters
# (sqlalchemy 2.1.9: lib/sqlalchemy/exc.py, StatementError._sql_message, lines 581-601). MLflow
# keeps that whole text, in its local store's error and in a server's JSON error message.
SQL_QUOTE = "\n[SQL: "

T = TypeVar("T")


class TrackingError(AprflowError):
    """MLflow cannot be reached or cannot hold what aprflow logs."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Returns ``uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite default."""
    uri = uri or os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    return f"sqlite:///{Path(DEFAULT_TRACKING_DB).resolve()}"


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///PATH`` URI."""
    return Path(uri.removeprefix("sqlite:///"))


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


def outage_budget(uri: str) -> float:
    """The budget of a best-effort call when MLflow may be away: at most 10 s for a server; the
    whole :func:`wait_budget` for a SQLite file, which is only ever busy (MLflow itself waits up
    to 20 s for a lock, so a shorter cut-off would give up on calls that succeed)."""
    return wait_budget() if is_sqlite(uri) else min(wait_budget(), OUTAGE_WAIT_S)


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
    elif is_sqlite(uri):
        folder = sqlite_path(uri).parent
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


def is_transient(error: Exception) -> bool:
    """A failure worth retrying: the server or the database is busy or away for a moment.

    A database error is read up to the statement SQLAlchemy quotes after the failure: its
    parameters hold names, paths and creation times, which are not the failure (a creation
    time of 1796502334879 is no HTTP 502).
    """
    if isinstance(error, OSError | TimeoutError):
        return True
    failure = str(error).split(SQL_QUOTE, 1)[0]
    text = f"{type(error).__name__} {failure}".lower()
    return any(marker in text for marker in TRANSIENT) or bool(TRANSIENT_STATUS.search(text))


def with_retries(call: Callable[[], T], what: str, wait_s: float | None = None) -> T:
    """Runs ``call()``, retrying transient failures with backoff and jitter; the whole, retries
    and a call that hangs on a paused server included, is cut off after ``wait_s`` seconds
    (default :func:`wait_budget`) with a TrackingError.

    The call runs in a daemon thread so that a hung request cannot block the task; one cut off
    may still finish later, which is harmless: every tracking call is idempotent.
    """
    # Importing MLflow takes seconds on a busy machine, once per process: not MLflow's answer.
    import mlflow.tracking  # noqa: F401

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
        if isinstance(error, TrackingError) or not is_transient(error):
            raise error
        pause = _backoff(attempt)
        if time.monotonic() + pause >= deadline:
            # MLflow's message quotes the request URL, the tracking URI's userinfo included.
            raise TrackingError(
                f"{what}: still failing after {wait_s:.0f} s: {redact_uri(first_cause(error))}"
            ) from None
        time.sleep(pause)
        attempt += 1


def open_client(uri: str, wait_s: float | None = None):
    """An MlflowClient for ``uri``, once the server answers or the SQLite database is ready
    (:func:`~components.common.tracking.database.prepare_sqlite`)."""
    from mlflow.tracking import MlflowClient

    from components.common.tracking.database import prepare_sqlite

    check_tracking(uri, wait_budget() if wait_s is None else wait_s)
    if is_sqlite(uri):
        prepare_sqlite(sqlite_path(uri))
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


def first_cause(error: BaseException) -> str:
    """The innermost cause of ``error``, first line: ``database or disk is full`` for the
    SQLite error that MLflow wraps twice (in SQLAlchemy's error, then in MlflowException)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The link to a run in the MLflow UI.

    An http(s) tracking URI is the UI itself; for a SQLite store the link assumes ``mlflow ui``
    on its default address (``http://127.0.0.1:5000``) unless ``APRFLOW_MLFLOW_UI_URL`` names
    another.
    """
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_base(uri: str) -> str:
    """The MLflow UI's address for ``uri`` (see :func:`run_url`), without a trailing slash."""
    base = os.environ.get(UI_URL_ENV) or (
        uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL
    )
    return base.rstrip("/")
