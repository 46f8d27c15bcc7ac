"""The class-count pipeline: does the architecture ranking on a few of a dataset's classes
follow the ranking on all of them, and does that agreement fall with the number of classes?

    subsets ─┐
             ├─ plan ─ list_chunks ─ ParallelFor(chunk) ─ train_chunk ─ Collected ─ analyze
    sample ──┘

Tuggener, Schmidhuber, Stadelmann 2021, "Is it enough to optimize CNN architectures on
ImageNet?", arXiv 2103.09108: ImageNet-X, 100, 10, 5 and 2 random ImageNet classes, the APR
of each against ImageNet (Fig. 7), cumulative depth and width against error per subset
(Table 3), and the correlation matrix of every dataset and subset (Fig. 8).

``prepare_class_subsets`` builds the subsets inside the run (``draws`` seeded, nested draws of
each size of ``class_counts`` from ``source``; re-runs reuse the builds:
components/classcount/subsets.py); the apr-study's tasks sample the architectures, plan every
(architecture x dataset x seed) trial and train them in chunks (pipelines/training.py; trials
already in the store are reused by id); ``analyze_class_count`` reports, per size, the APR
correlation with the full set (mean over draws, crossed bootstrap interval over architectures
and draws: analysis/class_count.py), Table 3 and Fig. 8, and closes the MLflow parent run that
the plan opened over the trial runs.

Compiled into ``pipelines/compiled/class_count.yaml`` for a cluster (GPU tasks as the
apr-study's); ``aprflow run class-count --config pipelines/configs/class_count.toy.yaml`` runs
it with kfp.local.
"""

from typing import NamedTuple

from kfp import dsl

from components.classcount.component import analyze_class_count, prepare_class_subsets
from components.sample.component import sample_architectures
from components.train.component import plan_study
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, PROFILE, S3_SECRET
from pipelines.training import train_chunks


@dsl.pipeline(
    name="class-count",
    description="Train the same sampled architectures on a dataset and on seeded subsets of "
    "its classes, and report how the architecture ranking on each number of classes follows "
    "the full set's, with intervals (Tuggener et al.'s ImageNet-X: Fig. 7, Table 3, Fig. 8).",
)
def class_count(
    study_name: str = "class-count",
    source: str = "digits",
    class_counts: list = [5, 2],  # noqa: B006 - KFP reads the default
    draws: int = 3,
    other_datasets: list = [],  # noqa: B006 - KFP reads the default
    space: str = "anynetx_a",
    n_models: int = 12,
    architectures: list = [],  # noqa: B006 - KFP reads the default
    flops_min: float = 150e6,
    flops_max: float = 250e6,
    resolution: int = 16,
    recipe: str = "apr_tiny",
    epochs: int = 0,
    subset_epochs: dict = {},  # noqa: B006 - KFP reads the default
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
    seed: int = 0,
    data_seed: int = 0,
    train_seeds: list = [0],  # noqa: B006 - KFP reads the default
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
    test_noise: str = "auto",
    n_bootstrap: int = 200_000,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("StudyOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        study_name: MLflow experiment name and study-id prefix.
        source: the dataset whose classes are subset: built in (digits has the most, 10) or
            built with ``aprflow data build`` (e.g. imagenet); a built-in one is built as
            ``<source>-<resolution>px`` first.
        class_counts: subset sizes, each below the source's number of classes (Tuggener et
            al.: [100, 10, 5, 2]); subsets are named ``<base>-c<K>-d<draw>``.
        draws: seeded draws of classes per size; draw j of every size is a prefix of one
            class permutation, so the sizes nest within a draw.
        other_datasets: further datasets trained on the same architectures (built in or built), for
            the matrix of every dataset and subset (Fig. 8); [] for none.
        space: design space (anynetx_a ... anynetx_e, regnet).
        n_models: architectures to sample (0: the named ``architectures`` only).
        architectures: timm models trained beside the sampled AnyNets, by name (as the
            apr-study's); Table 3 covers the AnyNets only.
        flops_min, flops_max: FLOP band (multiply-adds at 224x224).
        resolution: training image side in pixels.
        recipe: training recipe name (``aprflow recipes``); epochs: epochs per trial (0 = the
            recipe's); subset_epochs: epochs of the subsets of some sizes, e.g. ``{10: 40, 5:
            40, 2: 40}`` (Tuggener et al. train ImageNet-10, -5 and -2 for 40 epochs; sizes not
            named train ``epochs``); recipe_overrides: recipe fields over the recipe's values.
        seed: architecture sampling seed; data_seed: the seed of the class draws (and of a
            built-in source's split); train_seeds: training seeds.
        engine, zero_stage, precision, device, gpus_per_trial, trials_per_gpu, task_cpu,
            chunk_size, max_attempts, compile_model, trial_timeout_s: how the trials train,
            as the apr-study's parameters of the same names.
        test_noise: the intervals include the noise of each dataset's finite test split
            (auto, binomial) or resample the architectures and draws only (none).
        n_bootstrap: most bootstrap resamples per interval (they stop earlier once the
            endpoints are precise to 0.002).
        store_uri, tracking_uri: '' = from the launcher config (cluster) or local defaults.
        launcher_config_map, s3_secret: names of the chart's launcher ConfigMap and S3 Secret
            in the run's namespace (cluster only; kfp.local ignores them).
    """

    def on_cluster(task: dsl.PipelineTask, cpu, memory: str) -> dsl.PipelineTask:
        return cluster.on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    subsets = on_cluster(
        prepare_class_subsets(
            source=source,
            class_counts=class_counts,
            draws=draws,
            others=other_datasets,
            resolution=resolution,
            seed=data_seed,
            store_uri=store_uri,
            subset_epochs=subset_epochs,
        ),
        "1",
        "2Gi",
    )
    sample = on_cluster(
        sample_architectures(
            space=space, n_models=n_models, flops_min=flops_min, flops_max=flops_max, seed=seed
        ),
        "1",
        "1Gi",
    )
    plan = on_cluster(
        plan_study(
            specs=sample.outputs["specs"],
            datasets=subsets.outputs["refs"],
            study_name=study_name,
            recipe=recipe,
            epochs=epochs,
            seeds=train_seeds,
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
            seed=data_seed,
            sample_seed=seed,
            zero_stage=zero_stage,
            precision=precision,
            trial_timeout_s=trial_timeout_s,
            space=space,
            n_models=n_models,
            flops_min=flops_min,
            flops_max=flops_max,
            resolution=resolution,
            trials_per_gpu=trials_per_gpu,
            max_attempts=max_attempts,
            reference=source,
            architectures=architectures,
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
        analyze_class_count(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            layout=subsets.outputs["layout"],
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            n_bootstrap=n_bootstrap,
            test_noise=test_noise,
        ),
        "1",
        "2Gi",
    )
    return NamedTuple("StudyOutputs", study_id=str)(plan.outputs["study_id"])
