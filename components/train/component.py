"""KFP components: plan a study's trials, and train one trial."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_study(
    specs: Input[Dataset],
    datasets: Input[Dataset],
    study_name: str,
    recipe: str,
    epochs: int,
    seeds: list,
    engine: str,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
) -> NamedTuple("PlanOutputs", study_id=str, parent_run_id=str):
    """Plans every (architecture x dataset x seed) trial and opens the MLflow parent run.

    The trial list goes to the store (``studies/<study_id>/trials.json``); ``list_trials``
    returns it for the fan-out.

    Args:
        specs: architecture specs (JSONL, from the sample component).
        datasets: dataset references (JSON, from the data component).
        study_name: MLflow experiment and study name.
        recipe: training recipe name.
        epochs: epochs per trial (0 = the recipe's own).
        seeds: training seeds.
        engine: training engine ('torch').
        store_uri, tracking_uri: '' means the environment's (APRFLOW_STORE_URI,
            MLFLOW_TRACKING_URI) or the local defaults.
        kfp_run_id: tagged on the MLflow runs.
    """
    import json
    from collections import namedtuple

    from components.sample.spec_io import read_specs_jsonl
    from components.train.run import plan_study as plan

    with open(datasets.path) as f:
        refs = json.load(f)
    architectures = [spec.to_dict() for spec in read_specs_jsonl(specs.path)]
    _, study, parent = plan(
        architectures,
        refs,
        study_name,
        recipe,
        {"epochs": int(epochs)} if int(epochs) else {},
        [int(s) for s in seeds],  # JSON numbers may arrive as floats
        engine,
        store_uri or None,
        tracking_uri or None,
        kfp_run_id,
    )
    return namedtuple("PlanOutputs", ["study_id", "parent_run_id"])(study, parent)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_trials(study_id: str, store_uri: str) -> list:
    """Returns the study's planned trials as loop items ``{"study_id": ..., "trial_id": ...}``.

    A separate task, and items that carry the study id, because kfp.local (2.17) iterates only
    over a task's single ``Output`` and hands the loop item to every task-output parameter of
    the loop body; so the body takes nothing but the item and pipeline parameters.
    """
    from components.common.storage import open_store
    from components.train.plan import load_trial_ids

    ids = load_trial_ids(open_store(store_uri or None), study_id)
    return [{"study_id": study_id, "trial_id": trial_id} for trial_id in ids]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_trial(
    trial: dict,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
    metrics: Output[Metrics],
) -> str:
    """Trains one planned trial (reusing a finished one) and logs it to MLflow.

    A failing or diverging architecture is recorded with its status and the task still
    succeeds, so that the rest of the study runs. Returns the trial id for the gather step.

    Args:
        trial: a ``list_trials`` item.
        store_uri, tracking_uri: '' means the environment's or the local defaults.
        kfp_run_id: tagged on the MLflow run.
    """
    from components.train.run import train_trial as train

    result = train(
        trial["trial_id"], trial["study_id"], store_uri or None, tracking_uri or None, kfp_run_id
    )
    metrics.log_metric("trial_ok", 1.0 if result["status"] == "ok" else 0.0)
    for key in ("top1_error", "flops", "params", "wall_time_s"):
        if result.get(key) is not None:
            metrics.log_metric(key, float(result[key]))
    return result["trial_id"]
