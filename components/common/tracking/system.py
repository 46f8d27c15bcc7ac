"""MLflow's system metrics (CPU, memory, disk, network, GPU) on a run open while a chunk trains."""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import multiprocessing.context
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping

from components.common.progress import report
from components.common.tracking.client import open_client, outage_budget, with_retries
from components.common.tracking.runs import (
    PARENT_TAG,
    STUDY_TAG,
    create_run_once,
    find_run,
    plugin_run,
)

LIVE_TAG = "aprflow.live_run"
# The chunk execution that opened a live run last: the one that ends it.
LIVE_OWNER_TAG = "aprflow.live_owner"
# How long the end of a live run may wait for the system-metrics thread's last logging.
LIVE_FINISH_S = 30.0


@contextlib.contextmanager
def live_run(
    uri: str, parent_run_id: str, name: str, tags: Mapping[str, str] | None = None
) -> Iterator[str | None]:
    """A run that is RUNNING while the block trains, with MLflow's system metrics on.

    The run is a nested run of the study named ``name`` (found again by its
    ``aprflow.live_run`` tag, so a re-run of a chunk resumes its steps), or, under KFP's MLflow
    plugin, the task's run. MLflow's system-metrics monitor (``log_system_metrics``: CPU,
    memory, disk, network, GPU through psutil/pynvml, keys ``system/...``, every
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds, default 10) samples the whole machine,
    so it covers the trial processes a chunk starts. The run is ended FINISHED, or FAILED when
    the block raises (the plugin's run is left to the plugin).

    Two runs of a study at once share the run: the chunk execution that opened it last
    (tag ``aprflow.live_owner``) ends it, so the other neither ends it under it nor leaves a
    FAILED mark that the study's analysis set meanwhile (it ends live runs still RUNNING).

    Best-effort like every trial logging: when MLflow does not answer within the outage budget
    (:func:`~components.common.tracking.client.outage_budget`), a line says so and the block
    runs without a live run (yields None); the end still looks for the run, since an opening
    cut off by that budget may complete later. A monitor that stalls at the end is left behind
    after 30 s.

    Args:
        uri: tracking URI.
        parent_run_id: the study's run.
        name: the run's name and key, e.g. ``chunk-3``.
        tags: extra tags.

    Yields:
        The live run's id, or None.
    """
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    run_id, owned, monitor = None, True, None
    try:
        run_id, owned = with_retries(
            lambda: _open_live_run(uri, parent_run_id, name, dict(tags or {}), owner),
            f"opening the live MLflow run {name}",
            outage_budget(uri),
        )
        monitor = _start_system_metrics(uri, run_id)
    except Exception as e:  # noqa: BLE001 - tracking must never fail training
        report("tracking", f"no live MLflow run {name} (system metrics off): {e}")
    failed = False
    try:
        yield run_id if monitor is not None else None
    except BaseException:
        failed = True
        raise
    finally:
        if monitor is not None:
            finisher = threading.Thread(
                target=monitor.finish, name="aprflow-sysmetrics", daemon=True
            )
            finisher.start()
            finisher.join(LIVE_FINISH_S)
        if owned:
            with contextlib.suppress(Exception):  # best-effort; analyze ends runs left RUNNING
                with_retries(
                    lambda: _end_live_run(uri, parent_run_id, name, owner, failed),
                    f"ending the live MLflow run {name}",
                    outage_budget(uri),
                )


@contextlib.contextmanager
def live_run_in_child(
    context: multiprocessing.context.BaseContext,
    uri: str,
    parent_run_id: str,
    name: str,
    tags: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """:func:`live_run` held by a child process of ``context`` while the block runs, so this
    process never imports MLflow (seconds of a chunk task's start-up on a small machine, where
    a fork server's child has it imported already). The child has this process' environment.

    The run ends FAILED when the block raises, or when this process dies first (the child
    reads the end of its pipe); the block's end waits for the child to end the run, at most
    as long as :func:`live_run` may take to open and end it.
    """
    ours, theirs = context.Pipe()
    child = context.Process(
        target=_hold_live_run,
        args=(theirs, dict(os.environ), uri, parent_run_id, name, dict(tags or {})),
        name=f"aprflow-live-{name}",
    )
    child.start()
    theirs.close()
    failed = True
    try:
        yield
        failed = False
    finally:
        with contextlib.suppress(OSError):  # a child that died already ended nothing
            ours.send(failed)
        child.join(LIVE_FINISH_S + 2 * outage_budget(uri) + 10)
        if child.exitcode is None:
            child.kill()
            report(
                "tracking",
                f"the live MLflow run {name} did not end in time: stopped the process that "
                "held it (the study's analysis ends runs left RUNNING)",
            )
        ours.close()


class _BlockFailed(Exception):
    """The block of :func:`live_run_in_child` raised, or its process died."""


def _hold_live_run(
    connection: multiprocessing.connection.Connection,
    environment: dict[str, str],
    uri: str,
    parent_run_id: str,
    name: str,
    tags: dict[str, str],
) -> None:
    """The child of :func:`live_run_in_child`: the live run is open until the caller says how
    its block ended."""
    os.environ.clear()
    os.environ.update(environment)  # a fork server's child has the server's otherwise
    with contextlib.suppress(_BlockFailed), live_run(uri, parent_run_id, name, tags):
        try:
            failed = connection.recv()
        except EOFError:  # the caller died
            failed = True
        if failed:
            raise _BlockFailed


def _open_live_run(
    uri: str, parent_run_id: str, name: str, tags: dict, owner: str
) -> tuple[str, bool]:
    """``(run id, owned)``: the plugin's task run (not owned), else the study's nested run
    ``name``, created or set RUNNING again, with ``owner`` as its owner."""
    client = open_client(uri)
    task_run = plugin_run(client)
    if task_run is not None:
        return task_run.info.run_id, False
    parent = client.get_run(parent_run_id)
    experiment = parent.info.experiment_id
    keys = {LIVE_TAG: name, PARENT_TAG: parent_run_id}
    all_tags = keys | {STUDY_TAG: parent.data.tags.get(STUDY_TAG, ""), "aprflow.kind": "live"}
    run = find_run(client, experiment, **keys)
    if run is None:
        run = create_run_once(
            client, experiment, all_tags | dict(tags) | {LIVE_OWNER_TAG: owner}, name, **keys
        )
    if run.data.tags.get(LIVE_OWNER_TAG) != owner:  # found, or created by another at once
        client.set_tag(run.info.run_id, LIVE_OWNER_TAG, owner)
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id, True


def _end_live_run(uri: str, parent_run_id: str, name: str, owner: str, failed: bool) -> None:
    """Ends the live run ``name`` FINISHED (FAILED if ``failed``) if ``owner`` opened it last."""
    client = open_client(uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    run = find_run(client, experiment, **{LIVE_TAG: name, PARENT_TAG: parent_run_id})
    if run is not None and run.data.tags.get(LIVE_OWNER_TAG) == owner:
        client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")


def _start_system_metrics(uri: str, run_id: str):
    """MLflow's system-metrics monitor on ``run_id``, started (what ``mlflow.start_run(...,
    log_system_metrics=True)`` starts), resuming the run's steps."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=uri)
    monitor.start()
    return monitor
