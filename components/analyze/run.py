"""Gathering trial results into the tidy results table, and the study's analysis task."""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from analysis.table import EVALUATION_SEPARATOR, OWN_TEST_SET
from components.common import tracking
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.common.uris import redact_uri
from components.common.warm_start import python_executable
from components.data.descriptor import DatasetRef
from components.sample.models import model_id, timm_name
from components.train.definition import result_key
from components.train.plan import load_trial_ids, trial_key

# How many of the best models per dataset are logged to MLflow and registered (the pipeline's
# and the component's ``best_models`` default too).
DEFAULT_BEST_MODELS = 3
STAGE_FIELDS = (("depths", "d"), ("widths", "w"), ("bottleneck_ratios", "b"), ("group_widths", "g"))
# Errors of each evaluation of a trial's checkpoint that become results-table columns.
EVALUATION_ERRORS = ("top1_error", "top5_error")


def evaluation_columns(result: dict[str, Any]) -> dict[str, float]:
    """The further evaluations of a trial's checkpoint as results-table columns (percent).

    ``top5_error`` on the trained dataset's test split, and ``<error>@<evaluation>`` for its
    validation split (``top1_error@val``) and each extra test set
    (``top1_error@imagenet_v2``) of the result's ``evaluations``; the analysis reads them as
    metrics of the same checkpoints (``analysis.table``). A result without them adds none.
    """
    evaluations = result.get("evaluations") or {}
    columns = {}
    top5 = result.get("top5_error", evaluations.get("test", {}).get("top5_error"))
    if top5 is not None:
        columns["top5_error"] = top5
    for name, values in evaluations.items():
        if name == OWN_TEST_SET:
            continue
        for error in EVALUATION_ERRORS:
            if values.get(error) is not None:
                columns[f"{error}{EVALUATION_SEPARATOR}{name}"] = values[error]
    return columns


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """One trial result as a row of the tidy results table that ``analysis`` reads: its
    top-1 error, every further evaluation (:func:`evaluation_columns`), status, spec.

    The model id is an AnyNet spec's hash or a named model's timm name; a named model has no
    stage columns (``d1`` ... ``g4`` stay empty: the analysis leaves it out of the
    architecture features) and ``small_input`` False (it keeps timm's stem)."""
    spec = result["spec"]
    row = {
        "model": model_id(spec),
        "dataset": result["dataset"]["name"],
        "seed": result["seed"],
        "recipe": result["recipe"]["name"],
        "top1_error": result.get("top1_error"),
        **evaluation_columns(result),
        # Trials write errors in percent: the table says so (the analysis never guesses).
        "unit": "percent",
        "status": result["status"],
        "status_reason": result["reason"],
        "flops": result.get("flops"),
        "params": result.get("params"),
        # The network as trained (the dataset's resolution and stem, its classes): at <= 64 px
        # the stem has stride 1, so it is not the 224-px network whose FLOPs were sampled.
        "flops_trained": result.get("flops_trained"),
        "small_input": result.get("small_input"),
        "wall_time_s": result["wall_time_s"],
        "trial_id": result["trial_id"],
    }
    if timm_name(spec) is None:
        for field, short in STAGE_FIELDS:
            for i, value in enumerate(spec[field], 1):
                row[f"{short}{i}"] = value
    return row


