"""MLflow runs that survive kills, concurrency and KFP's MLflow plugin, against a real server."""

from __future__ import annotations

import threading
import uuid

from components.common import tracking
from components.common.storage import open_store

TRIAL = dict(
    run_name="m-x",
    params={"dataset": "faces"},
    metrics={"wall_time_s": 3.0},
    history={"top1_error": [40.0, 30.0]},
    status="ok",
)


def _log(parent: str, trial_id: str, **tags: str) -> tracking.TrialLog:
    return tracking.TrialLog(parent, trial_id, tags=tags, **TRIAL)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_study_run_killed_before_logging_is_completed_not_duplicated(mlflow_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment, study = _name("killed-parent"), _name("s")
    experiment_id = client.create_experiment(experiment)
    # A plan task killed right after creating the parent run: RUNNING, nothing logged.
    empty = client.create_run(experiment_id, tags={tracking.STUDY_TAG: study}).info.run_id
    parent = tracking.start_study_run(mlflow_server, experiment, study, {"n_models": 3})
    assert parent == empty
    assert client.get_run(parent).data.params == {"n_models": "3"}
    assert len(client.search_runs([experiment_id])) == 1


def test_two_tasks_opening_one_study_at_once_get_one_run(mlflow_server):
    from mlflow.tracking import MlflowClient

    experiment, study = _name("race"), _name("s")
    tracking.start_study_run(mlflow_server, experiment, _name("other"), {})  # the experiment
    barrier = threading.Barrier(2)
    ids = []

    def open_study() -> None:
        barrier.wait()
        ids.append(tracking.start_study_run(mlflow_server, experiment, study, {"n": 1}))

    threads = [threading.Thread(target=open_study) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{tracking.STUDY_TAG}` = '{study}'")
    assert len(runs) == 1 and ids == [runs[0].info.run_id] * 2


def test_kfp_mlflow_plugin_runs_are_used_not_duplicated(mlflow_server, monkeypatch, tmp_path):
    """The plugin opens a run for the pipeline run and one nested run per task, and sets
    MLFLOW_RUN_ID in the task: the study logs into them and adds a run only for the second and
    later trials of a chunk task."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.create_experiment(_name("kfp-plugin"))
    pipeline = client.create_run(experiment_id, run_name="apr-study-run").info.run_id

    def task_run(name: str) -> str:
        tags = {tracking.PARENT_TAG: pipeline}
        run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        monkeypatch.setenv(tracking.PLUGIN_RUN_ENV, run_id)
        return run_id

    plugin_runs = {pipeline, task_run("plan")}
    study = _name("study")
    parent = tracking.start_study_run(mlflow_server, "apr-study", study, {"n_models": 3}, "kfp-1")
    assert parent == pipeline, "the pipeline run is the study's parent"
    assert client.get_experiment_by_name("apr-study") is None, "no experiment of our own"
    chunk_a = task_run("train-chunk-0")
    plugin_runs.add(chunk_a)
    assert tracking.log_trial_run(mlflow_server, _log(parent, "t1")) == chunk_a
    assert tracking.log_trial_run(mlflow_server, _log(parent, "t1")) == chunk_a, "re-run"
    chunk_b = task_run("train-chunk-1")
    plugin_runs.add(chunk_b)
    assert tracking.log_trial_run(mlflow_server, _log(parent, "t2")) == chunk_b
    third = tracking.log_trial_run(mlflow_server, _log(parent, "t3"))
    analyze = task_run("analyze")
    plugin_runs.add(analyze)
    # A logging queued during an outage and replayed by analyze gets a run of its own.
    store = open_store(str(tmp_path / "store"))
    store.put_json(tracking.queue_key(study, "t4"), _log(parent, "t4").to_json())
    assert tracking.replay_queue(store, study, mlflow_server, strict=True) == 1
    tracking.finish_study_run(mlflow_server, parent, {"score": 1.0})

    runs = {r.info.run_id: r for r in client.search_runs([experiment_id], max_results=100)}
    added = set(runs) - plugin_runs
    assert third in added and len(added) == 2, "runs added: a chunk's second trial, the replay"
    children = tracking.child_runs(mlflow_server, parent)
    trials = sorted(str(r.data.tags.get(tracking.TRIAL_TAG)) for r in children)
    assert trials == ["None", "None", "t1", "t2", "t3", "t4"]  # None: plan and analyze tasks
    assert tracking.TRIAL_TAG not in runs[analyze].data.tags
    adopted = runs[chunk_a]
    assert adopted.data.tags[tracking.STATUS_TAG] == "ok" and adopted.info.run_name == "m-x"
    assert adopted.data.tags[tracking.OWNER_TAG] == tracking.PLUGIN_OWNER
    assert adopted.data.metrics == {"top1_error": 30.0, "wall_time_s": 3.0}
    # The plugin ends its runs (with the task's state); aprflow ends only its own.
    assert {runs[r].info.status for r in plugin_runs} == {"RUNNING"}
    assert runs[third].info.status == "FINISHED"
    assert runs[pipeline].data.tags[tracking.STUDY_TAG] == study
    assert runs[pipeline].data.params == {"n_models": "3"}


def test_queued_logging_is_replayed_once(mlflow_server, tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "store"))
    experiment, study = _name("queue"), _name("s")
    parent = tracking.start_study_run(mlflow_server, experiment, study, {})
    entry = _log(parent, "t-q", **{"aprflow.dataset": "faces"})
    # MLflow away (a closed port, no wait): the trial goes on, its logging is queued.
    monkeypatch.setenv(tracking.WAIT_ENV, "1")
    assert tracking.log_trial_or_queue(store, study, "http://127.0.0.1:9", entry) is None
    monkeypatch.delenv(tracking.WAIT_ENV)
    assert store.get_json(tracking.queue_key(study, "t-q"))["trial_id"] == "t-q"
    # analyze replays it; twice is still one run.
    assert tracking.replay_queue(store, study, mlflow_server, strict=True) == 1
    # As if killed before the delete.
    store.put_json(tracking.queue_key(study, "t-q"), entry.to_json())
    assert tracking.replay_queue(store, study, mlflow_server, strict=True) == 1
    runs = tracking.child_runs(mlflow_server, parent)
    assert [r.data.tags[tracking.TRIAL_TAG] for r in runs] == ["t-q"]
    assert runs[0].data.metrics["top1_error"] == 30.0 and runs[0].info.status == "FINISHED"
    assert not store.list(f"studies/{study}/tracking-queue/")


def test_trials_that_never_ran_get_a_failed_run(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from components.analyze.run import gather_results, log_unlogged_trials
    from components.data.datasets import materialize
    from components.sample.samplers import sample_specs
    from components.train.run import plan_study

    store_uri = str(tmp_path / "store")
    dataset = materialize(open_store(store_uri), "faces", resolution=8)
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), seed=3).specs]
    ids, study, parent = plan_study(
        specs, [dataset.to_dict()], _name("unrun"), "apr_tiny", {}, [0], "torch", store_uri,
        mlflow_server,
    )  # fmt: skip
    # No trial ran: no result.json, no run.
    table = gather_results(
        open_store(store_uri), ids, tracking.trial_run_links(mlflow_server, parent)
    )
    assert list(table["run_id"]) == ["", ""]
    log_unlogged_trials(mlflow_server, parent, table)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment_id = client.get_run(parent).info.experiment_id
    failed = client.search_runs([experiment_id], "tags.`aprflow.status` = 'failed'")
    assert sorted(r.data.tags[tracking.TRIAL_TAG] for r in failed) == sorted(ids)
    assert {r.info.status for r in failed} == {"FAILED"}
    assert all("wrote no result" in r.data.tags[tracking.REASON_TAG] for r in failed)
