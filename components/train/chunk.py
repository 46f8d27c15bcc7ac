"""Chunks: a study's trials grouped into a bounded number of training tasks, and the runner
that trains one chunk, trial after trial, each in a child process that may be killed.

Why chunks: one KFP task per trial means three pods (driver, launcher, executor) and a
per-task start-up (image pull, imports) for every trial; a 500-model x 9-dataset study would
be ~13,500 pods and a workflow object past Argo's size limit. A chunk task trains many trials
in one pod, so the task count is ``ceil(trials / chunk_size)``.

Sizing (``chunk_size = 0``, the default): each trial's wall time is estimated from measured
throughput (:mod:`components.train.throughput`: the trainer's images/s and per-trial overhead
on the nearest measured model size, for a GPU unless the trial is pinned to the CPU), and a
chunk holds as many trials as fit in :data:`CHUNK_SECONDS` (one GPU-hour) at the mean
estimate, but no more than an even share of the trials over ``max_parallel_tasks``, so that a
small study still uses every parallel slot. The plan records which measurement its estimates
rest on and its date; a wrong estimate only makes chunks longer or shorter.

Surviving kills: every trial of a chunk runs in a child process (forked from a multiprocessing
fork server that has imported torch and the trainer once, so a trial starts in milliseconds and
no child inherits a used OpenMP pool or CUDA context; ``torchrun`` for multi-GPU trials). A
child killed by a signal (the kernel's OOM killer sends SIGKILL, exit 137 in a shell) is
recorded in ``trials/<id>/attempts.json`` and started again (resuming from its last checkpoint)
up to ``max_attempts`` times in this task; then the trial's result is written as ``failed:
killed by signal 9 (out of memory?)`` and the chunk goes on. A later run of the study tries a
trial that was killed again (the kill may have been a neighbour's fault); every other stored
result is reused. The task exits non-zero only for infrastructure errors (a child that kept
raising, the store, a GPU that was requested and is missing), after the chunk's other trials
have run; a trial that met one wrote no result (``trials/<id>/attempts.json`` counts it), so a
re-run trains it again.

Time limits: a trial whose child runs past its wall-clock limit (``trial_timeout_s`` of the
plan, else :data:`TIMEOUT_FACTOR` x its estimate, at least :data:`TIMEOUT_FLOOR_S`; resolved per
trial in ``chunks.json``) is SIGKILLed with every process it started (torchrun's ranks, data
loader workers) and recorded ``failed: timed out after N s`` at once, without a retry in this
task; a later run of the study tries it again, as a killed one.

Packing: ``trials_per_gpu > 1`` runs that many trial processes at once, sharing the task's GPU
(or CPU cores: threads are divided among them).

Helping: chunks are balanced by estimated time, and estimates miss (on a CPU, two models of one
FLOP band trained 2-3x apart in the demo); a task whose trials are done trains other chunks'
trials that no process has started, from the end of their lists (:class:`Helping`), instead of
leaving its slot idle until the last chunk ends.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import heapq
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from components.common.errors import AprflowError
from components.common.limits import MAX_TRIAL_TIMEOUT_S, check_limit
from components.common.progress import report
from components.common.storage import (
    ArtifactStore,
    CorruptObjectError,
    Lease,
    MissingObjectError,
    open_store,
)
from components.common.warm_start import forkserver_launcher
from components.train import throughput
from components.train.definition import Trial, attempts_key, lease_prefix, result_key
from components.train.plan import load_trial

CHUNK_SECONDS = 3600.0
# The chunk tasks a local runner runs at once, when fewer than the loop's parallelism: set by
# `aprflow run` (pipelines/local.py) from kfp.local's cap.
LOCAL_SLOTS_ENV = "APRFLOW_LOCAL_PARALLEL_TASKS"
# The kind of device ("gpu" or "cpu") a local run's trials train on: set by `aprflow run`
# (pipelines/local.py, LocalWarmUp) once it knows, so a task need not import torch to ask.
LOCAL_DEVICE_ENV = "APRFLOW_LOCAL_DEVICE"
DEFAULT_MAX_PARALLEL_TASKS = 16
DEFAULT_MAX_ATTEMPTS = 2
# A trial's wall-clock limit when the plan sets none (trial_timeout_s = 0). It is there to free
# the GPU from a hung trial (an NCCL collective or a data-loader worker that never returns), not
# to cut slow ones short: the estimate rests on one measured GPU, and a trial on a smaller GPU,
# packed with others or waiting on its data can take several times it, hence 10x. The floor
# covers what the estimate leaves out (dataset caching, torch.compile) and the trials it calls
# short: small models at small resolutions, and a trial planned for a GPU that runs on a CPU
# (the demo's; a longer CPU study pins device cpu or sets trial_timeout_s).
TIMEOUT_FACTOR = 10
TIMEOUT_FLOOR_S = 1800
# MLflow's client and SQL store, imported once in the fork server: a trial opens its run when
# it starts, and these imports take 3-11 s on a busy 2-core machine. The fork server skips a
# module that is not installed (the GPU image's mlflow-skinny has no SQL store).
MLFLOW_MODULES = ("mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store")
# timm and the parts of it the trainer imports where it uses them (with torchvision and
# torch._dynamo under them): imported in every trial's child otherwise, about 1.7 s of each
# trial on a 2-core machine. Importing them runs no torch op (the fork server's rule).
TIMM_MODULES = ("timm", "timm.data", "timm.loss", "timm.optim", "timm.scheduler", "timm.utils")
# What the fork server imports before it forks a trial.
FORK_SERVER_PRELOAD = (
    "components.train.run",
    "components.train.trial",
    *TIMM_MODULES,
    *MLFLOW_MODULES,
)
# How often the runner looks at its children's time limits (and at a torchrun child; a forked
# trial's exit wakes the runner at once, :func:`wait_for_an_exit`).
POLL_S = 0.2
# A trial's exit status when a write found its disk full (ENOSPC's number): the runner does
# not start it again in this task, which would write into the same full disk.
EXIT_NO_SPACE = errno.ENOSPC


def fork_server() -> multiprocessing.context.BaseContext:
    """The fork server's context, its server started (once per process) with torch, timm, the
    trainer and MLflow imported (:data:`FORK_SERVER_PRELOAD`): a trial's child is a fork of it
    (see ``_Child.start``), and so is the process that holds a chunk's live MLflow run. In a
    local run the server itself is a fork of the run's warm process, which has imported them
    already (:mod:`components.common.warm_start`)."""
    from multiprocessing import forkserver, resource_tracker

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORK_SERVER_PRELOAD))
    resource_tracker.ensure_running()  # a new interpreter: it imports nothing
    with forkserver_launcher():  # in a local run, a fork of its warm process
        forkserver.ensure_running()
    return context


class ChunkError(AprflowError):
    """A chunk setting that cannot work, or an infrastructure error the runner could not retry."""


def trial_macs(trial: Trial) -> float:
    """Multiply-adds per image of a trial's model at its training resolution (0 for a
    structurally broken spec or an unknown timm model, whose trial fails at once)."""
    spec = json.dumps(trial.spec, sort_keys=True)
    return _macs(spec, trial.dataset.resolution, trial.dataset.num_classes)


@functools.lru_cache(maxsize=4096)
def _macs(spec_json: str, resolution: int, num_classes: int) -> float:
    # Cached: a study's trials repeat each architecture over datasets and seeds, and a plan
    # estimates every trial more than once (chunk sizes, balance, time limits). A named timm
    # model is measured once per resolution (components.sample.models.complexity).
    from components.sample.models import complexity

    try:
        return complexity(json.loads(spec_json), resolution, num_classes).flops
    except ValueError:
        return 0.0


def planned_device_kind(trial: Trial) -> str:
    """The kind of device a trial's estimate is for: its pinned device, else a GPU, except in a
    local run on a machine without one (:data:`LOCAL_SLOTS_ENV` set), whose trials train here
    on the CPU."""
    if trial.device == "auto" and os.environ.get(LOCAL_SLOTS_ENV):
        return os.environ.get(LOCAL_DEVICE_ENV) or local_device_kind()
    return throughput.device_kind(trial.device)


def local_device_kind() -> str:
    """``"gpu"`` when torch sees a GPU on this machine, else ``"cpu"``."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def estimate(trial: Trial) -> throughput.Estimate:
    """A trial's estimated wall time on one device and the measurement it rests on."""
    macs = trial_macs(trial)
    kind = planned_device_kind(trial)
    found = throughput.estimate(
        macs, trial.dataset.n_train, trial.recipe.epochs, kind, trial.dataset.input
    )
    return found if macs else throughput.Estimate(0.0, found.basis)


