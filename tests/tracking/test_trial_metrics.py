"""Per-epoch metrics, the recipe and system metrics of trials in a real MLflow server, under one
name per quantity."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from components.common import tracking
from components.common.storage import open_store

EPOCHS = 4
# The trainer's history keys, as its result holds them, and their metric names in MLflow
# (components/common/tracking/README.md).
NAMES = (
    "train_loss",
    "test_loss",
    "top1_error",
    "top5_error",
    "lr",
    "images_per_s",
    "peak_memory_mb",
    "ema_top1_error",
)
SERIES = (
    "train_loss",
    "test_loss",
    "test_error",
    "test_top5_error",
    "lr",
    "images_per_s",
    "peak_memory_mb",
    "ema_test_error",
)
# A resolved recipe as Recipe.to_dict() gives it (a subset of fields is enough here: every
# field goes through the same code).
RECIPE = {
    "name": "rsb_a3",
    "epochs": EPOCHS,
    "lr": 0.008,
    "opt": "lamb",
    "weight_decay": 0.02,
    "mixup": 0.1,
    "cutmix": 1.0,
    "auto_augment": "rand-m6-mstd0.5-inc1",
    "scale": [0.08, 1.0],
    "model_ema": True,
    "warmup_lr": None,
}


def _history() -> dict[str, list[float]]:
    """One value per epoch and series, distinct so that steps can be checked, as a trainer's
    result holds them."""
    return {name: [100.0 * i + epoch for epoch in range(EPOCHS)] for i, name in enumerate(SERIES)}


def _log(parent: str, trial_id: str, **fields) -> tracking.TrialLog:
    """A trial's log with the trainer's history under its metric names, epochs 10 s apart."""
    fields.setdefault("history", tracking.result_series(_history()))
    fields.setdefault("epoch_times", [1_700_000_000.0 + 10 * e for e in range(EPOCHS)])
    return tracking.TrialLog(parent, trial_id, run_name=trial_id, **fields)


def _study(uri: str) -> str:
    name = uuid.uuid4().hex[:8]
    return tracking.start_study_run(uri, f"metrics-{name}", f"s-{name}", {"n_models": 1})


def test_trial_run_has_per_epoch_metrics_recipe_and_engine_options(mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    parent = _study(mlflow_server)
    calls = []
    real = MlflowClient.log_batch

    def counting(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        calls.append((len(metrics), len(params)))
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    params = {"dataset": "digits", "seed": 0} | tracking.recipe_params(RECIPE)
    params |= {"engine.zero_stage": 2, "engine.precision": "bf16"}
    log = _log(parent, "t-epochs", params=params, metrics={"val/top1_error": 12.5}, recipe=RECIPE)
    run_id = tracking.log_trial_run(mlflow_server, log)
    # Params and the whole history in one batched call (besides the tags).
    assert [c for c in calls if c != (0, 0)] == [(len(SERIES) * EPOCHS + 1, 2 + len(RECIPE) + 2)]

    client = MlflowClient(mlflow_server)
    for i, name in enumerate(NAMES):
        history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        assert [(m.step, m.value, m.timestamp) for m in history] == [
            (epoch + 1, 100.0 * i + epoch, 1_700_000_000_000 + 10_000 * epoch)
            for epoch in range(EPOCHS)
        ], name
    run = client.get_run(run_id)
    # One name per quantity: the trainer's own names are not there twice.
    assert not {"test_error", "test_top5_error", "ema_test_error"} & set(run.data.metrics)
    params = run.data.params
    assert params["recipe.lr"] == "0.008" and params["recipe.opt"] == "lamb"
    assert params["recipe.scale"] == "[0.08, 1.0]" and params["recipe.warmup_lr"] == "None"
    assert params["engine.zero_stage"] == "2" and params["engine.precision"] == "bf16"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert tracking.RECIPE_ARTIFACT in artifacts
    local = client.download_artifacts(run_id, tracking.RECIPE_ARTIFACT)
    assert json.loads(Path(local).read_text()) == RECIPE

    # Logging again (a replay) adds no value to any series.
    tracking.log_trial_run(mlflow_server, log)
    assert len(client.get_metric_history(run_id, "top1_error")) == EPOCHS


def test_long_histories_are_split_within_mlflow_batch_limits(mlflow_server):
    from mlflow.tracking import MlflowClient

    parent = _study(mlflow_server)
    history = {f"s{i}": [float(e) for e in range(300)] for i in range(5)}  # 1500 values
    params = {f"p{i}": i for i in range(150)}
    run_id = tracking.log_trial_run(
        mlflow_server, tracking.TrialLog(parent, "t-long", "long", params=params, history=history)
    )
    client = MlflowClient(mlflow_server)
    assert len(client.get_metric_history(run_id, "s4")) == 300
    assert len(client.get_run(run_id).data.params) == 150


def test_queued_trial_keeps_its_recipe_until_replayed(mlflow_server, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    parent = _study(mlflow_server)
    store = open_store(str(tmp_path / "store"))
    log = _log(parent, "t-queued", recipe=RECIPE, params=tracking.recipe_params(RECIPE))
    monkeypatch.setenv(tracking.WAIT_ENV, "1")
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert tracking.log_trial_or_queue(store, "s", down, log) is None
    assert store.get_json(tracking.queue_key("s", "t-queued"))["recipe"] == RECIPE
    monkeypatch.delenv(tracking.WAIT_ENV)  # MLflow is back
    assert tracking.replay_queue(store, "s", mlflow_server, strict=True) == 1
    client = MlflowClient(mlflow_server)
    (run,) = [r for r in tracking.child_runs(mlflow_server, parent)]
    assert run.data.params["recipe.name"] == "rsb_a3"
    assert tracking.RECIPE_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(client.get_metric_history(run.info.run_id, "lr")) == EPOCHS


def _count_published_samples(monkeypatch) -> list[int]:
    """A list that grows by one each time MLflow's monitor publishes a sample (the real
    ``publish_metrics`` still runs): a block can wait for samples instead of a fixed time,
    which a loaded machine overruns (each sample also asks the server for the run)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    published: list[int] = []
    publish = SystemMetricsMonitor.publish_metrics

    def counting(self, metrics):
        publish(self, metrics)
        published.append(self._logging_step)

    monkeypatch.setattr(SystemMetricsMonitor, "publish_metrics", counting)
    return published


