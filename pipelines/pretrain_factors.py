"""The pretraining-factors pipeline: which choices about the pretraining data change how well
the features transfer?

    variants ─┐
              ├─ plan ─ ParallelFor(chunk) ─ train_chunk ─ Collected ─ plan_transfer
    sample ───┘      ─ ParallelFor(chunk of models) ─ transfer_chunk ─ Collected ─ analyze

Huh, Agrawal, Efros 2016, "What makes ImageNet good for transfer learning?", arXiv 1608.08614:
one CNN pretrained on controlled subsets of ImageNet (fewer images per class, fewer classes,
coarse labels, a fixed image budget split between classes and images per class), transfer
measured on other tasks, and the induction accuracy of coarse-trained features on fine
classes never seen in pretraining.

``prepare_pretrain_variants`` builds a pool of the source's classes, the classes held out of
it and one variant of the pool per factor level inside the run (components/pretrain/
variants.py; re-runs reuse the builds); the apr-study's tasks plan one ``architecture`` on
every variant under ``n_seeds`` seeds and train them in chunks (pipelines/training.py; trials
already in the store are reused by id); ``plan_pretrain_transfer`` makes every finished
pretrained model a ``trial:<id>`` model of a transfer study on the targets and the held-out
classes, whose chunked tasks extract features, probe and fine-tune (components/transfer);
``analyze_pretrain_factors`` reports each level's transfer accuracy with intervals over the
seeds and which choices matter (analysis/pretrain_factors.py), and closes the MLflow parent
run that the plan opened over the trial and transfer runs.

Compiled into ``pipelines/compiled/pretrain_factors.yaml`` for a cluster (GPU tasks as the
other pipelines'); ``aprflow run pretrain-factors --config
pipelines/configs/pretrain_factors.toy.yaml`` runs it with kfp.local.
"""

from typing import NamedTuple

from kfp import dsl

from components.pretrain.component import (
    analyze_pretrain_factors,
    plan_pretrain_transfer,
    prepare_pretrain_variants,
)
from components.sample.component import sample_architectures
from components.train.component import plan_study
from pipelines import cluster
from pipelines.cluster import LAUNCHER_CONFIG_MAP, PROFILE, S3_SECRET
from pipelines.training import train_chunks, transfer_chunks


