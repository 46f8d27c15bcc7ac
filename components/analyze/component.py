"""KFP component: gather a study's results and write the APR report."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_study(
    trial_ids: list,
    study_id: str,
    parent_run_id: str,
    reference: str,
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
):
    """Gathers every trial's result, runs the APR analysis and publishes it.

    Outputs go to the Kubeflow UI (HTML report, Markdown summary, scalar metrics, the results
    table as a CSV dataset), to ``studies/<study_id>/`` in the artifact store and to the
    study's MLflow parent run.

    Args:
        trial_ids: the train tasks' outputs, gathered with dsl.Collected: trial ids, or lists
            of them (one list per chunk task), flattened here.
        study_id, parent_run_id: from the plan step.
        reference: reference dataset of the APR comparison ('' = the analysis' default).
        store_uri, tracking_uri: '' means the environment's or the local defaults.
    """
    import shutil

    from components.analyze.run import analyze_to_temp, embed_figures

    numbers, out_dir = analyze_to_temp(
        trial_ids=[i for item in trial_ids for i in (item if isinstance(item, list) else [item])],
        study=study_id,
        parent_run_id=parent_run_id,
        reference=reference or None,
        store_uri=store_uri or None,
        tracking_uri=tracking_uri or None,
    )
    shutil.copyfile(out_dir / "results.csv", results.path)
    shutil.copyfile(out_dir / "report.html", report.path)
    with open(summary.path, "w") as f:
        f.write(embed_figures((out_dir / "report.md").read_text(), out_dir))
    for name, value in numbers["metrics"].items():
        metrics.log_metric(name, float(value))
    shutil.rmtree(out_dir)
