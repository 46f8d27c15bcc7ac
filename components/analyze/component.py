"""KFP components: gather a study's results and write its report (the APR study's, the seed
study's)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_study(
    chunk_trials: list,
    study_id: str,
    parent_run_id: str,
    reference: str,
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    best_models: int = 3,
    top_k: int = 0,
    test_noise: str = "auto",
):
    """Gathers every trial's result, runs the APR analysis and publishes it.

    Outputs go to the Kubeflow UI (HTML report, Markdown summary, scalar metrics, the results
    table as a CSV dataset), to ``studies/<study_id>/`` in the artifact store and to the
    study's MLflow parent run.

    Args:
        chunk_trials: the training tasks' trial counts, gathered with dsl.Collected: the
            task waits for them, and their sum must be the plan's trial count. The trial ids
            come from the plan in the store (``studies/<study_id>/trials.json``), not from the
            tasks: the backend passes a task's inputs as one command-line argument, which
            Linux caps at 128 KiB (about 6,800 trial ids).
        study_id, parent_run_id: from the plan step.
        reference: reference dataset of the APR comparison ('' = the analysis' default).
        store_uri, tracking_uri: '' means the environment's or the local defaults.
        best_models: the best trials per dataset logged as MLflow models and registered
            (0 = none; the limits table bounds it); the results table's ``model_url`` and the
            report's "Best models" table link them.
        top_k: the best models per dataset the top-k statistics compare (0 = chosen from the
            number of models).
        test_noise: whether the intervals include the noise of each dataset's finite test
            split (auto or binomial: yes, a binomial draw per model and resample; none: the
            models are resampled only).
    """
    import shutil

    from components.analyze.run import analyze_to_temp, planned_trial_ids, write_task_outputs

    numbers, out_dir = analyze_to_temp(
        trial_ids=planned_trial_ids(store_uri or None, study_id, chunk_trials),
        study=study_id,
        parent_run_id=parent_run_id,
        reference=reference or None,
        store_uri=store_uri or None,
        tracking_uri=tracking_uri or None,
        best_models=best_models,
        top_k=top_k,
        test_noise=test_noise,
    )
    write_task_outputs(out_dir, numbers["metrics"], results, report, summary, metrics)
    shutil.rmtree(out_dir)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_seed_study(
    chunk_trials: list,
    study_id: str,
    parent_run_id: str,
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    best_models: int = 1,
    n_bootstrap: int = 200_000,
):
    """Gathers the seed study's trials and reports the spread of top-1 error across seeds per
    test set and the correlation across seeds between test sets of the same checkpoints
    (components/analyze/seeds.py), to the Kubeflow UI, ``studies/<study_id>/`` and the study's
    MLflow parent run.

    Args:
        chunk_trials: the training tasks' trial counts (dsl.Collected), checked against the
            plan as ``analyze_study`` does.
        study_id, parent_run_id: from the plan step.
        store_uri, tracking_uri: '' means the environment's or the local defaults.
        best_models: the best checkpoints per dataset logged as MLflow models (0 = none).
        n_bootstrap: most bootstrap resamples of each correlation's interval.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from components.analyze.run import planned_trial_ids, write_task_outputs
    from components.analyze.seeds import analyze_seed_study as analyze

    out_dir = Path(tempfile.mkdtemp(prefix="aprflow-seeds-")) / "report"
    numbers = analyze(
        trial_ids=planned_trial_ids(store_uri or None, study_id, chunk_trials),
        study=study_id,
        parent_run_id=parent_run_id,
        store_uri=store_uri or None,
        tracking_uri=tracking_uri or None,
        out_dir=out_dir,
        best_models=int(best_models),
        n_bootstrap=int(n_bootstrap),
    )
    write_task_outputs(out_dir, numbers["metrics"], results, report, summary, metrics)
    shutil.rmtree(out_dir.parent)
