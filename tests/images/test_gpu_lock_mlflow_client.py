"""The GPU image has mlflow-skinny, not mlflow: its pods' MLflow calls need nothing else.

The GPU pods (train and transfer chunks, TrainJob nodes) log to the chart's MLflow server over
REST. These tests run those calls in a process where every distribution of the locks
(requirements/) that images/locks/gpu.lock leaves out (mlflow's server stack: Flask, SQLAlchemy,
alembic, ..., and the test tools) is unimportable, against a real `mlflow server`
(tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]


def _names(lock: Path) -> set[str]:
    """Canonical names of a lock's pins (comments and pip options such as ``-c`` skipped)."""
    lines = [x for x in lock.read_text().splitlines() if x and not x.startswith(("#", "-"))]
    return {canonicalize_name(x.split("==")[0]) for x in lines}


def modules_outside_the_gpu_lock() -> list[str]:
    """Top-level modules that only distributions outside gpu.lock provide here."""
    kept = _names(REPO_ROOT / "images" / "locks" / "gpu.lock")
    locks = REPO_ROOT / "requirements"
    dropped = (_names(locks / "runtime.lock") | _names(locks / "dev.lock")) - kept
    return sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if {canonicalize_name(d) for d in distributions} <= dropped
    )


# Runs in the child: blocks the modules, then does what a GPU pod's tracking does.
GPU_POD = """
import sys
for module in sys.argv[2].split(","):
    sys.modules[module] = None  # import fails as if not installed
import components.train.chunk, components.train.run, components.trainjob.node
import components.transfer.steps
from components.common import tracking

uri = sys.argv[1]
parent = tracking.start_study_run(uri, "gpu-image", "study-gpu", {"n_models": 1})
with tracking.live_run(uri, parent, "chunk-0") as live:  # system metrics monitor on
    assert live
record = {"name": "digits", "content_hash": "abc123", "n_train": 10}
run_id = tracking.log_trial_run(uri, tracking.TrialLog(
    parent, "t1", run_name="resnet-t1", params={"d1": 2},
    metrics={"top1_error": 12.5}, history={"test_error": [50.0, 12.5]}, status="ok",
    dataset=record, dataset_source="s3://bucket/digits",
))
print(parent, live, run_id)
"""


def test_blocked_modules_are_the_mlflow_server_stack():
    blocked = modules_outside_the_gpu_lock()
    assert {"flask", "sqlalchemy", "alembic", "gunicorn", "graphene"} <= set(blocked)
    assert "mlflow" not in blocked and "torch" not in blocked


@pytest.mark.slow  # a real mlflow server, and the child imports torch and DeepSpeed
def test_gpu_pod_tracking_with_only_the_gpu_lock(mlflow_server):
    from mlflow.tracking import MlflowClient

    blocked = modules_outside_the_gpu_lock()
    result = subprocess.run(
        [sys.executable, "-c", GPU_POD, mlflow_server, ",".join(blocked)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    parent, live, run_id = result.stdout.split()[-3:]
    client = MlflowClient(tracking_uri=mlflow_server)
    trial = client.get_run(run_id)
    assert trial.data.metrics["top1_error"] == 12.5
    assert trial.data.tags["mlflow.parentRunId"] == parent
    assert [i.dataset.name for i in trial.inputs.dataset_inputs] == ["digits"]
    assert client.get_run(live).info.status == "FINISHED"


def test_sqlite_store_is_what_needs_the_server_stack(tmp_path):
    """The blocking is real: the embedded SQLite store (not used in the GPU image) fails."""
    code = (
        "import sys\n"
        "for m in sys.argv[2].split(','): sys.modules[m] = None\n"
        "from components.common import tracking\n"
        "tracking.start_study_run(sys.argv[1], 'exp', 'study', {})\n"
    )
    blocked = ",".join(modules_outside_the_gpu_lock())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-c", code, uri, blocked], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode != 0
    assert "needs the full mlflow package (SQLAlchemy, alembic)" in result.stderr
    assert "set MLFLOW_TRACKING_URI to an MLflow server" in result.stderr