def _work_until(published: list[int], samples: int, timeout_s: float = 60.0) -> None:
    """CPU work (something to sample) until ``samples`` samples were published."""
    deadline = time.monotonic() + timeout_s
    while len(published) < samples:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(published)} of {samples} system-metric samples")
        sum(i * i for i in range(10_000))


def test_live_run_logs_system_metrics_while_the_block_runs(mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    published = _count_published_samples(monkeypatch)
    parent = _study(mlflow_server)
    client = MlflowClient(mlflow_server)
    with tracking.live_run(mlflow_server, parent, "chunk-0", {"aprflow.chunk": "0"}) as run_id:
        assert client.get_run(run_id).info.status == "RUNNING"
        _work_until(published, 2)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "chunk-0"
    assert run.data.tags[tracking.PARENT_TAG] == parent
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2 and all(0.0 <= m.value <= 100.0 for m in cpu)
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    steps = max(m.step for m in cpu)

    # A re-run of the chunk resumes the same run and its steps; a failure ends it FAILED.
    with pytest.raises(RuntimeError), tracking.live_run(mlflow_server, parent, "chunk-0") as again:
        assert again == run_id
        _work_until(published, len(published) + 1)
        raise RuntimeError("a chunk that failed")
    assert client.get_run(run_id).info.status == "FAILED"
    later = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert max(m.step for m in later) > steps and len(later) > len(cpu)
    # Not a trial: the study's trial links ignore it.
    assert tracking.trial_run_links(mlflow_server, parent) == {}


def test_live_run_without_mlflow_runs_the_block(monkeypatch):
    monkeypatch.setenv(tracking.WAIT_ENV, "1")
    started = time.monotonic()
    ran = []
    with tracking.live_run("http://127.0.0.1:9", "no-parent", "chunk-0") as run_id:
        ran.append(run_id)
    assert ran == [None] and time.monotonic() - started < 15


def test_result_metrics_carry_each_evaluation_once():
    result = {
        "top1_error": 20.0,
        "top5_error": 5.0,
        "test_loss": 0.9,
        "train_images_per_s": 100.0,
        "wall_time_s": 3.5,
        "oom_retries": 1,
        "flops": None,
        "status": "ok",
        "history": {"test_error": [30.0, 20.0], "images_per_s": [90.0, 110.0]},
        "evaluations": {
            "test": {"top1_error": 20.0, "top5_error": 5.0, "loss": 0.9},
            "imagenet_v2": {"top1_error": 31.0, "top5_error": 9.0, "loss": 1.4},
        },
    }
    # The final test error, loss and throughput are the last epoch of their series.
    assert tracking.result_metrics(result) == {
        "wall_time_s": 3.5,
        "oom_retries": 1,
        "imagenet_v2/top1_error": 31.0,
        "imagenet_v2/top5_error": 9.0,
        "imagenet_v2/loss": 1.4,
    }
    assert tracking.result_series(result["history"]) == {
        "top1_error": [30.0, 20.0],
        "images_per_s": [90.0, 110.0],
    }


def test_runs_ended_on_a_server_print_nothing_to_stdout(mlflow_server, monkeypatch, capfd):
    """Stdout carries results only: MLflow prints "View run ... / View experiment ..." to
    stdout whenever a run ends against a server unless MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
    is set (mlflow/mlflow v3.17.2: mlflow/tracking/_tracking_service/client.py, lines
    755-786), which opening aprflow's client does."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    parent = _study(mlflow_server)
    tracking.log_trial_run(mlflow_server, _log(parent, "t-quiet"))
    assert "View run" not in capfd.readouterr().out
