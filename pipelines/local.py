"""Running a pipeline on this machine with ``kfp.local`` (no cluster, no container engine).

Each task runs as a subprocess of this Python environment (``SubprocessRunner``): the same
component code that runs in our image on Kubeflow. Defaults: artifact store ``runs/store``,
MLflow ``sqlite:///runs/mlflow.db``, KFP's local outputs under ``runs/kfp-local``.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError
from components.common.progress import elapsed, report
from components.common.storage import STORE_ENV, default_store_uri, open_store
from components.common.tracking import TRACKING_ENV, resolve_tracking_uri


class LocalRunError(AprflowError):
    """A task of a local pipeline run failed."""


def run_local(pipeline, arguments: dict[str, Any], runs_dir: str | Path = "runs") -> Path:
    """Runs ``pipeline`` with ``arguments`` through kfp.local and copies its report locally.

    Returns:
        The folder ``runs/<study_id>/`` holding report.html, summary.json, results.csv, figures.
    """
    from kfp import local

    runs_dir = Path(runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Subprocess tasks inherit the environment: pin the resolved defaults so every task agrees.
    os.environ.setdefault(STORE_ENV, default_store_uri())
    os.environ.setdefault(TRACKING_ENV, resolve_tracking_uri())
    # kfp.local runs two loop iterations at once; one torch thread each fills two cores.
    os.environ.setdefault("APRFLOW_TORCH_THREADS", "1")
    started = time.time()
    report("local", f"running {pipeline.name} with {arguments}")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(runs_dir / "kfp-local"),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # kfp.local warns when an image name lacks "python"; ours is a Python image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            task = pipeline(**arguments)
        except Exception as e:  # noqa: BLE001 - kfp.local raises bare errors for failed tasks
            raise LocalRunError(
                f"{pipeline.name} failed after {elapsed(started)}: {e} (the failing task's "
                "log is above; finished trials are kept and reused when you run it again)"
            ) from None
    study = task.outputs["study_id"]
    store = open_store()
    out_dir = runs_dir / study
    if out_dir.exists():
        shutil.rmtree(out_dir)
    prefix = f"studies/{study}/"
    for key in store.list(prefix):
        store.get_file(key, out_dir / key.removeprefix(prefix))
    report("local", f"done in {elapsed(started)}: report at {out_dir / 'report.html'}")
    tracking = os.environ[TRACKING_ENV]
    report("local", f"browse the runs with: mlflow ui --backend-store-uri {tracking}")
    return out_dir
