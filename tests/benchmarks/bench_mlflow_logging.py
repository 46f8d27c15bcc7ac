"""Benchmark: what MLflow logging costs a trial, with parallel tasks on one tracking store.

Starts ``--tasks`` processes at once, each like a chunk task: a live run with MLflow's system
metrics (sampled every ``--sample-s`` seconds), then ``--trials`` trials one after another,
each streaming ``--epochs`` epochs ``--epoch-s`` seconds apart (no training: the numbers
measure MLflow) and ending with its final logging. Per trial it reports the time the trial's
process waits for tracking (opening its run runs in the background; the wait is the end of
the stream plus the final logging), and per run the tracking lines printed (warnings, queued
loggings) and the runs left FAILED or RUNNING.

Run as ``python tests/benchmarks/bench_mlflow_logging.py [--tasks 4] [--journal wal|delete]
[--server]`` from the repository root (pytest does not collect it). ``--journal delete``
keeps SQLite's rollback journal instead of the write-ahead log aprflow sets (what a database
made by an older aprflow has); ``--server`` logs through a real ``mlflow server`` on
loopback instead of to the SQLite file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Allow running as a plain script from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.common import tracking  # noqa: E402
from components.common.storage import open_store  # noqa: E402


def _task(args: argparse.Namespace, uri: str, parent: str, store_uri: str, task: int) -> dict:
    """One chunk task's logging; returns its per-trial waits (seconds) and tracking lines."""
    import io
    import logging

    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    logger = logging.getLogger("aprflow")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = str(args.sample_s)
    store = open_store(store_uri)
    waits = []
    with tracking.live_run(uri, parent, f"chunk-{task}"):
        for trial in range(args.trials):
            log = tracking.TrialLog(
                parent,
                f"t{task}-{trial}",
                run_name=f"t{task}-{trial}",
                params={f"p{i}": i for i in range(40)},
                tags={"aprflow.dataset": "digits"},
                dataset={"name": "digits", "content_hash": "abc", "n_train": 1347},
                dataset_source="/bench/digits",
            )
            stream = tracking.TrialStream(uri, log)
            stream.start()
            history = {"train_loss": [], "test_error": [], "lr": [], "images_per_s": []}
            times = []
            for epoch in range(1, args.epochs + 1):
                time.sleep(args.epoch_s)
                for key, values in history.items():
                    values.append(float(epoch + len(key)))
                times.append(time.time())
                stream.epoch(epoch, history, times[-1])
            tic = time.perf_counter()
            stream.close()
            final = tracking.TrialLog(
                **{
                    **vars(log),
                    "history": tracking.result_series(history),
                    "epoch_times": times,
                    "metrics": {"wall_time_s": args.epochs * args.epoch_s},
                    "ended_at": time.time(),
                }
            )
            tracking.log_trial_or_queue(store, "bench", uri, final)
            waits.append(time.perf_counter() - tic)
    return {"waits": waits, "lines": [line for line in lines.getvalue().splitlines() if line]}


def _server(folder: Path, port: int) -> subprocess.Popen:
    from helpers import mlflow_server_command

    return subprocess.Popen(
        mlflow_server_command(folder, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch-s", type=float, default=1.0)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--journal", choices=("wal", "delete"), default="wal")
    parser.add_argument("--server", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aprflow-bench-") as folder:
        root = Path(folder)
        db = root / "mlflow.db"
        uri = f"sqlite:///{db}"
        tracking.prepare_sqlite(db)  # creates the database, no connection left open
        if args.journal == "delete":
            with sqlite3.connect(db) as connection:
                connection.execute("pragma journal_mode=delete")
            tracking.database._use_wal = lambda db: None  # as an older aprflow left it
        server = None
        if args.server:
            from helpers import free_port

            port = free_port()
            server = _server(root, port)
            uri = f"http://127.0.0.1:{port}"
        try:
            parent = tracking.start_study_run(uri, "bench", "bench-study", {})
            started = time.perf_counter()
            context = multiprocessing.get_context("fork")
            with context.Pool(args.tasks) as pool:
                outcomes = pool.starmap(
                    _task,
                    [(args, uri, parent, str(root / "store"), task) for task in range(args.tasks)],
                )
            total = time.perf_counter() - started
            tracking.finish_study_run(uri, parent, {})
            states = [r.info.status for r in tracking.child_runs(uri, parent)]
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    waits = [w for outcome in outcomes for w in outcome["waits"]]
    lines = [line for outcome in outcomes for line in outcome["lines"]]
    trial_s = args.epochs * args.epoch_s
    print(
        json.dumps(
            {
                "store": "server" if args.server else f"sqlite ({args.journal})",
                "tasks": args.tasks,
                "trials": len(waits),
                "wall_s": round(total, 1),
                "wait_per_trial_ms": {
                    "median": round(1000 * statistics.median(waits)),
                    "max": round(1000 * max(waits)),
                },
                "wait_percent_of_trial": round(100 * statistics.median(waits) / trial_s, 2),
                "tracking_lines": lines,
                "runs_not_finished": [s for s in states if s != "FINISHED"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
