"""Chunks: sizing, the runner's child processes, and surviving a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components.common.storage import open_store
from components.data.descriptor import DatasetRef
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

ROOT = Path(__file__).parents[2]


def _cifar_like(name: str) -> DatasetRef:
    return DatasetRef(name, f"datasets/{name}/manifest.json", name, 10, 32, 50_000, 10_000)


@pytest.fixture(scope="module")
def big_plan():
    """500 sampled 360-400 MF AnyNetX-A models x 9 CIFAR-size datasets, 30 epochs."""
    from components.train.plan import plan_trials

    specs = [s.to_dict() for s in sample_specs("anynetx_a", 500, (360e6, 400e6), 0).specs]
    datasets = [_cifar_like(f"set{i}") for i in range(9)]
    return plan_trials(specs, datasets, resolve_recipe("apr_short"), [0])


def test_a_500_x_9_study_is_chunked_into_gpu_hours(big_plan):
    import math

    from components.train.chunk import CHUNK_SECONDS, chunk_trials, estimate_seconds

    assert len(big_plan) == 4500
    chunks = chunk_trials(big_plan, 0, 16)
    assert sorted(i for c in chunks for i in c) == list(range(4500)), "every trial once"
    per_hour = int(CHUNK_SECONDS / (sum(estimate_seconds(t) for t in big_plan) / 4500))
    assert all(len(c) <= per_hour for c in chunks), "no chunk over a GPU-hour"
    assert len(chunks) == math.ceil(4500 / per_hour)
    # At the measured H200 throughput (components/train/throughput.json): ~145 s per trial,
    # 24 trials per GPU-hour, 188 training tasks (instead of 4,500 tasks / ~13,500 pods).
    assert per_hour == 24 and len(chunks) == 188
    # A given size is taken as is: ceil(4500 / 150) tasks.
    assert len(chunk_trials(big_plan, 150, 16)) == 30


def test_estimate_rests_on_the_nearest_measurement_of_the_device_kind(big_plan):
    from dataclasses import replace

    from components.train import throughput
    from components.train.chunk import estimate, trial_macs

    def row(device, macs, input_mode, rate, overhead, date="2026-12-01"):
        return throughput.Measurement(device, macs, 32, input_mode, rate, overhead, date, "test")

    table = (
        row("NVIDIA H200", 30e6, "memory", 10_000, 20),
        row("NVIDIA H200", 500e6, "stream", 5_000, 60),
        row("NVIDIA H100", 30e6, "memory", 8_000, 25, date="2026-11-01"),
        row("cpu", 20e6, "memory", 500, 2),
    )
    trial = big_plan[0]  # ~32 M MACs at 32 px, 50,000 images x 30 epochs, from memory
    macs = trial_macs(trial)
    assert 25e6 < macs < 40e6
    found = throughput.estimate(macs, 50_000, 30, "gpu", "memory", table)
    # The nearest size of a GPU; of the two at that size, the newer.
    assert found.basis is table[0]
    # A larger model than the measurement is slower in proportion; a smaller one no faster.
    assert found.seconds == 20 + 50_000 * 30 / (10_000 * 30e6 / macs)
    big = throughput.estimate(400e6, 50_000, 30, "gpu", "memory", table)
    assert big.basis is table[1] and big.seconds == 60 + 50_000 * 30 / 5_000
    on_cpu = throughput.estimate(macs, 50_000, 30, "cpu", "memory", table)
    assert on_cpu.basis is table[3]
    assert "NVIDIA H200, 30.0 M MACs at 32 px from memory" in found.basis.describe()
    assert "(3 days ago)" in found.basis.describe(today=__import__("datetime").date(2026, 12, 4))
    with pytest.raises(ValueError, match="no cpu throughput measurement"):
        throughput.estimate(macs, 1, 1, "cpu", "memory", table[:3])
    # The committed table: a trial pinned to the CPU rests on a CPU measurement.
    assert estimate(replace(trial, device="cpu")).basis.device == "cpu"
    assert estimate(trial).basis.kind == "gpu"


def test_the_work_of_a_transfer_study_is_estimated_from_the_same_table():
    from components.train import throughput
    from pipelines.transfer_preflight import time_lines

    def row(device, macs, rate):
        return throughput.Measurement(device, macs, 32, "memory", rate, 20, "2026-12-01", "t")

    table = (row("NVIDIA H200", 30e6, 10_000), row("cpu", 20e6, 500))
    # Training: images at the rate scaled by work, without a trial's 20 s outside its loop;
    # a forward pass a third of a training step.
    trained = throughput.work_estimate(60e6, 100_000, "gpu", table=table)
    assert trained.basis is table[0] and trained.seconds == 100_000 / 5_000
    forward = throughput.work_estimate(60e6, 100_000, "gpu", forward_only=True, table=table)
    assert forward.seconds == pytest.approx(trained.seconds / 3)
    # The committed table's CPU row; two counted models stand for ten.
    [cpu] = [r for r in throughput.load_table() if r.kind == "cpu"]
    lines = time_lines([cpu.macs_per_image] * 2, 10, 3_000, [5_000, 1_000], "cpu")
    features, tuning = 10 * 3_000 / cpu.images_per_s / 3, 10 * 6_000 / cpu.images_per_s
    total = int(features + tuning)
    stated = f"time: about {total // 3600}:{total // 60 % 60:02d}:{total % 60:02d} (h:mm:ss)"
    assert lines[0].startswith(stated) and "(from 2 of the models' multiply-adds)" in lines[0]
    assert lines[1].startswith("  cpu, ")


def test_a_benchmark_run_adds_its_one_trial_rows_to_the_table(tmp_path):
    from dataclasses import asdict

    from components.train import throughput

    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"measurements": [asdict(throughput.load_table()[0])]}))
    first = throughput.load_table(table)[0]
    record = {
        "device": first.device,
        "date": "2026-12-05",
        "throughput": [
            {  # the same setting as the table's row: replaced
                "macs_per_image": first.macs_per_image,
                "resolution": first.resolution,
                "input": first.input,
                "trials_at_once": 1,
                "images_per_s": 20_000.0,
                "overhead_s": 5.0,
                "source": "gpu_suite engines",
            },
            {  # several trials at once: not a one-trial rate
                "macs_per_image": first.macs_per_image,
                "resolution": 32,
                "input": "memory",
                "trials_at_once": 4,
                "images_per_s": 9_000.0,
                "source": "gpu_suite sweep",
            },
        ],
    }
    (tmp_path / "bench-gpu.json").write_text(json.dumps(record))
    added = throughput.add(tmp_path / "bench-gpu.json", table)
    assert [r.images_per_s for r in added] == [20_000.0]
    assert [r.images_per_s for r in throughput.load_table(table)] == [20_000.0]
    assert throughput.load_table(table)[0].date == "2026-12-05"


def test_small_studies_fill_the_parallel_slots_in_balanced_chunks(big_plan, monkeypatch):
    from dataclasses import replace

    from components.train.chunk import LOCAL_SLOTS_ENV, chunk_trials, estimate_seconds

    monkeypatch.delenv(LOCAL_SLOTS_ENV, raising=False)
    chunks = chunk_trials(big_plan[:10], 0, 4)
    assert len(chunks) == 4 and max(len(c) for c in chunks) <= 3
    assert sorted(i for c in chunks for i in c) == list(range(10))
    assert all(c == sorted(c) for c in chunks), "equal estimates: each chunk in plan order"
    # Trials of very different lengths (epochs 1 to 6): chunks of equal estimated time, not
    # of consecutive trials (which would put the six longest into one chunk).
    mixed = [
        replace(t, recipe=replace(t.recipe, epochs=1 + i // 2)) for i, t in enumerate(big_plan[:12])
    ]
    mixed_chunks = chunk_trials(mixed, 6, 2)
    loads = [sum(estimate_seconds(mixed[i]) for i in c) for c in mixed_chunks]
    assert max(loads) / min(loads) < 1.05
    for chunk in mixed_chunks:  # longest first: a chunk ends with its shortest trials
        seconds = [estimate_seconds(mixed[i]) for i in chunk]
        assert seconds == sorted(seconds, reverse=True) and seconds[0] > seconds[-1]
    # A local run has two slots (kfp.local's cap): two chunks, one task start-up per slot;
    # without a GPU its trials train on this CPU, and are estimated (and balanced) so.
    import torch

    from components.train.chunk import estimate

    monkeypatch.setenv(LOCAL_SLOTS_ENV, "2")
    small = [replace(t, dataset=replace(t.dataset, n_train=900)) for t in big_plan[:10]]
    assert [len(c) for c in chunk_trials(small, 0, 16)] == [5, 5]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert estimate(big_plan[0]).basis.device == "cpu"
    assert estimate(replace(big_plan[0], device="cuda")).basis.kind == "gpu"


@pytest.mark.parametrize("size, parallel", [(-1, 4), (2, 0), (1.5, 4), (True, 4)])
def test_bad_chunking_is_one_error(big_plan, size, parallel):
    from components.train.chunk import ChunkError, chunk_trials

    with pytest.raises(ChunkError, match="chunk_size|max_parallel_tasks"):
        chunk_trials(big_plan[:4], size, parallel)


def test_bad_runner_settings():
    from components.train.chunk import ChunkError, ChunkSettings

    with pytest.raises(ChunkError, match="max_attempts must be at least 1"):
        ChunkSettings(max_attempts=0)
    with pytest.raises(ChunkError, match="packing"):
        ChunkSettings(gpus_per_trial=2, trials_per_gpu=2)
    assert ChunkSettings(trials_per_gpu=3, cpus=8).threads_per_trial == 2


def test_describe_exit():
    from components.train.chunk import describe_exit

    assert describe_exit(-9) == "killed by signal 9 (out of memory?)"
    assert describe_exit(-15) == "killed by signal 15 (SIGTERM)"
    assert describe_exit(1) == "exited with status 1"


def test_cuda_without_a_gpu_fails_fast():
    import torch

    from components.train.engines import DeviceError, resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="device 'cuda' was asked for but this machine has no"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="choose from auto, cuda, cpu"):
        resolve_device("tpu")


RUN_CHUNK = textwrap.dedent(
    """
    import sys
    from components.train.chunk import ChunkSettings, run_chunk
    ids = run_chunk(sys.argv[1], 0, None, None, "kill-test", ChunkSettings(max_attempts=1))
    print("chunk done", len(ids))
    """
)


def _run_chunk(study: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_CHUNK, study],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _lease_pid(store, trial_id: str) -> int | None:
    keys = sorted(store.list(f"trials/{trial_id}/lease-"))
    return store.get_json(keys[-1])["pid"] if keys else None


@pytest.mark.slow
@pytest.mark.extended
def test_a_sigkilled_trial_is_failed_then_ok_after_a_rerun(local_env):
    """A trial's child process is SIGKILLed after its first epoch: with one attempt allowed the
    chunk still finishes (exit 0) with that trial ``failed: killed by signal 9``, the other
    trial ok; a re-run trains the killed trial again (from its checkpoint) to ``ok``."""
    from components.data.datasets import prepare_all
    from components.train.chunk import attempts_key, load_chunks
    from components.train.run import plan_study
    from components.train.trial import checkpoint_key, result_key

    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), 0).specs]
    ids, study, _ = plan_study(
        specs, refs, "kill", "apr_tiny", {"epochs": 6}, [0], "torch", None, None, chunk_size=2
    )
    store = open_store()
    assert load_chunks(store, study)["chunks"] == [ids]
    env = os.environ | {"APRFLOW_TORCH_THREADS": "1"}
    victim = ids[0]

    first = _run_chunk(study, env)
    deadline = time.time() + 120
    while not store.exists(checkpoint_key(victim)):  # killed mid-trial, after epoch 1
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
        time.sleep(0.02)
    pid = _lease_pid(store, victim)
    assert pid not in (None, first.pid), "the trial runs in a child process"
    os.kill(pid, signal.SIGKILL)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    killed = store.get_json(result_key(victim))
    assert killed["status"] == "failed" and killed["killed"], killed
    assert killed["reason"] == "killed by signal 9 (out of memory?) in 1 of 1 attempts"
    attempts = store.get_json(attempts_key(victim))["attempts"]
    assert [a["outcome"] for a in attempts] == ["killed by signal 9 (out of memory?)"]
    assert store.get_json(result_key(ids[1]))["status"] == "ok"
    assert "trial 1/2 failed: killed by signal 9" in output, output

    again = _run_chunk(study, env)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    result = store.get_json(result_key(victim))
    assert result["status"] == "ok" and result["device_used"] == "cpu", result
    assert len(result["history"]["test_error"]) == 6
    assert "resuming trial" in output and "trial 2/2 ok (reused)" in output, output
    outcomes = [a["outcome"] for a in store.get_json(attempts_key(victim))["attempts"]]
    assert outcomes == ["killed by signal 9 (out of memory?)", "ok"]


def test_plan_markdown_names_the_summary():
    from components.train.chunk import plan_markdown

    record = {
        "chunks": [["a", "b"], ["c"]],
        "chunk_size": 2,
        "max_parallel_tasks": 4,
        "estimated_from": ["cpu, 18.7 M MACs at 32 px from memory: 568 images/s + 2 s"],
        "estimated_gpu_hours": [0.5, 0.25],
        "summary": "3 trials in 2 chunks: 2 training tasks",
    }
    markdown = plan_markdown(record)
    assert markdown.startswith("## 3 trials in 2 chunks: 2 training tasks")
    assert "| 1 | 1 | 0.250 |" in markdown and "0.75 in all" in markdown
    assert "  - cpu, 18.7 M MACs at 32 px from memory" in markdown
    json.dumps(record)


@pytest.mark.slow
def test_packing_trains_trials_at_once(local_env):
    """trials_per_gpu=2: both trials of the chunk run in overlapping child processes."""
    from components.data.datasets import prepare_all
    from components.train.chunk import ChunkSettings, attempts_key, run_chunk
    from components.train.run import plan_study
    from components.train.trial import result_key

    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), 0).specs]
    ids, study, _ = plan_study(
        specs, refs, "pack", "apr_tiny", {"epochs": 1}, [0], "torch", None, None, chunk_size=2
    )
    assert run_chunk(study, 0, None, None, "", ChunkSettings(trials_per_gpu=2, cpus=2)) == ids
    store = open_store()
    spans = [store.get_json(attempts_key(i))["attempts"][0] for i in ids]
    assert all(s["outcome"] == "ok" for s in spans)
    assert spans[1]["started_at"] < spans[0]["ended_at"], (
        "the second started before the first ended"
    )
    assert len({s["pid"] for s in spans}) == 2
    assert all(store.get_json(result_key(i))["status"] == "ok" for i in ids)


@pytest.mark.slow
def test_a_store_error_in_one_trial_is_retried_not_cached_and_the_chunk_goes_on(local_env):
    """The store cannot hold one trial's checkpoint (its key is a folder): that trial's child
    fails with a StoreError, the other trial of the chunk trains, the task fails naming the
    trial, and nothing is cached for it; once the store is fixed, a re-run trains it."""
    from components.data.datasets import prepare_all
    from components.train.chunk import ChunkError, ChunkSettings, attempts_key, run_chunk
    from components.train.run import plan_study
    from components.train.trial import checkpoint_key, result_key

    refs = [r.to_dict() for r in prepare_all(["faces"], 8, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), 0).specs]
    ids, study, _ = plan_study(
        specs, refs, "infra", "apr_tiny", {"epochs": 1}, [0], "torch", None, None, chunk_size=2
    )
    store = open_store()
    victim, other = ids
    blocked = store.root / checkpoint_key(victim)
    blocked.mkdir(parents=True)
    with pytest.raises(ChunkError, match=f"trial {victim} exited with status 1 \\(attempt 1/1\\)"):
        run_chunk(study, 0, None, None, "infra", ChunkSettings(max_attempts=1))
    assert store.get_json(result_key(other))["status"] == "ok"
    assert not store.exists(result_key(victim)), "an infrastructure error is not the result"
    (error,) = store.get_json(attempts_key(victim))["infrastructure_errors"]
    assert error["error"].startswith(f"StoreError: store {store.uri}: cannot "), error
    blocked.rmdir()
    assert run_chunk(study, 0, None, None, "infra", ChunkSettings(max_attempts=1)) == ids
    assert store.get_json(result_key(victim))["status"] == "ok"


def test_the_runner_wakes_when_a_trial_ends_not_at_the_next_poll():
    """A forked trial's end wakes the runner at once (its sentinel); without one (torchrun) it
    looks again after the timeout."""
    import multiprocessing
    from types import SimpleNamespace

    from components.train.chunk import wait_for_an_exit

    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0.5,))
    process.start()
    started = time.monotonic()
    wait_for_an_exit([SimpleNamespace(sentinel=process.sentinel)], timeout_s=60)
    assert time.monotonic() - started < 30  # woken by the end, not the timeout
    process.join(timeout=10)
    assert process.exitcode == 0
    started = time.monotonic()
    wait_for_an_exit([SimpleNamespace(sentinel=None)], timeout_s=0.3)
    assert time.monotonic() - started >= 0.3


def test_a_helper_takes_other_chunks_trials_from_their_end_and_skips_started_ones(tmp_path):
    from components.common.storage import Lease
    from components.train.chunk import Helping, chunk_timing_key
    from components.train.definition import lease_prefix, result_key

    store = open_store(str(tmp_path / "store"))
    chunks = [["a", "b", "c"], ["d", "e"], ["f"]]
    order = []
    helping = Helping(store, "s", chunks, 0, since=0.0)
    while (found := helping.next()) is not None:
        order.append(found)
    assert order == [("e", 1), ("d", 1), ("f", 2)]  # the next chunk first, each from its end
    store.put_json(result_key("c"), {"status": "ok"})  # finished: nothing to do
    lease, _ = Lease.try_acquire(store, lease_prefix("b"))  # being trained by a live process
    assert lease is not None
    helping = Helping(store, "s", chunks, 1, since=0.0)
    assert helping.next() == ("f", 2)
    assert helping.next() == ("a", 0)
    assert helping.next() is None
    store.put_json(result_key("a"), {"status": "failed", "killed": True})  # killed: train again
    assert Helping(store, "s", chunks, 2, since=0.0).next() == ("a", 0)
    # From a chunk's end, no further than the owner's finished start: "e" has no result, "g"
    # before it has one, so "g" and what comes before it are the owner's: "d" is not read.
    chunks = [["x"], ["d", "g", "e"]]
    store.put_json(result_key("g"), {"status": "ok"})
    store.put_json(result_key("d"), {"status": "ok"})
    helping = Helping(store, "s", chunks, 0, since=0.0)
    assert helping.next() == ("e", 1)
    reads = []
    store_get = store.get_json
    store.get_json = lambda key: reads.append(key) or store_get(key)
    assert helping.next() is None and result_key("d") not in reads
    # A chunk whose task ended after this task started is done: not looked into.
    store.put_json(chunk_timing_key("s", 1), {"ended_at": 200.0})
    assert Helping(store, "s", chunks, 0, since=100.0).next() is None
    assert Helping(store, "s", chunks, 0, since=300.0).next() == ("e", 1)  # an earlier run's


@pytest.mark.slow
def test_a_chunk_whose_trials_are_done_trains_the_trials_another_chunk_has_not_started(
    local_env,
):
    """Chunk 1 runs alone (chunk 0's task has not started): it trains its own trials, then
    chunk 0's from the end. Chunk 0's task then finds every result and trains nothing again;
    with help_others off, a chunk trains its own trials only."""
    from components.data.datasets import prepare_all
    from components.train.chunk import ChunkSettings, load_chunks, run_chunk
    from components.train.definition import attempts_key, result_key
    from components.train.run import plan_study

    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 3, (150e6, 250e6), 0).specs]
    ids, study, _ = plan_study(
        specs, refs, "help", "apr_tiny", {"epochs": 1}, [0], "torch", None, None, chunk_size=2
    )
    store = open_store()
    first, second = load_chunks(store, study)["chunks"]
    alone = ChunkSettings(max_attempts=1, help_others=False)
    assert run_chunk(study, 1, None, None, "alone", alone) == second
    assert not any(store.exists(result_key(t)) for t in first)
    assert run_chunk(study, 1, None, None, "helper", ChunkSettings(max_attempts=1)) == second
    results = {t: store.get_json(result_key(t)) for t in ids}
    assert all(result["status"] == "ok" for result in results.values())
    starts = {t: store.get_json(attempts_key(t))["attempts"][0]["started_at"] for t in first}
    assert starts[first[-1]] < starts[first[0]]  # from the end of chunk 0's list
    assert run_chunk(study, 0, None, None, "owner", ChunkSettings(max_attempts=1)) == first
    assert {t: store.get_json(result_key(t)) for t in ids} == results  # nothing trained again


@pytest.mark.slow
def test_a_trial_another_task_of_the_run_trained_is_not_reported_twice(local_env, capsys):
    """The owner of a trial that a helper of the same run trained reads its result back with a
    line of its own, not a second "trial i/N ok" (the console counts each once); a result of
    another run is reported reused, as before."""
    from components.data.datasets import prepare_all
    from components.train.chunk import _record_attempt
    from components.train.plan import load_trial
    from components.train.run import plan_study, train_trial, trained_in_this_run
    from components.train.trial import run_trial

    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 1, (150e6, 250e6), 0).specs]
    (trial_id,), study, _ = plan_study(
        specs, refs, "twice", "apr_tiny", {"epochs": 1}, [0], "torch", None, None
    )
    store = open_store()
    assert not trained_in_this_run(store, trial_id, "run-a")  # no attempt yet
    helper = {"started_at": 1.0, "kfp_run_id": "run-a", "chunk": 1}
    _record_attempt(store, trial_id, helper)
    run_trial(store, load_trial(store, trial_id), progress=lambda _: None)
    capsys.readouterr()

    owner = {"started_at": 2.0, "kfp_run_id": "run-a", "chunk": 0}
    _record_attempt(store, trial_id, owner)
    assert trained_in_this_run(store, trial_id, "run-a")
    assert train_trial(trial_id, study, None, None, "run-a")["reused"]
    err = capsys.readouterr().err
    assert "trial 1/1 " + trial_id + ": trained by another task of this run" in err, err
    assert "trial 1/1 ok" not in err, err

    _record_attempt(store, trial_id, {"started_at": 3.0, "kfp_run_id": "run-b", "chunk": 0})
    assert not trained_in_this_run(store, trial_id, "run-b")  # a re-run
    assert not trained_in_this_run(store, trial_id, "")  # no run id: nothing to tell apart
    train_trial(trial_id, study, None, None, "run-b")
    assert "trial 1/1 ok (reused)" in capsys.readouterr().err
    # A retried pod of the owner's task (the same run and chunk) has a new log: it reports
    # the trial, reused.
    _record_attempt(store, trial_id, {"started_at": 4.0, "kfp_run_id": "run-b", "chunk": 0})
    assert not trained_in_this_run(store, trial_id, "run-b")


# A trial trained after the fork server's imports, as a forked child is: prints the modules the
# trial imported itself.
PRELOADED_TRIAL = textwrap.dedent(
    """
    import json, sys
    from components.train.chunk import FORK_SERVER_PRELOAD
    for name in FORK_SERVER_PRELOAD:
        __import__(name)
    before = set(sys.modules)
    from components.train.run import train_trial
    train_trial(sys.argv[1], sys.argv[2], None, None, "preload-test")
    print(json.dumps(sorted(set(sys.modules) - before)))
    """
)


@pytest.mark.slow
def test_a_forked_trial_imports_no_timm_of_its_own(local_env):
    """The fork server imports timm before it forks: a trial that imported timm (and
    torchvision under it) itself would spend about 1.7 s of its own time on it, every trial."""
    from components.data.datasets import prepare_all
    from components.train.run import plan_study
    from components.train.trial import result_key

    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 1, (150e6, 250e6), 0).specs]
    ids, study, _ = plan_study(
        specs, refs, "preload", "apr_tiny", {"epochs": 1}, [0], "torch", None, None
    )
    env = os.environ | {"APRFLOW_TORCH_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PRELOADED_TRIAL, ids[0], study],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert open_store().get_json(result_key(ids[0]))["status"] == "ok"
    imported = json.loads(done.stdout.splitlines()[-1])
    late = [name for name in imported if name.split(".")[0] in ("timm", "torchvision")]
    assert late == [], f"the trial imported {late[:10]}: add them to FORK_SERVER_PRELOAD"
