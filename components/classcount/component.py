"""KFP components of the class-count study: build its class subsets, analyse its results."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_class_subsets(
    source: str,
    class_counts: list,
    draws: int,
    others: list,
    resolution: int,
    seed: int,
    store_uri: str,
    refs: Output[Dataset],
    layout: Output[Dataset],
    summary: Output[HTML],
    subset_epochs: dict = {},  # noqa: B006 - KFP reads the default
):
    """Builds the full set and its class subsets in the store (reusing earlier builds) and
    materialises the other datasets.

    Args:
        source: the dataset the subsets are drawn from (built in, or built with
            ``aprflow data build``).
        class_counts: subset sizes (classes per subset).
        draws: seeded draws of each size.
        others: further datasets trained on the same models (the matrix of Fig. 8).
        resolution: training image side in pixels.
        seed: seed of the class draws and of a built-in source's split.
        store_uri: artifact store URI ('' = APRFLOW_STORE_URI or runs/store).
        refs: JSON list of dataset references, as ``plan_study`` takes them.
        layout: JSON of the study's datasets (:class:`analysis.class_count.Layout`).
        summary: each dataset's class histogram, sample grid and counts (Kubeflow UI).
        subset_epochs: ``{size: epochs}`` of sizes trained for their own number of epochs.
    """
    import json

    from components.classcount.subsets import build_class_subsets
    from components.data.summary import study_summary_html

    prepared, plan = build_class_subsets(
        source,
        [int(k) for k in class_counts],  # JSON numbers may arrive as floats
        int(draws),
        int(seed),
        int(resolution),
        [str(o) for o in others],
        store_uri or None,
        dict(subset_epochs),
    )
    with open(refs.path, "w") as f:
        json.dump([ref.to_dict() for ref in prepared], f)
    with open(layout.path, "w") as f:
        json.dump(plan.to_dict(), f)
    refs.metadata["datasets"] = {ref.name: ref.content_hash for ref in prepared}
    with open(summary.path, "w") as f:
        f.write(study_summary_html(prepared, store_uri or None))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def analyze_class_count(
    chunk_trials: list,
    study_id: str,
    parent_run_id: str,
    layout: Input[Dataset],
    store_uri: str,
    tracking_uri: str,
    results: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    n_bootstrap: int = 200_000,
    test_noise: str = "auto",
):
    """Gathers every trial's result and writes the class-count report.

    Outputs go to the Kubeflow UI (HTML report, Markdown summary with its figures, scalar
    metrics, the results table), to ``studies/<study_id>/`` in the artifact store and to the
    study's MLflow parent run, which this task closes.

    Args:
        chunk_trials: the training tasks' trial counts (dsl.Collected); their sum must be
            the plan's trial count (the trial ids come from the store).
        study_id, parent_run_id: from the plan step.
        layout: the data step's layout of the study's datasets.
        store_uri, tracking_uri: '' means the environment's or the local defaults.
        n_bootstrap: most bootstrap resamples per interval (fewer once precise).
        test_noise: auto, binomial or none: whether the intervals include the noise of each
            dataset's finite test split.
    """
    import json
    import shutil

    from analysis.class_count import Layout
    from components.analyze.run import planned_trial_ids, write_task_outputs
    from components.classcount.run import analyze_to_temp

    with open(layout.path) as f:
        plan = Layout.from_dict(json.load(f))
    numbers, out_dir = analyze_to_temp(
        trial_ids=planned_trial_ids(store_uri or None, study_id, chunk_trials),
        study=study_id,
        parent_run_id=parent_run_id,
        layout=plan,
        store_uri=store_uri or None,
        tracking_uri=tracking_uri or None,
        n_bootstrap=int(n_bootstrap),
        test_noise=test_noise,
    )
    write_task_outputs(out_dir, numbers["metrics"], results, report, summary, metrics)
    shutil.rmtree(out_dir)
