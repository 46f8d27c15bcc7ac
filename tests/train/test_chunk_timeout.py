"""The chunk runner's per-trial wall-clock limit: derived from the plan's estimate or set, kept
in ``chunks.json``, bounded; a trial past it is killed with everything it started and recorded
failed while the chunk goes on. And a truncated ``result.json`` is retrained, not fatal."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import psutil
import pytest

from components.common.limits import MAX_TRIAL_TIMEOUT_S
from components.common.storage import FAULT_PAUSE_ENV, open_store
from components.data.descriptor import DatasetRef
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

SPECS = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), 0).specs]


@pytest.fixture
def one_thread(monkeypatch) -> None:
    """One torch thread per trial: the tests share a few cores."""
    monkeypatch.setenv("APRFLOW_TORCH_THREADS", "1")


def _plan(
    name: str, epochs: int, n_specs: int = 2, engine: str = "torch", **options
) -> tuple[list[str], str]:
    """Plans ``n_specs`` tiny models on 8-px faces, one chunk; returns (trial ids, study)."""
    from components.data.datasets import prepare_all
    from components.train.run import plan_study

    refs = [r.to_dict() for r in prepare_all(["faces"], 8, 0)]
    ids, study, _ = plan_study(
        SPECS[:n_specs],
        refs,
        name,
        "apr_tiny",
        {"epochs": epochs},
        [0],
        engine,
        None,
        None,
        chunk_size=n_specs,
        **options,
    )
    return ids, study


def _set_limit(store, study: str, trial_id: str, seconds: int) -> None:
    from components.train.chunk import chunks_key, load_chunks

    record = load_chunks(store, study)
    record["time_limits_s"][trial_id] = seconds
    store.put_json(chunks_key(study), record)


def _gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waits only for its parent to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_derived_limit_is_the_factor_times_the_estimate_with_a_floor(store):
    from components.train.chunk import (
        TIMEOUT_FACTOR,
        TIMEOUT_FLOOR_S,
        estimate_seconds,
        load_chunks,
        save_chunks,
    )
    from components.train.plan import plan_trials

    big = DatasetRef("big", "datasets/big/manifest.json", "big", 1000, 224, 1_281_167, 50_000)
    tiny = DatasetRef("tiny", "datasets/tiny/manifest.json", "tiny", 10, 16, 150, 50)
    trials = plan_trials(SPECS[:1], [big, tiny], resolve_recipe("apr_short"), [0])
    long_trial, short_trial = trials
    record = save_chunks(store, "derived", trials, 0, 4)
    assert load_chunks(store, "derived") == record, "the chunk task reads the stored limits"
    limits = record["time_limits_s"]
    assert record["trial_timeout_s"] == 0
    # An ImageNet-size trial: the factor decides (hours at the measured throughput).
    assert TIMEOUT_FACTOR * estimate_seconds(long_trial) > TIMEOUT_FLOOR_S
    assert limits[long_trial.trial_id] == math.ceil(TIMEOUT_FACTOR * estimate_seconds(long_trial))
    # A 16-px trial on 150 images, estimated at its start-up and seconds of training: the floor.
    assert TIMEOUT_FACTOR * estimate_seconds(short_trial) < TIMEOUT_FLOOR_S
    assert limits[short_trial.trial_id] == TIMEOUT_FLOOR_S == 1800

    given = save_chunks(store, "given", trials, 0, 4, trial_timeout_s=7200)
    assert given["trial_timeout_s"] == 7200
    assert set(given["time_limits_s"].values()) == {7200}


@pytest.mark.parametrize("value", [-1, MAX_TRIAL_TIMEOUT_S + 1, 10**12, 1.5, True, "600"])
def test_absurd_limits_are_refused_before_anything_is_written(store, value):
    from components.train.chunk import ChunkError, chunks_key, save_chunks
    from components.train.plan import plan_trials

    trials = plan_trials(
        SPECS[:1],
        [DatasetRef("tiny", "datasets/tiny/manifest.json", "tiny", 10, 16, 150, 50)],
        resolve_recipe("apr_tiny"),
        [0],
    )
    expected = r"trial_timeout_s must be a whole number of seconds in \[0, 2592000\] \(0 = "
    with pytest.raises(ChunkError, match=expected):
        save_chunks(store, "bad", trials, 0, 4, trial_timeout_s=value)
    assert not store.exists(chunks_key("bad"))
    for fine in (0, 1, MAX_TRIAL_TIMEOUT_S):
        assert save_chunks(store, "fine", trials, 0, 4, trial_timeout_s=fine)


def test_plan_study_refuses_a_bad_limit(local_env):
    from components.train.chunk import ChunkError

    with pytest.raises(ChunkError, match="trial_timeout_s must be"):
        _plan("bad-limit", 1, trial_timeout_s=-5)
    assert not open_store().list("studies/")


def test_kill_process_tree_reaches_a_descendant_in_its_own_session():
    """As torchrun's ranks are (each started with start_new_session=True)."""
    from components.train.chunk import kill_process_tree

    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    assert psutil.Process(grandchild).ppid() == parent.pid
    kill_process_tree(parent.pid)
    assert parent.wait(timeout=10) == -9
    deadline = time.monotonic() + 10
    while not _gone(grandchild):
        assert time.monotonic() < deadline, f"process {grandchild} survived"
        time.sleep(0.05)
    kill_process_tree(parent.pid)  # already gone: nothing to do, no error


