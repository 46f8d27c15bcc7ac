"""The APR study pipeline: sample architectures (and name timm models), train each on every
dataset, analyse.

    data ─┐
          ├─ plan ─ list_chunks ─ ParallelFor(chunk) ─ train_chunk ─ Collected ─ analyze
  sample ─┘

The trials are grouped into chunks (components/train/chunk.py), one GPU task per chunk, so a
500 x 9 study is tens of training pods, not thousands. The committed compiled YAML is the
cluster one: the training task runs in the GPU image and requests ``gpus_per_trial`` GPUs on
the nodes and with the tolerations of the cluster profile (pipelines/configs/cluster.yaml,
read at compile time, like the loop's parallelism ``max_parallel_tasks``: Kubeflow Pipelines
2.17 takes only a literal number there). kfp.local ignores resources; there ``device: auto``
trains on the CPU and says so in each result.

Tasks exchange small values (trial ids, run ids) and KFP artifacts; large data goes through the
artifact store. On a cluster every task reads the store and MLflow settings from the chart's
launcher ConfigMap and S3 Secret (see charts/aprflow), named by the pipeline parameters
``launcher_config_map`` and ``s3_secret`` (defaults: the chart's ``aprflow-launcher`` and
``aprflow-s3``; pass ``s3_secret=NAME`` when the chart was installed with ``s3.existingSecret``).
"""

from typing import NamedTuple

from kfp import dsl

from components.analyze.component import analyze_study
from components.data.component import prepare_datasets
from components.sample.component import sample_architectures
from components.train.component import plan_study
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, PROFILE, S3_SECRET
from pipelines.training import train_chunks


@dsl.pipeline(
    name="apr-study",
    description="Sample AnyNetX architectures in a FLOP band, train each on several datasets "
    "and compare the architecture-performance relationship across datasets.",
)
def apr_study(
    study_name: str = "apr-demo",
    space: str = "anynetx_a",
    n_models: int = 8,
    architectures: list = [],  # noqa: B006 - KFP reads the default
    flops_min: float = 150e6,
    flops_max: float = 250e6,
    datasets: list = ["digits", "faces", "shapes"],  # noqa: B006 - KFP reads the default
    resolution: int = 16,
    dataset_settings: dict = {},  # noqa: B006 - KFP reads the default
    recipe: str = "apr_tiny",
    epochs: int = 0,
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
    reference: str = "",
    top_k: int = 0,
    test_noise: str = "auto",
    best_models: int = 3,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("StudyOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        study_name: MLflow experiment name and study-id prefix.
        space: design space (anynetx_a ... anynetx_e, regnet).
        n_models: architectures to sample (0: the named ``architectures`` only).
        architectures: timm models trained beside the sampled AnyNets, by name (e.g.
            ``[resnet18, deit_tiny_patch16_224]``), randomly initialised as
            ``timm.create_model(name, pretrained=False, num_classes=..., drop_path_rate=...)``
            builds them, with timm's own stem at every resolution; an AnyNet spec as JSON
            is accepted too. Their results carry the name as the model id.
        flops_min, flops_max: FLOP band (multiply-adds at 224x224).
        datasets: dataset names: built-in (digits, faces, shapes) or built with
            ``aprflow data build`` / ``aprflow data subset`` in the study's store.
        resolution: training image side in pixels.
        dataset_settings: per-dataset settings that override the study's, e.g.
            ``{mine: {resolution: 32, recipe: apr_short, epochs: 5, input: stream,
            recipe_overrides: {lr: 0.05}, test_sets: [mine_v2]}}`` (test_sets: datasets with
            the same classes whose test split the trials are also evaluated on).
        recipe: training recipe name (recipes/*.yaml, ``aprflow recipes``); epochs: epochs
            per trial (0 = the recipe's).
        recipe_overrides: recipe fields over the recipe's values, JSON in the Kubeflow UI,
            e.g. ``{"lr": 0.05, "mixup": 0.2}`` (``aprflow run --set recipe.lr=0.05``).
        seed: architecture sampling seed; data_seed: the datasets' splits (and the generated
            images of built-in ones, and the extra test sets); train_seeds: training seeds.
            Three seeds, so that other architectures can be drawn on the same data and the
            same architectures on other splits.
        engine: training engine (torch, deepspeed).
        zero_stage: DeepSpeed ZeRO stage 0-2 (engine deepspeed); precision: auto (bf16 on a
            GPU, fp32 on the CPU), fp32, bf16 or fp16 (GPU). Both are part of the trial id.
        device: auto (the GPU when there is one, recorded per trial), cuda (fail without a
            GPU) or cpu.
        gpus_per_trial: GPUs (processes, torchrun) per trial and per training task; more than
            one needs engine deepspeed and at most the profile's gpus_per_node. A string
            ("1", "2"): the backend reads a run-time GPU limit only from a string parameter.
        trials_per_gpu: trials trained at once in a training task (packing small models).
        task_cpu: CPU cores a training task requests (a string: the backend reads a run-time
            CPU request from a string parameter). Left at the default, ``aprflow run`` and
            ``aprflow submit`` set it to the profile's train_cpu x gpus_per_trial; with
            ``kfp run create`` scale it yourself (e.g. "16" for 2 GPUs).
        chunk_size: trials per training task (0 = about one GPU-hour each, estimated).
        max_attempts: starts of a trial whose process is killed (OOM) before it is failed.
        compile_model: torch.compile each model (engine torch; kernels cached per architecture
            shape in the training pod, TORCHINDUCTOR_CACHE_DIR; part of the trial id).
        trial_timeout_s: wall-clock limit of one trial; a trial past it (a hung NCCL or
            data-loader) is recorded failed and its GPU freed (0 = from the plan's estimate).
        reference: reference dataset of the APR comparison ('' = one named imagenet, else the
            dataset with the most models).
        top_k: the best models per dataset that the top-k statistics compare (0 = a quarter
            of the models, at most 15: Tuggener et al.'s top-15 of 500).
        test_noise: the intervals include the noise of each dataset's finite test split
            (auto, binomial: a binomial draw of each model's error per resample; none: the
            models are resampled only); the report says which.
        best_models: the best trials per dataset (lowest top-1 error) logged as MLflow models
            and registered as versions of ``<study id>-<dataset>``; the report's "Best models"
            table links them (0 = none, at most 50).
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
            datasets=data.outputs["refs"],
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
            dataset_settings=dataset_settings,
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
            reference=reference,
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
        analyze_study(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            reference=reference,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            best_models=best_models,
            top_k=top_k,
            test_noise=test_noise,
        ),
        "2",  # the statistics, and the best models' export in a second process
        "2Gi",
    )
    return NamedTuple("StudyOutputs", study_id=str)(plan.outputs["study_id"])
