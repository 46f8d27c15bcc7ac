"""Evaluate one backbone on several datasets: fixed features → kNN and linear probe rows."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.files import atomic_write_text
from components.common.hashing import content_hash
from components.common.progress import report
from components.transfer.errors import TransferError

METHODS = ("knn", "linear")
#: Column names of the tidy CSV (``model`` holds the backbone source).
CSV_COLUMNS = ("model", "dataset", "method", "metric", "value")


def parse_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """Normalises ``"knn,linear"`` or a list of names; rejects unknown and empty ones.

    Raises:
        TransferError: for an unknown method or an empty list.
    """
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise TransferError(
            f"unknown or no method(s) {', '.join(unknown) or repr(methods)}: choose from "
            f"{', '.join(METHODS)}"
        )
    return tuple(dict.fromkeys(names))


def _configure_threads() -> None:
    import torch

    threads = int(os.environ.get("APRFLOW_TORCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)


def evaluate_transfer(
    backbone: str,
    datasets: list[str],
    resolution: int,
    store_uri: str | None,
    methods: str | Sequence[str] = METHODS,
    *,
    input_size: int | None = None,
    pretrained: bool = False,
    k: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    max_overlap: float = 0.01,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    kfp_run_id: str = "",
) -> list[dict[str, Any]]:
    """Embeds every dataset with the backbone and scores the fixed features.

    Datasets are built-in ones, materialised (or reused) at ``resolution`` in the store, or
    names built with ``aprflow data build``/``subset`` in that store, read at ``resolution``;
    the backbone sees them resized to its own input size (see :func:`load_backbone`).

    Args:
        backbone: ``trial:<trial_id>`` or ``timm:<model name>``.
        datasets: built-in dataset names or names built in the store.
        resolution: image side at which the datasets are materialised (or read).
        store_uri: artifact store URI (None: APRFLOW_STORE_URI or runs/store).
        methods: ``knn`` and/or ``linear`` (a list or a comma-separated string).
        input_size: override of the backbone's input side (None: its own).
        pretrained: timm backbones only: timm's pretrained weights instead of random ones.
        k: neighbours of the kNN fraction score.
        seed: seed of the dataset split, of the probe's validation split and of a timm
            backbone's random initialisation.
        batch_size: images per forward pass.
        max_overlap: a trial backbone is refused on a dataset when more than this share of
            its test images are among the trial's training images by content hash
            (:mod:`components.transfer.leakage`).
        experiment: MLflow experiment to log the evaluation to as a transfer study (one parent
            run, one nested run per backbone x dataset x method; see :func:`track_transfer`);
            None or '' logs nothing.
        tracking_uri: MLflow tracking URI (None: MLFLOW_TRACKING_URI or runs/mlflow.db).
        kfp_run_id: tagged on the MLflow runs.

    Returns:
        Rows ``{backbone, dataset, method, metric, value}``: ``knn_top1``,
        ``knn_top{k}_fraction`` (method ``knn``); ``linear_top1`` and the chosen ``linear_C``
        (method ``linear``).

    Raises:
        TransferError / DatasetError: for an unknown backbone, trial, dataset or method (all
            checked before any dataset is materialised), or a trial whose training images
            are more than ``max_overlap`` of a dataset's test split (checked before any
            feature is extracted).
    """
    from components.common.storage import open_store
    from components.data.datasets import check_datasets, load_split, prepare_all
    from components.transfer.features import extract_features, load_backbone
    from components.transfer.knn import knn_evaluate
    from components.transfer.leakage import check_max_overlap
    from components.transfer.linear_probe import linear_probe

    started = time.time()
    methods = parse_methods(methods)
    datasets = list(datasets)
    if not datasets:
        raise TransferError("no datasets to evaluate on")
    # Built-in names and names built or derived with `aprflow data` (the study's resolver).
    check_datasets(datasets, open_store(store_uri))
    if k < 1:
        raise TransferError(f"k must be at least 1, got {k}")
    check_max_overlap(max_overlap)
    if experiment:
        tracking_uri = tracking.resolve_tracking_uri(tracking_uri)
        tracking.check_tracking(tracking_uri)
    _configure_threads()
    store = open_store(store_uri)
    net = load_backbone(backbone, store, pretrained=pretrained, input_size=input_size, seed=seed)
    report(
        "transfer",
        f"backbone {net.source}: {net.num_features} features at {net.input_size}px "
        f"({', '.join(f'{k_}={v}' for k_, v in net.info.items())})",
        started,
    )
    refs = prepare_all(datasets, resolution, seed, store_uri)
    if net.info.get("kind") == "trial":
        _check_trial_targets(net, refs, store, max_overlap, started)
    rows: list[dict[str, Any]] = []
    for i, ref in enumerate(refs, 1):
        if "knn" in methods and k > ref.n_train:
            raise TransferError(f"k={k} exceeds the {ref.n_train} training images of {ref.name!r}")
        x_train, y_train = load_split(store, ref, "train")
        x_test, y_test = load_split(store, ref, "test")
        tic = time.perf_counter()
        f_train = extract_features(
            net.model, x_train, net.mean, net.std, batch_size, input_size=net.input_size
        )
        f_test = extract_features(
            net.model, x_test, net.mean, net.std, batch_size, input_size=net.input_size
        )
        report(
            "transfer",
            f"[{i}/{len(refs)}] {ref.name}: {len(f_train)} train + {len(f_test)} test features "
            f"of width {f_train.shape[1]} in {time.perf_counter() - tic:.1f} s",
            started,
        )
        scores: list[tuple[str, dict[str, float]]] = []
        if "knn" in methods:
            scores.append(("knn", knn_evaluate(f_train, y_train, f_test, y_test, k=k).metrics()))
        if "linear" in methods:
            probe = linear_probe(f_train, y_train, f_test, y_test, seed=seed)
            if not probe.converged:
                report("transfer", f"  {ref.name}: some L-BFGS fits hit max_iter", started)
            scores.append(("linear", probe.metrics()))
        for method, metrics in scores:
            for metric, value in metrics.items():
                rows.append(
                    {
                        "backbone": net.source,
                        "dataset": ref.name,
                        "method": method,
                        "metric": metric,
                        "value": float(value),
                    }
                )
            summary = ", ".join(f"{m} {v:.4g}" for m, v in metrics.items())
            report("transfer", f"  {ref.name} {method}: {summary}", started)
    if experiment:
        settings = {
            "backbone": net.source,
            "datasets": [ref.name for ref in refs],
            "dataset_versions": {ref.name: tracking.dataset_version(ref.to_dict()) for ref in refs},
            "resolution": resolution,
            "methods": list(methods),
            "input_size": net.input_size,
            "pretrained": pretrained,
            "k": k,
            "seed": seed,
        }
        parent = track_transfer(
            rows, refs, store, experiment, tracking_uri, settings, net.info, kfp_run_id
        )
        report("transfer", f"MLflow: experiment {experiment!r}, parent run {parent}", started)
    return rows


def _check_trial_targets(net, refs: list, store, max_overlap: float, started: float) -> None:
    """Warns when the trial is fed at another side than it trained at; refuses a target
    whose test split holds more than ``max_overlap`` of the trial's training images."""
    from components.transfer.leakage import overlap, refusal, split_hashes, trial_training_images

    trained = net.info["trained_resolution"]
    if net.input_size != trained:
        report(
            "transfer",
            f"warning: {net.source} trained at {trained} px is fed {net.input_size} px "
            "(--input-size): its features come from another resolution than it learned at",
            started,
        )
    train, words = trial_training_images(store, net.info["trial_id"])
    for ref in refs:
        found = overlap(split_hashes(store, ref, "test"), train, words)
        reason = refusal(found, net.source, ref, max_overlap)
        if reason:
            raise TransferError(reason)
        report(
            "transfer",
            f"{ref.name}: {found.images} of {found.n_test} test images are training images of "
            f"the trial (allowed: {max_overlap:.1%})",
            started,
        )