@pytest.mark.slow
def test_a_hung_trial_is_killed_at_its_limit_and_the_chunk_goes_on(
    local_env, one_thread, monkeypatch, capsys
):
    """The first trial of a chunk cannot finish (the store's fault hook pauses its first
    checkpoint write for an hour) and has a 3 s limit: it is killed, recorded failed once
    although two attempts are allowed, and the other trial trains. A later run tries it
    again."""
    from components.train.chunk import ChunkSettings, attempts_key, load_chunks, run_chunk
    from components.train.trial import result_key

    ids, study = _plan("hang", 1, trial_timeout_s=600)
    store = open_store()
    assert load_chunks(store, study)["time_limits_s"] == dict.fromkeys(ids, 600)
    victim, other = ids
    _set_limit(store, study, victim, 3)
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"trials/{victim}/checkpoint.pt")

    assert run_chunk(study, 0, None, None, "hang", ChunkSettings(max_attempts=2)) == ids
    failed = store.get_json(result_key(victim))
    assert failed["status"] == "failed" and failed["killed"], failed
    assert failed["reason"] == "timed out after 3 s" and failed["attempts"] == 1
    (attempt,) = store.get_json(attempts_key(victim))["attempts"]
    assert attempt["outcome"] == "timed out after 3 s"
    assert attempt["ended_at"] - attempt["started_at"] >= 3
    assert _gone(attempt["pid"])
    assert store.get_json(result_key(other))["status"] == "ok"
    assert f"trial {victim} ran past its limit of 3 s" in capsys.readouterr().err

    monkeypatch.delenv(FAULT_PAUSE_ENV)
    _set_limit(store, study, victim, 600)
    assert run_chunk(study, 0, None, None, "hang", ChunkSettings(max_attempts=2)) == ids
    assert store.get_json(result_key(victim))["status"] == "ok"
    outcomes = [a["outcome"] for a in store.get_json(attempts_key(victim))["attempts"]]
    assert outcomes == ["timed out after 3 s", "ok"]


@pytest.mark.slow
@pytest.mark.extended
def test_a_hung_torchrun_trial_is_killed_with_its_ranks(local_env, monkeypatch):
    """A 2-process DeepSpeed trial (torchrun, gloo on the CPU) with a 15 s limit, which cannot
    finish (rank 0's first checkpoint write pauses for an hour): torchrun and both ranks, each
    rank in a session of its own, are gone when the chunk ends; the trial is failed."""
    from components.train.chunk import ChunkSettings, run_chunk
    from components.train.trial import result_key

    ids, study = _plan("hang-ranks", 1, n_specs=1, engine="deepspeed", gpus=2)
    store = open_store()
    (victim,) = ids
    _set_limit(store, study, victim, 15)
    monkeypatch.setenv(FAULT_PAUSE_ENV, f"trials/{victim}/checkpoint.pt")
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # the trial's processes: their command lines name the trial
        while not done.is_set():
            for process in psutil.process_iter(["cmdline"]):
                if victim in (process.info["cmdline"] or []):
                    seen.add(process.pid)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert run_chunk(study, 0, None, None, "", ChunkSettings(gpus_per_trial=2)) == ids
    finally:
        done.set()
        watcher.join()
    assert len(seen) >= 3, f"torchrun and 2 ranks were running: {seen}"
    assert all(_gone(pid) for pid in seen)
    result = store.get_json(result_key(victim))
    assert result["status"] == "failed" and result["reason"] == "timed out after 15 s", result


@pytest.mark.slow
def test_a_truncated_result_is_set_aside_and_the_trial_retrained(local_env, one_thread, capsys):
    """A finished trial's result.json truncated behind the store's back: the next run of the
    chunk sets it aside (stderr says so) and trains the trial again to ok, instead of failing."""
    from components.train.chunk import ChunkSettings, attempts_key, run_chunk
    from components.train.trial import result_key

    ids, study = _plan("truncated", 1, n_specs=1)
    (trial_id,) = ids
    assert run_chunk(study, 0, None, None, "", ChunkSettings()) == ids
    store = open_store()
    first = store.get_json(result_key(trial_id))
    path = store.root / result_key(trial_id)
    bad = path.read_bytes()[:40]
    path.write_bytes(bad)
    capsys.readouterr()

    assert run_chunk(study, 0, None, None, "", ChunkSettings()) == ids
    again = store.get_json(result_key(trial_id))
    assert again["status"] == "ok" and not again.get("reused"), again
    assert again["top1_error"] == first["top1_error"]  # resumed from the final checkpoint
    assert "set aside as" in capsys.readouterr().err
    (aside,) = [k for k in store.list(result_key(trial_id)) if ".corrupt-" in k]
    assert (store.root / aside).read_bytes() == bad
    outcomes = [a["outcome"] for a in store.get_json(attempts_key(trial_id))["attempts"]]
    assert outcomes == ["ok", "ok"]
