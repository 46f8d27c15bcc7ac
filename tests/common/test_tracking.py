"""MLflow tracking: SQLite default and a real `mlflow server` process."""

import pytest

from components.common import tracking


def _study_with_trials(uri: str) -> tuple[str, list[str]]:
    parent = tracking.start_study_run(uri, "exp", "study-1", {"n_models": 2}, kfp_run_id="run-9")
    assert tracking.start_study_run(uri, "exp", "study-1", {"n_models": 2}) == parent
    children = []
    for trial_id, status in (("t1", "ok"), ("t2", "diverged")):
        log = tracking.TrialLog(
            parent,
            trial_id,
            run_name=f"m-{trial_id}",
            params={"dataset": "digits", "d1": 2},
            metrics={"top1_error": 12.5 if status == "ok" else float("nan"), "flops": 3e7},
            history={"test_error": [50.0, 20.0, 12.5], "train_loss": [2.0, float("nan")]},
            status=status,
            tags={"aprflow.reason": "" if status == "ok" else "loss became nan"},
        )
        run_id = tracking.log_trial_run(uri, log)
        assert tracking.log_trial_run(uri, log) == run_id, "idempotent"
        children.append(run_id)
    return parent, children


def _check(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    parent, children = _study_with_trials(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("exp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(r.info.run_id for r in nested) == sorted(children)
    ok = client.get_run(children[0])
    assert ok.data.metrics["top1_error"] == 12.5
    assert ok.data.params == {"dataset": "digits", "d1": "2"}
    assert ok.info.status == "FINISHED"
    history = client.get_metric_history(children[0], "test_error")
    assert [(m.step, m.value) for m in history] == [(1, 50.0), (2, 20.0), (3, 12.5)]
    diverged = client.get_run(children[1])
    assert diverged.info.status == "FAILED"
    assert "top1_error" not in diverged.data.metrics
    assert diverged.data.tags["aprflow.status"] == "diverged"
    assert client.get_run(parent).data.tags[tracking.KFP_RUN_TAG] == "run-9"


def test_sqlite_tracking(tmp_path):
    _check(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_tracking_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    _check(mlflow_server)
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text("{}")
    run_id = tracking.start_study_run(mlflow_server, "exp2", "s2", {})
    tracking.finish_study_run(mlflow_server, run_id, {"spearman_rho/faces": 0.5}, report)
    run = MlflowClient(tracking_uri=mlflow_server).get_run(run_id)
    assert run.data.metrics["spearman_rho/faces"] == 0.5
    assert run.info.status == "FINISHED"


def test_a_local_store_keeps_its_artifacts_beside_its_database(tmp_path, monkeypatch):
    """Not in ./mlruns of the folder the run happened to start in, where MLflow puts them."""
    from mlflow.tracking import MlflowClient

    from components.common.tracking.runs import local_artifact_location

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text("{}")
    run_id = tracking.start_study_run(uri, "apr study/1", "s1", {})
    tracking.finish_study_run(uri, run_id, {"spearman_rho/faces": 0.5}, report)
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("apr study/1")
    (folder,) = (tmp_path / "runs" / "mlruns").glob("apr-study-1-*")
    assert experiment.artifact_location == folder.as_uri()
    assert (folder / run_id / "artifacts" / "report" / "summary.json").is_file()
    assert not (elsewhere / "mlruns").exists()
    # Names that slug alike get folders of their own; a server chooses its own folders.
    alike = {local_artifact_location(uri, name) for name in ("apr study/1", "apr-study-1")}
    assert len(alike) == 2
    assert local_artifact_location("http://127.0.0.1:5000", "apr study/1") is None


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(tracking.TrackingError, match="unreachable.*MLFLOW_TRACKING_URI"):
        tracking.check_tracking("http://127.0.0.1:9")


def test_default_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    with pytest.raises(tracking.TrackingError, match="unsupported tracking URI"):
        tracking.check_tracking("ftp://x")


def test_health_probe_waits_for_a_server_that_comes_back(monkeypatch):
    """A server that refuses connections for ~2 s (a restarting pod) is waited for; one that
    stays away fails after the budget, naming it and the setting."""
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

    servers = []

    def serve() -> None:  # nothing listens on the port before this runs: refused
        servers.append(http.server.HTTPServer(("127.0.0.1", port), Health))
        servers[0].serve_forever()

    starter = threading.Timer(2, serve)
    starter.start()
    tic = time.monotonic()
    try:
        tracking.check_tracking(f"http://127.0.0.1:{port}", wait_s=30)
    finally:
        wait_for = time.monotonic() + 10
        while not servers and time.monotonic() < wait_for:
            time.sleep(0.1)
        servers[0].shutdown()
        starter.join()
        servers[0].server_close()
    assert 1.5 < time.monotonic() - tic < 30
    tic = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="unreachable for 3 s.*APRFLOW_MLFLOW_WAIT_S"):
        tracking.check_tracking(f"http://127.0.0.1:{port}", wait_s=3)
    assert time.monotonic() - tic < 6
    monkeypatch.setenv(tracking.WAIT_ENV, "soon")
    with pytest.raises(tracking.TrackingError, match="APRFLOW_MLFLOW_WAIT_S='soon' must be"):
        tracking.wait_budget()


def _mlflow_database_error(failure: str, params: tuple) -> Exception:
    """The error MLflow's SQLAlchemy store raises when SQLite fails a statement (mlflow/mlflow
    v3.17.2: mlflow/store/db/utils.py, make_managed_session, lines 179-185)."""
    import sqlite3

    import sqlalchemy
    from mlflow.exceptions import MlflowException

    statement = "INSERT INTO experiments (name, artifact_location, creation_time) VALUES (?, ?, ?)"
    try:
        try:
            raise sqlalchemy.exc.OperationalError(
                statement, params, sqlite3.OperationalError(failure)
            )
        except sqlalchemy.exc.OperationalError as e:
            raise MlflowException(message=e, error_code="TEMPORARILY_UNAVAILABLE") from e
    except MlflowException as e:
        return e


def test_a_database_error_is_judged_by_its_failure_not_by_the_statement_it_quotes():
    # The parameters quote a creation time whose digits hold 502, as about 1 in 40 do.
    params = ("connection-timeout", "file:///tmp/mlruns/x", 1796502334879)
    assert not tracking.is_transient(_mlflow_database_error("no such table: main.gone", params))
    assert tracking.is_transient(_mlflow_database_error("database is locked", params))


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        (
            "API request to endpoint /api/2.0/mlflow/runs/get failed with error code 503 != 200. "
            "Response body: '<html>\n<h1>Service unavailable</h1>\n</html>'",
            True,
        ),
        (
            "API request to http://mlflow:5000/api/2.0/mlflow/runs/get failed with exception "
            "HTTPConnectionPool(host='mlflow', port=5000): Max retries exceeded with url: "
            "/api/2.0/mlflow/runs/get (Caused by ResponseError('too many 429 error responses'))",
            True,
        ),
        # Digits of a status inside a run id, a port or a timestamp are not that status.
        ("RESOURCE_DOES_NOT_EXIST: Run with id=a5029f4290c1b504 not found", False),
        (
            "API request to endpoint /api/2.0/mlflow/runs/get failed with error code 404 != 200. "
            "Response body: 'http://10.0.0.7:15030/ 1796502334879'",
            False,
        ),
        # A server on SQLite sends its store's whole message: SQLAlchemy's line first, then the
        # failure, then the statement.
        (
            "TEMPORARILY_UNAVAILABLE: (raised as a result of Query-invoked autoflush; consider "
            "using a session.no_autoflush block if this flush is occurring prematurely)\n"
            "(sqlite3.OperationalError) database is locked\n[SQL: INSERT INTO runs VALUES (?)]\n"
            "[parameters: ('run-502',)]",
            True,
        ),
        (
            "BAD_REQUEST: (sqlite3.IntegrityError) CHECK constraint failed: status\n"
            "[SQL: INSERT INTO runs VALUES (?, ?)]\n[parameters: ('connection-502', 'timeout')]",
            False,
        ),
    ],
)
def test_only_a_failure_worth_retrying_is_retried(message, transient):
    from mlflow.exceptions import MlflowException

    assert tracking.is_transient(MlflowException(message)) is transient
