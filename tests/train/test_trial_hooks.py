"""A trial tells its live MLflow run how training goes: its start, each epoch, the step loss."""

from __future__ import annotations

import math

from trial_checks import faces_trial


def test_hooks_hear_each_epoch_with_the_times_the_result_keeps(store, monkeypatch):
    from components.train import trial as trial_module
    from components.train.trial import TrainHooks, run_trial

    monkeypatch.setattr(trial_module, "STEP_LOSS_EVERY_S", 0.0)  # every update
    calls: dict[str, list] = {"start": [], "epoch": [], "step": []}
    hooks = TrainHooks(
        start=lambda: calls["start"].append(True),
        epoch=lambda epoch, history, at: calls["epoch"].append(
            (epoch, len(history["test_error"]), at)
        ),
        step=lambda update, loss, at: calls["step"].append((update, loss)),
    )
    trial = faces_trial(store, {"epochs": 2})
    result = run_trial(store, trial, progress=lambda _: None, hooks=hooks)
    assert calls["start"] == [True]
    # Epoch 1 and 2, each with the history up to it, at the times the result records.
    assert [(e, n) for e, n, _ in calls["epoch"]] == [(1, 1), (2, 2)]
    assert [at for _, _, at in calls["epoch"]] == result["epoch_times"]
    assert result["started_at"] <= result["epoch_times"][0] <= result["ended_at"]
    updates = [update for update, _ in calls["step"]]
    assert updates == sorted(set(updates)) and all(math.isfinite(v) for _, v in calls["step"])
    # A stored result trains nothing: no hook is called.
    calls = {"start": [], "epoch": [], "step": []}
    assert run_trial(store, trial, progress=lambda _: None, hooks=hooks)["reused"]
    assert calls == {"start": [], "epoch": [], "step": []}