def estimate_seconds(trial: Trial) -> float:
    """A trial's estimated wall time in seconds (:func:`estimate`)."""
    return estimate(trial).seconds


def check_chunking(chunk_size: int, max_parallel_tasks: int) -> None:
    """Raises :class:`ChunkError` unless ``chunk_size >= 0`` (0 = sized by estimate) and
    ``max_parallel_tasks >= 1``."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ChunkError(
            f"chunk_size must be a whole number of trials >= 1, or 0 to size chunks for about "
            f"{CHUNK_SECONDS / 3600:g} GPU-hour each, got {chunk_size!r}"
        )
    if (
        isinstance(max_parallel_tasks, bool)
        or not isinstance(max_parallel_tasks, int)
        or max_parallel_tasks < 1
    ):
        raise ChunkError(f"max_parallel_tasks must be at least 1, got {max_parallel_tasks!r}")


def parallel_slots(max_parallel_tasks: int) -> int:
    """How many chunk tasks really run at once: ``max_parallel_tasks`` (the loop's compiled
    parallelism), at most :data:`LOCAL_SLOTS_ENV` when a local runner sets it (kfp.local runs
    two loop iterations at once whatever the parallelism)."""
    local = os.environ.get(LOCAL_SLOTS_ENV, "").strip()
    return min(max_parallel_tasks, int(local)) if local else max_parallel_tasks


def default_chunk_size(trials: list[Trial], max_parallel_tasks: int) -> int:
    """Trials per chunk: a GPU-hour's worth at the mean estimate, at most an even share of the
    trials over the slots that run at once (so a small study fills them, with one task's
    start-up per slot)."""
    mean = sum(estimate_seconds(t) for t in trials) / len(trials)
    per_hour = max(1, int(CHUNK_SECONDS // mean)) if mean > 0 else len(trials)
    even_share = math.ceil(len(trials) / parallel_slots(max_parallel_tasks))
    return max(1, min(per_hour, even_share))


def chunk_trials(trials: list[Trial], chunk_size: int, max_parallel_tasks: int) -> list[list[int]]:
    """Splits the plan into ``ceil(trials / size)`` chunks of at most ``size`` trials, balanced
    by estimated time (the longest trial first into the chunk with the least estimated time
    that has room), each chunk's trials longest first, ties in plan order (indices into
    ``trials``): a chunk ends with its shortest trials, so chunks end close together, and the
    trials a helper takes from a chunk's end (:class:`Helping`) are short ones.

    Args:
        trials: the study's trials in plan order.
        chunk_size: trials per chunk; 0 = :func:`default_chunk_size`.
        max_parallel_tasks: how many chunk tasks run at once.
    """
    check_chunking(chunk_size, max_parallel_tasks)
    size = chunk_size or default_chunk_size(trials, max_parallel_tasks)
    n_chunks = math.ceil(len(trials) / size)
    check_chunk_count(n_chunks)
    seconds = [estimate_seconds(t) for t in trials]
    chunks: list[list[int]] = [[] for _ in range(n_chunks)]
    open_chunks = [(0.0, c) for c in range(n_chunks)]  # (estimated load, chunk) with room
    for index in sorted(range(len(trials)), key=lambda i: (-seconds[i], i)):
        load, target = heapq.heappop(open_chunks)
        chunks[target].append(index)
        if len(chunks[target]) < size:
            heapq.heappush(open_chunks, (load + seconds[index], target))
    return [sorted(chunk, key=lambda i: (-seconds[i], i)) for chunk in chunks]


def check_chunk_count(n_chunks: int) -> None:
    """Raises :class:`ChunkError` for more chunks than ``LIMITS["chunks"]`` allows."""
    try:
        check_limit("chunks", n_chunks, "the number of chunks (training tasks)")
    except ValueError as e:
        raise ChunkError(str(e)) from None


def check_trial_timeout(trial_timeout_s: int) -> None:
    """Raises :class:`ChunkError` unless ``trial_timeout_s`` is a whole number of seconds in
    ``[0, MAX_TRIAL_TIMEOUT_S]`` (0 = derived from each trial's estimate)."""
    value = trial_timeout_s
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_TRIAL_TIMEOUT_S
    ):
        raise ChunkError(
            f"trial_timeout_s must be a whole number of seconds in [0, {MAX_TRIAL_TIMEOUT_S}] "
            f"(0 = {TIMEOUT_FACTOR} x the trial's estimated time, at least "
            f"{TIMEOUT_FLOOR_S // 60} minutes), got {value!r}"
        )