def track_transfer(
    rows: list[dict[str, Any]],
    refs: list,
    store,
    experiment: str,
    tracking_uri: str,
    settings: dict[str, Any],
    backbone_info: dict[str, Any],
    kfp_run_id: str = "",
) -> str:
    """Logs a transfer evaluation as a study: one parent run, one nested run per backbone x
    dataset x method (regime), found again on a re-run (their ids hash the settings).

    The parent holds the settings as params and, per dataset and metric, the mean over the
    backbones (with one backbone: its value) as ``<metric>/<dataset>``.

    Returns:
        The parent run id.
    """
    study = f"transfer-{content_hash(settings, length=10)}"
    backbone_params = {f"backbone.{key}": value for key, value in backbone_info.items()}
    parent = tracking.start_study_run(
        tracking_uri,
        experiment,
        study,
        settings | backbone_params,
        kfp_run_id,
        tags={"aprflow.kind": "transfer"},
    )
    by_name = {ref.name: ref.to_dict() for ref in refs}
    groups: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["dataset"], row["method"]), {})[row["metric"]] = (
            row["value"]
        )
    for (backbone, dataset, method), metrics in groups.items():
        record = by_name[dataset]
        version = tracking.dataset_version(record)
        source = store.key_uri(record["manifest_key"]) if "manifest_key" in record else store.uri
        log = tracking.TrialLog(
            parent_run_id=parent,
            trial_id=content_hash(
                {"study": study, "backbone": backbone, "dataset": dataset, "method": method}
            ),
            run_name=f"{backbone.split(':', 1)[-1][:24]}-{dataset}-{method}",
            params=settings
            | backbone_params
            | {"dataset": dataset, "dataset_version": version, "method": method},
            metrics=metrics,
            tags={
                tracking.KFP_RUN_TAG: kfp_run_id,
                "aprflow.backbone": backbone,
                "aprflow.dataset": dataset,
                "aprflow.regime": method,
            },
            dataset=record,
            dataset_source=source,
        )
        tracking.log_trial_run(tracking_uri, log)
    means: dict[str, list[float]] = {}
    for row in rows:
        means.setdefault(f"{row['metric']}/{row['dataset']}", []).append(row["value"])
    summary = {key: sum(values) / len(values) for key, values in means.items()}
    tracking.finish_study_run(tracking_uri, parent, summary)
    return parent


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as a tidy CSV with columns ``model,dataset,method,metric,value``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [row["backbone"], row["dataset"], row["method"], row["metric"], repr(row["value"])]
        )
    return buffer.getvalue()


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Writes :func:`rows_to_csv` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rows_to_csv(rows))
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table (for the CLI)."""
    header = ("dataset", "method", "metric", "value")
    body = [(r["dataset"], r["method"], r["metric"], f"{r['value']:.4g}") for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
