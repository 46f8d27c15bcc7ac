"""A trial's run is live: RUNNING from the trial's start, per-epoch metrics with their real
timestamps and step = epoch, ended with the trial's status; replays keep the real times."""

from __future__ import annotations

import sqlite3
import time

import pytest

from components.common import tracking
from components.common.storage import open_store


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _trial_log(parent: str, trial_id: str = "t1") -> tracking.TrialLog:
    return tracking.TrialLog(
        parent,
        trial_id,
        run_name=f"m-digits-{trial_id}",
        params={"dataset": "digits", "seed": 0},
        tags={tracking.CHECKPOINT_TAG: f"file:///store/trials/{trial_id}/checkpoint.pt"},
        dataset={"name": "digits", "content_hash": "abc123", "n_train": 10},
        dataset_source="file:///store/datasets/digits/manifest.json",
    )


def _train(stream: tracking.TrialStream, epochs: int) -> tuple[dict, list[float]]:
    """Streams ``epochs`` epochs of a made-up trainer history 0.3 s apart, as the trainer's
    hooks do; returns the history and the epochs' ends."""
    history: dict[str, list[float]] = {"train_loss": [], "test_error": []}
    times: list[float] = []
    for epoch in range(1, epochs + 1):
        time.sleep(0.3)
        history["train_loss"].append(2.0 / epoch)
        history["test_error"].append(50.0 - epoch)
        times.append(time.time())
        stream.epoch(epoch, history, times[-1])
    return history, times


def _completed(log: tracking.TrialLog, history: dict, times: list[float], **fields):
    from dataclasses import replace

    return replace(
        log,
        history=tracking.result_series(history),
        epoch_times=times,
        metrics={"wall_time_s": 1.0},
        ended_at=time.time(),
        **fields,
    )


def test_a_trial_run_is_running_while_it_trains_then_ends_with_its_status(uri, tmp_path):
    parent = tracking.start_study_run(uri, "live", "s1", {})
    log = _trial_log(parent)
    stream = tracking.TrialStream(uri, log)
    stream.start()
    history, times = _train(stream, 3)
    stream.step(7, 0.5, time.time())
    stream.close()
    client = _client(uri)
    live = client.get_run(stream.run_id)
    # Open while it trains: RUNNING, with what the UI shows of a trial from its start.
    assert live.info.status == "RUNNING"
    assert live.info.start_time == int(log.started_at * 1000)
    assert live.data.params["dataset"] == "digits"
    assert live.data.tags[tracking.CHECKPOINT_TAG].endswith("t1/checkpoint.pt")
    assert live.inputs.dataset_inputs[0].dataset.name == "digits"
    streamed = client.get_metric_history(stream.run_id, "top1_error")
    assert [(m.step, m.value, m.timestamp) for m in streamed] == [
        (e + 1, history["test_error"][e], int(times[e] * 1000)) for e in range(3)
    ]
    assert client.get_metric_history(stream.run_id, "train_loss_step")[0].step == 7

    store = open_store(str(tmp_path / "store"))
    final = _completed(log, history, times)
    assert tracking.log_trial_or_queue(store, "s1", uri, final) == stream.run_id
    run = client.get_run(stream.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.STATUS_TAG] == "ok"
    # The run lasts as long as the trial, and every epoch is in MLflow once.
    assert run.info.end_time == int(final.ended_at * 1000)
    assert run.info.end_time - run.info.start_time >= 900
    assert len(client.get_metric_history(stream.run_id, "top1_error")) == 3
    assert len(tracking.child_runs(uri, parent)) == 1


def test_a_killed_trial_ends_killed_and_a_retry_opens_the_same_run_again(uri, tmp_path):
    parent = tracking.start_study_run(uri, "live", "s2", {})
    log = _trial_log(parent)
    stream = tracking.TrialStream(uri, log)
    stream.start()
    history, times = _train(stream, 1)
    stream.close()
    store = open_store(str(tmp_path / "store"))
    killed = _completed(log, history, times, status="failed", killed=True)
    run_id = tracking.log_trial_or_queue(store, "s2", uri, killed)
    client = _client(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    # A later run of the study trains it again: the same run, RUNNING again, no old status.
    again = tracking.TrialStream(uri, _trial_log(parent))
    again.start()
    again.close()
    run = client.get_run(again.run_id)
    assert again.run_id == run_id and run.info.status == "RUNNING"
    assert tracking.STATUS_TAG not in run.data.tags
    # The study finishes without the trial's result: killed before it logged.
    tracking.finish_study_run(uri, parent, {})
    (child,) = tracking.child_runs(uri, parent)
    assert child.info.status == "KILLED" and child.data.tags[tracking.STATUS_TAG] == "failed"


def test_a_logging_replayed_after_an_outage_keeps_the_real_times(uri, tmp_path, monkeypatch):
    parent = tracking.start_study_run(uri, "live", "s3", {})
    log = _trial_log(parent, "t-replayed")
    log.started_at = time.time() - 100.0
    history = {"test_error": [40.0, 30.0]}
    times = [log.started_at + 40.0, log.started_at + 80.0]
    final = _completed(log, history, times)
    store = open_store(str(tmp_path / "store"))
    monkeypatch.setenv(tracking.WAIT_ENV, "1")
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert tracking.log_trial_or_queue(store, "s3", down, final) is None
    monkeypatch.delenv(tracking.WAIT_ENV)
    assert tracking.replay_queue(store, "s3", uri, strict=True) == 1
    (run,) = tracking.child_runs(uri, parent)
    assert run.info.start_time == int(log.started_at * 1000)
    assert run.info.end_time == int(final.ended_at * 1000)
    points = _client(uri).get_metric_history(run.info.run_id, "top1_error")
    assert [m.timestamp for m in points] == [int(t * 1000) for t in times]


def test_a_trial_run_without_mlflow_trains_all_the_same(monkeypatch):
    monkeypatch.setenv(tracking.WAIT_ENV, "1")
    stream = tracking.TrialStream("http://127.0.0.1:9", _trial_log("no-parent"))
    started = time.monotonic()
    stream.start()
    _train(stream, 2)
    stream.close()
    assert stream.run_id is None and time.monotonic() - started < 15


def test_a_new_database_is_mlflows_schema_in_wal_mode(uri, tmp_path):
    # MLflow's public path makes the schema: SqlAlchemyStore.__init__ creates the tables of an
    # empty database and verifies the version of an existing one (mlflow/mlflow v3.17.2:
    # mlflow/store/tracking/sqlalchemy_store.py, lines 405-409 and 432), and its metric
    # batches store an identical point once (same file, _log_metrics_once, lines 1429-1438),
    # which the live stream and the final logging rely on.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tracking.start_study_run(uri, "live", "s4", {})
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        assert connection.execute("pragma journal_mode").fetchone() == ("wal",)
    SqlAlchemyStore(uri, str(tmp_path / "artifacts"))  # MLflow's own check of the schema
    assert not list(tmp_path.glob("mlflow.db.init-*"))