def trial_time_limit(estimate_s: float, trial_timeout_s: int = 0) -> int:
    """A trial's wall-clock limit in seconds: ``trial_timeout_s`` when set, else
    :data:`TIMEOUT_FACTOR` x its estimated time (:func:`estimate_seconds`), at least
    :data:`TIMEOUT_FLOOR_S`."""
    return trial_timeout_s or max(TIMEOUT_FLOOR_S, math.ceil(TIMEOUT_FACTOR * estimate_s))


def summary_line(n_trials: int, n_chunks: int) -> str:
    """``1500 trials in 30 chunks: 30 training tasks`` (one task per chunk)."""
    return f"{n_trials} trials in {n_chunks} chunks: {n_chunks} training tasks"


def chunks_key(study: str) -> str:
    return f"studies/{study}/chunks.json"


def save_chunks(
    store: ArtifactStore,
    study: str,
    trials: list[Trial],
    chunk_size: int,
    max_parallel_tasks: int,
    trial_timeout_s: int = 0,
) -> dict[str, Any]:
    """Chunks the planned trials, writes ``studies/<study>/chunks.json`` and returns it.

    The record holds each trial's wall-clock limit (``time_limits_s``, by trial id:
    :func:`trial_time_limit`), which the chunk task reads.
    """
    chunks = chunk_trials(trials, chunk_size, max_parallel_tasks)
    check_trial_timeout(trial_timeout_s)
    estimates = [estimate(t) for t in trials]
    seconds = [e.seconds for e in estimates]
    record = {
        "chunk_size": len(chunks[0]),
        "max_parallel_tasks": max_parallel_tasks,
        "estimated_from": sorted({e.basis.describe() for e in estimates}),
        "chunks": [[trials[i].trial_id for i in chunk] for chunk in chunks],
        "estimated_gpu_hours": [round(sum(seconds[i] for i in c) / 3600, 4) for c in chunks],
        "summary": summary_line(len(trials), len(chunks)),
        "trial_timeout_s": trial_timeout_s,
        "time_limits_s": {
            t.trial_id: trial_time_limit(s, trial_timeout_s)
            for t, s in zip(trials, seconds, strict=True)
        },
    }
    store.put_json(chunks_key(study), record)
    return record


