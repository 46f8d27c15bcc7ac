"""The apr-predict pipeline: predict a new dataset's architecture ranking from cheap scores of
an already-trained population, then train k architectures on it to measure the prediction.

    plan ─ list_transfer_chunks ─ ParallelFor(models) ─ transfer_chunk ─ Collected ─ select
      ─ list_chunks ─ ParallelFor(trials) ─ train_chunk ─ Collected ─ analyze

``plan`` reads the population (a study's finished trials, or every one of the store, on the
source datasets) and plans its cheap scores on the target as a transfer study (features of
every model cached in the store by model, weights, dataset version and transform; GPU tasks
in chunks, as the transfer study's); ``select`` turns the scores into predicted rankings
(each cheap score, the source dataset's ranking, random), chooses k architectures stratified
over the predicted ranking (seeded) and plans them as a study's trials on the target with the
population's recipe; ``train_chunk`` trains them (a trial already in the store is reused);
``analyze`` reports Kendall tau and weighted tau of every predictor against the trained
ranking with intervals (n = k), the regret of picking the predicted best, and each
predictor's cost against training (components/predict). Tuggener, Schmidhuber, Stadelmann
2021, "Is it enough to optimize CNN architectures on ImageNet?", arXiv 2103.09108, is why the
source ranking is a baseline to beat.

Compiled into ``pipelines/compiled/apr_predict.yaml`` for a cluster (GPU tasks as the other
pipelines'); ``aprflow run apr-predict --config pipelines/configs/apr_predict.toy.yaml`` runs
it with kfp.local.
"""

from typing import NamedTuple

from kfp import dsl

from components.predict.component import analyze_predict, plan_predict, select_architectures
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, PROFILE, S3_SECRET
from pipelines.training import train_chunks, transfer_chunks


@dsl.pipeline(
    name="apr-predict",
    description="Predict which already-trained architectures will train best on a new dataset "
    "from cheap scores (kNN, linear probe, LogME, LEEP) and the source ranking, train k of "
    "them on it, and measure each prediction (Kendall tau with intervals, regret, cost).",
)
def apr_predict(
    population: str,
    target: str,
    study_name: str = "apr-predict",
    source_datasets: list = [],  # noqa: B006 - KFP reads the default
    k: int = 10,
    scores: list = ["knn", "linear", "logme", "leep"],  # noqa: B006
    seed: int = 0,
    target_resolution: int = 0,
    device: str = "auto",
    n_bootstrap: int = 200_000,
    random_draws: int = 1000,
    feature_chunk_size: int = 0,
    gpus_per_trial: str = "1",
    trials_per_gpu: int = 1,
    task_cpu: str = str(PROFILE.train_cpu),
    chunk_size: int = 0,
    max_attempts: int = 2,
    trial_timeout_s: int = 0,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("PredictOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        population: the trained population: a study id, a study name (its latest study in
            the store, e.g. apr-demo) or trials:all (every finished trial of the store).
        target: the new dataset (built in, or built with ``aprflow data build``).
        study_name: MLflow experiment and study-id prefix.
        source_datasets: the population's datasets to use ([] = every one but the target).
        k: architectures trained from scratch on the target to measure the predictions (3 to
            the population's architectures; all of them gives the whole truth).
        scores: cheap scores: knn (kNN top-1 and top-5 fraction), linear, logme, leep.
        seed: seed of the stratified choice of k, the random predictor and the bootstrap.
        target_resolution: target image side (0 = the population's training resolution).
        device: where features are extracted: auto, cuda or cpu.
        n_bootstrap: bootstrap resamples of the tau intervals; random_draws: random rankings
            of the random predictor's null interval (1 to 100,000).
        feature_chunk_size: models per feature task (0 = 8).
        gpus_per_trial: GPUs per training trial (a string: the backend reads a run-time GPU
            limit only from a string parameter); must match the population's trials.
        trials_per_gpu: trials trained at once in a training task.
        task_cpu: CPU cores a training task requests (a string, as apr-study's).
        chunk_size: trials per training task (0 = about one GPU-hour each, estimated).
        max_attempts: starts of a killed trial before it is failed.
        trial_timeout_s: wall-clock limit of one trial (0 = from the plan's estimate).
        store_uri, tracking_uri: '' = from the launcher config (cluster) or local defaults.
        launcher_config_map, s3_secret: names of the chart's launcher ConfigMap and S3 Secret
            in the run's namespace (cluster only; kfp.local ignores them).
    """

    def on_cluster(task: dsl.PipelineTask, cpu, memory: str) -> dsl.PipelineTask:
        return cluster.on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    plan = on_cluster(
        plan_predict(
            study_name=study_name,
            population=population,
            source_datasets=source_datasets,
            target=target,
            k=k,
            scores=scores,
            seed=seed,
            target_resolution=target_resolution,
            device=device,
            n_bootstrap=n_bootstrap,
            random_draws=random_draws,
            feature_chunk_size=feature_chunk_size,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        "1",
        "2Gi",
    )
    scored = transfer_chunks(
        on_cluster,
        plan.outputs["scores_study_id"],
        plan.outputs["parent_run_id"],
        store_uri,
        tracking_uri,
    )
    select = on_cluster(
        select_architectures(
            score_keys=dsl.Collected(scored.output),
            study_id=plan.outputs["study_id"],
            store_uri=store_uri,
            chunk_size=chunk_size,
            max_parallel_tasks=PROFILE.max_parallel_tasks,
            trial_timeout_s=trial_timeout_s,
            gpus_per_trial=gpus_per_trial,
        ),
        "1",
        "2Gi",
    )
    train = train_chunks(
        on_cluster,
        select.outputs["Output"],
        store_uri,
        tracking_uri,
        trials_per_gpu,
        max_attempts,
        gpus_per_trial,
        task_cpu,
    )
    on_cluster(
        analyze_predict(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        "1",
        "2Gi",
    )
    return NamedTuple("PredictOutputs", study_id=str)(plan.outputs["study_id"])