def gather_results(
    store: ArtifactStore,
    trial_ids: list[str],
    runs: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Reads every trial's ``result.json``; a trial without one is recorded as failed.

    Args:
        store: the artifact store.
        trial_ids: the study's trials.
        runs: ``{trial_id: {"run_id", "run_url"}}`` of the trials' MLflow runs
            (``tracking.trial_run_links``); given, the table has ``run_id`` and ``run_url``
            columns (empty for a trial without a run).
    """
    rows = []
    for trial_id in trial_ids:
        if store.exists(result_key(trial_id)):
            rows.append(result_row(store.get_json(result_key(trial_id))))
        else:
            trial = store.get_json(f"trials/{trial_id}/trial.json")
            missing = {
                "trial_id": trial_id,
                **trial,
                "status": "failed",
                "reason": "the train task wrote no result (killed or not run)",
                "wall_time_s": 0.0,
            }
            rows.append(result_row(missing))
    if runs is not None:
        for row in rows:
            run = runs.get(row["trial_id"], {})
            # The link goes into results.csv and report.html: no userinfo of the MLflow UI URL.
            row["run_id"] = run.get("run_id", "")
            row["run_url"] = redact_uri(run.get("run_url", ""))
    return pd.DataFrame(rows)


def log_unlogged_trials(uri: str, parent_run_id: str, table: pd.DataFrame) -> None:
    """Gives every trial of the results table without an MLflow run one, from its row: a trial
    whose task never ran (no result.json) becomes a ``failed`` run, so that searches on
    ``tags.aprflow.status`` find it too."""
    for row in table[table["run_id"] == ""].to_dict("records"):
        metrics = {k: row[k] for k in ("top1_error", "flops", "params", "wall_time_s")}
        log = tracking.TrialLog(
            parent_run_id=parent_run_id,
            trial_id=row["trial_id"],
            run_name=tracking.trial_run_name(
                row["model"], row["dataset"], row["recipe"], row["seed"], row["status"]
            ),
            status=row["status"],
            params={k: row[k] for k in ("model", "dataset", "recipe", "seed")},
            metrics=metrics,
            tags={
                tracking.REASON_TAG: str(row["status_reason"])[:500],
                "aprflow.model": row["model"],
                "aprflow.dataset": row["dataset"],
                "aprflow.recipe": row["recipe"],
                "aprflow.seed": str(row["seed"]),
            },
        )
        # KFP's MLflow plugin: the analyze task's run stays its own.
        tracking.log_trial_run(uri, log, adopt_task_run=False)


def top_k_for(n_models: int) -> int:
    """How many best models the top-k statistics compare: a quarter of the models, at most 15
    (Tuggener et al.'s top-15 of 500), at least 2; with k close to n they say nothing."""
    return max(2, min(15, n_models // 4))


def analyze_study(
    trial_ids: list[str],
    study: str,
    parent_run_id: str,
    reference: str | None,
    store_uri: str | None,
    tracking_uri: str | None,
    out_dir: str | Path,
    best_models: int = DEFAULT_BEST_MODELS,
    top_k: int = 0,
    test_noise: str = "auto",
) -> dict[str, Any]:
    """Gathers the results, logs the ``best_models`` best models per dataset as registered
    MLflow models (:func:`~components.analyze.models.log_best_models`; the results table's
    ``model_url`` and the report's "Best models" table link them), writes the analysis to
    ``out_dir`` and to ``studies/<study>/``, logs it to the study's MLflow parent run and
    returns the summary.

    ``top_k``: the best models per dataset that the top-k statistics compare (0: chosen from
    the number of models, :func:`top_k_for`). ``test_noise`` (``"auto"``, ``"binomial"``,
    ``"none"``): whether the intervals include the noise of each dataset's finite test split,
    whose size comes from the dataset its trials trained on
    (:func:`analysis.compute.compute_analysis`; "auto" and "binomial" include it here).

    Raises:
        ValueError: ``best_models`` or ``top_k`` is outside the limits table's range, or
            ``top_k`` is not below the number of models (before the report is written).
    """
    from analysis.report import analyze
    from analysis.table import load_results

    best_models = check_limit("best_models", best_models)
    top_k = check_limit("top_k", top_k)
    store = open_store(store_uri)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    with ModelLogging(uri, store_uri, study, best_models) as models:
        table, started = gather_study(store, uri, study, parent_run_id, trial_ids)
        n_models = table["model"].nunique()
        if top_k >= n_models:
            raise ValueError(
                f"top_k={top_k} compares every one of the study's {n_models} models: choose "
                f"fewer (0 chooses {top_k_for(n_models)})"
            )
        models.submit(table)
        top_k = top_k or top_k_for(n_models)
        out_dir = Path(out_dir)
        # Trials write top1_error in percent: say so, the analysis never guesses a unit.
        load = functools.partial(
            load_results, scale="percent", name=store.key_uri(f"studies/{study}/results.csv")
        )
        sizes = {name: ref.n_test for name, ref in dataset_refs(store, table).items()}
        with tempfile.TemporaryDirectory(prefix="aprflow-datasets-") as folder:
            figures, notes = dataset_summaries(store, table, Path(folder))
            summary = analyze(
                load(table),
                out_dir,
                reference=reference or None,
                top_k=top_k,
                title=study,
                dataset_figures=figures,
                dataset_notes=notes,
                test_noise=test_noise,
                test_sizes=sizes,
                late_links=lambda: load(save_results(table, models.urls(), out_dir)),
            )
    params = {
        "analysis.reference": summary.get("apr", {}).get("reference"),
        "analysis.top_k": top_k,
        "analysis.best_models": best_models,
    }
    publish_study(store, uri, study, parent_run_id, out_dir, summary["metrics"], params)
    report("analyze", f"report at {store.key_uri(f'studies/{study}/report.html')}", started)
    return summary


def gather_study(
    store: ArtifactStore, uri: str, study: str, parent_run_id: str, trial_ids: list[str]
) -> tuple[pd.DataFrame, float]:
    """The study's results table with each trial's MLflow run (a trial without one is given
    one first, :func:`log_unlogged_trials`), and the study's start (Unix seconds).

    Raises:
        TrackingError: MLflow stays unreachable.
    """
    tracking.check_tracking(uri, tracking.wait_budget())
    started = store.get_json(f"studies/{study}/study.json")["started_at"]
    report("analyze", f"gathering {len(trial_ids)} trial results of study {study}", started)
    tracking.replay_queue(store, study, uri, strict=True)
    table = gather_results(store, trial_ids, tracking.trial_run_links(uri, parent_run_id))
    if (table["run_id"] == "").any():
        log_unlogged_trials(uri, parent_run_id, table)
        table = gather_results(store, trial_ids, tracking.trial_run_links(uri, parent_run_id))
    return table, started


class ModelLogging:
    """The logging of the best models per dataset as registered MLflow models
    (:func:`components.analyze.models.log_best_models`) in a second process, started first
    and waited for when the report needs its links: importing torch and timm and a
    ``torch.export`` per model take seconds each, and after training the study's cores are
    idle. The process imports while the analysis gathers the results, then logs the models of
    the table :meth:`submit` gives it. Nothing starts when ``k`` is 0.

    A context manager: leaving it on an error stops the process. Best-effort, as the
    logging itself: a process that fails is a progress line and no links.
    """

    # The results-table columns the logging reads.
    COLUMNS = ("trial_id", "run_id", "dataset", "status", "top1_error")

    def __init__(self, uri: str, store_uri: str | None, study: str, k: int) -> None:
        """Starts the process.

        Raises:
            ValueError: ``k`` is outside the limits table's ``best_models`` range.
        """
        k = check_limit("best_models", k)
        self._request = {"uri": uri, "store_uri": store_uri, "study": study, "k": k}
        self._folder = tempfile.TemporaryDirectory(prefix="aprflow-models-")
        self._result = Path(self._folder.name) / "urls.json"
        self._process: subprocess.Popen | None = None
        if k == 0:
            report("analyze", "best_models is 0: no model is logged to MLflow")
            return
        # In a local run, a fork of its warm process, which has imported torch, timm and MLflow.
        command = [python_executable(), "-m", "components.analyze.models"]
        command += [str(self._request_path), str(self._result)]
        # Its progress and errors go to stderr; stdout is the caller's, for results.
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    @property
    def _request_path(self) -> Path:
        return Path(self._folder.name) / "request.json"

    def submit(self, table: pd.DataFrame) -> None:
        """Hands the results table (its :data:`COLUMNS`) to the process, which logs its best
        models."""
        if self._process is None:
            return
        rows = table[list(self.COLUMNS)].to_dict("records")
        request = {**self._request, "columns": self.COLUMNS, "rows": rows}
        self._request_path.write_text(json.dumps(request))
        self._process.stdin.close()  # the process' signal to read the request

    def urls(self) -> dict[str, str]:
        """Waits for the process; ``{trial_id: registered version URL}`` of the models logged."""
        if self._process is None:
            return {}
        code = self._process.wait()
        if code != 0 or not self._result.exists():
            report("analyze", f"the best models are not in MLflow: their process exited {code}")
            return {}
        return json.loads(self._result.read_text())

    def __enter__(self) -> ModelLogging:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._process is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        self._folder.cleanup()


def save_results(table: pd.DataFrame, urls: Mapping[str, str], out_dir: Path) -> pd.DataFrame:
    """The results table with each logged model's link (``model_url``, empty for the others),
    written to ``out_dir/results.csv``."""
    table = table.assign(model_url=[redact_uri(urls.get(t, "")) for t in table["trial_id"]])
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "results.csv", index=False)
    return table


def publish_study(
    store: ArtifactStore,
    uri: str,
    study: str,
    parent_run_id: str,
    out_dir: Path,
    metrics: dict[str, float],
    params: dict[str, Any],
) -> None:
    """Copies the report folder to ``studies/<study>/`` in the store and closes the study's
    MLflow parent run with its metrics, params and the folder as artifacts."""
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        store.put_file(f"studies/{study}/{path.relative_to(out_dir).as_posix()}", path)
    tracking.finish_study_run(uri, parent_run_id, metrics, out_dir, params)


def dataset_refs(store: ArtifactStore, table: pd.DataFrame) -> dict[str, DatasetRef]:
    """The dataset of each name of the results table: the one its first trial trained on (one
    trial.json read per dataset)."""
    return {
        name: DatasetRef(**store.get_json(trial_key(trial_id))["dataset"])
        for name, trial_id in table.drop_duplicates("dataset")[["dataset", "trial_id"]].values
    }


def dataset_summaries(
    store: ArtifactStore, table: pd.DataFrame, folder: Path
) -> tuple[dict[str, Path], dict[str, str]]:
    """Each study dataset's summary figure (written by its build next to the manifest), copied
    into ``folder``, and its counts in words, for the report's "Datasets" section.

    Each name's dataset comes from :func:`dataset_refs`. A dataset without a summary figure
    is left out.
    """
    figures, notes = {}, {}
    for name, ref in dataset_refs(store, table).items():
        manifest = store.get_json(ref.manifest_key)
        png_key = manifest.get("summary", {}).get("png")
        if not png_key or not store.exists(png_key):
            continue
        figures[name] = folder / f"{len(figures)}.png"
        figures[name].write_bytes(store.get_bytes(png_key))
        splits = manifest["splits"]
        notes[name] = trained_size_note(table[table["dataset"] == name], ref.resolution) + (
            f"{manifest['n_images']:,} images in {len(manifest['class_names'])} classes "
            f"({splits['train']['n']:,} train, {splits['val']['n']:,} validation, "
            f"{splits['test']['n']:,} test; most/fewest training images per class "
            f"{manifest['imbalance']}), trained at {ref.resolution} px from the {ref.input} "
            f"input; {manifest['n_skipped']} source file(s) skipped; content hash "
            f"{ref.content_hash}."
        )
    return figures, notes


def trained_size_note(rows: pd.DataFrame, resolution: int) -> str:
    """How big the dataset's networks were as trained, beside the 224-px FLOPs they were
    sampled by (the stem at small resolutions changes an AnyNet, not only its input; a named
    timm model keeps timm's stem at every resolution)."""
    from components.sample.space import uses_small_stem

    trained, sampled = rows["flops_trained"].dropna(), rows["flops"].dropna()
    if trained.empty or sampled.empty:
        return ""
    named = sorted({model for model in rows["model"] if _is_named(model)})
    small = uses_small_stem(resolution, None) and len(named) < rows["model"].nunique()
    stem = "the small-input stem (stride 1)" if small else "the stem"
    stem += f"; {', '.join(named)} with timm's own" if small and named else ""
    band = "" if named else ", the band sampled"
    return (
        f"Trained at {resolution} px with {stem}: {trained.min() / 1e6:,.1f} to "
        f"{trained.max() / 1e6:,.1f} M multiply-adds per image ({sampled.min() / 1e6:,.0f} to "
        f"{sampled.max() / 1e6:,.0f} M at 224 px{band}). "
    )


def _is_named(model: str) -> bool:
    """Whether a results-table model id is a named timm model's (an AnyNet's is its hash)."""
    return not re.fullmatch(r"[0-9a-f]{16}", model)


def embed_figures(markdown: str, folder: Path) -> str:
    """Replaces ``](figures/x.png)`` links by data URIs: the Kubeflow UI's Markdown viewer
    shows one artifact and cannot follow relative links."""

    def data_uri(match: re.Match) -> str:
        png = (folder / match.group(1)).read_bytes()
        return f"](data:image/png;base64,{base64.b64encode(png).decode()})"

    return re.sub(r"\]\((figures/[^)]+\.png)\)", data_uri, markdown)


def write_task_outputs(
    out_dir: Path,
    values: Mapping[str, float],
    results: Any,
    report: Any,
    summary: Any,
    metrics: Any,
) -> None:
    """A study report folder as an analysis task's KFP outputs: ``results.csv`` (Dataset),
    ``report.html`` (HTML, self-contained), ``report.md`` with its figures embedded (Markdown)
    and ``values`` as scalar metrics (Metrics). The caller removes the folder."""
    import shutil

    shutil.copyfile(out_dir / "results.csv", results.path)
    shutil.copyfile(out_dir / "report.html", report.path)
    Path(summary.path).write_text(embed_figures((out_dir / "report.md").read_text(), out_dir))
    for name, value in values.items():
        metrics.log_metric(name, float(value))


def planned_trial_ids(store_uri: str | None, study: str, chunk_trials: list[Any]) -> list[str]:
    """The study's planned trial ids, checked against the training tasks' trial counts.

    Raises:
        ValueError: the counts do not add up to the plan (a chunk task of another plan, or a
            loop that skipped chunks), so the report would silently miss trials.
    """
    ids = load_trial_ids(open_store(store_uri), study)
    trained = sum(int(n) for n in chunk_trials)  # kfp.local gathers ints as floats
    if trained != len(ids):
        raise ValueError(
            f"study {study}: the training tasks report {trained} trials, the plan has "
            f"{len(ids)}; re-run the study (finished trials are reused)"
        )
    return ids


def analyze_to_temp(**kwargs: Any) -> tuple[dict[str, Any], Path]:
    """:func:`analyze_study` into a fresh temporary folder; returns the summary and the folder."""
    out_dir = Path(tempfile.mkdtemp(prefix="aprflow-analysis-"))
    return analyze_study(out_dir=out_dir, **kwargs), out_dir