def chunk_timing_key(study: str, chunk: int) -> str:
    return f"studies/{study}/chunks/{chunk}/timing.json"


def load_chunks(store: ArtifactStore, study: str) -> dict[str, Any]:
    return store.get_json(chunks_key(study))


def plan_markdown(record: dict[str, Any]) -> str:
    """The plan as Markdown for the Kubeflow UI (the plan task's ``plan`` output)."""
    hours = record["estimated_gpu_hours"]
    lines = [
        f"## {record['summary']}",
        "",
        f"- trials per chunk: {record['chunk_size']}; chunk tasks at once: "
        f"{record['max_parallel_tasks']}",
        f"- estimated device-hours: {sum(hours):.2f} in all, {max(hours):.2f} for the longest "
        "chunk, from the measured throughput of",
        *(f"  - {basis}" for basis in record.get("estimated_from", [])),
        "",
        "| chunk | trials | estimated GPU-hours |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {i} | {len(ids)} | {hours[i]:.3f} |" for i, ids in enumerate(record["chunks"])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass(frozen=True)
class ChunkSettings:
    """How a chunk task runs its trials.

    Attributes:
        gpus_per_trial: processes per trial (> 1: torchrun with one rank per GPU, DeepSpeed).
        trials_per_gpu: trials trained at once (packing several small models on one device).
        max_attempts: starts of a trial in this task before a killed trial is recorded failed.
        cpus: CPU cores of the task; threads per trial = cpus // trials at once (0: leave).
        help_others: once its own trials are done, the task trains other chunks' trials that
            no process has started (:class:`Helping`), so that chunks whose estimates were
            short do not leave slots idle while the last chunk runs.
    """

    gpus_per_trial: int = 1
    trials_per_gpu: int = 1
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    cpus: int = 0
    help_others: bool = True

    def __post_init__(self) -> None:
        for name in ("gpus_per_trial", "trials_per_gpu", "max_attempts"):
            if getattr(self, name) < 1:
                raise ChunkError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.gpus_per_trial > 1 and self.trials_per_gpu > 1:
            raise ChunkError("packing (trials_per_gpu > 1) is for one-GPU trials only")

    @property
    def threads_per_trial(self) -> int:
        return max(1, self.cpus // self.trials_per_gpu) if self.cpus else 0


def describe_exit(exitcode: int) -> str:
    """A child's end in words: ``killed by signal 9 (out of memory?)`` for SIGKILL."""
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        hint = " (out of memory?)" if number == signal.SIGKILL else f" ({name})"
        return f"killed by signal {number}{hint}"
    return f"exited with status {exitcode}"


def _record_attempt(store: ArtifactStore, trial_id: str, entry: dict[str, Any]) -> int:
    """Appends (or completes) this run's attempt entry; returns the number of entries."""
    try:
        history = store.get_json(attempts_key(trial_id))
    except MissingObjectError:
        history = {"trial_id": trial_id}
    # The trial itself counts its starts and infrastructure errors in the same object.
    attempts = history.setdefault("attempts", [])
    if attempts and attempts[-1].get("started_at") == entry.get("started_at"):
        attempts[-1] = entry
    else:
        attempts.append(entry)
    store.put_json(attempts_key(trial_id), history)
    return len(attempts)


def _has_result(store: ArtifactStore, trial_id: str) -> bool:
    """Whether the trial wrote a readable result of its own (not a killed one)."""
    try:
        result = store.get_json(result_key(trial_id))
    except (MissingObjectError, CorruptObjectError):
        return False
    return isinstance(result, dict) and not result.get("killed")


def _retry_if_killed(store: ArtifactStore, trial_id: str) -> None:
    """A result of a trial that was killed (or timed out) in an earlier run is removed, so that
    the trial runs again (``attempts.json`` keeps the history); so is a truncated or corrupt one
    (set aside as ``result.json.corrupt-<time>``), which would otherwise stop every re-run of the
    chunk here."""
    key = result_key(trial_id)
    try:
        result = store.get_json(key)
    except MissingObjectError:
        return
    except CorruptObjectError as e:
        aside = store.set_aside(key)
        print(
            f"[train] {e}; set aside as {aside}, training trial {trial_id} again",
            file=sys.stderr,
            flush=True,
        )
        return
    if isinstance(result, dict) and result.get("killed"):
        store.delete(key)
        report("train", f"trial {trial_id} was killed in an earlier run: trying it again")


def _child_main(
    study: str,
    trial_id: str,
    store_uri: str | None,
    tracking_uri: str | None,
    kfp_run_id: str,
    threads: int,
    result: dict[str, Any] | None,
    environment: dict[str, str],
) -> None:
    """A child: trains (or, with ``result``, only records) one trial. An exception is an
    infrastructure error: the exit status says so to the runner.

    ``environment`` is the runner's: the fork server keeps the one it started with.
    """
    os.environ.clear()
    os.environ.update(environment)
    # A thread count set for the whole run wins (kfp.local sets 1: its parallel chunk tasks
    # share this machine's cores).
    if threads and "APRFLOW_TORCH_THREADS" not in environment:
        os.environ["APRFLOW_TORCH_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    from components.train.run import train_trial

    try:
        train_trial(trial_id, study, store_uri, tracking_uri, kfp_run_id, result=result)
    except Exception as e:
        where = no_space_path(e, store_uri)
        if where is None:
            raise
        print(
            f"[train] trial {trial_id}: no space left on device: {where}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_NO_SPACE)


def no_space_path(error: BaseException, store_uri: str | None) -> str | None:
    """Where the disk is full when ``error`` is (or was raised from) an ENOSPC, else None: the
    file that could not be written, or the local store's folder when the error does not say
    (a failed ``write`` names no file), or the store's URI."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return str(error.filename) if error.filename else _location(open_store(store_uri))
        error = error.__cause__ or error.__context__
    return None


def _location(store: ArtifactStore) -> str:
    """A local store's folder, else the store's URI."""
    return str(getattr(store, "root", store.uri))


def kill_process_tree(pid: int) -> None:
    """SIGKILLs process ``pid`` and its descendants, whatever their process group or session.

    The process is stopped (SIGSTOP) before its descendants are listed, so that it starts no
    new one meanwhile; a process a descendant starts during the listing is not reached.
    """
    try:
        root = psutil.Process(pid)
        root.suspend()
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


class _Child:
    """One trial's process: a fork of this one, or torchrun for a multi-GPU trial; it runs
    from :meth:`start` on (the caller records the attempt before, so that the parent and the
    trial never write ``attempts.json`` at the same time).

    Attributes:
        time_limit_s: seconds the trial may run from its start (None: no limit).
        timed_out: whether :meth:`kill_if_overdue` killed it.
    """

    def __init__(
        self, target_args: tuple, settings: ChunkSettings, time_limit_s: int | None = None
    ) -> None:
        self.target_args, self.settings = target_args, settings
        self.time_limit_s = time_limit_s
        self.timed_out = False
        self.started_at = time.time()

    def start(self) -> _Child:
        study, trial_id, store_uri, tracking_uri, kfp_run_id, threads, result = self.target_args
        if self.settings.gpus_per_trial > 1 and result is None:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={self.settings.gpus_per_trial}",
                "-m",
                "components.train.chunk",
                "--study",
                study,
                "--trial-id",
                trial_id,
                "--kfp-run-id",
                kfp_run_id,
            ]
            command += ["--store-uri", store_uri] if store_uri else []
            command += ["--tracking-uri", tracking_uri] if tracking_uri else []
            env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
            # torchrun stays in this process group (Ctrl-C or a kill of the task's group reaches
            # it, and it stops its ranks). Its ranks, started as ``python -m`` commands, are in
            # sessions of their own (pytorch/pytorch v2.14.1: torch/distributed/elastic/
            # multiprocessing/__init__.py, start_processes, line 225, a command runs through
            # SubprocessHandler; subprocess_handler/subprocess_handler.py,
            # SubprocessHandler._popen, line 66: start_new_session=True), so a process-group
            # kill would miss them: kill_process_tree reaches them by parentage.
            self._popen: subprocess.Popen | None = subprocess.Popen(command, env=env)
            self._process = None
        else:
            # From the fork server: torch and the trainer are imported there once (no start-up
            # per trial), and it never runs torch ops, so no child inherits a used OpenMP thread
            # pool (GNU OpenMP hangs in a fork after use) or a CUDA context.
            args = (*self.target_args, dict(os.environ))
            self._process = fork_server().Process(target=_child_main, args=args, daemon=False)
            self._process.start()
            self._popen = None
        # From the start of the trial's own process: the fork server's one-time start-up
        # (importing torch) is not the trial's.
        self._started = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        return self._popen.pid if self._popen else self._process.pid

    def exitcode(self) -> int | None:
        """None while running; negative = killed by that signal."""
        if self._popen is not None:
            return self._popen.poll()
        return self._process.exitcode

    def kill_if_overdue(self) -> bool:
        """SIGKILLs the trial's processes once it has run past its limit; True when it did."""
        if (
            self.timed_out
            or self.time_limit_s is None
            or time.monotonic() - self._started <= self.time_limit_s
        ):
            return False
        self.timed_out = True
        kill_process_tree(self.pid)
        return True

    def outcome(self, exitcode: int) -> str:
        """``ok``, ``timed out after N s`` or :func:`describe_exit`'s words."""
        if exitcode == 0:
            return "ok"
        return (
            f"timed out after {self.time_limit_s} s" if self.timed_out else describe_exit(exitcode)
        )

    @property
    def sentinel(self) -> int | None:
        """A file descriptor that becomes ready when a forked trial ends (None for torchrun)."""
        return None if self._process is None else self._process.sentinel

    def wait(self) -> int:
        if self._popen is not None:
            return self._popen.wait()
        self._process.join()
        return self._process.exitcode


class Helping:
    """Other chunks' trials a chunk trains once its own are done: each other chunk's from its
    end (its own task works from the start, so the two meet once, at the last trial), the next
    chunks first. A trial is taken only when it has no result and no process holds its lease.
    Should two processes start one trial at the same moment anyway, the trial's lease lets one
    train it and the other wait for its result.

    The chunk that owns a trial still goes through it: a result that a helper wrote is read
    back in a moment, and a trial a helper is training is waited for, so a chunk never ends
    before its own trials have results, even when a helper is killed. Helping only saves
    time, so it looks cheaply (a large study's store is S3, a request per look): each trial at
    most once; a chunk whose task ended after ``since`` (this task's start: its trials are
    done) not at all; and, from a chunk's end, no further than the first result after a trial
    without one (the owner's finished start of the list).
    """

    def __init__(
        self, store: ArtifactStore, study: str, chunks: list[list[str]], chunk: int, since: float
    ) -> None:
        self.store, self.study, self.since = store, study, since
        order = [(chunk + step) % len(chunks) for step in range(1, len(chunks))]
        self._queues = deque((other, deque(reversed(chunks[other]))) for other in order)
        self._open: set[int] = set()  # chunks where a trial without a result was seen

    def next(self) -> tuple[str, int] | None:
        """The next trial to help with and its chunk, or None when none is left."""
        while self._queues:
            other, queue = self._queues[0]
            if other not in self._open and self._ended(other):
                queue.clear()
            while queue:
                trial_id = queue.popleft()
                if _has_result(self.store, trial_id):
                    if other in self._open:
                        queue.clear()  # the owner's finished start of the list
                    continue
                self._open.add(other)
                if Lease.live_holder(self.store, lease_prefix(trial_id)) is None:
                    return trial_id, other
            self._queues.popleft()
        return None

    def _ended(self, other: int) -> bool:
        try:
            timing = self.store.get_json(chunk_timing_key(self.study, other))
        except (MissingObjectError, CorruptObjectError):
            return False
        return timing.get("ended_at", 0.0) > self.since


def wait_for_an_exit(children: Iterable[_Child], timeout_s: float = POLL_S) -> None:
    """Returns when one of the forked ``children`` has ended, or after ``timeout_s``: the next
    trial starts as soon as a slot frees, not at the next poll."""
    sentinels = [child.sentinel for child in children if child.sentinel is not None]
    if sentinels:
        multiprocessing.connection.wait(sentinels, timeout_s)
    else:
        time.sleep(timeout_s)


def _killed_result(trial: Trial, reason: str, attempts: int, started_at: float) -> dict[str, Any]:
    """The failed result of a trial the runner gave up on, started at ``started_at`` (its
    first attempt, Unix seconds); ``killed`` makes a later run of the study try it again
    (:func:`_retry_if_killed`)."""
    from components.train.definition import TRAINER_VERSION

    return {
        "trial_id": trial.trial_id,
        **trial.to_dict(),
        "trainer_version": TRAINER_VERSION,
        "status": "failed",
        "reason": reason,
        "killed": True,
        "attempts": attempts,
        "started_at": started_at,
        "ended_at": time.time(),
    }


def run_chunk(
    study: str,
    chunk: int,
    store_uri: str | None,
    tracking_uri: str | None,
    kfp_run_id: str = "",
    settings: ChunkSettings | None = None,
) -> list[str]:
    """Trains every trial of chunk ``chunk`` of ``study``, then, with
    ``settings.help_others``, other chunks' trials that no process has started
    (:class:`Helping`); returns the chunk's own trial ids.

    A trial that runs past its time limit (``time_limits_s`` of ``chunks.json``) is killed and
    recorded ``failed``; the chunk goes on.

    Raises:
        ChunkError: a trial's child kept failing without being killed (an infrastructure
            error), after the other running trials ended.
        DeviceError: a trial asks for ``device: cuda`` and this machine has no GPU (before any
            trial starts).
    """
    started_at = time.time()
    settings = settings or ChunkSettings()
    # NVML answers torch.cuda.is_available() without initialising CUDA (fork-safe), here and
    # in the children.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    # Started first, its imports (seconds) overlapping this process' own work: one-GPU trials
    # and the chunk's live run are forks of it.
    context = fork_server()
    store = open_store(store_uri)
    record = load_chunks(store, study)
    ids = record["chunks"][chunk]
    trials = {trial_id: load_trial(store, trial_id) for trial_id in ids}
    # A plan written before time limits existed has none: derive them as the plan does now.
    time_limits = dict(record.get("time_limits_s") or {}) or {
        trial_id: trial_time_limit(estimate_seconds(trial)) for trial_id, trial in trials.items()
    }
    if any(trial.device == "cuda" for trial in trials.values()):
        # A GPU that was asked for and is missing: fail before training. Only then: this
        # process does not import torch, which its trials' fork server has imported.
        from components.train.engines import resolve_device

        resolve_device("cuda")
    report(
        "train",
        f"chunk {chunk}: {len(ids)} trials, {settings.trials_per_gpu} at a time, "
        f"{settings.gpus_per_trial} process(es) each, up to {settings.max_attempts} attempts",
    )
    pending = deque(ids)
    helping = (
        Helping(store, study, record["chunks"], chunk, started_at) if settings.help_others else None
    )
    running: dict[str, _Child] = {}
    reasons: dict[str, list[str]] = {trial_id: [] for trial_id in ids}
    first_start: dict[str, float] = {}  # each trial's first attempt in this task
    infrastructure: list[str] = []
    from components.common import tracking
    from components.train.run import study_key

    # The run open while this chunk trains, with MLflow's system metrics on (they sample the
    # whole machine: every trial process of the chunk); best-effort: without MLflow the chunk
    # trains all the same. Held by a fork server's child: this process never imports MLflow.
    live = tracking.live_run_in_child(
        context,
        tracking.resolve_tracking_uri(tracking_uri),
        store.get_json(study_key(study))["parent_run_id"],
        f"chunk-{chunk}",
        {"aprflow.chunk": str(chunk), tracking.KFP_RUN_TAG: kfp_run_id},
    )
    with live:
        while True:  # until nothing runs and nothing is left to start
            # An infrastructure error of one trial (its child raised: store, tracking, CUDA/NCCL)
            # does not stop the others; the task fails at the end, and that trial, which wrote no
            # result, is retried by a re-run.
            while len(running) < settings.trials_per_gpu:
                if pending:
                    trial_id = pending.popleft()
                elif helping is not None and (helped := helping.next()) is not None:
                    trial_id, other = helped
                    trials[trial_id] = load_trial(store, trial_id)
                    reasons[trial_id] = []
                    time_limits.setdefault(
                        trial_id, trial_time_limit(estimate_seconds(trials[trial_id]))
                    )
                    report("train", f"chunk {chunk}: helping chunk {other} with trial {trial_id}")
                else:
                    break
                _retry_if_killed(store, trial_id)
                args = (study, trial_id, store_uri, tracking_uri, kfp_run_id)
                child = _Child(
                    (*args, settings.threads_per_trial, None), settings, time_limits[trial_id]
                )
                _record_attempt(
                    store,
                    trial_id,
                    {"started_at": child.started_at, "kfp_run_id": kfp_run_id, "chunk": chunk},
                )
                first_start.setdefault(trial_id, child.started_at)
                running[trial_id] = child.start()
            if not running:
                break
            wait_for_an_exit(running.values())
            for trial_id, child in list(running.items()):
                code = child.exitcode()
                if code is None:
                    if child.kill_if_overdue():
                        report(
                            "train",
                            f"trial {trial_id} ran past its limit of {child.time_limit_s} s: "
                            "killed it and everything it started",
                        )
                    continue
                del running[trial_id]
                if code == EXIT_NO_SPACE:
                    # Its disk is full (the trial printed where): not retried in this task.
                    where = _location(store)
                    infrastructure.append(f"trial {trial_id}: no space left on device: {where}")
                    continue
                outcome = child.outcome(code)
                _record_attempt(
                    store,
                    trial_id,
                    {
                        "started_at": child.started_at,
                        "pid": child.pid,
                        "kfp_run_id": kfp_run_id,
                        "chunk": chunk,
                        "ended_at": time.time(),
                        "outcome": outcome,
                    },
                )
                if code == 0:
                    continue
                reasons[trial_id].append(outcome)
                attempt = f"attempt {len(reasons[trial_id])}/{settings.max_attempts}"
                if child.timed_out and _has_result(store, trial_id):
                    # It wrote its result, then hung (logging, a worker's exit): keep it.
                    report("train", f"trial {trial_id} {outcome} after it finished: kept")
                    continue
                if child.timed_out:
                    # Not retried in this task: a trial past its limit (by default 10x its
                    # estimate) is most likely hung (an NCCL collective, a data-loader worker),
                    # and each retry would hold the GPU, and the chunk's other trials, for
                    # another full limit. A later run of the study tries it again (``killed``),
                    # e.g. with a larger trial_timeout_s.
                    failure = outcome
                elif len(reasons[trial_id]) < settings.max_attempts:
                    report("train", f"trial {trial_id} {outcome} ({attempt}): starting it again")
                    pending.appendleft(trial_id)
                    continue
                elif code < 0 or settings.gpus_per_trial > 1:
                    # Killed (OOM, eviction) every time: the trial's failure, not the task's.
                    n = len(reasons[trial_id])
                    failure = f"{outcome} in {n} of {n} attempts"
                else:
                    infrastructure.append(f"trial {trial_id} {outcome} ({attempt})")
                    continue
                # A child records the failure, so MLflow and the progress line are written as
                # for any trial.
                report("train", f"trial {trial_id} {outcome} ({attempt}): recorded as failed")
                result = _killed_result(
                    trials[trial_id], failure, len(reasons[trial_id]), first_start[trial_id]
                )
                args = (study, trial_id, store_uri, tracking_uri, kfp_run_id)
                recorder = _Child((*args, 0, result), ChunkSettings()).start()
                if recorder.wait() != 0:
                    infrastructure.append(f"trial {trial_id}: recording its failure failed")
        if infrastructure:
            raise ChunkError(
                f"chunk {chunk} of {study} stopped on infrastructure errors (see the log above): "
                + "; ".join(infrastructure)
            )

    # When this task's process started (its imports included), trained and ended: what
    # `aprflow run --profile` splits a study's training time with.
    timing = {
        "process_started_at": psutil.Process().create_time(),
        "started_at": started_at,
        "ended_at": time.time(),
        "trials": len(ids),
    }
    store.put_json(chunk_timing_key(study, chunk), timing)
    return ids


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.train.chunk",
        description="One rank of a multi-GPU trial (started by the chunk runner via torchrun): "
        "rank 0 trains, writes and logs the trial; the other ranks train their share only.",
    )
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial-id", required=True)
    parser.add_argument("--store-uri", default=None)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--kfp-run-id", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        from components.train.run import train_trial

        train_trial(args.trial_id, args.study, args.store_uri, args.tracking_uri, args.kfp_run_id)
    else:
        from components.train.trial import run_trial

        store = open_store(args.store_uri)
        run_trial(store, load_trial(store, args.trial_id), progress=lambda _: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
