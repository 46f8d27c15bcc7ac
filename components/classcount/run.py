"""The class-count study's analysis task: gather the trials, compute, report, publish.

The results table is the apr-study's (:func:`components.analyze.run.gather_study`: every trial
with its MLflow run, a trial without one given a ``failed`` run first); the statistics are
:func:`analysis.class_count.compute_class_count`'s, on top-1 error; the report goes to the
store under ``studies/<study>/`` and to the study's MLflow parent run, which it closes with
the study's metrics (:func:`components.analyze.run.publish_study`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from analysis.class_count import Layout, compute_class_count, error_frame
from analysis.class_count_report import write_report
from analysis.compute import choose_slice, noise_sizes
from analysis.stats import DEFAULT_RESAMPLES
from analysis.table import load_results
from components.analyze.run import dataset_refs, gather_study, publish_study
from components.common import tracking
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import open_store

METRIC = "top1_error"


def analyze_class_count(
    trial_ids: list[str],
    study: str,
    parent_run_id: str,
    layout: Layout,
    store_uri: str | None,
    tracking_uri: str | None,
    out_dir: str | Path,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    test_noise: str = "auto",
) -> dict[str, Any]:
    """Gathers the study's results, writes the class-count report to ``out_dir`` and to
    ``studies/<study>/``, closes the MLflow parent run with its metrics, and returns the
    summary.

    Args:
        trial_ids: the study's planned trials.
        study, parent_run_id: from the plan step.
        layout: the study's datasets (the data step's).
        store_uri, tracking_uri: None: the environment's or the local defaults.
        out_dir: the report folder (``results.csv`` is written there too).
        n_bootstrap: most bootstrap resamples per interval (limits table ``bootstrap``).
        test_noise: ``auto``/``binomial``: the intervals include each dataset's finite test
            split (its size from the dataset the trials trained on); ``none``: they resample
            the architectures and draws only.

    Raises:
        ValueError: a bound exceeded, or results that allow no correlation (fewer than 3
            architectures with a result everywhere).
    """
    n_bootstrap = check_limit("bootstrap", n_bootstrap, "n_bootstrap")
    store = open_store(store_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    table, started = gather_study(store, uri, study, parent_run_id, trial_ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "results.csv", index=False)
    results = load_results(
        table, metric=METRIC, scale="percent", name=store.key_uri(f"studies/{study}/results.csv")
    )
    part = results.slice(*choose_slice(results, layout.full, None, METRIC)[0])
    sizes = {name: ref.n_test for name, ref in dataset_refs(store, table).items()}
    sizes, noise_choice = noise_sizes(test_noise, sizes, results.datasets)
    summary = compute_class_count(part, layout, n_bootstrap, test_sizes=sizes)
    summary["settings"]["test_noise_choice"] = noise_choice
    summary["study_id"] = study
    write_report(out_dir, summary, error_frame(part), title=f"Class count: {study}")
    params = {
        "class_count.source": layout.source,
        "class_count.full": layout.full,
        "class_count.class_counts": ",".join(map(str, layout.sizes)),
        "class_count.draws": layout.draws,
        "class_count.test_noise": summary["settings"]["test_noise"],
    }
    publish_study(store, uri, study, parent_run_id, out_dir, summary["metrics"], params)
    report("analyze", f"report at {store.key_uri(f'studies/{study}/report.html')}", started)
    return summary


def analyze_to_temp(**kwargs: Any) -> tuple[dict[str, Any], Path]:
    """:func:`analyze_class_count` into a fresh temporary folder; returns the summary and the
    folder (the component copies its files to its outputs, then removes it)."""
    out_dir = Path(tempfile.mkdtemp(prefix="aprflow-class-count-"))
    return analyze_class_count(out_dir=out_dir, **kwargs), out_dir
