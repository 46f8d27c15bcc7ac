"""Whole local studies under faults: two runs of the same study at once in one store and one
tracking database, and a study whose S3 server is paused (SIGSTOP) for 30 s while it trains.

Both end with exactly the results of a study that ran alone: same trial ids, status and top-1
error, each trial trained once, one MLflow parent run and one run per trial.

Figures: ``pytest tests/reliability/test_study_faults.py -s`` prints
``two runs at once: N of N trials trained once`` and ``S3 paused 30 s mid-study: survived``.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from faults import aprflow_env, private_moto_server, start_aprflow, wait_for

STUDY = ["--set=study_name=faults", "--set=n_models=2", "--set=datasets=[faces]"]
STUDY += ["--set=resolution=8", "--set=epochs=1"]
TRIALS = 2  # two models, one dataset, one training seed
PAUSE_S = 30


def _results(runs: Path) -> list[tuple[str, str, str]]:
    """The study's results table as sorted (trial id, status, top-1 error) rows."""
    (table,) = runs.glob("faults-*/results.csv")
    with open(table) as f:
        return sorted((r["trial_id"], r["status"], r["top1_error"]) for r in csv.DictReader(f))


def _task_log(runs: Path) -> str:
    """The tasks' log of the run in ``runs`` (every trial's progress lines)."""
    (log,) = (runs / "logs").glob("*.log")
    return log.read_text()


def _run(args: list[str], env: dict[str, str], log: Path):
    """Starts ``aprflow run apr-study`` with the tiny study; returns the process."""
    return start_aprflow(["run", "apr-study", *STUDY, *args], env, log)


def _finish(process, log: Path, timeout: float = 300) -> None:
    assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory) -> Path:
    """Two ``aprflow run`` of the same study started together: two runs folders, one local
    store, one SQLite tracking database."""
    folder = tmp_path_factory.mktemp("twin-runs")
    env = aprflow_env(
        APRFLOW_STORE_URI=str(folder / "store"),
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
    )
    processes = []
    for name in ("a", "b"):
        (folder / name).mkdir()
        log = folder / name / "console.log"
        processes.append((_run(["--runs-dir", str(folder / name / "runs")], env, log), log))
    for process, log in processes:
        _finish(process, log, timeout=400)
    return folder


@pytest.mark.slow
@pytest.mark.extended
def test_two_runs_of_a_study_at_once_train_each_trial_once(twin_runs):
    runs = [twin_runs / name / "runs" for name in ("a", "b")]
    results = [_results(r) for r in runs]
    assert results[0] == results[1], "both reports hold the same results"
    assert len(results[0]) == TRIALS and all(status == "ok" for _, status, _ in results[0])
    logs = [_task_log(r) for r in runs]
    # Every training prints its epoch line; a reused result prints none.
    trainings = sum(log.count("epoch 1/1:") for log in logs)
    reused = sum(log.count("(reused)") for log in logs)
    print(f"\ntwo runs at once: {TRIALS - (trainings - TRIALS)} of {TRIALS} trials trained once")
    assert trainings == TRIALS, "each trial was trained exactly once"
    assert reused == TRIALS, "the other run reused each trial's result"
    store = twin_runs / "store"
    leases = sorted(p.relative_to(store).parts[1:] for p in store.glob("trials/*/lease-*.json"))
    assert len(leases) == TRIALS and {name for _, name in leases} == {"lease-000000.json"}
    assert len(list(store.glob("trials/*/result.json"))) == TRIALS

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{twin_runs / 'mlflow.db'}")
    active = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=1000
    )
    parents = [r for r in active if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in active if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    # The chunks' live runs (system metrics) are nested too; one run per trial besides.
    trial_runs = [r for r in children if "aprflow.live_run" not in r.data.tags]
    trial_ids = sorted(r.data.tags.get("aprflow.trial_id", "") for r in trial_runs)
    assert trial_ids == sorted(trial_id for trial_id, _, _ in results[0]), "one run per trial"
    assert [r.info.status for r in children if r.info.status == "RUNNING"] == []


@pytest.mark.slow
@pytest.mark.extended
def test_s3_paused_30s_mid_study_finishes_with_the_same_results(twin_runs, tmp_path):
    import boto3

    with private_moto_server(tmp_path) as (endpoint, server):
        credentials = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        bucket = boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs(credentials))
        bucket.create_bucket(Bucket="outage")
        env = aprflow_env(
            APRFLOW_STORE_URI="s3://outage/store",
            APRFLOW_S3_ENDPOINT_URL=endpoint,
            # Short read timeouts, so that the pause spans several retried attempts.
            APRFLOW_S3_READ_TIMEOUT="5",
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
            **credentials,
        )
        log = tmp_path / "console.log"
        process = _run(["--runs-dir", str(tmp_path / "runs")], env, log)
        # A trial's lease is taken as its training starts (the tasks' log is not live: kfp.local
        # writes a task's output when the task ends).
        before = wait_for(lambda: _keys_once_leased(bucket), 300, "a trial's lease", poll=0.2)
        os.kill(server.pid, signal.SIGSTOP)
        finished_before = [k for k in before if k.endswith("/result.json")]
        resume = threading.Timer(PAUSE_S, os.kill, (server.pid, signal.SIGCONT))
        resume.start()
        tic = time.monotonic()
        try:
            _finish(process, log, timeout=400)
        finally:
            resume.cancel()
            os.kill(server.pid, signal.SIGCONT)
        took = time.monotonic() - tic
        print(
            f"\nS3 paused {PAUSE_S} s mid-study ({len(finished_before)} of {TRIALS} trials "
            f"finished): survived, the study finished {took:.0f} s after the server was stopped"
        )
        assert len(finished_before) < TRIALS, "the server was stopped while the study trained"
        assert took >= PAUSE_S - 1, "the study really waited for the server"
        keys = _keys(bucket)
    results = _results(tmp_path / "runs")
    assert results == _results(twin_runs / "a" / "runs"), "the results of a study run alone"
    assert _task_log(tmp_path / "runs").count("epoch 1/1:") == TRIALS, "nothing trained twice"
    assert len([k for k in keys if k.endswith("/result.json")]) == TRIALS
    assert not [k for k in keys if ".corrupt-" in k or k.endswith(".tmp")]


def _keys(bucket, part: str = "") -> list[str]:
    """The bucket's keys that contain ``part``."""
    listed = bucket.list_objects_v2(Bucket="outage").get("Contents", [])
    return [o["Key"] for o in listed if part in o["Key"]]


def _keys_once_leased(bucket) -> list[str] | None:
    """The bucket's keys once a trial's lease is among them, else None."""
    keys = _keys(bucket)
    return keys if any("/lease-" in key for key in keys) else None


def _boto_kwargs(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_DEFAULT_REGION"],
    }
