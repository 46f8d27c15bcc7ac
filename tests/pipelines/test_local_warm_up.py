"""`aprflow run`'s warm-up: a new local MLflow database and the device check, done beside the
first tasks so that the planning task does neither in its own time."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Plans a trial estimate the way the planning task of a local run does: prints the device kind
# it planned for and whether it imported torch to know it.
PLANNED_KIND = """
import json, sys
from components.train.chunk import planned_device_kind
from components.train.definition import Trial
trial = Trial.from_dict(json.loads(sys.argv[1]))
print(json.dumps({"kind": planned_device_kind(trial), "torch": "torch" in sys.modules}))
"""


def test_the_warm_up_creates_the_database_and_says_the_device(tmp_path, monkeypatch):
    from components.train.chunk import LOCAL_DEVICE_ENV, local_device_kind
    from pipelines.local import LocalWarmUp

    monkeypatch.delenv(LOCAL_DEVICE_ENV, raising=False)
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    warm_up = LocalWarmUp()
    warm_up._thread.join(120)
    assert os.environ[LOCAL_DEVICE_ENV] == local_device_kind()
    with sqlite3.connect(db) as connection:  # MLflow's schema, at its head revision
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision
    warm_up.close()
    assert LOCAL_DEVICE_ENV not in os.environ


def test_the_warm_up_says_the_device_before_it_makes_the_database(tmp_path):
    """The planning task starts a few seconds into a run and needs the device first: the
    warm-up answers it while the database is still being made (here, held up by a lock)."""
    import fcntl

    from components.train.chunk import local_device_kind

    db = tmp_path / "mlflow.db"
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    with open(tmp_path / "mlflow.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what prepare_sqlite waits for
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local", "warm-up"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # A warm-up that made the database first would wait on the lock: killed, it says nothing.
        deadline = threading.Timer(90, process.kill)
        deadline.start()
        try:
            assert process.stdout.readline().strip() == local_device_kind()
            assert process.poll() is None and not db.exists()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            deadline.cancel()
    assert process.wait(120) == 0
    assert db.exists()


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_a_local_plan_reads_the_device_from_the_warm_up(kind, local_env):
    from components.data.datasets import prepare_all
    from components.train.chunk import LOCAL_DEVICE_ENV, LOCAL_SLOTS_ENV
    from components.train.recipes import resolve_recipe

    (faces,) = prepare_all(["faces"], 12, 0)
    spec = {"depths": [1], "widths": [8], "bottleneck_ratios": [1.0], "group_widths": [1]}
    trial = {
        "spec": spec,
        "dataset": faces.to_dict(),
        "recipe": resolve_recipe("apr_tiny").to_dict(),
        "seed": 0,
        "device": "auto",
    }
    env = os.environ | {LOCAL_SLOTS_ENV: "2", LOCAL_DEVICE_ENV: kind}
    done = subprocess.run(
        [sys.executable, "-c", PLANNED_KIND, json.dumps(trial)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"kind": kind, "torch": False}
