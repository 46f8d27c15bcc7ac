"""Corrupt state is detected, set aside and recomputed, never a crash or a permanent failure.

Each test damages a real object of a real trial behind the store's back (truncation, an empty
file, a crafted pickle), then runs the trial again.
"""

from __future__ import annotations

import io
import pickle
import shutil

import pytest
from faults import quiet, tiny_trial

from components.common.storage import CorruptObjectError, open_store


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """One trained trial; each test damages its own copy of the store."""
    from components.train.trial import run_trial

    root = tmp_path_factory.mktemp("trained") / "store"
    store = open_store(str(root))
    trial = tiny_trial(store, epochs=1)
    return root, trial, run_trial(store, trial, progress=quiet)


@pytest.fixture
def trained(trained_once, tmp_path):
    root, trial, result = trained_once
    shutil.copytree(root, tmp_path / "copy")
    return open_store(str(tmp_path / "copy")), trial, result


def _path(store, key):
    return store.root / key


def _aside(store, key):
    return [k for k in store.list(key) if k.startswith(f"{key}.corrupt-")]


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-result"])
def test_bad_result_json_is_set_aside_and_recomputed(trained, damage):
    from components.train.trial import result_key, run_trial

    store, trial, first = trained
    path = _path(store, result_key(trial.trial_id))
    data = path.read_bytes()
    bad = {"truncated": data[: len(data) // 2], "empty": b"", "not-a-result": b"[1, 2]"}[damage]
    path.write_bytes(bad)
    if damage == "not-a-result":  # valid JSON with a fresh checksum, but no trial result
        store.put_bytes(result_key(trial.trial_id), bad)
    lines = []
    again = run_trial(store, trial, progress=lines.append)
    assert any("set aside as" in line for line in lines)
    assert not again["reused"] and again["status"] == "ok"
    assert again["top1_error"] == first["top1_error"]  # resumed from the final checkpoint
    assert store.get_json(result_key(trial.trial_id))["top1_error"] == first["top1_error"]
    (kept,) = _aside(store, result_key(trial.trial_id))
    assert _path(store, kept).read_bytes() == bad


def test_truncated_checkpoint_restarts_the_trial_instead_of_failing_it(trained):
    from components.train.trial import checkpoint_key, result_key, run_trial

    store, trial, reference = trained
    store.delete(result_key(trial.trial_id))
    path = _path(store, checkpoint_key(trial.trial_id))
    path.write_bytes(path.read_bytes()[:1000])  # truncated behind the store's back
    lines = []
    result = run_trial(store, trial, progress=lines.append)
    assert result["status"] == "ok", result["reason"]
    assert any("checkpoint of trial" in line and "set aside" in line for line in lines)
    assert sum("epoch 1/1" in line for line in lines) == 1, "trained again from scratch"
    assert result["top1_error"] == reference["top1_error"]
    assert len(_aside(store, checkpoint_key(trial.trial_id))) == 1


def test_checkpoint_without_checksum_that_does_not_load_is_set_aside(trained):
    from components.train.trial import checkpoint_key, load_checkpoint_bytes, result_key, run_trial

    store, trial, reference = trained
    store.delete(result_key(trial.trial_id))
    # Written by another tool (no checksum), and a pickle that would run code if unpickled
    # with weights_only=False.
    payload = pickle.dumps(_Boom())
    store.delete(checkpoint_key(trial.trial_id))
    _path(store, checkpoint_key(trial.trial_id)).write_bytes(payload)
    result = run_trial(store, trial, progress=quiet)
    assert result["status"] == "ok" and not _Boom.ran
    assert result["top1_error"] == reference["top1_error"]
    assert len(_aside(store, checkpoint_key(trial.trial_id))) == 1
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint_bytes(payload)


class _Boom:
    """Unpickling it would run code: exactly what weights_only=True refuses."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran() -> None:
    _Boom.ran = True


def test_checkpoints_load_with_weights_only(trained):
    import torch

    from components.train.trial import checkpoint_key, load_checkpoint_bytes

    store, trial, _ = trained
    state = load_checkpoint_bytes(store.get_bytes(checkpoint_key(trial.trial_id)))
    assert state["epoch"] == 1 and "model" in state["engine"]
    buffer = io.BytesIO()
    torch.save({"x": _Boom()}, buffer)
    with pytest.raises(pickle.UnpicklingError, match="weights_only|Unsupported global"):
        load_checkpoint_bytes(buffer.getvalue())


def test_plan_rewrites_a_bad_trial_json(trained, capsys):
    from components.train.plan import load_trial, save_plan, trial_key

    store, trial, _ = trained
    save_plan(store, "s", [trial])
    path = _path(store, trial_key(trial.trial_id))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CorruptObjectError):
        load_trial(store, trial.trial_id)
    save_plan(store, "s", [trial])
    assert "set aside as" in capsys.readouterr().err
    assert load_trial(store, trial.trial_id).trial_id == trial.trial_id
    assert len(_aside(store, trial_key(trial.trial_id))) == 1
