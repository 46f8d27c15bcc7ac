"""Two processes train the same trial in the same store at once: exactly one trains, the other
waits on the trial's lease and reuses the result.

The first process is held just before it publishes its result (the store's test-only hook), so
the second one certainly starts while the first holds the lease.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults import aprflow_env, start_aprflow, wait_for

from components.common.storage import open_store
from components.sample.samplers import sample_specs


def _output_result(log: Path) -> dict:
    """The result JSON that ``aprflow train`` prints last."""
    text = log.read_text()
    return json.loads(text[text.rindex("\n{\n") + 1 :])


@pytest.mark.slow
def test_two_processes_do_not_both_train_a_trial(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict())
    )
    store_dir = tmp_path / "store"
    args = ["train", "--spec", str(spec), "--dataset", "faces", "--resolution", "8"]
    args += ["--epochs", "2", "--store", str(store_dir)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = start_aprflow(
        args, aprflow_env(APRFLOW_FAULT_PAUSE_BEFORE_PUBLISH="result.json:6"), logs[0]
    )
    wait_for(lambda: "pausing before publishing" in logs[0].read_text(), 180, "first's training")
    second = start_aprflow(args, aprflow_env(), logs[1])
    assert first.wait(timeout=120) == 0, logs[0].read_text()[-2000:]
    assert second.wait(timeout=120) == 0, logs[1].read_text()[-2000:]
    texts = [log.read_text() for log in logs]
    assert "waiting for its result" in texts[1], texts[1][-2000:]
    trained = [text.count("epoch 1/2") for text in texts]
    assert trained == [1, 0], "the trial was trained exactly once"
    results = [_output_result(log) for log in logs]
    assert results[0]["reused"] is False and results[1]["reused"] is True
    assert results[0]["top1_error"] == results[1]["top1_error"]
    store = open_store(str(store_dir))
    assert len([k for k in store.list("trials/") if k.endswith("/result.json")]) == 1
    assert [k.rsplit("/", 1)[1] for k in store.list("trials/") if "/lease-" in k] == [
        "lease-000000.json"
    ]
