"""Where a local study's wall time goes: kfp.local's task log, the training tasks' timing and
the trials' own times."""

import datetime as dt

from pipelines.profile import (
    ChunkTiming,
    max_concurrency,
    profile_lines,
    profile_run,
    study_profile,
    task_events,
)

# kfp.local's lines, with its colour codes, around midnight; two training tasks at once, the
# end of one of them missing (kfp.local can drop it when two iterations end together).
DONE = "finished with status \x1b[92mSUCCESS\x1b[0m"
LOG = f"""\
23:59:50.000 - INFO - Executing task \x1b[96m'plan-study'\x1b[0m
executor_input: {{...}}
23:59:54.000 - INFO - Task \x1b[96m'plan-study'\x1b[0m {DONE}
23:59:55.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
23:59:56.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
00:00:25.000 - INFO - Task \x1b[96m'train-chunk'\x1b[0m {DONE}
00:00:26.000 - INFO - Executing task \x1b[96m'train-chunk'\x1b[0m
00:00:45.000 - INFO - Task \x1b[96m'train-chunk'\x1b[0m {DONE}
00:00:45.500 - INFO - Executing task \x1b[96m'analyze-study'\x1b[0m
00:00:55.500 - INFO - Task \x1b[96m'analyze-study'\x1b[0m {DONE}
"""


def _start() -> float:
    """The run started 12 s before its first task, the evening before the log's midnight."""
    return dt.datetime(2026, 12, 3, 23, 59, 38).timestamp()


def test_task_events_cross_midnight_and_ignore_other_lines():
    events = task_events(LOG, _start())
    assert len(events) == 9
    assert events[0].seconds == 12.0 and events[0].task == "plan-study" and events[0].starts
    assert events[-1].seconds == 77.5 and not events[-1].starts  # 00:00:55.5, the next day
    assert max_concurrency([(0, 10), (5, 20), (10, 30), (25, 26)]) == 2


def test_profile_splits_the_study_into_tasks_trials_and_the_rest():
    # Three training tasks (two slots; 2 s of imports each) with trials of 20, 20 and 8 s.
    chunks = [ChunkTiming(17, 19, 47), ChunkTiming(18, 20, 67), ChunkTiming(48, 50, 58)]
    record = study_profile(task_events(LOG, _start()), chunks, [20.0, 20.0, 8.0], 80.0)
    assert record["start_up_s"] == 12.0
    assert record["tasks"]["plan-study"] == {"count": 1, "seconds": 4.0}
    assert record["tasks"]["analyze-study"] == {"count": 1, "seconds": 10.0}
    # From the tasks' own timing, not the log that lost an end: 30 + 49 + 10 s.
    assert record["tasks"]["train-chunk"] == {"count": 3, "seconds": 89.0}
    assert record["slots"] == 2 and record["trial_s"] == 48.0
    assert record["training_span_s"] == 50.0 and record["training_start_up_s"] == 6.0
    assert record["training_overhead_s"] == 50.0 - 48.0 / 2
    assert record["outside_trials"] == 1 - 48.0 / 2 / 80.0
    lines = profile_lines(record)
    assert lines[0] == (
        "study 80.0 s; 70% of it outside trials (3 trials, 48.0 s of trial time over 2 slot(s))"
    )
    assert any(line.startswith("  train-chunk x3") for line in lines)
    assert lines[-1].startswith("  training span") and "imports: 6.0 s" in lines[-1]


def test_a_run_counts_only_the_trials_it_trained(tmp_path):
    """A trial reused from an earlier run trained before this study started: counting its
    wall time would put more trial time into the study than its wall time (a negative share
    outside trials)."""
    from components.common.storage import open_store
    from components.train.chunk import chunk_timing_key, chunks_key
    from components.train.trial import result_key

    start = _start()
    store = open_store(str(tmp_path / "store"))
    store.put_json(chunks_key("s"), {"chunks": [["new", "old"]]})
    store.put_json(result_key("new"), {"started_at": start + 20, "wall_time_s": 20.0})
    store.put_json(result_key("old"), {"started_at": start - 3600, "wall_time_s": 500.0})
    store.put_json(
        chunk_timing_key("s", 0),
        {"process_started_at": start + 17, "started_at": start + 19, "ended_at": start + 47},
    )
    log = tmp_path / "run.log"
    log.write_text(LOG, encoding="utf-8")
    record = profile_run(log, store, "s", start, start + 80)
    assert record["trials"] == 1 and record["trial_s"] == 20.0
    assert record["outside_trials"] == 1 - 20.0 / 80.0
