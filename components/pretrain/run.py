"""The pretraining-factors study's steps after the training: plan the transfer of every
pretrained model, then gather, compute, report and publish.

* :func:`plan_transfer`: every finished trial (one per variant and seed) becomes a
  ``trial:<id>`` model of a transfer study on the targets and the held-out classes
  (:mod:`components.transfer.steps`: features cached per model and dataset version, GPU tasks
  in chunks, rows logged as MLflow runs nested under this study's parent run). A trial that
  failed is left out with a line; the analysis reports the seeds each level kept.
* :func:`analyze_pretrain_factors`: the trials' results (each pretrained model's accuracy on
  its own variant's test split) and the transfer rows, joined by trial into one long table
  (``results.csv``: variant, factor, level, seed, target, regime, accuracy); the statistics
  are :func:`analysis.pretrain_factors.compute_pretrain_factors`'; the report goes to the
  store under ``studies/<study>/`` and to the study's MLflow parent run, which it closes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.pretrain_factors import REGIME_METRIC, Layout, compute_pretrain_factors
from analysis.pretrain_factors_report import write_report
from components.analyze.run import gather_study, publish_study
from components.common import tracking
from components.common.errors import AprflowError
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.train.definition import TRIAL_PREFIX, result_key

if TYPE_CHECKING:  # torch: imported by the transfer step only
    from components.transfer.study import StudySettings


class PretrainError(AprflowError):
    """The study cannot go on: no pretrained model finished."""


def finished_trials(store: ArtifactStore, trial_ids: list[str]) -> tuple[list[str], list[str]]:
    """(the trials with a finished result, the others)."""
    done, failed = [], []
    for trial_id in trial_ids:
        key = result_key(trial_id)
        ok = store.exists(key) and store.get_json(key).get("status") == "ok"
        (done if ok else failed).append(trial_id)
    return done, failed


def plan_transfer(
    trial_ids: list[str],
    study: str,
    layout: Layout,
    settings: StudySettings,
    resolution: int,
    store_uri: str | None,
    chunk_size: int = 0,
    kfp_run_id: str = "",
) -> str:
    """Plans the transfer of every finished pretrained model; returns the transfer study id.

    Args:
        trial_ids: the study's planned trials.
        study: the study id (the transfer study is named ``<study>-transfer``).
        layout: the study's datasets.
        settings: the transfer study's :class:`components.transfer.study.StudySettings`.
        resolution: the side the built-in targets are made at (the study's).
        store_uri: the artifact store (None: the default).
        chunk_size: pretrained models per transfer task (0: the transfer study's default).
        kfp_run_id: the Kubeflow run, tagged on the MLflow runs.

    Raises:
        PretrainError: no trial finished.
    """
    from components.transfer.steps import plan

    store = open_store(store_uri)
    done, failed = finished_trials(store, trial_ids)
    if failed:
        report(
            "transfer",
            f"{len(failed)} of {len(trial_ids)} pretraining trials did not finish and are "
            f"left out ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})",
        )
    if not done:
        raise PretrainError(
            f"study {study}: none of its {len(trial_ids)} pretraining trials finished; see "
            "their MLflow runs for the reasons, then re-run (finished trials are reused)"
        )
    model_list = "model\n" + "".join(f"{TRIAL_PREFIX}{t}\n" for t in done)
    planned = plan(
        f"{study}-transfer",
        model_list,
        layout.transfer_datasets,
        resolution,
        settings,
        store_uri,
        chunk_size,
        None,  # no parent of its own: its runs nest under the study's
        kfp_run_id,
    )
    return planned["study_id"]


def transfer_frame(trials: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The long table: one row per (pretrained model, target, regime) accuracy (percent), with
    the model's variant and seed; failed evaluations kept with their reason."""
    by_model = {
        f"{TRIAL_PREFIX}{t}": (d, int(s))
        for t, d, s in trials[["trial_id", "dataset", "seed"]].itertuples(index=False)
    }
    out = []
    for row in rows:
        if row["model"] not in by_model or REGIME_METRIC.get(row["regime"]) != row["metric"]:
            continue
        variant, seed = by_model[row["model"]]
        value = row["value"]
        out.append(
            {
                "trial_id": row["model"].removeprefix(TRIAL_PREFIX),
                "variant": variant,
                "seed": seed,
                "dataset": row["dataset"],
                "regime": row["regime"],
                "value": None if value is None or row["status"] != "ok" else 100 * value,
                "status": row["status"],
                "status_reason": row["status_reason"],
            }
        )
    return pd.DataFrame(
        out,
        columns=[
            "trial_id",
            "variant",
            "seed",
            "dataset",
            "regime",
            "value",
            "status",
            "status_reason",
        ],
    )


def analyze_pretrain_factors(
    trial_ids: list[str],
    study: str,
    transfer_study: str,
    parent_run_id: str,
    layout: Layout,
    store_uri: str | None,
    tracking_uri: str | None,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Gathers the study's results, writes the report to ``out_dir`` and to
    ``studies/<study>/``, closes the MLflow parent run with its metrics, and returns the
    summary.

    Raises:
        ValueError: no transfer accuracy at all.
    """
    from components.transfer.steps import gather

    store = open_store(store_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    trials, started = gather_study(store, uri, study, parent_run_id, trial_ids)
    frame = transfer_frame(trials, gather(transfer_study, store))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = {v.name: (v.factor, v.level) for v in layout.variants}
    frame.insert(2, "factor", [levels[v][0] for v in frame["variant"]])
    frame.insert(3, "level", [levels[v][1] for v in frame["variant"]])
    frame.to_csv(out_dir / "results.csv", index=False)
    trials.to_csv(out_dir / "trials.csv", index=False)
    finished = trials[trials["status"] == "ok"]
    own = pd.DataFrame(
        {"variant": finished["dataset"], "value": 100 - finished["top1_error"].astype(float)}
    )
    measured = frame.dropna(subset=["value"])
    summary = compute_pretrain_factors(measured, layout, own)
    summary["study_id"] = study
    summary["transfer_study_id"] = transfer_study
    summary["architecture"] = ", ".join(sorted(set(trials["model"])))
    failed = frame[frame["value"].isna()]
    summary["failed"] = [
        {k: row[k] for k in ("variant", "seed", "dataset", "regime", "status_reason")}
        for row in failed.to_dict("records")
    ]
    summary["failed_trials"] = sorted(set(trials["trial_id"]) - set(finished["trial_id"]))
    write_report(out_dir, summary, title=f"Pretraining factors: {study}")
    params = {
        "pretrain.source": layout.source,
        "pretrain.pool": layout.reference.name,
        "pretrain.held_out": layout.held_out,
        "pretrain.factors": ",".join(layout.factors),
        "pretrain.targets": ",".join(layout.transfer_datasets),
        "pretrain.transfer_study_id": transfer_study,
    }
    publish_study(store, uri, study, parent_run_id, out_dir, summary["metrics"], params)
    report("analyze", f"report at {store.key_uri(f'studies/{study}/report.html')}", started)
    return summary


def analyze_to_temp(**kwargs: Any) -> tuple[dict[str, Any], Path]:
    """:func:`analyze_pretrain_factors` into a fresh temporary folder; returns the summary and
    the folder (the component copies its files to its outputs, then removes it)."""
    out_dir = Path(tempfile.mkdtemp(prefix="aprflow-pretrain-"))
    return analyze_pretrain_factors(out_dir=out_dir, **kwargs), out_dir
