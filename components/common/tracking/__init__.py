"""Experiment tracking in MLflow: one parent run per study, one nested run per trial.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (on Kubernetes: the chart's MLflow server),
else the embedded default ``sqlite:///<abs>/runs/mlflow.db``.

What MLflow's views need is written here, in one place:

* every experiment carries ``mlflow.experimentKind = custom_model_development`` (model
  training). MLflow 3.17.2's UI does not choose its view by that tag: a fresh browser opens an
  experiment in the GenAI view until its "Model training" switch is chosen, which the URL
  ``#/experiments/<id>?workflowType=machine_learning`` does
  (tests/tracking/test_mlflow_ui_browser.py);
* a study's parent run holds the study's parameters, its summary metrics and the report files,
  so MLflow's compare view compares two studies;
* a trial's nested run is RUNNING while the trial trains, streams its per-epoch metrics with
  their real timestamps, and ends FINISHED, FAILED or KILLED at the trial's end; it has a
  readable name, the architecture and the recipe fields that apply as params, its dataset as a
  logged input, its checkpoint's URI and the report's columns as tags; one name per quantity
  (README.md in this folder has the table);
* the study's best models are logged as MLflow models and registered (:mod:`.models`).

The modules, one concern each: :mod:`.client` (the URI, reachability, retries),
:mod:`.database` (the local SQLite database), :mod:`.runs` (runs found by their tags, batched
logging), :mod:`.study` (the parent run), :mod:`.trial` and :mod:`.live` (a trial's run, after
and while it trains), :mod:`.queue` (best-effort logging when MLflow is away),
:mod:`.system` (system metrics while a chunk trains), :mod:`.models` (logged models).

Every call is idempotent and bounded: runs are found again by their ``aprflow.*`` tags; every
call is retried with backoff on transient failures and cut off at ``APRFLOW_MLFLOW_WAIT_S``
seconds (default 60), so an outage never hangs a task; under KFP's MLflow plugin
(``MLFLOW_RUN_ID`` set in the task) the study's parent is the plugin's pipeline run and a trial
is logged into the task's run instead of a new one.
"""

from components.common.tracking.client import (
    TRACKING_ENV,
    UI_URL_ENV,
    WAIT_ENV,
    TrackingError,
    check_tracking,
    is_transient,
    open_client,
    resolve_tracking_uri,
    run_url,
    wait_budget,
)
from components.common.tracking.database import prepare_sqlite
from components.common.tracking.live import TrialStream
from components.common.tracking.queue import log_trial_or_queue, queue_key, replay_queue
from components.common.tracking.runs import (
    EXPERIMENT_KIND_TAG,
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
    safe_key,
)
from components.common.tracking.study import finish_study_run, start_study_run, trial_run_links
from components.common.tracking.system import LIVE_TAG, live_run, live_run_in_child
from components.common.tracking.trial import (
    CHECKPOINT_TAG,
    RECIPE_ARTIFACT,
    TrialLog,
    dataset_input,
    dataset_version,
    log_trial_run,
    open_trial_run,
    recipe_params,
    result_metrics,
    result_series,
    trial_run_name,
)

__all__ = [
    "CHECKPOINT_TAG",
    "EXPERIMENT_KIND_TAG",
    "KFP_RUN_TAG",
    "LIVE_TAG",
    "OWNER_TAG",
    "PARENT_TAG",
    "PLUGIN_OWNER",
    "PLUGIN_RUN_ENV",
    "REASON_TAG",
    "RECIPE_ARTIFACT",
    "STATUS_TAG",
    "STUDY_TAG",
    "TRACKING_ENV",
    "TRIAL_TAG",
    "UI_URL_ENV",
    "WAIT_ENV",
    "TrackingError",
    "TrialLog",
    "TrialStream",
    "check_tracking",
    "child_runs",
    "dataset_input",
    "dataset_version",
    "finish_study_run",
    "is_transient",
    "live_run",
    "live_run_in_child",
    "log_trial_or_queue",
    "log_trial_run",
    "open_client",
    "open_trial_run",
    "prepare_sqlite",
    "queue_key",
    "recipe_params",
    "replay_queue",
    "resolve_tracking_uri",
    "result_metrics",
    "result_series",
    "run_url",
    "safe_key",
    "start_study_run",
    "trial_run_links",
    "trial_run_name",
    "wait_budget",
]
