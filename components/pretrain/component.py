"""KFP components of the pretraining-factors study: build its variants, plan the transfer of
the pretrained models, analyse."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_pretrain_variants(
    source: str,
    held_out_classes: int,
    images_per_class: list,
    pool_class_counts: list,
    coarse_map: dict,
    budget_images: int,
    budget_class_counts: list,
    targets: list,
    resolution: int,
    seed: int,
    store_uri: str,
    refs: Output[Dataset],
    layout: Output[Dataset],
    summary: Output[HTML],
    equal_steps: bool = True,
    recipe: str = "apr_tiny",
    epochs: int = 0,
    recipe_overrides: dict = {},  # noqa: B006 - KFP reads the default
):
    """Builds the pool of the source's classes, the held-out classes and every variant in the
    store (reusing earlier builds) and materialises the targets.

    Args:
        source: the dataset the variants are drawn from (built in, or built with
            ``aprflow data build``).
        held_out_classes: classes held out of pretraining for the induction test (0: none).
        images_per_class, pool_class_counts, coarse_map, budget_images, budget_class_counts: the
            factors' levels (components/pretrain/variants.py).
        targets: transfer targets (built in or built).
        resolution: training image side in pixels.
        seed: seed of the class draws and per-class samples (and a built-in source's split).
        store_uri: artifact store URI ('' = APRFLOW_STORE_URI or runs/store).
        refs: JSON list of the variants' references, as ``plan_study`` takes them.
        layout: JSON of the study's datasets (:class:`analysis.pretrain_factors.Layout`).
        summary: each dataset's class histogram, sample grid and counts (Kubeflow UI).
        equal_steps: train every variant for as many optimizer steps as the reference (its
            epochs scaled by the reference's training images over its own); False: every
            variant trains the study's epochs.
        recipe, epochs, recipe_overrides: the study's, for the reference's epochs.
    """
    import json

    from components.data.summary import study_summary_html
    from components.pretrain.variants import build_variants, check_design
    from components.train.plan import study_overrides
    from components.train.recipes import resolve_recipe

    design = check_design(
        {
            "held_out_classes": int(held_out_classes),
            # JSON numbers may arrive as floats
            "images_per_class": [int(n) for n in images_per_class],
            "pool_class_counts": [int(k) for k in pool_class_counts],
            "coarse_map": {str(k): str(v) for k, v in coarse_map.items()},
            "budget_images": int(budget_images),
            "budget_class_counts": [int(k) for k in budget_class_counts],
            "targets": [str(t) for t in targets],
        }
    )
    overrides = study_overrides(dict(recipe_overrides), int(epochs))
    reference_epochs = resolve_recipe(recipe, overrides).epochs if equal_steps else 0
    variants, transfer, plan = build_variants(
        source, design, int(seed), int(resolution), store_uri or None, reference_epochs
    )
    with open(refs.path, "w") as f:
        json.dump([ref.to_dict() for ref in variants], f)
    with open(layout.path, "w") as f:
        json.dump(plan.to_dict(), f)
    refs.metadata["datasets"] = {ref.name: ref.content_hash for ref in variants + transfer}
    with open(summary.path, "w") as f:
        f.write(study_summary_html(variants + transfer, store_uri or None))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_pretrain_transfer(
    chunk_trials: list,
    study_id: str,
    layout: Input[Dataset],
    regimes: list,
    k: int,
    finetune_max_steps: int,
    recipe_overrides: dict,
    resolution: int,
    device: str,
    chunk_size: int,
    store_uri: str,
    kfp_run_id: str,
    curve_points: int = 10,
) -> str:
    """Plans the transfer of every finished pretrained model to the targets and the held-out
    classes (a transfer study ``<study_id>-transfer``); returns its study id.

    Args:
        chunk_trials: the training tasks' trial counts (dsl.Collected).
        study_id: from the plan step.
        layout: the data step's layout.
        regimes: knn, linear, finetune.
        k: neighbours of the kNN fraction score.
        finetune_max_steps: cap on fine-tune steps (0 = 20k scaled by dataset size).
        recipe_overrides: fields over the finetune recipe.
        resolution: the side the built-in targets are made at.
        device: where features are extracted and models fine-tuned: auto, cuda or cpu.
        chunk_size: pretrained models per transfer task (0 = 8).
        store_uri: '' = the environment's or the local default.
        kfp_run_id: the Kubeflow run id, tagged on the MLflow runs.
        curve_points: evaluation points of each fine-tune learning curve (0: none).
    """
    import json

    from analysis.pretrain_factors import Layout
    from components.analyze.run import planned_trial_ids
    from components.pretrain.run import plan_transfer
    from components.pretrain.variants import check_regimes
    from components.transfer.study import StudySettings

    with open(layout.path) as f:
        plan = Layout.from_dict(json.load(f))
    settings = StudySettings(
        regimes=check_regimes([str(r) for r in regimes], bool(plan.held_out)),
        k=int(k),
        finetune_max_steps=int(finetune_max_steps) or None,
        recipe_overrides=dict(recipe_overrides),
        device=device,
        curve_points=int(curve_points),
    )
    return plan_transfer(
        planned_trial_ids(store_uri or None, study_id, chunk_trials),
        study_id,
        plan,
        settings,
        int(resolution),
        store_uri or None,
        int(chunk_size),
        kfp_run_id,
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_pretrain_factors(
    chunk_trials: list,
    transfer_keys: list,
    study_id: str,
    transfer_study_id: str,
    parent_run_id: str,
    layout: Input[Dataset],
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Gathers the pretrained models' transfer results and writes the report.

    Outputs go to the Kubeflow UI (HTML report, Markdown summary with its figures, scalar
    metrics, the results table), to ``studies/<study_id>/`` in the artifact store and to the
    study's MLflow parent run, which this task closes.

    Args:
        chunk_trials: the training tasks' trial counts (dsl.Collected).
        transfer_keys: the transfer tasks' table keys (dsl.Collected; every chunk of the
            transfer plan is read).
        study_id, parent_run_id: from the plan step; transfer_study_id: from the transfer plan.
        layout: the data step's layout.
        store_uri, tracking_uri: '' means the environment's or the local defaults.
    """
    import json
    import shutil

    from analysis.pretrain_factors import Layout
    from components.analyze.run import planned_trial_ids, write_task_outputs
    from components.pretrain.run import analyze_to_temp

    with open(layout.path) as f:
        plan = Layout.from_dict(json.load(f))
    numbers, out_dir = analyze_to_temp(
        trial_ids=planned_trial_ids(store_uri or None, study_id, chunk_trials),
        study=study_id,
        transfer_study=transfer_study_id,
        parent_run_id=parent_run_id,
        layout=plan,
        store_uri=store_uri or None,
        tracking_uri=tracking_uri or None,
    )
    write_task_outputs(out_dir, numbers["metrics"], results, report, summary, metrics)
    results.metadata["transfer_chunks"] = len(transfer_keys)
    shutil.rmtree(out_dir)
