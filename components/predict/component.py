"""KFP components of ``apr-predict``: plan, select the architectures to train, analyze.

The scores run in ``components.transfer``'s ``list_transfer_chunks``/``transfer_chunk`` and the
training in ``components.train``'s ``list_chunks``/``train_chunk``; these three are the
prediction's own steps (:mod:`components.predict.steps`).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_predict(
    study_name: str,
    population: str,
    source_datasets: list,
    target: str,
    k: int,
    scores: list,
    seed: int,
    target_resolution: int,
    device: str,
    n_bootstrap: int,
    random_draws: int,
    feature_chunk_size: int,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
) -> NamedTuple("PredictPlan", study_id=str, scores_study_id=str, parent_run_id=str):
    """Reads the trained population, plans its cheap scores on the target and opens the
    MLflow parent run.

    Args:
        population: a study id, a study name (its latest study) or ``trials:all``.
        source_datasets: the population's datasets to use ([] = all but the target).
        target: the new dataset; k: architectures to train on it.
        scores: cheap regimes (knn, linear, logme, leep).
        seed: seed of the choice of k, the random predictor and the bootstrap.
        target_resolution: target image side (0 = the population's).
        device: where features are extracted; n_bootstrap, random_draws: interval sizes.
        feature_chunk_size: models per feature task (0 = 8).
        store_uri, tracking_uri: '' = the environment's or the local defaults.
        kfp_run_id: tagged on the MLflow runs.
    """
    from components.predict.settings import PredictSettings
    from components.predict.steps import plan

    settings = PredictSettings(
        study_name=study_name,
        population=population,
        source_datasets=tuple(str(s) for s in source_datasets),
        target=target,
        k=int(k),
        scores=tuple(str(s) for s in scores),
        seed=int(seed),
        target_resolution=int(target_resolution),
        device=device,
        n_bootstrap=int(n_bootstrap),
        random_draws=int(random_draws),
        feature_chunk_size=int(feature_chunk_size),
    )
    planned = plan(settings, store_uri or None, tracking_uri or None, kfp_run_id)
    return NamedTuple("PredictPlan", study_id=str, scores_study_id=str, parent_run_id=str)(
        planned["study_id"], planned["scores_study_id"], planned["parent_run_id"]
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_architectures(
    score_keys: list,
    study_id: str,
    store_uri: str,
    chunk_size: int,
    max_parallel_tasks: int,
    trial_timeout_s: int,
    gpus_per_trial: str,
    selection: Output[Markdown],
) -> str:
    """Predicts every ranking from the scores, chooses k architectures stratified over the
    predicted ranking (seeded) and plans their training on the target; returns the study id
    for ``list_chunks``.

    Args:
        score_keys: the score tasks' outputs (dsl.Collected); every chunk of the plan is read.
        chunk_size: trials per training task (0 = about one GPU-hour);
            max_parallel_tasks: the loop's parallelism (compiled in), for even chunks.
        trial_timeout_s: wall-clock limit of one trial (0 = from its estimate).
        gpus_per_trial: the training tasks' GPUs per trial: the population's trials' count.
        selection: the chosen architectures as Markdown.
    """
    from components.common.storage import open_store
    from components.predict.steps import predictions_key, select

    study = select(
        study_id,
        store_uri or None,
        int(chunk_size),
        int(max_parallel_tasks),
        int(trial_timeout_s),
        int(gpus_per_trial),
    )
    chosen = open_store(store_uri or None).get_json(predictions_key(study))["chosen"]
    with open(selection.path, "w") as f:
        f.write(f"{len(chosen)} architectures to train ({len(score_keys)} score tasks):\n\n")
        f.write("\n".join(f"- `{arch}`" for arch in chosen) + "\n")
    return study


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_predict(
    chunk_trials: list,
    study_id: str,
    parent_run_id: str,
    store_uri: str,
    tracking_uri: str,
    kfp_run_id: str,
    report: Output[HTML],
    metrics: Output[Metrics],
):
    """Scores every predictor against the trained architectures (Kendall tau, weighted tau,
    intervals, regret, cost), writes the report (also ``studies/<study_id>/report.html``) and
    closes the MLflow parent run.

    Args:
        chunk_trials: the training tasks' trial counts (dsl.Collected).
    """
    import shutil
    import tempfile
    from pathlib import Path

    from components.predict.steps import analyze

    out = Path(tempfile.mkdtemp(prefix="predict-report-")) / "report"
    summary = analyze(
        study_id, store_uri or None, tracking_uri or None, parent_run_id, out, kfp_run_id
    )
    shutil.copyfile(out / "report.html", report.path)  # self-contained: the figure embedded
    report.metadata["trials"] = int(sum(int(n) for n in chunk_trials))
    for key, result in summary["predictors"].items():
        if (result.get("kendall") or {}).get("value") is not None:
            metrics.log_metric(f"kendall/{key}", float(result["kendall"]["value"]))
    shutil.rmtree(out.parent)
