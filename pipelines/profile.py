"""Where a local study's wall time goes (``aprflow run ... --profile``).

The study's wall time is split with three records: kfp.local's task log (each task's start and
end: ``HH:MM:SS.mmm - INFO - Executing task 'name'`` and ``Task 'name' finished``), each
training task's own timing (``studies/<id>/chunks/<n>/timing.json``: its process start, the
start of its work and its end; kfp.local's log can drop the end line of one of two loop
iterations that end together) and each trial's ``wall_time_s``:

* **start-up**: from the run's start to its first task (kfp.local's set-up);
* **tasks before training** (sample, data, plan, list) and **after** (the analysis), each
  task's own time;
* **training**: the span of the training tasks; their start-up (the process's imports before
  the chunk's work); inside the span, the trials' own time divided over the slots that ran
  at once, and the rest: start-up, MLflow, dispatch and slots left idle;
* **outside trials**: ``1 - (sum of trial wall time / slots) / study wall time``, the share of
  the study not spent training (what the profile exists to make small).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_EVENT = re.compile(
    r"^(?P<clock>\d\d:\d\d:\d\d\.\d{3}) - INFO - "
    r"(?:(?P<start>Executing task) '(?P<started>[\w-]+)'|Task '(?P<ended>[\w-]+)' finished)"
)
TRAINING_TASK = "train-chunk"


@dataclass(frozen=True)
class TaskEvent:
    seconds: float  # since the study's start
    task: str
    starts: bool


def task_events(log_text: str, study_start: float) -> list[TaskEvent]:
    """The task starts and ends of a kfp.local log, in seconds since ``study_start`` (a Unix
    time; the log's clock is local wall time without a date: a run past midnight wraps)."""
    midnight = dt.datetime.fromtimestamp(study_start).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    events, day, last = [], 0.0, None
    for raw in log_text.splitlines():
        match = _TASK_EVENT.match(_ANSI.sub("", raw))
        if match is None:
            continue
        hours, minutes, seconds = match["clock"].split(":")
        clock = int(hours) * 3600 + int(minutes) * 60 + float(seconds) + day
        if last is not None and clock < last - 43200:  # the clock went past midnight
            day += 86400.0
            clock += 86400.0
        last = clock
        at = midnight.timestamp() + clock - study_start
        task = match["started"] or match["ended"]
        events.append(TaskEvent(round(at, 3), task, match["start"] is not None))
    return events


@dataclass(frozen=True)
class ChunkTiming:
    """A training task's process start, work start and end, in seconds since the study's."""

    process_start: float
    start: float
    end: float


def max_concurrency(spans: list[tuple[float, float]]) -> int:
    """The most spans ``(start, end)`` that overlap at one time."""
    running = most = 0
    for _, change in sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans]):
        running += change
        most = max(most, running)
    return most


def study_profile(
    events: list[TaskEvent],
    chunks: list[ChunkTiming],
    trial_seconds: list[float],
    study_seconds: float,
) -> dict[str, Any]:
    """The breakdown of a study's wall time (see the module doc) as a JSON-able record."""
    tasks: dict[str, dict[str, float]] = {}
    for event in events:
        if event.task == TRAINING_TASK and chunks:
            continue  # the training tasks' own timing says more, and misses no end
        entry = tasks.setdefault(event.task, {"count": 0, "seconds": 0.0})
        entry["count"] += event.starts
        entry["seconds"] += -event.seconds if event.starts else event.seconds
    trials = sum(trial_seconds)
    first_task = min((e.seconds for e in events), default=study_seconds)
    record: dict[str, Any] = {
        "study_s": study_seconds,
        "start_up_s": first_task,
        "tasks": {name: {**v, "seconds": round(v["seconds"], 3)} for name, v in tasks.items()},
        "trials": len(trial_seconds),
        "trial_s": trials,
        "slots": 1,
    }
    if chunks:
        spans = [(c.process_start, c.end) for c in chunks]
        slots = max_concurrency(spans)
        span = max(c.end for c in chunks) - min(c.process_start for c in chunks)
        record["tasks"][TRAINING_TASK] = {
            "count": len(chunks),
            "seconds": round(sum(c.end - c.process_start for c in chunks), 3),
        }
        record |= {
            "slots": slots,
            "training_span_s": span,
            "training_start_up_s": sum(c.start - c.process_start for c in chunks),
            "training_overhead_s": span - trials / slots,
        }
    record["outside_trials"] = (
        1 - trials / record["slots"] / study_seconds if study_seconds else 0.0
    )
    return record


def profile_lines(record: dict[str, Any]) -> list[str]:
    """The breakdown as readable lines (the profile's console output)."""
    study = record["study_s"]

    def share(seconds: float) -> str:
        return f"{seconds:6.1f} s {seconds / study:4.0%}" if study else f"{seconds:6.1f} s"

    lines = [
        f"study {study:.1f} s; {record['outside_trials']:.0%} of it outside trials "
        f"({record['trials']} trials, {record['trial_s']:.1f} s of trial time over "
        f"{record['slots']} slot(s))",
        f"  start-up before the first task    {share(record['start_up_s'])}",
    ]
    for name, entry in record["tasks"].items():
        label = f"{name} x{entry['count']}" if entry["count"] > 1 else name
        lines.append(f"  {label:34s}{share(entry['seconds'])}  (task time)")
    if "training_span_s" in record:
        lines.append(
            f"  training span                     {share(record['training_span_s'])}, of which "
            f"{record['training_overhead_s']:.1f} s outside trials per slot (the tasks' "
            f"imports: {record['training_start_up_s']:.1f} s in all; MLflow, dispatch, idle "
            "slots)"
        )
    return lines


def profile_run(log_path: Path, store, study: str, started: float, ended: float) -> dict:
    """The profile of a finished local run: its task log, its training tasks' timing and the
    results of the trials it trained (a trial reused from an earlier run trained outside this
    study's wall time: it counts as none)."""
    from components.train.chunk import chunk_timing_key, load_chunks
    from components.train.definition import result_key

    chunk_lists = load_chunks(store, study)["chunks"]
    seconds, chunks = [], []
    for number, trial_ids in enumerate(chunk_lists):
        for trial_id in trial_ids:
            if store.exists(result_key(trial_id)):
                result = store.get_json(result_key(trial_id))
                if result.get("started_at", started) >= started:
                    seconds.append(float(result.get("wall_time_s", 0.0)))
        if store.exists(chunk_timing_key(study, number)):
            timing = store.get_json(chunk_timing_key(study, number))
            chunks.append(
                ChunkTiming(
                    timing["process_started_at"] - started,
                    timing["started_at"] - started,
                    timing["ended_at"] - started,
                )
            )
    events = task_events(log_path.read_text(encoding="utf-8", errors="replace"), started)
    return study_profile(events, chunks, seconds, ended - started)
