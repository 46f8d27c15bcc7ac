"""KFP components: plan a study's trials and chunks, train one chunk (or one trial)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE, GPU_IMAGE


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
    plan: Output[Markdown],
    device: str = "auto",
    gpus_per_trial: str = "1",
    chunk_size: int = 0,
    max_parallel_tasks: int = 16,
    compile_model: bool = False,
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
    dataset_settings: dict = {},  # noqa: B006 - KFP reads the default
    seed: int = 0,
    sample_seed: int = 0,
    zero_stage: int = 0,
    precision: str = "auto",
    trial_timeout_s: int = 0,
    space: str = "",
    n_models: int = 0,
    flops_min: float = 0.0,
    flops_max: float = 0.0,
    resolution: int = 0,
    trials_per_gpu: int = 1,
    max_attempts: int = 1,
    reference: str = "",
    architectures: list = [],  # noqa: B006 - KFP reads the default
    architecture: str = "",
    n_seeds: int = 0,
) -> NamedTuple("PlanOutputs", study_id=str, parent_run_id=str):
    """Plans every (architecture x dataset x seed) trial, groups them into chunks and opens
    the MLflow parent run.

    The trial list and the chunks go to the store (``studies/<study_id>/trials.json``,
    ``chunks.json``); ``list_chunks`` returns the chunks for the fan-out; ``plan`` shows the
    chunking in the Kubeflow UI (``1500 trials in 30 chunks: 30 training tasks``).

    Args:
        specs: architecture specs (JSONL, from the sample component; empty with n_models 0).
        datasets: dataset references (JSON, from the data component).
        study_name: MLflow experiment and study name.
        recipe: training recipe name.
        epochs: epochs per trial (0 = the recipe's own; wins over recipe_overrides.epochs).
        seeds: training seeds (unless ``n_seeds`` is set).
        engine: training engine ('torch').
        store_uri, tracking_uri: '' means the environment's (APRFLOW_STORE_URI,
            MLFLOW_TRACKING_URI) or the local defaults.
        kfp_run_id: tagged on the MLflow runs.
        plan: the chunking as Markdown.
        device: auto, cuda or cpu; gpus_per_trial: processes (GPUs) per trial.
        chunk_size: trials per training task (0 = about one GPU-hour each);
            max_parallel_tasks: the loop's parallelism (compiled in), for even chunks.
        compile_model: train ``torch.compile``-d models (engine torch only; part of the
            trial id).
        recipe_overrides: recipe fields over the recipe's values (``{"lr": 0.05}``).
        dataset_settings: per-dataset settings; the plan reads ``recipe_overrides`` and
            ``test_sets`` (the rest reached it through ``datasets``).
        seed: the data seed (extra test sets are materialised with it); sample_seed: the
            architecture sampling seed (logged).
        zero_stage, precision: engine options of every trial (part of the trial id).
        trial_timeout_s: wall-clock limit of one trial (0 = from the plan's estimate).
        space, n_models, flops_min, flops_max, resolution, trials_per_gpu, max_attempts,
            reference: the rest of the pipeline's arguments, logged with the ones above to
            the MLflow parent run as ``config.<key>`` params and ``config.json``. Each is an
            input of its own: the backend pastes a placeholder inside a dict constant into
            the executor input's JSON unescaped (pipelines/backend.py).
        architectures: named architectures trained beside the sampled ones: timm model names
            (``resnet50``) or AnyNet specs as JSON (components.sample.models).
        architecture: one more, after ``architectures`` (the seed study's one architecture:
            a string parameter, as a pipeline parameter inside a list constant reaches the
            backend as unescaped text, pipelines/backend.py).
        n_seeds: when above 0, the training seeds are 0 ... n_seeds - 1 (the seed study's K),
            in place of ``seeds``.
    """
    import json
    from collections import namedtuple

    from components.common.storage import open_store
    from components.sample.models import study_specs
    from components.sample.spec_io import read_specs_jsonl
    from components.train.chunk import load_chunks, plan_markdown
    from components.train.plan import engine_options, study_overrides
    from components.train.run import plan_study as run_plan

    with open(datasets.path) as f:
        refs = json.load(f)
    sampled = [spec.to_dict() for spec in read_specs_jsonl(specs.path)]
    named = [str(a) for a in architectures] + ([architecture] if architecture else [])
    # JSON numbers may arrive as floats.
    train_seeds = list(range(int(n_seeds))) if int(n_seeds) else [int(s) for s in seeds]
    _, study, parent = run_plan(
        study_specs(sampled, named),
        refs,
        study_name,
        recipe,
        study_overrides(recipe_overrides, int(epochs)),
        train_seeds,
        engine,
        store_uri or None,
        tracking_uri or None,
        kfp_run_id,
        device=device,
        gpus=int(gpus_per_trial),
        chunk_size=int(chunk_size),
        max_parallel_tasks=int(max_parallel_tasks),
        config={
            "study_name": study_name,
            "space": space,
            "n_models": int(n_models),
            "flops_min": float(flops_min),
            "flops_max": float(flops_max),
            "resolution": int(resolution),
            "recipe": recipe,
            "epochs": int(epochs),
            "seed": int(sample_seed),
            "data_seed": int(seed),
            "engine": engine,
            "zero_stage": int(zero_stage),
            "precision": precision,
            "device": device,
            "gpus_per_trial": int(gpus_per_trial),
            "trials_per_gpu": int(trials_per_gpu),
            "chunk_size": int(chunk_size),
            "max_attempts": int(max_attempts),
            "compile_model": bool(compile_model),
            "reference": reference,
            "trial_timeout_s": int(trial_timeout_s),
            "architectures": json.dumps([str(a) for a in architectures]),
            "architecture": architecture,
            "n_seeds": int(n_seeds),
        },
        compile_model=bool(compile_model),
        dataset_settings=dict(dataset_settings),
        seed=int(seed),
        engine_options=engine_options(engine, int(zero_stage), precision),
        trial_timeout_s=int(trial_timeout_s),
    )
    with open(plan.path, "w") as f:
        f.write(plan_markdown(load_chunks(open_store(store_uri or None), study)))
    return namedtuple("PlanOutputs", ["study_id", "parent_run_id"])(study, parent)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_chunks(study_id: str, store_uri: str) -> list[dict]:
    """Returns the study's chunks as loop items ``{"study_id": ..., "chunk": i}``.

    The items carry no trial ids (the chunk task reads them from the store), so the workflow
    object stays small; like ``list_trials`` they carry the study id for kfp.local. The return
    type is ``List[dict]``, not ``list``: the loop item is then a ``STRUCT``, which the backend
    hands to ``train_chunk(chunk: dict)`` as it is (a bare ``list`` gives a ``STRING`` item,
    which the driver turns into JSON text and refuses for a dict input; pipelines/backend.py).
    """
    from components.common.storage import open_store
    from components.train.chunk import load_chunks

    chunks = load_chunks(open_store(store_uri or None), study_id)["chunks"]
    return [{"study_id": study_id, "chunk": i} for i in range(len(chunks))]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_chunk(
    chunk: dict,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
    trials_per_gpu: int,
    max_attempts: int,
    gpus_per_trial: str,
    metrics: Output[Metrics],
    task_cpu: str = "1",
) -> int:
    """Trains one chunk's trials, each in a child process, and returns how many it trained.

    Runs in the GPU image. A trial killed in every attempt (OOM, eviction) is recorded
    ``failed`` and the chunk goes on; the task fails only on infrastructure errors. Threads per
    trial come from ``task_cpu``, the task's CPU request.

    Args:
        chunk: a ``list_chunks`` item.
        store_uri, tracking_uri: '' means the environment's or the local defaults.
        kfp_run_id: tagged on the MLflow runs.
        trials_per_gpu: trials trained at once (packing small models on one GPU).
        max_attempts: starts of a killed trial before it is recorded failed.
        gpus_per_trial: processes (GPUs) per trial; more than one runs torchrun. A string,
            as the pipeline parameter that also sets the task's GPU limit.
        task_cpu: the task's CPU request (the pipeline parameter that also sets the pod's
            request); threads per trial = task_cpu // trials at once.

    Returns the chunk's trial count, not the ids: ``analyze_study`` reads the trial list from
    the store, so its executor input stays small for any study size.
    """
    import os

    from components.common.storage import open_store
    from components.train.chunk import ChunkSettings, run_chunk
    from components.train.definition import result_key

    settings = ChunkSettings(
        gpus_per_trial=int(gpus_per_trial),
        trials_per_gpu=int(trials_per_gpu),
        max_attempts=int(max_attempts),
        # The request can exceed the cores this process may use (kfp.local applies the cluster
        # profile's request on a laptop): more torch threads than cores spin against each other.
        cpus=min(int(float(task_cpu)), len(os.sched_getaffinity(0))),
    )
    ids = run_chunk(
        chunk["study_id"],
        int(chunk["chunk"]),
        store_uri or None,
        tracking_uri or None,
        kfp_run_id,
        settings,
    )
    store = open_store(store_uri or None)
    statuses = [store.get_json(result_key(trial_id))["status"] for trial_id in ids]
    metrics.log_metric("trials", float(len(ids)))
    metrics.log_metric("trials_ok", float(statuses.count("ok")))
    metrics.log_metric("trials_failed", float(len(ids) - statuses.count("ok")))
    return len(ids)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_trials(study_id: str, store_uri: str) -> list[dict]:
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
