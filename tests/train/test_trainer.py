"""The timm-based trainer: schedule, micro-batches after an out-of-memory, infrastructure
errors retried, extra test sets, drop path, engine options."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from trial_checks import faces_trial

from components.sample.space import REFERENCE_SPECS
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    from components.train.trial import Trial


@pytest.fixture
def trial(store) -> Trial:
    # Batch 32: the out-of-memory tests halve it 32 -> 16 -> 8 (-> 1).
    return faces_trial(store, {"epochs": 1, "batch_size": 32})


def test_schedule_is_timms_cosine_per_update_with_fractional_warmup():
    import torch
    from torch import nn

    from components.train.trial import create_schedule

    recipe = resolve_recipe(
        "apr_tiny",
        {"epochs": 4, "warmup_epochs": 0.5, "lr": 0.4, "warmup_lr": 0.0, "min_lr": 0.01},
    )
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=recipe.lr)
    scheduler = create_schedule(optimizer, recipe, updates_per_epoch=10)
    lrs = []
    for update in range(40):
        scheduler.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    # Warm-up over half an epoch (5 updates) from warmup_lr, then cosine towards min_lr.
    assert lrs[:5] == pytest.approx([0.0, 0.08, 0.16, 0.24, 0.32])
    assert max(lrs) <= 0.4 and lrs[5] > lrs[4]
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert 0.01 < lrs[-1] < 0.012


def test_micro_batches_accumulate_to_the_whole_batch_update():
    import torch
    from torch import nn

    from components.train.engines import TorchEngine
    from components.train.trial import train_batch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    whole, split = TorchEngine(device="cpu"), TorchEngine(device="cpu")
    whole.setup(model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))
    split.setup(twin, torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9))
    for _ in range(3):
        loss = train_batch(model, whole, nn.CrossEntropyLoss(), x, y, micro_batch=10)
        # 4 + 4 + 2 images: unequal micro-batches count by their share of the batch.
        split_loss = train_batch(twin, split, nn.CrossEntropyLoss(), x, y, micro_batch=4)
        torch.testing.assert_close(split_loss, loss, atol=1e-6, rtol=1e-6)
    for ours, theirs in zip(twin.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def _forward_fits_up_to(monkeypatch, limit: int) -> list[int]:
    """Test-only: AnyNet's forward raises torch.OutOfMemoryError above ``limit`` images."""
    import torch

    from components.sample import anynet

    sizes = []
    forward = anynet.AnyNet.forward

    def limited(self, x):
        sizes.append(len(x))
        if len(x) > limit:
            raise torch.OutOfMemoryError(f"test: {len(x)} images do not fit (limit {limit})")
        return forward(self, x)

    monkeypatch.setattr(anynet.AnyNet, "forward", limited)
    return sizes


@pytest.mark.slow
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_batch(store, trial, monkeypatch):
    from components.train.trial import result_key, run_trial

    sizes = _forward_fits_up_to(monkeypatch, 10)
    lines = []
    result = run_trial(store, trial, progress=lines.append)
    assert result["status"] == "ok", result["reason"]
    # 32 -> 16 -> 8 images per forward pass, the optimizer still stepping on batches of 32.
    assert result["micro_batch_size"] == 8 and result["oom_retries"] == 2
    assert sum("micro-batch halved" in line for line in lines) == 2
    assert max(sizes) == 32 and sizes[-1] <= 8
    updates = trial.dataset.n_train // trial.recipe.batch_size
    trained = [s for s in sizes[sizes.index(8) :] if s == 8]
    assert len(trained) >= updates * 4  # every update as 4 micro-batches of 8
    assert store.get_json(result_key(trial.trial_id))["micro_batch_size"] == 8


def test_a_batch_that_never_fits_is_failed_with_one_reason(store, trial, monkeypatch):
    from components.train.trial import run_trial

    _forward_fits_up_to(monkeypatch, 0)
    result = run_trial(store, trial, progress=lambda _: None)
    assert result["status"] == "failed" and result["oom_retries"] == 5  # 32 -> 1
    assert result["reason"].startswith("out of memory with micro-batches of 1 image")


def test_infrastructure_error_is_not_cached_and_a_rerun_retries(store, trial, monkeypatch):
    import torch

    from components.sample import anynet
    from components.train.trial import attempts_key, is_infrastructure_error, result_key, run_trial

    assert is_infrastructure_error(RuntimeError("CUDA error: an illegal memory access"))
    assert is_infrastructure_error(RuntimeError("NCCL communicator was aborted"))
    assert not is_infrastructure_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_infrastructure_error(torch.OutOfMemoryError("CUDA out of memory"))
    forward = anynet.AnyNet.forward

    def broken(self, x):
        raise RuntimeError("CUDA error: unspecified launch failure")

    monkeypatch.setattr(anynet.AnyNet, "forward", broken)
    with pytest.raises(RuntimeError, match="CUDA error"):
        run_trial(store, trial, progress=lambda _: None)
    assert not store.exists(result_key(trial.trial_id))
    attempts = store.get_json(attempts_key(trial.trial_id))
    assert attempts["trial_starts"] == 1 and len(attempts["infrastructure_errors"]) == 1
    monkeypatch.setattr(anynet.AnyNet, "forward", forward)
    result = run_trial(store, trial, progress=lambda _: None)
    assert result["status"] == "ok" and result["attempt"] == 2


def test_top5_and_extra_test_sets(store, trial):
    from components.train.trial import Trial, run_trial

    # The same test split under another name: evaluated with the final weights, it must give
    # exactly the trained dataset's numbers.
    copy_ref = replace(trial.dataset, name="faces_again")
    extra = replace(trial, test_sets=(copy_ref,))
    assert extra.trial_id != trial.trial_id
    assert Trial.from_dict(extra.to_dict()) == extra
    result = run_trial(store, extra, progress=lambda _: None)
    assert result["status"] == "ok"
    assert set(result["evaluations"]) == {"test", "faces_again"}  # faces has no val split
    assert result["evaluations"]["faces_again"] == pytest.approx(result["evaluations"]["test"])
    # Two classes: the top 5 always hold the label, so there is no top-5 error to report.
    assert result["top5_error"] is None and result["top1_error"] > 0
    assert set(history_top5 := result["history"]["test_top5_error"]) == {None}, history_top5
    history = result["history"]
    assert len(history["lr"]) == len(history["images_per_s"]) == len(history["peak_memory_mb"])
    assert history["peak_memory_mb"][0] > 0 and history["images_per_s"][0] > 0
    with pytest.raises(ValueError, match="share the classes"):
        replace(trial, test_sets=(replace(copy_ref, num_classes=3),))


def test_engine_options_are_identity_and_checked(trial):
    from components.train.engines import DeviceError, create_engine

    assert replace(trial, engine_options={"precision": "fp32"}).trial_id != trial.trial_id
    assert create_engine("torch", device="cpu", precision="bf16").precision == "bf16-autocast"
    with pytest.raises(DeviceError, match="'fp16' needs a GPU"):
        create_engine("torch", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="choose from auto, fp32, bf16, fp16"):
        create_engine("torch", precision="fp8")


def test_drop_path_rates_grow_with_depth_and_leave_complexity_alone():
    import torch

    from components.sample.anynet import build_model

    spec = REFERENCE_SPECS["regnetx_400mf"]
    model = build_model(spec, num_classes=10, drop_path_rate=0.2)
    rates = [
        getattr(block.drop_path, "drop_prob", 0.0) for stage in model.stages for block in stage
    ]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    plain = build_model(spec, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), plain.eval()(x))  # identity at inference
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_model(spec, drop_path_rate=1.0)
