"""The transfer study's three steps, shared by the pipeline's tasks and ``aprflow transfer
study``: plan (datasets, models, chunks, MLflow parent), one chunk of models, and analysis.

Store layout, under ``studies/<study_id>/``: ``transfer_plan.json`` (settings, models, dataset
refs, chunks), ``results/chunk-<i>.csv`` (one long table per chunk, written atomically
by the store; an existing one is reused, so a re-run only computes the chunks that are
missing), ``curves/chunk-<i>.csv`` (the chunk's learning curves, written before its table),
``results.csv`` and ``curves.csv`` (all chunks), ``comparison.json`` (the comparison the
report shows) and ``report.html`` (the transfer report, :mod:`components.transfer.report`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from components.common import tracking
from components.common.files import atomic_write_text
from components.common.hashing import content_hash
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.transfer.curves import curve_figure, curve_records, curves_to_csv, parse_curves
from components.transfer.errors import TransferError
from components.transfer.sources import ModelEntry, expand_trials, parse_model_list
from components.transfer.study import (
    REGIMES,
    SETUP,
    StudySettings,
    evaluate_model,
    rows_to_csv,
)

#: Models per chunk task when ``chunk_size`` is 0: a few minutes of kNN features per model on
#: a GPU, so a chunk of 8 keeps a 400-model list at 50 tasks.
DEFAULT_CHUNK_MODELS = 8


def plan_key(study_id: str) -> str:
    return f"studies/{study_id}/transfer_plan.json"


def chunk_key(study_id: str, chunk: int) -> str:
    return f"studies/{study_id}/results/chunk-{chunk:05d}.csv"


def curves_key(study_id: str, chunk: int) -> str:
    """The chunk's learning curves (:mod:`components.transfer.curves`), beside its table."""
    return f"studies/{study_id}/curves/chunk-{chunk:05d}.csv"


def settings_from(values: dict[str, Any]) -> StudySettings:
    """A :class:`StudySettings` from a plan's JSON (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(StudySettings)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise TransferError(f"unknown study setting(s) {', '.join(unknown)}")
    return StudySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def model_list_text(model_list: str) -> tuple[str, str]:
    """The text of a model list and its name for messages: inline CSV text (it has a
    newline), one ``hub:`` row (:mod:`components.transfer.hub`), a local file or
    ``s3://bucket/key``."""
    from urllib.parse import urlparse

    from components.transfer.hub import HUB_PREFIX

    if "\n" in model_list:
        return model_list, "model list"
    if model_list.startswith(HUB_PREFIX):
        return f"model\n{model_list}\n", "model list"
    if model_list.startswith("s3://"):
        parsed = urlparse(model_list)
        text = open_store(f"s3://{parsed.netloc}").get_bytes(parsed.path.lstrip("/")).decode()
        return text, model_list
    try:
        return Path(model_list).read_text(), model_list
    except OSError as e:
        raise TransferError(f"cannot read model list {model_list}: {e.strerror}") from None


def load_models(model_list: str, store: ArtifactStore) -> list[ModelEntry]:
    """Models from a list (:func:`model_list_text`); ``trials:all`` expanded to the store's
    finished trials, ``hub:`` rows to timm's models (:mod:`components.transfer.hub`)."""
    from components.transfer.hub import expand_hub

    text, name = model_list_text(model_list)
    models = expand_hub(expand_trials(parse_model_list(text, name), store), name)
    if not models:
        raise TransferError(f"{name}: no model to evaluate (trials:all found no finished trial)")
    return models


def plan(
    study_name: str,
    model_list: str,
    datasets: list[str],
    resolution: int,
    settings: StudySettings,
    store_uri: str | None,
    chunk_size: int = 0,
    tracking_uri: str | None = None,
    kfp_run_id: str = "",
) -> dict[str, Any]:
    """Materialises the targets, reads the models, chunks them, opens the MLflow parent.

    Returns:
        ``{"study_id", "chunks": [0, 1, ...], "parent_run_id"}`` ('' without tracking).
    """
    from components.data.datasets import prepare_all

    if chunk_size < 0:
        raise TransferError(f"chunk_size must be >= 0, got {chunk_size}")
    store = open_store(store_uri)
    models = load_models(model_list, store)
    refs = prepare_all(list(datasets), resolution, 0, store_uri)
    identity = {
        "models": [m.to_dict() for m in models],
        "datasets": [r.content_hash for r in refs],
        "settings": dataclasses.asdict(settings),
    }
    study_id = f"{study_name}-{content_hash(identity, length=10)}"
    size = chunk_size or DEFAULT_CHUNK_MODELS
    chunks = [list(range(i, min(i + size, len(models)))) for i in range(0, len(models), size)]
    record = {
        "study_id": study_id,
        "study_name": study_name,
        "models": [m.to_dict() for m in models],
        "refs": [r.to_dict() for r in refs],
        "settings": dataclasses.asdict(settings),
        "chunks": chunks,
    }
    store.put_json(plan_key(study_id), record)
    parent = ""
    if tracking_uri:
        params = {
            "n_models": len(models),
            "datasets": [r.name for r in refs],
            "regimes": list(settings.regimes),
            "input_size": settings.input_size or "pretrained_cfg",
            "chunks": len(chunks),
        }
        parent = tracking.start_study_run(
            tracking_uri,
            study_name,
            study_id,
            params,
            kfp_run_id,
            config=record["settings"],
            tags={"aprflow.kind": "transfer"},
        )
    report(
        "transfer",
        f"{study_id}: {len(models)} models x {len(refs)} targets x {len(settings.regimes)} "
        f"regimes in {len(chunks)} chunks",
    )
    return {"study_id": study_id, "chunks": list(range(len(chunks))), "parent_run_id": parent}


