"""The study's best models per dataset, logged to MLflow and registered (``analyze``).

The analysis runs this module as a second process (:class:`components.analyze.run.ModelLogging`,
:func:`main`) beside its statistics.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import torch

from analysis.words import plural
from components.common import tracking
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import open_store
from components.common.tracking.models import RANK_TAG, log_trial_model, registered_name
from components.train.definition import Trial, result_key


class Classifier(torch.nn.Module):
    """A trial's network with its dataset's normalisation: RGB images as float32 in [0, 1],
    ``(batch, 3, side, side)``, to class logits."""

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


# What logging a model imports where it is used, imported once before any model is logged:
# MLflow's model flavour and SQL store (the local default), GitPython (MLflow's git run
# context imports it on every log_model: mlflow/mlflow v3.17.2, mlflow/utils/git_utils.py,
# get_git_commit, line 57), timm and AnyNet for the networks, torch.export's tracer and
# serialiser.
PRELOAD = (
    "mlflow.pytorch",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",
    "alembic",
    "git",
    "timm",
    "components.sample.anynet",
    "components.transfer.features",
    "torch.export._trace",
    "torch._export.serde.serialize",
)
# Processes that export and register the best models at once, one dataset each. The analysis
# task asks for 2 CPUs (pipelines: the analysis task's request), which its statistics have
# mostly left by the time the exports start (their imports come first): three single-threaded
# exports share them and end sooner than two then one. Each process holds a model's export in
# the task's memory.
EXPORT_PROCESSES = 3


def log_best_models(
    uri: str, store_uri: str | None, study: str, table: pd.DataFrame, k: int, processes: int = 1
) -> dict[str, str]:
    """Logs the ``k`` best ``ok`` trials per dataset (lowest top-1 error) as MLflow models on
    their runs, registered as versions of ``<study>-<dataset>`` (version tags: rank, top-1
    error, trial id). Best-effort: a model that cannot be logged is a line, and the analysis
    goes on. Returns ``{trial_id: the registered version's URL}`` of those logged.

    With ``processes`` above 1 and several datasets, the datasets are logged by that many
    processes at once (:func:`log_dataset_models`), forked from this one: exporting a model
    is seconds of single-threaded tracing, and the imports it needs are done once, here.
    Call it only from a process that has run no torch op yet (a forked child would inherit a
    used OpenMP thread pool, which hangs GNU OpenMP) and holds no MLflow or store connection.

    Raises:
        ValueError: ``k`` is outside the limits table's ``best_models`` range.
    """
    k = check_limit("best_models", k)
    ok = table[(table["status"] == "ok") & (table["run_id"] != "")]
    jobs = [
        (uri, store_uri, study, str(dataset), rows.sort_values(["top1_error", "trial_id"]).head(k))
        for dataset, rows in ok.groupby("dataset")
    ]
    if processes > 1 and len(jobs) > 1:
        # An executor, not a multiprocessing.Pool: a worker killed (out of memory) fails the
        # map with BrokenProcessPool instead of leaving it waiting for ever.
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=fork) as pool:
            parts = list(pool.map(log_dataset_models, *zip(*jobs, strict=True)))
    else:
        parts = [log_dataset_models(*job) for job in jobs]
    return {trial_id: url for part in parts for trial_id, url in part.items()}


def log_dataset_models(
    uri: str, store_uri: str | None, study: str, dataset: str, best: pd.DataFrame
) -> dict[str, str]:
    """Logs one dataset's best trials (``best``: results-table rows, best first) and registers
    them as versions of ``<study>-<dataset>``; ``{trial_id: version URL}`` of those logged."""
    from components.transfer.features import _load_trial_backbone

    store = open_store(store_uri)
    name = registered_name(study, dataset)
    urls = {}
    for rank, row in enumerate(best.itertuples(), 1):
        tags = {RANK_TAG: rank, "top1_error": row.top1_error, tracking.TRIAL_TAG: row.trial_id}
        try:
            trial = Trial.from_dict(store.get_json(result_key(row.trial_id)))
            backbone = _load_trial_backbone(row.trial_id, store, None, keep_head=True)
            side = trial.dataset.resolution
            example = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
            model = Classifier(backbone.model, backbone.mean, backbone.std).eval()
            logged = log_trial_model(uri, row.run_id, model, example, name, tags)
            urls[row.trial_id] = logged.url
        except Exception as e:  # noqa: BLE001 - the report matters more than the registry
            report("analyze", f"the model of trial {row.trial_id} is not in MLflow: {e}")
    report("analyze", f"best {plural(len(best), 'model')} on {dataset}: MLflow model {name}")
    return urls


def preload() -> None:
    """Imports :data:`PRELOAD` and builds MLflow's map of the installed packages, with which
    ``log_model`` checks a model's requirements (mlflow/mlflow v3.17.2:
    mlflow/utils/requirements_utils.py, _check_requirement_satisfied, line 626, through
    _init_modules_to_packages_map, line 445: a scan of site-packages, kept for the process),
    so that the processes forked to log models (:func:`log_best_models`) need not repeat
    either."""
    for module in PRELOAD:
        with contextlib.suppress(ModuleNotFoundError):  # mlflow-skinny has no SQL store
            importlib.import_module(module)
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()


def main(argv: list[str] | None = None) -> int:
    """``python -m components.analyze.models REQUEST RESULT``: imports what logging a model
    needs, waits for the end of its standard input (the analysis writes the JSON file REQUEST,
    then closes it: :class:`components.analyze.run.ModelLogging`), logs the best models REQUEST
    names and writes ``{trial_id: URL}`` of those logged to the JSON file RESULT.

    The imports (:func:`preload`) come first: they take seconds, which the analysis spends
    gathering results, and the processes :func:`log_best_models` forks need not repeat them.
    """
    preload()
    request_path, result_path = sys.argv[1:] if argv is None else argv
    # One thread: the analysis' statistics run beside it, and exporting a model is tracing.
    torch.set_num_threads(1)
    sys.stdin.read()
    if not os.path.exists(request_path):  # the analysis stopped before it had a request
        return 1
    with open(request_path) as f:
        request = json.load(f)
    table = pd.DataFrame(request["rows"], columns=request["columns"])
    urls = log_best_models(
        request["uri"],
        request["store_uri"],
        request["study"],
        table,
        request["k"],
        processes=EXPORT_PROCESSES,
    )
    with open(result_path, "w") as f:
        json.dump(urls, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
