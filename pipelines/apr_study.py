"""The APR study pipeline: sample architectures, train each on every dataset, analyse.

    data ─┐
          ├─ plan ─ list_trials ─ ParallelFor(trial) ─ train ─ Collected ─ analyze
  sample ─┘

Tasks exchange small values (trial ids, run ids) and KFP artifacts; large data goes through the
artifact store. On a cluster every task reads the store and MLflow settings from the chart's
launcher ConfigMap and S3 Secret (see charts/aprflow), named by the pipeline parameters
``launcher_config_map`` and ``s3_secret`` (defaults: the chart's ``aprflow-launcher`` and
``aprflow-s3``; pass ``s3_secret=NAME`` when the chart was installed with ``s3.existingSecret``).
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineParameterChannel

from components.analyze.component import analyze_study
from components.data.component import prepare_datasets
from components.sample.component import sample_architectures
from components.train.component import list_trials, plan_study, train_trial

LAUNCHER_CONFIG_MAP = "aprflow-launcher"
S3_SECRET = "aprflow-s3"
LAUNCHER_KEYS = (
    "APRFLOW_STORE_URI",
    "APRFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "AWS_DEFAULT_REGION",
)
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _on_cluster(
    task: dsl.PipelineTask,
    cpu: str,
    memory: str,
    launcher_config_map: str | PipelineParameterChannel = LAUNCHER_CONFIG_MAP,
    s3_secret: str | PipelineParameterChannel = S3_SECRET,
) -> dsl.PipelineTask:
    """Resources, the launcher config and S3 credentials as environment, and no KFP caching.

    The ConfigMap and Secret names may be pipeline parameters (kfp-kubernetes resolves them when
    the task's pod is created), so one compiled pipeline serves any chart install.
    KFP caching is off because trials are idempotent by their own content hash (a finished
    trial is reused from the store), and a cached plan could point at a deleted MLflow run.
    """
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    task.set_caching_options(False)
    kubernetes.use_config_map_as_env(
        task, launcher_config_map, config_map_key_to_env={k: k for k in LAUNCHER_KEYS}
    )
    kubernetes.use_secret_as_env(task, s3_secret, secret_key_to_env={k: k for k in SECRET_KEYS})
    return task


@dsl.pipeline(
    name="apr-study",
    description="Sample AnyNetX architectures in a FLOP band, train each on several datasets "
    "and compare the architecture-performance relationship across datasets.",
)
def apr_study(
    study_name: str = "apr-demo",
    space: str = "anynetx_a",
    n_models: int = 8,
    flops_min: float = 150e6,
    flops_max: float = 250e6,
    datasets: list = ["digits", "faces", "shapes"],  # noqa: B006 - KFP reads the default
    resolution: int = 16,
    dataset_settings: dict = {},  # noqa: B006 - KFP reads the default
    recipe: str = "apr_tiny",
    epochs: int = 0,
    seed: int = 0,
    train_seeds: list = [0],  # noqa: B006 - KFP reads the default
    engine: str = "torch",
    reference: str = "",
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("StudyOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        study_name: MLflow experiment name and study-id prefix.
        space: design space (anynetx_a ... anynetx_e, regnet).
        n_models: architectures to sample.
        flops_min, flops_max: FLOP band (multiply-adds at 224x224).
        datasets: dataset names: built-in (digits, faces, shapes) or built with
            ``aprflow data build`` / ``aprflow data subset`` in the study's store.
        resolution: training image side in pixels.
        dataset_settings: per-dataset settings that override the study's, e.g.
            ``{mine: {resolution: 32, recipe: apr_short, epochs: 5, input: stream}}``.
        recipe: training recipe name; epochs: epochs per trial (0 = the recipe's).
        seed: sampling and data-split seed; train_seeds: training seeds.
        engine: training engine.
        reference: reference dataset of the APR comparison ('' = one named imagenet, else the
            dataset with the most models).
        store_uri, tracking_uri: '' = from the launcher config (cluster) or local defaults.
        launcher_config_map, s3_secret: names of the chart's launcher ConfigMap and S3 Secret
            in the run's namespace (cluster only; kfp.local ignores them).
    """

    def on_cluster(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
        return _on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    data = on_cluster(
        prepare_datasets(
            datasets=datasets,
            resolution=resolution,
            seed=seed,
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
        ),
        "1",
        "1Gi",
    )
    trials = on_cluster(
        list_trials(study_id=plan.outputs["study_id"], store_uri=store_uri), "500m", "512Mi"
    )
    with dsl.ParallelFor(trials.output) as trial:
        train = on_cluster(
            train_trial(
                trial=trial,
                store_uri=store_uri,
                tracking_uri=tracking_uri,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "2",
            "4Gi",
        )
    on_cluster(
        analyze_study(
            trial_ids=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            reference=reference,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
        ),
        "1",
        "2Gi",
    )
    return NamedTuple("StudyOutputs", study_id=str)(plan.outputs["study_id"])
