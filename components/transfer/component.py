"""KFP components: transfer evaluation of one backbone, and the transfer study's steps."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from components.common.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_transfer(
    backbone: str,
    datasets: list,
    resolution: int,
    store_uri: str,
    results: Output[Dataset],
    metrics: Output[Metrics],
    methods: str = "knn,linear",
    input_size: int = 0,
    experiment: str = "",
    tracking_uri: str = "",
):
    """Scores a backbone's fixed features with cosine kNN and a linear probe.

    Args:
        backbone: ``trial:<trial_id>`` (a trained trial in the store) or ``timm:<name>``.
        datasets: built-in dataset names.
        resolution: image side at which the datasets are materialised.
        store_uri: artifact store URI ('' = APRFLOW_STORE_URI or runs/store).
        results: tidy CSV ``model,dataset,method,metric,value``.
        metrics: every score as ``<dataset>.<metric>`` (e.g. ``digits.knn_top1``).
        methods: comma-separated evaluations: knn, linear.
        input_size: image side fed to the backbone (0 = the backbone's own).
        experiment: MLflow experiment of the transfer study (one parent run, one nested run
            per dataset x method); '' logs nothing to MLflow.
        tracking_uri: '' = MLFLOW_TRACKING_URI or the local default.
    """
    from components.transfer.run import evaluate_transfer as evaluate
    from components.transfer.run import write_csv

    rows = evaluate(
        backbone,
        [str(d) for d in datasets],
        int(resolution),
        store_uri or None,
        methods,
        input_size=int(input_size) or None,
        experiment=experiment or None,
        tracking_uri=tracking_uri or None,
    )
    write_csv(rows, results.path)
    results.metadata["backbone"] = backbone
    results.metadata["rows"] = len(rows)
    for row in rows:
        metrics.log_metric(f"{row['dataset']}.{row['metric']}", float(row["value"]))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_transfer_study(
    study_name: str,
    model_list: str,
    datasets: list,
    resolution: int,
    regimes: list,
    input_size: int,
    k: int,
    allow_download: bool,
    finetune_max_steps: int,
    recipe_overrides: dict,
    seed: int,
    device: str,
    chunk_size: int,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
    max_overlap: float = 0.01,
    logme_variant: str = "paper",
    curve_points: int = 10,
) -> NamedTuple("TransferPlan", study_id=str, parent_run_id=str):
    """Materialises the targets, reads the model list, chunks it, opens the MLflow parent.

    Args:
        model_list: model list CSV: a path, ``s3://bucket/key``, or the text itself.
        input_size: 0 = each model's pretrained_cfg; finetune_max_steps: 0 = the scaled 20k.
        recipe_overrides: fields over the finetune and scratch recipes, e.g.
            ``{"lr_grid": [0.01, 0.1]}``.
        chunk_size: models per chunk task (0 = 8).
        store_uri, tracking_uri: '' = the environment's or the local defaults
            (tracking '' logs to MLFLOW_TRACKING_URI or the local default).
        max_overlap: largest share of a target's test images that may be among a model's
            training images (by content); a pair above it is refused.
        logme_variant: paper or reference (components.transfer.scores.logme).
        curve_points: evaluation points of each fine-tune / scratch learning curve (0: none).
    """
    from components.common import tracking
    from components.transfer.steps import plan
    from components.transfer.study import StudySettings

    settings = StudySettings(
        regimes=tuple(str(r) for r in regimes),
        input_size=int(input_size) or None,
        k=int(k),
        allow_download=bool(allow_download),
        finetune_max_steps=int(finetune_max_steps) or None,
        recipe_overrides=dict(recipe_overrides),
        seed=int(seed),
        device=device,
        max_overlap=float(max_overlap),
        logme_variant=logme_variant,
        curve_points=int(curve_points),
    )
    planned = plan(
        study_name,
        model_list,
        [str(d) for d in datasets],
        int(resolution),
        settings,
        store_uri or None,
        int(chunk_size),
        tracking.resolve_tracking_uri(tracking_uri or None),
        kfp_run_id,
    )
    return NamedTuple("TransferPlan", study_id=str, parent_run_id=str)(
        planned["study_id"], planned["parent_run_id"]
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def list_transfer_chunks(study_id: str, parent_run_id: str, store_uri: str) -> list[dict]:
    """The chunks of a planned transfer study as loop items ``{study_id, chunk,
    parent_run_id}`` (kfp.local loops over a single-output task's list, and its loop tasks
    see the item, as the APR study's chunks do). ``list[dict]`` makes the loop item a
    ``STRUCT`` for ``transfer_chunk(chunk: dict)`` on the backend (see ``list_chunks``)."""
    from components.common.storage import open_store
    from components.transfer.steps import plan_key

    record = open_store(store_uri or None).get_json(plan_key(study_id))
    return [
        {"study_id": study_id, "chunk": i, "parent_run_id": parent_run_id}
        for i in range(len(record["chunks"]))
    ]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def transfer_chunk(
    chunk: dict,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
) -> str:
    """Evaluates one chunk of models on every target (GPU image); returns its table's key.

    ``chunk`` is a ``list_transfer_chunks`` item.

    A model that fails (no weights, unknown, OOM, input size) is recorded failed with the
    reason; the chunk goes on. A chunk whose table is in the store already is reused.
    """
    from components.common import tracking
    from components.transfer.run import _configure_threads
    from components.transfer.steps import run_chunk

    # kfp.local hands the task the cluster profile's OMP_NUM_THREADS (8); with two chunk tasks
    # on two cores that oversubscription made feature extraction ~100x slower. `aprflow run`
    # sets APRFLOW_TORCH_THREADS for the cores there are, as for the training tasks.
    _configure_threads()
    return run_chunk(
        chunk["study_id"],
        int(chunk["chunk"]),
        store_uri or None,
        tracking.resolve_tracking_uri(tracking_uri or None),
        chunk["parent_run_id"],
        kfp_run_id,
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_transfer_study(
    chunk_keys: list,
    study_id: str,
    parent_run_id: str,
    n_bootstrap: int,
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    comparison: Output[Metrics],
):
    """Gathers the chunks, compares every cheap score with fine-tuning (Kendall tau, weighted
    tau, bootstrap intervals, cost), runs the APR analysis per regime against the source
    accuracy, writes the self-contained transfer report (``report``; also in the store under
    ``studies/<study_id>/report.html``) and logs it to the MLflow parent run.

    Args:
        chunk_keys: the chunk tasks' outputs (dsl.Collected); every chunk of the plan is read.
    """
    import shutil
    import tempfile

    from components.common import tracking
    from components.transfer.steps import analyze

    out = tempfile.mkdtemp(prefix="transfer-report-")
    result = analyze(
        study_id,
        store_uri or None,
        out,
        int(n_bootstrap),
        tracking.resolve_tracking_uri(tracking_uri or None),
        parent_run_id,
    )
    shutil.copyfile(result["results"], results.path)
    shutil.copyfile(result["report"], report.path)  # self-contained: figures embedded
    results.metadata["chunks"] = len(chunk_keys)
    for name, value in result["metrics"].items():
        comparison.log_metric(name, float(value))
    shutil.rmtree(out)
