"""The seed study pipeline: K seeds of one recipe and one architecture, every checkpoint
evaluated on two or more test sets; how much a seed moves the error on each, and whether the
seed that looks good on one test set looks good on another.

    data ─────────┐
                  ├─ plan ─ list_chunks ─ ParallelFor(chunk) ─ train_chunk ─ Collected ─ analyze
    sample (n=0) ─┘

Wightman, Touvron, Jégou 2021, "ResNet strikes back: An improved training procedure in timm",
arXiv 2110.00476, §5: 100 seeds of ResNet-50 under procedure A2, the spread of top-1 on
ImageNet-val and on ImageNet-V2 and their weak correlation across seeds.

The apr-study's tasks, reused: ``prepare_datasets`` materialises the trained datasets and
``plan_study`` their extra test sets (``dataset_settings.<name>.test_sets``: datasets with the
same classes; every checkpoint is also evaluated on its own test split and, when its dataset
has one, its validation split); ``sample_architectures`` samples nothing (``n_models`` 0) and
the plan trains the one ``architecture`` with seeds 0 ... ``n_seeds`` - 1; the chunked GPU
fan-out of pipelines/training.py trains them (trials already in the store, e.g. an apr-study's
seed 0, are reused); ``analyze_seed_study`` reports the std across seeds per test set and the
correlation across seeds between test sets, with intervals (components/analyze/seeds.py).

Compiled into ``pipelines/compiled/seed_study.yaml`` for a cluster (GPU tasks as the other
pipelines'); ``aprflow run seed-study --config pipelines/configs/seed_study.toy.yaml`` runs it
with kfp.local.
"""

from typing import NamedTuple

from kfp import dsl

from components.analyze.component import analyze_seed_study
from components.data.component import prepare_datasets
from components.sample.component import sample_architectures
from components.train.component import plan_study
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, PROFILE, S3_SECRET
from pipelines.training import train_chunks


@dsl.pipeline(
    name="seed-study",
    description="Train one architecture with one recipe under K seeds, evaluate every "
    "checkpoint on two or more test sets, and report the spread across seeds per test set and "
    "the correlation across seeds between test sets, with intervals (ResNet strikes back, §5).",
)
def seed_study(
    study_name: str = "seed-study",
    architecture: str = "resnet10t",
    n_seeds: int = 8,
    datasets: list = ["shapes"],  # noqa: B006 - KFP reads the default
    dataset_settings: dict = {"shapes": {"test_sets": ["shapes_v2"]}},  # noqa: B006
    resolution: int = 16,
    recipe: str = "apr_tiny",
    epochs: int = 0,
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
    data_seed: int = 0,
    engine: str = "torch",
    zero_stage: int = 0,
    precision: str = "auto",
    device: str = "auto",
    gpus_per_trial: str = "1",
    trials_per_gpu: int = 1,
    task_cpu: str = str(PROFILE.train_cpu),
    chunk_size: int = 0,
    max_attempts: int = 2,
    compile_model: bool = False,
    trial_timeout_s: int = 0,
    n_bootstrap: int = 200_000,
    best_models: int = 1,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("StudyOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        study_name: MLflow experiment name and study-id prefix.
        architecture: the one architecture: a timm model name (``resnet50``), trained from
            scratch as ``timm.create_model(name, pretrained=False, ...)`` builds it, or an
            AnyNet spec as JSON (``{"depths": [...], "widths": [...], ...}``).
        n_seeds: K, the training seeds 0 ... K - 1 (at least 3: a correlation needs them).
        datasets: the trained dataset(s): built-in names or names built with ``aprflow data
            build``; each one's checkpoints are a seed study of their own.
        dataset_settings: per-dataset settings as the apr-study's; ``test_sets`` names the
            datasets with the same classes each checkpoint is also evaluated on (the second
            test set: ImageNet-V2 for ImageNet, ``shapes_v2`` for ``shapes``).
        resolution: training image side in pixels.
        recipe, epochs, recipe_overrides: the training recipe (``aprflow recipes``), its
            epochs (0 = the recipe's) and fields over its values.
        data_seed: the datasets' splits and the generated images of built-in ones.
        engine, zero_stage, precision, device, gpus_per_trial, trials_per_gpu, task_cpu,
            chunk_size, max_attempts, compile_model, trial_timeout_s: how the trials train,
            as the apr-study's parameters of the same names.
        n_bootstrap: most bootstrap resamples of each correlation's interval (they stop
            earlier once the endpoints are precise to 0.002).
        best_models: the best checkpoints per dataset logged as MLflow models (0 = none).
        store_uri, tracking_uri: '' = from the launcher config (cluster) or local defaults.
        launcher_config_map, s3_secret: names of the chart's launcher ConfigMap and S3 Secret
            in the run's namespace (cluster only; kfp.local ignores them).
    """

    def on_cluster(task: dsl.PipelineTask, cpu, memory: str) -> dsl.PipelineTask:
        return cluster.on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    data = on_cluster(
        prepare_datasets(
            datasets=datasets,
            resolution=resolution,
            seed=data_seed,
            store_uri=store_uri,
            settings=dataset_settings,
        ),
        "1",
        "2Gi",
    )
    # Nothing is sampled: the plan's one architecture is ``architecture``.
    sample = on_cluster(
        sample_architectures(space="anynetx_a", n_models=0, flops_min=0.0, flops_max=0.0, seed=0),
        "1",
        "1Gi",
    )
    plan = on_cluster(
        plan_study(
            specs=sample.outputs["specs"],
            datasets=data.outputs["refs"],
            study_name=study_name,
            recipe=recipe,
            epochs=epochs,
            seeds=[],
            engine=engine,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            device=device,
            gpus_per_trial=gpus_per_trial,
            chunk_size=chunk_size,
            max_parallel_tasks=PROFILE.max_parallel_tasks,
            compile_model=compile_model,
            recipe_overrides=recipe_overrides,
            dataset_settings=dataset_settings,
            seed=data_seed,
            zero_stage=zero_stage,
            precision=precision,
            trial_timeout_s=trial_timeout_s,
            resolution=resolution,
            trials_per_gpu=trials_per_gpu,
            max_attempts=max_attempts,
            architecture=architecture,
            n_seeds=n_seeds,
        ),
        "1",
        "1Gi",
    )
    train = train_chunks(
        on_cluster,
        plan.outputs["study_id"],
        store_uri,
        tracking_uri,
        trials_per_gpu,
        max_attempts,
        gpus_per_trial,
        task_cpu,
    )
    on_cluster(
        analyze_seed_study(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            best_models=best_models,
            n_bootstrap=n_bootstrap,
        ),
        "2",  # the statistics, and the best models' export in a second process
        "2Gi",
    )
    return NamedTuple("StudyOutputs", study_id=str)(plan.outputs["study_id"])
