"""Trials: identity, idempotence, resume, and failures recorded instead of raised."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from trial_checks import checkpoint_test_error, faces_trial

from components.data.datasets import materialize
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    from components.train.trial import Trial


@pytest.fixture
def trial(store) -> Trial:
    return faces_trial(store, {"epochs": 2})


def test_identity_covers_every_input(trial):
    from dataclasses import replace

    from components.train.trial import Trial

    assert trial.trial_id == Trial.from_dict(trial.to_dict()).trial_id
    changed = [
        replace(trial, seed=1),
        replace(trial, recipe=resolve_recipe("apr_tiny", {"epochs": 3})),
        replace(trial, spec=trial.spec | {"stem_width": 24}),
        replace(trial, dataset=replace(trial.dataset, content_hash="other")),
    ]
    assert len({trial.trial_id, *(t.trial_id for t in changed)}) == 5


def test_trains_records_and_reuses(store, trial):
    from components.train.trial import checkpoint_key, result_key, run_trial

    lines = []
    result = run_trial(store, trial, progress=lines.append)
    assert result["status"] == "ok" and not result["reused"]
    # The reported error is the last epoch's, and that of the stored weights on the test split.
    assert result["top1_error"] == result["history"]["test_error"][-1]
    assert result["top1_error"] == pytest.approx(
        checkpoint_test_error(store, trial.trial_id), abs=1e-9
    )
    assert len(result["history"]["test_error"]) == 2
    assert result["flops"] > result["flops_trained"] > 0
    assert result["params_trained"] > 0 and result["train_images_per_s"] > 0
    assert sum("epoch" in line for line in lines) == 2
    assert store.exists(result_key(trial.trial_id)) and store.exists(checkpoint_key(trial.trial_id))
    again = run_trial(store, trial, progress=lines.append)
    assert again["reused"] and again["top1_error"] == result["top1_error"]


def test_resumes_from_checkpoint(store, trial):
    from dataclasses import replace

    from components.train.trial import checkpoint_key, run_trial

    # Train one epoch of a 2-epoch trial: the checkpoint then sits under the 2-epoch trial's id.
    first = run_trial(store, replace(trial, recipe=replace(trial.recipe, epochs=1)))
    store.put_bytes(
        checkpoint_key(trial.trial_id), store.get_bytes(checkpoint_key(first["trial_id"]))
    )
    lines = []
    result = run_trial(store, trial, progress=lines.append)
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    assert sum("epoch 2/2" in line for line in lines) == 1
    assert not any("epoch 1/2" in line for line in lines)
    assert result["history"]["test_error"][0] == first["history"]["test_error"][0]


def test_nan_loss_is_diverged(store, trial):
    from dataclasses import replace

    from components.train.trial import result_key, run_trial

    diverging = replace(trial, recipe=replace(trial.recipe, lr=1e30))
    result = run_trial(store, diverging, progress=lambda _: None)
    assert result["status"] == "diverged" and "loss became" in result["reason"]
    assert store.get_json(result_key(diverging.trial_id))["status"] == "diverged"


def test_broken_spec_is_failed_not_raised(store, trial):
    from dataclasses import replace

    from components.train.trial import run_trial

    broken = replace(trial, spec=trial.spec | {"block_type": "no_such_block"})
    result = run_trial(store, broken, progress=lambda _: None)
    assert result["status"] == "failed" and "no_such_block" in result["reason"]


def test_plan_cross_product(store, trial):
    from components.train.plan import load_trial, load_trial_ids, plan_trials, save_plan, study_id

    specs = [trial.spec, trial.spec | {"stem_width": 24}]
    shapes = materialize(store, "shapes", resolution=12)
    trials = plan_trials(specs, [trial.dataset, shapes], trial.recipe, seeds=[0, 1])
    assert len(trials) == 8 and len({t.trial_id for t in trials}) == 8
    study = study_id("s", trials)
    assert study == study_id("s", list(reversed(trials)))
    ids = save_plan(store, study, trials)
    assert load_trial_ids(store, study) == ids
    assert load_trial(store, ids[3]) == trials[3]
    with pytest.raises(ValueError, match="at least one dataset"):
        plan_trials(specs, [], trial.recipe, [0])
