"""Where a local study's wall time goes: kfp.local's task log and the trials' own times."""

import datetime as dt

from pipelines.profile import max_concurrency, profile_lines, study_profile, task_events

# kfp.local's lines, with its colour codes, around midnight; two training tasks at once.
DONE = "finished with status \x1b[92mSUCCESS\x1b[0m"
LOG = f"""\
23:59:50.000 - INFO - Executing task \x1b[96m'plan-study'\x1b[0m
executor_input: {{...}}
23:59:54.000 - INFO - Task \x1b[96m'plan-study'\x1b[0m {DONE}
23:59:55.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
23:59:56.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
00:00:25.000 - INFO - Task \x1b[96m'train-chunk'\x1b[0m {DONE}
00:00:26.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
00:00:35.000 - INFO - Task \x1b[96m'train-chunk'\x1b[0m {DONE}
00:00:45.000 - INFO - Task \x1b[96m'train-chunk'\x1b[0m {DONE}
00:00:45.500 - INFO - Executing task \x1b[96m'analyze-study'\x1b[0m
00:00:55.500 - INFO - Task \x1b[96m'analyze-study'\x1b[0m {DONE}
"""


def _start() -> float:
    """The run started 12 s before its first task, the evening before the log's midnight."""
    return dt.datetime(2026, 12, 3, 23, 59, 38).timestamp()


def test_task_events_cross_midnight_and_ignore_other_lines():
    events = task_events(LOG, _start())
    assert len(events) == 10
    assert events[0].seconds == 12.0 and events[0].task == "plan-study" and events[0].starts
    assert events[-1].seconds == 77.5 and not events[-1].starts  # 00:00:55.5, the next day
    assert max_concurrency(events, "train-chunk") == 2


def test_profile_splits_the_study_into_tasks_trials_and_the_rest():
    # Three trials of 20, 20 and 8 s in the three training tasks (two slots).
    record = study_profile(task_events(LOG, _start()), [20.0, 20.0, 8.0], 80.0)
    assert record["start_up_s"] == 12.0
    assert record["tasks"]["plan-study"] == {"count": 1, "seconds": 4.0}
    # 30 + 49 + 9 s of training tasks, whichever start pairs with which end.
    assert record["tasks"]["train-chunk"] == {"count": 3, "seconds": 88.0}
    assert record["slots"] == 2 and record["trial_s"] == 48.0
    assert record["training_span_s"] == 50.0 and record["training_overhead_s"] == 26.0
    assert record["outside_trials"] == 1 - 48.0 / 2 / 80.0
    lines = profile_lines(record)
    assert lines[0] == (
        "study 80.0 s; 70% of it outside trials (3 trials, 48.0 s of trial time over 2 slot(s))"
    )
    assert any(line.startswith("  train-chunk x3") for line in lines)
    assert lines[-1].startswith("  training span")