@dsl.pipeline(
    name="pretrain-factors",
    description="Pretrain one architecture on controlled variants of a dataset (images per "
    "class, number of classes, coarse vs fine labels, a fixed image budget), measure how each "
    "pretrained model transfers (linear probe, fine-tuning) and induces unseen classes, and "
    "report which choices matter, with intervals over seeds (Huh, Agrawal, Efros 2016).",
)
def pretrain_factors(
    study_name: str = "pretrain-factors",
    source: str = "digits",
    held_out_classes: int = 3,
    images_per_class: list = [40, 10],  # noqa: B006 - KFP reads the default
    pool_class_counts: list = [3],  # noqa: B006 - KFP reads the default
    coarse_map: dict = {},  # noqa: B006 - KFP reads the default
    budget_images: int = 0,
    budget_class_counts: list = [],  # noqa: B006 - KFP reads the default
    targets: list = ["shapes"],  # noqa: B006 - KFP reads the default
    architecture: str = "resnet10t",
    n_seeds: int = 3,
    resolution: int = 16,
    recipe: str = "apr_tiny",
    epochs: int = 0,
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
    equal_steps: bool = True,
    data_seed: int = 0,
    regimes: list = ["knn", "linear", "finetune"],  # noqa: B006 - KFP reads the default
    k: int = 5,
    finetune_max_steps: int = 0,
    finetune_overrides: dict = {},  # noqa: B006 - KFP reads the default
    engine: str = "torch",
    zero_stage: int = 0,
    precision: str = "auto",
    device: str = "auto",
    gpus_per_trial: str = "1",
    trials_per_gpu: int = 1,
    task_cpu: str = str(PROFILE.train_cpu),
    chunk_size: int = 0,
    transfer_chunk_size: int = 0,
    max_attempts: int = 2,
    compile_model: bool = False,
    trial_timeout_s: int = 0,
    store_uri: str = "",
    tracking_uri: str = "",
    launcher_config_map: str = LAUNCHER_CONFIG_MAP,
    s3_secret: str = S3_SECRET,
) -> NamedTuple("StudyOutputs", study_id=str):
    """Parameters (every one can be set from the Kubeflow UI or ``kfp run create``):

    Args:
        study_name: MLflow experiment name and study-id prefix.
        source: the dataset the variants are drawn from: built in (digits, 10 classes) or
            built with ``aprflow data build`` (e.g. imagenet).
        held_out_classes: classes held out of pretraining (a seeded draw): the induction test
            evaluates every pretrained model on them with their fine labels (0: none).
        images_per_class: the images-per-class levels, training images kept per class of the
            pool (Huh et al.: 500 of ImageNet's ~1,000).
        pool_class_counts: the number-of-classes levels, classes kept of the pool (seeded draws,
            all their images).
        coarse_map: child class -> parent class over the pool's classes (e.g. WordNet
            parents); the coarse-labels level trains on the parents ({}: none).
        budget_images: a fixed total of training images; budget_class_counts: the class
            counts it is split between (K classes x budget_images / K images each).
        targets: the transfer target datasets (built in or built).
        architecture: the one architecture: a timm model name (``resnet50``), or an AnyNet
            spec as JSON.
        n_seeds: training seeds 0 ... n_seeds - 1 of every variant (at least 3: the
            intervals are over seeds).
        resolution: training image side in pixels (the built-in targets' too).
        recipe, epochs, recipe_overrides: the pretraining recipe (``aprflow recipes``), its
            epochs (0 = the recipe's; the reference's, with equal_steps) and fields over its
            values.
        equal_steps: train every variant for as many optimizer steps as the reference (its
            epochs scaled by the reference's training images over its own), so that fewer
            images is not also a shorter schedule; False: every variant trains ``epochs``.
        data_seed: seed of the class draws and per-class samples.
        regimes: how each pretrained model is evaluated on every target: knn, linear,
            finetune (the induction test needs knn or linear).
        k: neighbours of the kNN fraction score.
        finetune_max_steps: cap on fine-tune steps (0 = 20k scaled by dataset size);
            finetune_overrides: fields over the finetune recipe.
        engine, zero_stage, precision, device, gpus_per_trial, trials_per_gpu, task_cpu,
            chunk_size, max_attempts, compile_model, trial_timeout_s: how the trials train,
            as the apr-study's parameters of the same names.
        transfer_chunk_size: pretrained models per transfer task (0 = 8).
        store_uri, tracking_uri: '' = from the launcher config (cluster) or local defaults.
        launcher_config_map, s3_secret: names of the chart's launcher ConfigMap and S3 Secret
            in the run's namespace (cluster only; kfp.local ignores them).
    """

    def on_cluster(task: dsl.PipelineTask, cpu, memory: str) -> dsl.PipelineTask:
        return cluster.on_cluster(task, cpu, memory, launcher_config_map, s3_secret)

    variants = on_cluster(
        prepare_pretrain_variants(
            source=source,
            held_out_classes=held_out_classes,
            images_per_class=images_per_class,
            pool_class_counts=pool_class_counts,
            coarse_map=coarse_map,
            budget_images=budget_images,
            budget_class_counts=budget_class_counts,
            targets=targets,
            resolution=resolution,
            seed=data_seed,
            store_uri=store_uri,
            equal_steps=equal_steps,
            recipe=recipe,
            epochs=epochs,
            recipe_overrides=recipe_overrides,
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
            datasets=variants.outputs["refs"],
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
            seed=data_seed,
            zero_stage=zero_stage,
            precision=precision,
            trial_timeout_s=trial_timeout_s,
            resolution=resolution,
            trials_per_gpu=trials_per_gpu,
            max_attempts=max_attempts,
            reference=source,
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
    transfer_plan = on_cluster(
        plan_pretrain_transfer(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            study_id=plan.outputs["study_id"],
            layout=variants.outputs["layout"],
            regimes=regimes,
            k=k,
            finetune_max_steps=finetune_max_steps,
            recipe_overrides=finetune_overrides,
            resolution=resolution,
            device=device,
            chunk_size=transfer_chunk_size,
            store_uri=store_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ),
        "1",
        "2Gi",
    )
    transfer = transfer_chunks(
        on_cluster,
        transfer_plan.output,
        plan.outputs["parent_run_id"],
        store_uri,
        tracking_uri,
    )
    on_cluster(
        analyze_pretrain_factors(
            chunk_trials=dsl.Collected(train.outputs["Output"]),
            transfer_keys=dsl.Collected(transfer.output),
            study_id=plan.outputs["study_id"],
            transfer_study_id=transfer_plan.output,
            parent_run_id=plan.outputs["parent_run_id"],
            layout=variants.outputs["layout"],
            store_uri=store_uri,
            tracking_uri=tracking_uri,
        ),
        "1",
        "2Gi",
    )
    return NamedTuple("StudyOutputs", study_id=str)(plan.outputs["study_id"])
