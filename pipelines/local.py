"""Running a pipeline on this machine with ``kfp.local`` (no cluster, no container engine).

Each task runs as a subprocess of this Python environment (``SubprocessRunner``): the same
component code that runs in our image on Kubeflow. Defaults: artifact store ``runs/store``,
MLflow ``sqlite:///runs/mlflow.db``, KFP's local outputs under ``runs/kfp-local``, every task's
log in ``runs/logs/<pipeline>-<time>.log`` (the terminal shows progress only; see
``pipelines/console.py``).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from components.common.errors import AprflowError
from components.common.progress import elapsed, report
from components.common.storage import STORE_ENV, default_store_uri, open_store
from components.common.tracking import TRACKING_ENV, resolve_tracking_uri
from pipelines.console import StudyConsole

TAIL_LINES = 25
KFP_LOCAL_SLOTS = 2
WORKSPACE_PREFIX = "kfp-workspace-"


class LocalRunError(AprflowError):
    """A task of a local pipeline run failed."""


def run_local(
    pipeline, arguments: dict[str, Any], runs_dir: str | Path = "runs", profile: bool = False
) -> Path:
    """Runs ``pipeline`` with ``arguments`` through kfp.local and copies its report locally.

    Args:
        profile: print where the study's wall time went and write ``profile.json`` beside
            the report (:mod:`pipelines.profile`).

    Returns:
        The folder ``runs/<study_id>/`` holding report.html, summary.json, results.csv, figures.
    """
    from kfp import local

    runs_dir = Path(runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Subprocess tasks inherit the environment: pin the resolved defaults so every task agrees.
    os.environ.setdefault(STORE_ENV, default_store_uri())
    os.environ.setdefault(TRACKING_ENV, resolve_tracking_uri())
    # One torch thread per task: kfp.local's two slots (local_slots) fill two cores.
    os.environ.setdefault("APRFLOW_TORCH_THREADS", "1")
    started = time.time()
    log_path = runs_dir / "logs" / f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    settings = ", ".join(
        f"{key}={json.dumps(value, default=str)}" for key, value in arguments.items()
    )
    report("local", f"running {pipeline.name}: {settings}")
    report("local", f"task logs: {log_path}")
    workspace = _workspace(runs_dir / "kfp-local")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(runs_dir / "kfp-local"),
        workspace_root=str(workspace),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # kfp.local warns when an image name lacks "python"; ours is a Python image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warm_up = LocalWarmUp()
        try:
            with (
                StudyConsole(log_path),
                original_print(),
                without_retries(pipeline),
                local_slots(),
            ):
                task = pipeline(**arguments)
        except Exception as e:  # noqa: BLE001 - kfp.local raises bare errors for failed tasks
            _print_tail(log_path)
            raise LocalRunError(
                f"{pipeline.name} failed after {elapsed(started)}: {e}; the tasks' log is "
                f"{log_path} (its last lines are above). Finished trials are kept and reused "
                "when you run it again"
            ) from None
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
            warm_up.close()
    study = task.outputs["study_id"]
    store = open_store()
    out_dir = runs_dir / study
    if out_dir.exists():
        shutil.rmtree(out_dir)
    prefix = f"studies/{study}/"
    for key in store.list(prefix):
        store.get_file(key, out_dir / key.removeprefix(prefix))
    shutil.copyfile(log_path, out_dir / "run.log")
    if profile:
        from pipelines.profile import profile_lines, profile_run

        record = profile_run(log_path, store, study, started, time.time())
        (out_dir / "profile.json").write_text(json.dumps(record, indent=2) + "\n")
        for line in profile_lines(record):
            report("profile", line)
    report("local", f"done in {elapsed(started)}: report at {out_dir / 'report.html'}")
    tracking = os.environ[TRACKING_ENV]
    report("local", f"browse the runs with: mlflow ui --backend-store-uri {tracking}")
    return out_dir


class LocalWarmUp:
    """What the tasks of a local run would otherwise each do in their own time, done by one
    process beside the first tasks (which use one of the machine's cores):

    - torch says which device this machine trains on (importing torch takes seconds), which the
      tasks started after it answered read from ``APRFLOW_LOCAL_DEVICE``;
    - a new local MLflow database is created (the planning task then finds it complete:
      :func:`~components.common.tracking.prepare_sqlite` locks it while it works);
    - the process then imports what the training tasks' fork servers and the analysis' model
      logging import (torch, timm, MLflow, ``torch.export``) and stays, as the warm process of
      :mod:`components.common.warm_start`: those processes start as forks of it, through the
      launcher in ``APRFLOW_WARM_PYTHON``.

    Best-effort: a task that starts first, or after it failed, does the same itself, and a
    launcher whose warm process is gone starts a new interpreter. The process reads the
    tracking URI from ``MLFLOW_TRACKING_URI`` (never from its command line, which other users of
    the machine can read). :meth:`close` ends it and unsets the variables it set.
    """

    def __init__(self) -> None:
        from components.common.warm_start import WARM_PYTHON_ENV, write_launcher
        from components.train.chunk import LOCAL_DEVICE_ENV

        self._variable = LOCAL_DEVICE_ENV
        self._set: list[str] = []
        self._folder = tempfile.TemporaryDirectory(prefix="aprflow-warm-")
        command = [sys.executable, "-m", "pipelines.local", "warm-up"]
        listener = socket.socket(socket.AF_UNIX)
        try:
            if not sys.platform.startswith("linux"):  # it reads /proc and uses pidfd_open
                raise OSError("a warm process needs Linux")
            address = os.path.join(self._folder.name, "socket")
            listener.bind(address)  # a path too long for a socket: no warm process, as before
            listener.listen(64)
            launcher = write_launcher(Path(self._folder.name), address)
            command.append(str(listener.fileno()))
        except OSError:
            launcher = None
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            pass_fds=(listener.fileno(),) if launcher else (),
        )
        listener.close()  # the warm process holds it: once it ends, launchers are refused
        if launcher:
            self._setdefault(WARM_PYTHON_ENV, str(launcher))
        self._thread = threading.Thread(target=self._answer, name="aprflow-warm-up", daemon=True)
        self._thread.start()

    def _setdefault(self, name: str, value: str) -> None:
        # os.environ, under the GIL, as kfp.local's task start (env=None) reads it.
        if name not in os.environ:
            os.environ[name] = value
            self._set.append(name)

    def _answer(self) -> None:
        answer = self._process.stdout.readline().strip()  # the device, before the database
        if answer in ("gpu", "cpu"):
            self._setdefault(self._variable, answer)
        self._process.stdout.read()  # the end: the database is ready

    def close(self) -> None:
        """Ends the process (its standard input closed; killed if it has not ended 10 s
        later) and unsets the variables it set. A database still being created (a run that
        failed at once) is waited for up to 30 s."""
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(30)
        for name in self._set:
            os.environ.pop(name, None)
        self._folder.cleanup()


def warm_up(listener_fd: int | None = None) -> None:
    """Prints the kind of device this machine's trials train on, then creates the local MLflow
    database of the tracking URI if it is a SQLite file and new (:class:`LocalWarmUp`); with
    ``listener_fd``, a listening Unix socket, it then serves as the warm process until its
    standard input ends (:func:`components.common.warm_start.serve`)."""
    from components.common.warm_start import in_child, preload, serve
    from components.train.chunk import FORK_SERVER_PRELOAD, MLFLOW_MODULES, local_device_kind

    environ = dict(os.environ)  # before the imports, which set variables of their own
    if listener_fd is None:
        print(local_device_kind(), flush=True)
        _prepare_database()
        return
    # The device and the database are asked in children: CUDA, once asked, would not work in
    # the processes forked from here, nor would an open database connection.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    preload(["torch"])
    in_child(lambda: print(local_device_kind(), flush=True))
    preload(MLFLOW_MODULES)
    in_child(_prepare_database)
    # The standard output ends with those two children: the caller's sign that both are done.
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    from components.analyze import models

    preload(FORK_SERVER_PRELOAD)
    models.preload()
    run = serve(socket.socket(fileno=listener_fd), environ)
    if run is None:  # the run is over: ended at once, without tearing its imports down
        os._exit(0)
    run()  # a process a launcher asked for


def _prepare_database() -> None:
    from components.common.tracking import prepare_sqlite
    from components.common.tracking.client import is_sqlite, sqlite_path

    tracking_uri = resolve_tracking_uri()
    if is_sqlite(tracking_uri):
        prepare_sqlite(sqlite_path(tracking_uri))


@contextlib.contextmanager
def local_slots() -> Iterator[None]:
    """Within it, plans are made for kfp.local's slots: for a local run and its dry run alike.

    kfp.local runs at most two loop iterations at once, whatever the loop's parallelism
    (kfp/kfp v2.17.0: kfp/local/orchestrator/enhanced_dag_orchestrator.py, ParallelExecutor,
    conservative_max = 2): the plan sizes chunks for two slots (one task start-up each) and
    estimates trials for this machine's device (components.train.chunk, LOCAL_SLOTS_ENV). A
    value already in the environment wins; the environment is as it was afterwards.
    """
    from components.train.chunk import LOCAL_SLOTS_ENV

    previous = os.environ.get(LOCAL_SLOTS_ENV)
    os.environ.setdefault(LOCAL_SLOTS_ENV, str(KFP_LOCAL_SLOTS))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOCAL_SLOTS_ENV, None)


@contextlib.contextmanager
def without_retries(pipeline) -> Iterator[None]:
    """The pipeline's task retry policies cleared while it runs here, then put back.

    ``set_retry`` is for a cluster (a preempted GPU node); kfp.local 2.17 honours it too
    (``kfp/local/orchestrator/task_executor.py``: back-off 60 s, 120 s, 240 s), so a chunk that
    fails on this machine would be reported minutes later. Here it fails at once, and a re-run
    reuses the finished trials. Put back because compiling in this process must still see them.
    """
    tasks = [
        task
        for component in [pipeline.pipeline_spec.root, *pipeline.pipeline_spec.components.values()]
        for task in component.dag.tasks.values()
        if task.HasField("retry_policy")
    ]
    saved = [copy.deepcopy(task.retry_policy) for task in tasks]
    for task in tasks:
        task.ClearField("retry_policy")
    try:
        yield
    finally:
        for task, policy in zip(tasks, saved, strict=True):
            task.retry_policy.CopyFrom(policy)


def _workspace(folder: Path) -> Path:
    """A new, empty kfp.local workspace in ``folder``, named after this process.

    ``kfp.local.init`` makes one in the system's temporary folder unless given one, and its
    pipeline run removes it in a ``finally`` (kubeflow/pipelines sdk 2.17.0: sdk/python/kfp/
    local/config.py, ``init``, line 283, ``tempfile.mkdtemp(prefix='kfp-workspace-')``;
    local/pipeline_orchestrator.py, ``_run_local_pipeline_implementation``, line 157), which a
    killed run never reaches. Here the workspace lies beside the run's outputs, and a run removes
    those that killed runs left (their process is gone; the pipelines use no workspace, so they
    are empty, and a folder that is not is kept).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f"{WORKSPACE_PREFIX}*"):
        pid = leftover.name.removeprefix(WORKSPACE_PREFIX).partition("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(OSError):
                leftover.rmdir()
    return Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-", dir=folder))


def _print_tail(log_path: Path, lines: int = TAIL_LINES) -> None:
    """Prints the last ``lines`` lines of the run's log to stderr: the failing task's output."""
    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)


@contextlib.contextmanager
def original_print() -> Iterator[None]:
    """Restores ``builtins.print`` after kfp.local: its tasks indent their output by swapping
    ``builtins.print`` from parallel threads (``indented_print`` in kfp/local/logging_utils.py,
    kfp 2.17.0), and an unlucky interleaving leaves the indenting version installed for the
    rest of the process: every later ``print`` then starts with four spaces."""
    original = builtins.print
    try:
        yield
    finally:
        builtins.print = original


if __name__ == "__main__":
    # python -m pipelines.local warm-up [LISTENER_FD]: what LocalWarmUp runs.
    if sys.argv[1:2] != ["warm-up"] or len(sys.argv) > 3 or not all(map(str.isdigit, sys.argv[2:])):
        sys.exit("usage: python -m pipelines.local warm-up [LISTENER_FD]")
    warm_up(*map(int, sys.argv[2:]))
