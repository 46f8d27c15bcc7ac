"""The transfer study pipeline: rank many pretrained models cheaply, fine-tune them, and
measure whether the cheap ranking predicts fine-tuning (Kornblith, Shlens, Le 2019, arXiv
1805.08974; Huh, Agrawal, Efros 2016, arXiv 1608.08614).

    plan ─ list_chunks ─ ParallelFor(chunk of models) ─ transfer_chunk ─ Collected ─ analyze

``plan`` materialises the target datasets, reads the model list (timm names with weights from
files or s3://, ``trial:<id>``, ``trials:all``) and groups the models into chunks, as the APR
study groups trials; each chunk task runs in the GPU image and evaluates its models on every
target and regime (features cached in the store by model, weights hash, dataset version and
transform), so a re-run recomputes only missing chunks. ``analyze`` compares every cheap score
with fine-tuned accuracy (Kendall tau, weighted tau, bootstrap intervals, cost) and every
regime with the source accuracy (log-odds Pearson r, Spearman), and closes the MLflow parent
run under which every (model, dataset, regime) is a nested run.

Compiled into ``pipelines/compiled/transfer_study.yaml`` (``aprflow compile``) for a cluster;
tests run it with kfp.local. The same steps without KFP: ``aprflow transfer study --models
models.csv --datasets digits``.
"""

from typing import NamedTuple

from kfp import dsl

from components.transfer.component import (
    analyze_transfer_study,
    plan_transfer_study,
)
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, S3_SECRET
from pipelines.training import transfer_chunks


@dsl.pipeline(
    name="transfer-study",
    description="Score many pretrained models on target datasets with cheap proxies (kNN, "
    "linear probe, LogME, LEEP), fine-tune and train from scratch, and measure how well the "
    "cheap ranking predicts the fine-tuned one.",
)
def transfer_study(
    model_list: str,
    study_name: str = "transfer",
    datasets: list = ["digits"],  # noqa: B006 - KFP reads the default
    resolution: int = 32,
    regimes: list = ["knn", "linear", "logme", "leep", "finetune"],  # noqa: B006
    input_size: int = 0,
    k: int = 5,
    allow_download: bool = False,
    finetune_max_steps: int = 0,
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
    seed: int = 0,
    device: str = "auto",
    chunk_size: int = 0,
    n_bootstrap: int = 200_000,
    max_overlap: float = 0.01,
    logme_variant: str = "paper",
    curve_points: int = 10,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("TransferOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        model_list: model list CSV (path, s3://bucket/key or the text itself): columns
            ``model[,weights,source_dataset,source_top1,unit]``; a ``hub:`` row (or the
            list as one such row) is every timm model within a budget, e.g.
            ``hub:*?max_params=30M``; see components/transfer.
        study_name: MLflow experiment and study-id prefix.
        datasets: target datasets (built-in or built with ``aprflow data build``).
        resolution: side of the built-in targets.
        regimes: knn, linear, logme, leep, finetune, scratch.
        input_size: square input side for every model (0 = each model's pretrained_cfg).
        k: neighbours of the kNN fraction score.
        allow_download: let timm download ``hub`` weights.
        finetune_max_steps: cap on fine-tune/scratch steps (0 = 20k scaled by dataset size).
        recipe_overrides: fields over the finetune and scratch recipes (JSON in the Kubeflow
            UI), e.g. ``{"lr_grid": [0.01, 0.1], "batch_size": 128}``.
        seed: seed of random weights, new heads and batch order (not of any data split).
        device: auto, cuda or cpu.
        chunk_size: models per chunk task (0 = 8).
        n_bootstrap: the most bootstrap resamples of an interval (fewer once its endpoints
            are precise to 0.002).
        max_overlap: largest share of a target's test images that may be among a model's
            training images, compared by image content (a trial's training split, or the
            ``source_hashes`` file of pretrained weights); a pair above it is refused.
        logme_variant: paper (the evidence over all feature dimensions, as the LogME paper
            writes it) or reference (the authors' implementation, which differs when a
            dataset has fewer images than feature dimensions).
        curve_points: test-accuracy points of each fine-tune / scratch learning curve
            (0: none).
        store_uri, tracking_uri: '' = the launcher config (cluster) or the local defaults.
        launcher_config_map, s3_secret: the chart's ConfigMap and Secret (cluster only).
    """

    def on_cluster(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
        return cluster.on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    plan = on_cluster(
        plan_transfer_study(
            study_name=study_name,
            model_list=model_list,
            datasets=datasets,
            resolution=resolution,
            regimes=regimes,
            input_size=input_size,
            k=k,
            allow_download=allow_download,
            finetune_max_steps=finetune_max_steps,
            recipe_overrides=recipe_overrides,
            seed=seed,
            device=device,
            chunk_size=chunk_size,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            max_overlap=max_overlap,
            logme_variant=logme_variant,
            curve_points=curve_points,
        ),
        "1",
        "2Gi",
    )
    evaluate = transfer_chunks(
        on_cluster,
        plan.outputs["study_id"],
        plan.outputs["parent_run_id"],
        store_uri,
        tracking_uri,
    )
    on_cluster(
        analyze_transfer_study(
            chunk_keys=dsl.Collected(evaluate.output),
            study_id=plan.outputs["study_id"],
            parent_run_id=plan.outputs["parent_run_id"],
            n_bootstrap=n_bootstrap,
            store_uri=store_uri,
            tracking_uri=tracking_uri,
        ),
        "1",
        "2Gi",
    )
    return NamedTuple("TransferOutputs", study_id=str)(plan.outputs["study_id"])