def _log_rows(rows: list[dict], record: dict, tracking_uri: str, parent: str, kfp_run_id: str):
    """One nested MLflow run per (model, dataset, regime) under the study's parent; the
    ``setup`` rows of a (model, dataset) are metrics of each of its runs."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    setup: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row["regime"] == SETUP:
            if row["value"] is not None:
                setup.setdefault((row["model"], row["dataset"]), {})[row["metric"]] = row["value"]
        elif row["regime"] != "source":
            groups.setdefault((row["model"], row["dataset"], row["regime"]), []).append(row)
    for (model, dataset, regime), group in groups.items():
        status = "ok" if all(r["status"] == "ok" for r in group) else "failed"
        metrics = setup.get((model, dataset), {}) | {
            r["metric"]: r["value"] for r in group if r["value"] is not None
        }
        metrics["seconds"] = max(r["seconds"] for r in group)
        log = tracking.TrialLog(
            parent_run_id=parent,
            trial_id=content_hash(
                {"study": record["study_id"], "m": model, "d": dataset, "r": regime}
            ),
            run_name=f"{model[:24]}-{dataset}-{regime}",
            status=status,
            params={"model": model, "dataset": dataset, "regime": regime},
            metrics=metrics,
            tags={
                tracking.KFP_RUN_TAG: kfp_run_id,
                "aprflow.model": model,
                "aprflow.dataset": dataset,
                "aprflow.regime": regime,
                "aprflow.status_reason": group[0]["status_reason"][:500],
            },
        )
        tracking.log_trial_run(tracking_uri, log)


def run_chunk(
    study_id: str,
    chunk: int,
    store_uri: str | None,
    tracking_uri: str | None = None,
    parent_run_id: str = "",
    kfp_run_id: str = "",
) -> str:
    """Evaluates the chunk's models on every target; writes and returns its table's key."""
    from components.data.descriptor import DatasetRef

    store = open_store(store_uri)
    record = store.get_json(plan_key(study_id))
    if not 0 <= chunk < len(record["chunks"]):
        raise TransferError(f"study {study_id} has no chunk {chunk}")
    key = chunk_key(study_id, chunk)
    if store.exists(key):
        report("transfer", f"chunk {chunk}: results found in the store, reused")
        return key
    settings = settings_from(record["settings"])
    refs = [DatasetRef(**r) for r in record["refs"]]
    started = time.time()
    rows: list[dict] = []
    curves: list[dict] = []
    indices = record["chunks"][chunk]
    for i, index in enumerate(indices, 1):
        entry = ModelEntry(**record["models"][index])
        report("transfer", f"chunk {chunk} [{i}/{len(indices)}] {entry.name}", started)
        evaluated = evaluate_model(entry, refs, store, settings, started)
        curves += curve_records(evaluated)
        model_rows = [r.to_dict() for r in evaluated]
        if tracking_uri and parent_run_id:
            _log_rows(model_rows, record, tracking_uri, parent_run_id, kfp_run_id)
        rows += model_rows
    # The curves first: the table is the chunk's mark of completion.
    store.put_bytes(curves_key(study_id, chunk), curves_to_csv(curves).encode())
    store.put_bytes(key, rows_to_csv(rows).encode())
    return key


def gather_curves(study_id: str, store: ArtifactStore) -> list[dict]:
    """Every chunk's learning curves, in chunk order (a chunk computed before curves were
    recorded has none)."""
    record = store.get_json(plan_key(study_id))
    curves = []
    for chunk in range(len(record["chunks"])):
        key = curves_key(study_id, chunk)
        if store.exists(key):
            curves += parse_curves(store.get_bytes(key).decode())
    return curves


def gather(study_id: str, store: ArtifactStore) -> list[dict]:
    """Every chunk's rows, in chunk order (values as floats, '' as None)."""
    record = store.get_json(plan_key(study_id))
    rows = []
    for chunk in range(len(record["chunks"])):
        key = chunk_key(study_id, chunk)
        if not store.exists(key):
            raise TransferError(f"chunk {chunk} of study {study_id} has no results yet")
        for row in csv.DictReader(io.StringIO(store.get_bytes(key).decode())):
            row["value"] = float(row["value"]) if row["value"] else None
            row["seconds"] = float(row["seconds"])
            rows.append(row)
    return rows


