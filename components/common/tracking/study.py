"""A study's parent run: opened with the study's config, finished with its report."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.common.tracking.client import open_client, run_url, with_retries
from components.common.tracking.runs import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FINISHED_STATES,
    KFP_RUN_TAG,
    OWNER_TAG,
    PARENT_TAG,
    PLUGIN_OWNER,
    PLUGIN_RUN_ENV,
    REASON_TAG,
    STATUS_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    child_runs,
    create_run_once,
    experiment_id,
    find_run,
    flat_params,
    log_new,
    plugin_run,
    run_status,
)
from components.common.tracking.system import LIVE_TAG


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
        params: the study's parameters beyond its config (population, resolved recipe, ...).
        kfp_run_id: tagged on the run.
        config: the full resolved study config: logged as ``config.<key>`` params and as the
            artifact ``config.json`` (whole, whatever the param length limit cuts).
        tags: extra tags (e.g. ``aprflow.kind``).
    """
    return with_retries(
        lambda: _start_study_run(uri, experiment, study_id, params, kfp_run_id, config, tags),
        f"opening the MLflow run of study {study_id}",
    )


def _start_study_run(uri, experiment, study_id, params, kfp_run_id, config, tags) -> str:
    client = open_client(uri)
    all_tags = {STUDY_TAG: study_id, KFP_RUN_TAG: kfp_run_id, "aprflow.kind": "study"}
    all_tags |= dict(tags or {})
    task_run = plugin_run(client)
    if task_run is not None:
        # KFP's MLflow plugin opened a run for the pipeline run and nested this task's run in
        # it: that pipeline run is the study's parent (the plugin ends it, not aprflow).
        run = client.get_run(task_run.data.tags.get(PARENT_TAG) or task_run.info.run_id)
        found = client.get_experiment(run.info.experiment_id)
        if EXPERIMENT_KIND_TAG not in found.tags:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        for key, value in all_tags.items():
            if run.data.tags.get(key) != value and value:
                client.set_tag(run.info.run_id, key, value)
    else:
        experiment_key = experiment_id(client, experiment)
        # Not nested: a trial's run carries its study's tag too, and the run of a trial reused
        # from another study starts when the trial trained, before this study's run.
        keys = {STUDY_TAG: study_id, PARENT_TAG: None}
        run = find_run(client, experiment_key, **keys)
        if run is None:
            run = create_run_once(client, experiment_key, all_tags, study_id, **keys)
    all_params = dict(params)
    if config is not None:
        all_params |= flat_params(config, "config.")
        client.log_dict(run.info.run_id, dict(config), "config.json")
    log_new(client, run, params=all_params)
    return run.info.run_id


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

    Nested runs still RUNNING (their task was killed while training or logging) are ended, so
    no run of a finished study stays RUNNING: their ``aprflow.status`` tag (set by the trial's
    final logging) decides FINISHED or FAILED; a run without one was killed before it logged
    its result: KILLED, tagged ``aprflow.status = failed`` with the reason; the tag
    ``aprflow.logging = incomplete`` says that metrics may be missing. A chunk's system-metrics
    run (:func:`~components.common.tracking.system.live_run`) left RUNNING by a killed chunk is
    ended KILLED.

    Args:
        uri: tracking URI.
        run_id: the study's parent run.
        metrics: study-level scalars (every finite number is logged under an MLflow-safe key;
            other values are left out).
        artifact_dir: folder logged as the run's ``report/`` artifacts (HTML, summary JSON,
            results table, figures).
        params: params known only after the analysis (the reference dataset, top-k).
    """
    with_retries(
        lambda: _finish_study_run(uri, run_id, metrics, artifact_dir, params),
        f"finishing the MLflow run {run_id} of the study",
    )


def _finish_study_run(uri, run_id, metrics, artifact_dir, params) -> None:
    client = open_client(uri)
    log_new(client, client.get_run(run_id), params=params, metrics=metrics)
    if artifact_dir is not None:
        client.log_artifacts(run_id, str(artifact_dir), artifact_path="report")
    plugin = bool(os.environ.get(PLUGIN_RUN_ENV))
    for child in child_runs(uri, run_id):
        tags = child.data.tags
        if plugin and (TRIAL_TAG not in tags or tags.get(OWNER_TAG) == PLUGIN_OWNER):
            continue  # a run of KFP's MLflow plugin: the plugin ends it with its task
        if child.info.status in FINISHED_STATES:
            continue
        if LIVE_TAG in tags:
            client.set_terminated(child.info.run_id, "KILLED")  # its chunk was killed
            continue
        status = tags.get(STATUS_TAG)
        if status is None:
            client.set_tag(child.info.run_id, STATUS_TAG, "failed")
            client.set_tag(child.info.run_id, REASON_TAG, "its task ended before logging")
        client.set_tag(child.info.run_id, "aprflow.logging", "incomplete")
        ended = run_status(status or "failed", killed=status is None)
        client.set_terminated(child.info.run_id, ended)
    if not plugin:  # KFP's MLflow plugin ends its pipeline run itself
        client.set_terminated(run_id, "FINISHED")
