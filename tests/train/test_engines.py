"""Training engines: the torch and DeepSpeed engines learn, and DeepSpeed's step is plain SGD."""

from __future__ import annotations

import copy
import io
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from trial_checks import checkpoint_test_error

from components.common.storage import open_store
from components.data.datasets import materialize
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    import torch
    from torch import nn


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed regression batch whose targets are large enough for gradient norms above 1."""
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    w = torch.tensor([[3.0], [-2.0], [1.5], [4.0]])
    return x, x @ w + 2.0 + 0.1 * torch.randn(32, 1, generator=generator)


def _model(seed: int = 0) -> nn.Sequential:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))


def _optimizer(model: nn.Module, lr: float = 0.01) -> torch.optim.SGD:
    import torch

    # Two groups with different weight decay, Nesterov momentum: what the trial loop builds.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


def _train_step(engine, module, optimizer, x, y, lr) -> float:
    from torch import nn

    # As timm's scheduler in the trial loop does: on the optimizer the engine steps.
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    with engine.autocast():
        loss = nn.functional.mse_loss(module(x), y)
    engine.step(loss)
    return loss.item()


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("name", ["torch", "deepspeed"])
def test_loss_decreases(name):
    import torch

    from components.train.engines import create_engine

    x, y = _problem()
    engine = create_engine(name, batch_size=len(x))
    optimizer = _optimizer(model := _model())
    module = engine.setup(model, optimizer)
    assert engine.device == torch.device("cpu")
    losses = [_train_step(engine, module, optimizer, x, y, lr=0.01) for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_deepspeed_step_is_plain_sgd_with_the_loops_lr(zero_stage):
    import deepspeed
    import torch
    from torch import nn

    from components.train.engines import DeepSpeedEngine

    x, y = _problem()
    reference = _model()
    reference_optimizer = _optimizer(reference)
    engine = DeepSpeedEngine(batch_size=len(x), zero_stage=zero_stage)
    optimizer = _optimizer(model := copy.deepcopy(reference), lr=123.0)  # overridden each step
    module = engine.setup(model, optimizer)
    assert isinstance(module, deepspeed.DeepSpeedEngine)
    assert engine.config()["zero_optimization"]["stage"] == zero_stage

    for lr in (0.02, 0.005, 0.01):  # a changing LR, as under warm-up and cosine decay
        for group in reference_optimizer.param_groups:
            group["lr"] = lr
        loss = nn.functional.mse_loss(reference(x), y)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
        assert torch.linalg.vector_norm(grads) > 1  # DeepSpeed's default clipping would show
        reference_optimizer.step()
        reference_optimizer.zero_grad()

        _train_step(engine, module, optimizer, x, y, lr)
        assert module.get_lr() == [lr, lr]  # the LR DeepSpeed's optimizer stepped with
        for ours, theirs in zip(_weights(model), _weights(reference), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_deepspeed_checkpoint_round_trip(zero_stage):
    import torch

    from components.train.engines import DeepSpeedEngine
    from components.train.trial import load_checkpoint_bytes

    x, y = _problem()
    engine = DeepSpeedEngine(batch_size=len(x), zero_stage=zero_stage)
    optimizer = _optimizer(model := _model())
    module = engine.setup(model, optimizer)
    for _ in range(3):
        _train_step(engine, module, optimizer, x, y, lr=0.01)
    buffer = io.BytesIO()
    torch.save({"engine": engine.state_dict()}, buffer)  # as the trial's checkpoint does

    restored = DeepSpeedEngine(batch_size=len(x), zero_stage=zero_stage)
    restored_optimizer = _optimizer(restored_model := _model(seed=1))
    restored_module = restored.setup(restored_model, restored_optimizer)
    checkpoint = load_checkpoint_bytes(buffer.getvalue(), "deepspeed")  # weights_only=True
    restored.load_state_dict(checkpoint["engine"])
    for ours, theirs in zip(_weights(restored_model), _weights(model), strict=True):
        assert torch.equal(ours, theirs)

    # The next step needs the momentum buffers too: identical only if they were restored.
    _train_step(engine, module, optimizer, x, y, lr=0.02)
    _train_step(restored, restored_module, restored_optimizer, x, y, lr=0.02)
    for ours, theirs in zip(_weights(restored_model), _weights(model), strict=True):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_create_engine_options_and_names():
    import torch

    from components.train.engines import DeepSpeedEngine, TorchEngine, create_engine

    engine = create_engine("deepspeed", batch_size=8)
    assert isinstance(engine, DeepSpeedEngine) and engine.name == "deepspeed"
    config = engine.config()
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 1 and config["gradient_clipping"] == 0
    assert not config["bf16"]["enabled"] and "scheduler" not in config
    assert isinstance(create_engine("torch", batch_size=8), TorchEngine)
    assert create_engine("deepspeed").batch_size == 32
    # Repeated creation in one process reuses the process group.
    assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
    with pytest.raises(ValueError, match="deepspeed, torch"):
        create_engine("nope")
    with pytest.raises(ValueError, match="zero_stage"):
        create_engine("torch", zero_stage=1)
    with pytest.raises(ValueError, match="zero_stage must be"):
        create_engine("deepspeed", zero_stage=3)


def test_single_process_defaults_keep_launcher_env(monkeypatch):
    import torch

    from components.train import engines

    calls = []

    class FakeDeepSpeed:
        @staticmethod
        def init_distributed(dist_backend):
            calls.append(dist_backend)

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")  # as a PyTorchJob would set
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("MASTER_ADDR", "job-master-0")
    engines._init_process_group(FakeDeepSpeed, "gloo")
    assert calls == ["gloo"]
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"]) == ("4", "2")
    assert os.environ["MASTER_ADDR"] == "job-master-0"
    assert os.environ["LOCAL_RANK"] == "0" and int(os.environ["MASTER_PORT"]) > 0


def test_trial_with_deepspeed_engine(tmp_path):
    from components.train.trial import Trial, run_trial

    store = open_store(str(tmp_path / "store"))
    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    trial = Trial(
        spec=spec,
        dataset=materialize(store, "faces", resolution=12),
        recipe=resolve_recipe("apr_tiny", {"epochs": 1}),
        seed=0,
        engine="deepspeed",
    )
    result = run_trial(store, trial, progress=lambda _: None)
    assert result["status"] == "ok", result["reason"]
    assert result["engine"] == "deepspeed"
    # The reported error is that of the stored weights on the test split, recomputed.
    assert result["top1_error"] == pytest.approx(
        checkpoint_test_error(store, result["trial_id"]), abs=1e-9
    )
    assert len(result["history"]["train_loss"]) == 1
    # Same seed, fp32 on the CPU, same SGD math: the torch engine trains the same network.
    torch_result = run_trial(store, replace(trial, engine="torch"), progress=lambda _: None)
    assert torch_result["trial_id"] != result["trial_id"]
    assert result["history"]["train_loss"] == pytest.approx(
        torch_result["history"]["train_loss"], rel=1e-5
    )
    assert result["history"]["test_loss"] == pytest.approx(
        torch_result["history"]["test_loss"], rel=1e-4
    )


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_deepspeed_steps_with_timms_schedule_and_accumulates_micro_batches(zero_stage):
    import torch
    from timm.optim import create_optimizer_v2
    from torch import nn

    from components.train.engines import DeepSpeedEngine, TorchEngine
    from components.train.trial import create_schedule, train_batch

    x, y = _problem()
    recipe = resolve_recipe("apr_tiny", {"epochs": 2, "lr": 0.02, "warmup_epochs": 0.5})
    reference = _model()
    torch_engine = TorchEngine(device="cpu")
    torch_module = torch_engine.setup(reference, create_optimizer_v2(reference, opt="sgd"))
    torch_schedule = create_schedule(torch_engine.optimizer, recipe, updates_per_epoch=4)
    # DeepSpeed with the batch as two micro-batches (gradient accumulation), the schedule built
    # on the optimizer DeepSpeed steps (its ZeRO wrapper under ZeRO 1).
    engine = DeepSpeedEngine(batch_size=len(x), zero_stage=zero_stage, micro_batches=2)
    model = copy.deepcopy(reference)
    module = engine.setup(model, create_optimizer_v2(model, opt="sgd"))
    schedule = create_schedule(engine.optimizer, recipe, updates_per_epoch=4)
    loss = nn.MSELoss()
    for update in range(8):
        torch_schedule.step_update(update)
        schedule.step_update(update)
        train_batch(torch_module, torch_engine, loss, x, y, micro_batch=len(x))
        train_batch(module, engine, loss, x, y, micro_batch=len(x) // 2)
        lr = torch_engine.optimizer.param_groups[0]["lr"]
        assert module.get_lr() == [lr] * len(module.get_lr())
        for ours, theirs in zip(_weights(model), _weights(reference), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    assert module.global_steps == 8  # one optimizer step per batch, not per micro-batch


def test_deepspeed_forward_gets_half_inputs_because_it_turns_outer_autocast_off():
    """DeepSpeed's forward turns an outer ``torch.autocast`` off unless its own
    ``torch_autocast`` section is on (deepspeed v0.19.8 runtime/torch_autocast.py,
    ``autocast_if_enabled``, lines 94-130; entered by runtime/engine.py ``forward``). With
    bf16/fp16 weights an fp32 batch then fails inside the first convolution, as it did on an
    H200: the engine casts the batch (``cast_inputs``) for the trial's forward passes."""
    import torch
    from torch import nn

    from components.train.engines import DeepSpeedEngine

    seen: list[bool] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_autocast_enabled("cpu"))
            return self.conv(x)

    engine = DeepSpeedEngine(batch_size=2)
    module = engine.setup(Probe(), torch.optim.SGD(Probe().parameters(), lr=0.1))
    x = torch.randn(2, 3, 8, 8)
    # DeepSpeed asks torch.is_autocast_enabled(), i.e. CUDA's flag, which torch.autocast("cuda")
    # sets on entry; set here by hand (no GPU), then DeepSpeed turns autocast off for its
    # accelerator, here the CPU.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.set_autocast_enabled("cuda", True)
        try:
            module(x)
        finally:
            torch.set_autocast_enabled("cuda", False)
        module(x)  # without CUDA's flag, DeepSpeed leaves the outer autocast on
    assert seen == [False, True]
    assert engine.cast_inputs(x) is x  # fp32 weights (the CPU): the batch as it comes

    engine.precision = "bf16"  # as on a GPU: DeepSpeed's bf16 section casts the weights
    half = Probe().to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="should be the same"):
        half(x)
    assert engine.cast_inputs(x).dtype == torch.bfloat16
    assert half(engine.cast_inputs(x)).dtype == torch.bfloat16
