"""Where a local study's wall time goes (``aprflow run ... --profile``).

The study's wall time is split into what kfp.local's task log records (each task's start and
end: ``HH:MM:SS.mmm - INFO - Executing task 'name'`` and ``Task 'name' finished``) and what the
trials themselves record (``wall_time_s`` of each trial's result):

* **start-up**: from the command's start to its first task (imports, kfp.local set-up);
* **tasks before training** (sample, data, plan, list) and **after** (the analysis), each
  task's own time;
* **training**: the span of the training tasks; inside it, the trials' own time divided over
  the slots that ran at once, and the rest: each chunk task's start-up (imports, MLflow, the
  fork server), dispatch and slots left idle;
* **outside trials**: ``1 - (sum of trial wall time / slots) / study wall time``, the share of
  the study not spent training (what the profile exists to make small).

Durations summed over tasks of the same name do not depend on which start pairs with which
end, so concurrent loop iterations need no task ids.
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


def max_concurrency(events: list[TaskEvent], task: str) -> int:
    """The most tasks named ``task`` that ran at once."""
    running = most = 0
    for event in sorted(events, key=lambda e: (e.seconds, e.starts)):
        if event.task == task:
            running += 1 if event.starts else -1
            most = max(most, running)
    return most


def study_profile(
    events: list[TaskEvent], trial_seconds: list[float], study_seconds: float
) -> dict[str, Any]:
    """The breakdown of a study's wall time (see the module doc) as a JSON-able record."""
    tasks: dict[str, dict[str, float]] = {}
    for event in events:
        entry = tasks.setdefault(event.task, {"count": 0, "seconds": 0.0})
        entry["count"] += event.starts
        entry["seconds"] += -event.seconds if event.starts else event.seconds
    training = [e.seconds for e in events if e.task == TRAINING_TASK]
    slots = max(1, max_concurrency(events, TRAINING_TASK))
    trials = sum(trial_seconds)
    first_task = min((e.seconds for e in events), default=study_seconds)
    record: dict[str, Any] = {
        "study_s": study_seconds,
        "start_up_s": first_task,
        "tasks": {name: {**v, "seconds": round(v["seconds"], 3)} for name, v in tasks.items()},
        "trials": len(trial_seconds),
        "trial_s": trials,
        "slots": slots,
        "outside_trials": 1 - trials / slots / study_seconds if study_seconds else 0.0,
    }
    if training:
        span = max(training) - min(training)
        record["training_span_s"] = span
        record["training_overhead_s"] = span - trials / slots
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
            f"{record['training_overhead_s']:.1f} s outside trials (task start-up, dispatch, "
            "idle slots)"
        )
    return lines


def profile_run(log_path: Path, store, study: str, started: float, ended: float) -> dict:
    """The profile of a finished local run: its task log, and its trials' results in the
    store (those reused from an earlier run count their original wall time)."""
    from components.train.chunk import load_chunks
    from components.train.trial import result_key

    trial_ids = [t for chunk in load_chunks(store, study)["chunks"] for t in chunk]
    seconds = []
    for trial_id in trial_ids:
        if store.exists(result_key(trial_id)):
            seconds.append(float(store.get_json(result_key(trial_id)).get("wall_time_s", 0.0)))
    events = task_events(log_path.read_text(encoding="utf-8", errors="replace"), started)
    return study_profile(events, seconds, ended - started)
