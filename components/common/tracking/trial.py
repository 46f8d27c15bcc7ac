"""A trial's nested run: what a trial logs (:class:`TrialLog`), under one name per quantity.

The run is opened when the trial starts (:func:`open_trial_run`, RUNNING, streamed to by
:class:`~components.common.tracking.live.TrialStream`) and completed from the trial's result
(:func:`log_trial_run`): the same run, found again by its ``aprflow.trial_id`` tag, whether the
trial's process opened it, a killed attempt left it RUNNING, or MLflow was away until a replay.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.common.tracking.client import open_client, with_retries
from components.common.tracking.runs import (
    OWNER_TAG,
    PARENT_TAG,
    PLUGIN_OWNER,
    RUN_NAME_TAG,
    STATUS_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    as_ms,
    create_run_once,
    find_run,
    flat_params,
    is_number,
    log_new,
    plugin_run,
    run_status,
    set_tags,
)

# A trial run's resolved recipe, whole (params hold the fields that apply, cut at MLflow's
# limits).
RECIPE_ARTIFACT = "recipe.json"
# The tag holding the store URI of a trial's checkpoint (its weights).
CHECKPOINT_TAG = "aprflow.checkpoint"
MAX_DIGEST = 36
# A trainer result's per-epoch series (``history`` keys) and their metric names: the name of
# the final value too (its latest value), one name per quantity (components/common/tracking/
# README.md has the table with units).
SERIES = {
    "train_loss": "train_loss",
    "test_loss": "test_loss",
    "test_error": "top1_error",
    "test_top5_error": "top5_error",
    "ema_test_error": "ema_top1_error",
    "lr": "lr",
    "images_per_s": "images_per_s",
    "peak_memory_mb": "peak_memory_mb",
}
# A trainer result's scalars logged as metrics at the trial's last epoch (when present).
SCALARS = (
    "flops",
    "params",
    "flops_trained",
    "params_trained",
    "wall_time_s",
    "micro_batch_size",
    "oom_retries",
    "attempt",
)
# The evaluation of the final weights on the trained dataset's test split: the last value of
# the test series, not logged again.
OWN_TEST_SET = "test"


@dataclass
class TrialLog:
    """What one trial logs to its run; plain JSON (:meth:`to_json`), so that a logging MLflow
    did not take is queued as it is and replayed with its real times.

    Attributes:
        parent_run_id: the study's run.
        trial_id: the trial's content hash; a run with this tag under the parent is reused.
        run_name: shown in the MLflow UI (see :func:`trial_run_name`).
        status: ``ok``, ``diverged`` or ``failed`` (tag ``aprflow.status``).
        killed: the trial's process was killed (out of memory, its time limit): run KILLED.
        params: architecture, dataset, the recipe fields that apply, seed, engine options.
        metrics: scalars of the result (FLOPs, parameters, wall time, evaluations).
        history: per-epoch series by metric name, logged with ``step`` = epoch.
        epoch_times: each epoch's end (Unix seconds): the series' timestamps.
        tags: extra tags (status reason, KFP run id, checkpoint URI, the report's columns).
        dataset: the trial's dataset record, logged as the run's MLflow dataset input.
        dataset_source: the URI of the dataset's manifest.
        recipe: the trial's resolved recipe, whole: the artifact ``recipe.json``.
        started_at, ended_at: the trial's start and end (Unix seconds): the run's times.
    """

    parent_run_id: str
    trial_id: str
    run_name: str
    status: str = "ok"
    killed: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    dataset_source: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The log as JSON-safe data (numpy scalars as numbers)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_plain))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialLog:
        """A log from :meth:`to_json` (keys it does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def steps(self) -> int:
        """Epochs in the history: the step of the result's scalars."""
        return max((len(s) for s in self.history.values()), default=0)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and other number-likes."""
    return value.item() if hasattr(value, "item") else str(value)


def trial_run_name(model: str, dataset: str, recipe: str, seed: int, status: str) -> str:
    """``<model short id>-<dataset>-<recipe>-s<seed>``, plus ``-<status>`` unless ``ok``."""
    name = f"{model[:8]}-{dataset}-{recipe}-s{seed}"
    return name if status == "ok" else f"{name}-{status}"


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A trainer result's scalars as run metrics: :data:`SCALARS`, and each further evaluation
    of the final weights as ``<evaluation>/<metric>`` (``val/top1_error``,
    ``imagenet_v2/loss``); the own test split's is the last epoch of the series."""
    metrics = {key: result[key] for key in SCALARS if is_number(result.get(key))}
    for name, values in (result.get("evaluations") or {}).items():
        if name == OWN_TEST_SET:
            continue
        for key, value in values.items():
            if is_number(value):
                metrics[f"{name}/{key}"] = value
    return metrics


def result_series(history: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """A trainer result's per-epoch history under the metric names of :data:`SERIES`."""
    return {SERIES[key]: list(values) for key, values in history.items() if key in SERIES}


def recipe_params(recipe: Mapping[str, Any], fields: tuple[str, ...] | None = None) -> dict:
    """A resolved recipe as params ``recipe.<field>`` (only ``fields`` when given): an unset
    one (None) as ``None`` so that MLflow's compare view shows it too; lists as JSON, values
    cut at MLflow's 6000 characters (the ``recipe.json`` artifact keeps them whole)."""
    chosen = {k: v for k, v in recipe.items() if fields is None or k in fields}
    return {
        key: "None" if value is None else value
        for key, value in flat_params(chosen, "recipe.").items()
    }


def dataset_version(record: Mapping[str, Any]) -> str:
    """A dataset record's version: ``version`` when it has one, else its ``content_hash``."""
    return str(record.get("version") or record.get("content_hash") or "")


def dataset_input(record: Mapping[str, Any], source_uri: str, context: str = "train"):
    """The MLflow dataset input of a trial's dataset record (name, version and size).

    The digest is the dataset's version (:func:`dataset_version`), so two runs on the same
    data show the same dataset in MLflow; every scalar field of the record goes to the profile.
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


def _trial_run(client, log: TrialLog, adopt: bool, final: bool):
    """``(run, adopted, done)``: the trial's run, found again or created (started at the
    trial's start), or under KFP's MLflow plugin the task's run when no other trial has it;
    ``done`` when ``final`` and the run already ended with this status (nothing to log)."""
    parent = client.get_run(log.parent_run_id)
    experiment = parent.info.experiment_id
    keys = {TRIAL_TAG: log.trial_id, PARENT_TAG: log.parent_run_id}
    run = find_run(client, experiment, **keys)
    if (
        final
        and run is not None
        and run.info.status == run_status(log.status, log.killed)
        and run.data.tags.get(STATUS_TAG) == log.status
    ):
        return run, False, True
    tags = keys | {STUDY_TAG: parent.data.tags.get(STUDY_TAG, "")} | log.tags
    tags[RUN_NAME_TAG] = log.run_name
    adopted = run is not None and run.data.tags.get(OWNER_TAG) == PLUGIN_OWNER
    task_run = plugin_run(client) if run is None and adopt else None
    if (
        task_run is not None
        and task_run.data.tags.get(PARENT_TAG) == log.parent_run_id
        and task_run.data.tags.get(TRIAL_TAG, log.trial_id) == log.trial_id
    ):
        # The plugin's run of this task is the trial's run (the first trial of a chunk task;
        # the chunk's other trials get runs of their own beside it). The plugin ends it.
        run, adopted = task_run, True
    if adopted:
        tags[OWNER_TAG] = PLUGIN_OWNER
    if run is None:
        start = as_ms(log.started_at)
        run = create_run_once(client, experiment, tags, log.run_name, start, **keys)
    set_tags(client, run, tags)
    if log.dataset and not run.inputs.dataset_inputs:
        client.log_inputs(
            run.info.run_id, datasets=[dataset_input(log.dataset, log.dataset_source)]
        )
    return run, adopted, False


def open_trial_run(uri: str, log: TrialLog, wait_s: float | None = None) -> str:
    """Opens the run of a trial that starts training: found again (a resumed or retried trial)
    or created, RUNNING, with its params, tags and dataset input. Returns its id."""

    def open_run() -> str:
        client = open_client(uri)
        run, adopted, _ = _trial_run(client, log, adopt=True, final=False)
        log_new(client, run, params=log.params)
        if STATUS_TAG in run.data.tags:  # an earlier attempt's: this one has no result yet
            client.delete_tag(run.info.run_id, STATUS_TAG)
        if not adopted and run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    return with_retries(open_run, f"opening the MLflow run of trial {log.trial_id}", wait_s)


def log_trial_run(
    uri: str, log: TrialLog, adopt_task_run: bool = True, wait_s: float | None = None
) -> str:
    """Logs a trial's result to its nested run under the study's run and returns the run id.

    A run of the trial that already ended with this status is returned as it is; one opened
    when the trial started, left RUNNING by a killed task, or one whose trial was recomputed to
    another status (a corrupt result set aside), is completed in place: tags and name updated,
    the missing params, metrics, history and input logged, and the run ended (FINISHED,
    FAILED or KILLED: :func:`~components.common.tracking.runs.run_status`) at the trial's end.
    A run made here (MLflow was away while the trial trained) starts at the trial's start.

    Args:
        uri: tracking URI.
        log: what the trial logs.
        adopt_task_run: under KFP's MLflow plugin, log into the task's run when no other trial
            has it (False for loggings replayed or made up by another task, e.g. analyze).
        wait_s: how long to retry MLflow (default: the wait budget).
    """
    return with_retries(
        lambda: _log_trial_run(uri, log, adopt_task_run),
        f"logging trial {log.trial_id} to MLflow",
        wait_s,
    )


def _log_trial_run(uri: str, log: TrialLog, adopt: bool) -> str:
    client = open_client(uri)
    run, adopted, done = _trial_run(client, log, adopt, final=True)
    if done:
        return run.info.run_id
    set_tags(client, run, {STATUS_TAG: log.status})
    log_new(
        client,
        run,
        params=log.params,
        metrics=log.metrics,
        history=log.history,
        times=log.epoch_times,
        step=log.steps,
        at=log.ended_at,
    )
    if log.recipe:
        client.log_dict(run.info.run_id, dict(log.recipe), RECIPE_ARTIFACT)
    if not adopted:
        ended = as_ms(log.ended_at) or int(time.time() * 1000)
        client.set_terminated(run.info.run_id, run_status(log.status, log.killed), ended)
    return run.info.run_id
