"""KFP component: transfer evaluation of one backbone on several datasets."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.common.images import CPU_IMAGE


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