def analyze(
    study_id: str,
    store_uri: str | None,
    out_dir: str | Path,
    n_bootstrap: int = 200_000,
    tracking_uri: str | None = None,
    parent_run_id: str = "",
) -> dict[str, Any]:
    """Gathers the chunks into ``results.csv``, runs the APR analysis (per regime vs the
    source accuracy, regimes and scores against each other) and the score-vs-fine-tune
    comparison (:mod:`components.transfer.compare`), writes the report (``report.html`` at
    the top of ``out_dir``, in the store and on the parent run), closes the parent.

    Returns:
        ``{"report", "results", "comparison", "metrics", "figures", "apr_report", "curves",
        "curves_figure"}`` (``curves``: the learning curves' side table; ``curves_figure``:
        their figure, '' without a curve).
    """
    from analysis import analyze as apr_analyze
    from components.transfer.compare import compare, comparison_metrics, scatter_figures
    from components.transfer.report import write_report

    # Before the gathering: a resample count from the Kubeflow UI meets the same bound as one
    # from a config.
    n_bootstrap = check_limit("bootstrap", n_bootstrap, "n_bootstrap")
    store = open_store(store_uri)
    rows = gather(study_id, store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    text = rows_to_csv(rows)
    atomic_write_text(results, text)
    store.put_bytes(f"studies/{study_id}/results.csv", text.encode())
    comparison = compare(rows, n_bootstrap=n_bootstrap)
    figures = scatter_figures(rows, out / "figures")
    curves = gather_curves(study_id, store)
    curves_text = curves_to_csv(curves)
    atomic_write_text(out / "curves.csv", curves_text)
    store.put_bytes(f"studies/{study_id}/curves.csv", curves_text.encode())
    curves_png = curve_figure(curves, out / "figures" / "learning_curves.png")
    comparison_text = json.dumps(comparison, indent=1)
    atomic_write_text(out / "comparison.json", comparison_text)
    # Beside the report in the store, so `aprflow run` copies it into runs/<study_id>/.
    store.put_bytes(f"studies/{study_id}/comparison.json", comparison_text.encode())
    metrics = comparison_metrics(comparison)
    ok = [r for r in rows if r["status"] == "ok" and r["regime"] != "source"]
    summary = None
    # The reference is the source dataset most models come from (imagenet for timm lists).
    source_counts: dict[str, int] = {}
    for r in rows:
        if r["regime"] == "source" and r["status"] == "ok":
            source_counts[r["dataset"]] = source_counts.get(r["dataset"], 0) + 1
    reference = max(sorted(source_counts), key=source_counts.get) if source_counts else None
    if ok:
        try:
            summary = apr_analyze(
                results,
                out / "apr",
                reference=reference,
                n_bootstrap=n_bootstrap,
                title=f"Transfer study {study_id}",
            )
        except ValueError as e:  # e.g. every model failed on every target
            report("transfer", f"APR analysis skipped: {e}")
    page = out / "report.html"
    html = write_report(
        page,
        f"Transfer study {study_id}",
        rows,
        comparison,
        figures,
        apr_link="apr/report.html" if summary else "",
        curves=curves,
        curves_figure=curves_png,
    )
    store.put_bytes(f"studies/{study_id}/report.html", html.encode())
    if tracking_uri and parent_run_id:
        tracking.finish_study_run(tracking_uri, parent_run_id, metrics, artifact_dir=out)
    report("transfer", f"{study_id}: {len(rows)} rows, report {page}")
    return {
        "report": str(page),
        "results": str(results),
        "comparison": comparison,
        "metrics": metrics,
        "figures": figures,
        "apr_report": str(out / "apr" / "report.html") if summary else "",
        "curves": str(out / "curves.csv"),
        "curves_figure": curves_png or "",
    }


def run_all(
    study_name: str,
    model_list: str,
    datasets: list[str],
    resolution: int,
    settings: StudySettings,
    store_uri: str | None,
    out_dir: str | Path | None = None,
    chunk_size: int = 0,
    n_bootstrap: int = 200_000,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Plan, every chunk in this process, analysis: the pipeline without KFP (the CLI)."""
    planned = plan(
        study_name, model_list, datasets, resolution, settings, store_uri, chunk_size, tracking_uri
    )
    for chunk in planned["chunks"]:
        run_chunk(planned["study_id"], chunk, store_uri, tracking_uri, planned["parent_run_id"])
    out = out_dir or tempfile.mkdtemp(prefix="aprflow-transfer-")
    return {"study_id": planned["study_id"]} | analyze(
        planned["study_id"], store_uri, out, n_bootstrap, tracking_uri, planned["parent_run_id"]
    )


__all__ = ["REGIMES", "analyze", "gather", "plan", "run_all", "run_chunk"]
