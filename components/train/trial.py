"""One trial: train an architecture on a dataset with a recipe and seed, and record the result.

A trial is idempotent and resumable:

* its id is the hash of (architecture spec, dataset content hash, resolved recipe, seed,
  engine, :data:`TRAINER_VERSION`, and a pinned device, several GPUs or ``compile_model``
  when set), and everything it writes lives under ``trials/<id>/``;
* a finished trial (``result.json`` present) is never trained again;
* after every epoch a checkpoint is written, and a restarted trial (a killed pod) resumes from
  it;
* one process trains a trial at a time: it holds the trial's lease
  (:class:`~components.common.storage.Lease`), and a second run of the same study waits for
  the result instead of training it again;
* a truncated or corrupt ``result.json`` or checkpoint is set aside (``<key>.corrupt-<time>``)
  and recomputed, never a crash and never a permanent ``failed``.

A trial-level failure never raises: a NaN loss gives ``status = "diverged"``, any other error in
building or training the model gives ``status = "failed"`` with the reason, so one bad
architecture does not stop a study. Errors of the infrastructure (the store) do raise.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from components.common.hashing import content_hash
from components.common.storage import (
    ArtifactStore,
    CorruptObjectError,
    Lease,
    MissingObjectError,
    StoreError,
)
from components.data.datasets import DatasetRef
from components.data.loader import TrainData, open_split
from components.train.engines import (
    COMPILE_CACHE_ENV,
    TrainEngine,
    compile_cache_counters,
    create_engine,
    describe_device,
    rank_and_world,
)
from components.train.recipes import Recipe

# A trial's lease expires this long after its holder's last renewal (every third of it).
LEASE_TTL_ENV = "APRFLOW_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 120.0

# Bump when a change to the training code changes what a trial produces.
TRAINER_VERSION = 1
STATUSES = ("ok", "diverged", "failed")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Trial:
    """Everything that determines a trial's result."""

    spec: dict[str, Any]
    dataset: DatasetRef
    recipe: Recipe
    seed: int
    engine: str = "torch"
    # "auto" (a GPU when there is one, recorded in the result), "cuda" or "cpu"; and the
    # processes (GPUs) one trial trains on. Both change the numbers (bf16 on a GPU, batch norm
    # statistics per rank), so a pinned device or several GPUs are part of the identity.
    device: str = "auto"
    gpus: int = 1
    # torch.compile: inductor fuses and reorders floating-point work, so a compiled trial's
    # losses differ from the eager one's in the last digits and drift apart over training
    # (tests/train/test_compile_model.py); a different measurement, hence part of the identity
    # (only when on: eager trials keep their ids).
    compile_model: bool = False

    @property
    def trial_id(self) -> str:
        placement = {"device": self.device} if self.device != "auto" else {}
        placement |= {"gpus": self.gpus} if self.gpus != 1 else {}
        placement |= {"compile_model": True} if self.compile_model else {}
        return content_hash(
            placement
            | {
                "spec": self.spec,
                "dataset": {
                    "name": self.dataset.name,
                    "content_hash": self.dataset.content_hash,
                    "resolution": self.dataset.resolution,
                    "input": self.dataset.input,
                },
                "recipe": self.recipe.to_dict(),
                "seed": self.seed,
                "engine": self.engine,
                "trainer_version": TRAINER_VERSION,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "dataset": self.dataset.to_dict(),
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "engine": self.engine,
            "device": self.device,
            "gpus": self.gpus,
            "compile_model": self.compile_model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(
            spec=data["spec"],
            dataset=DatasetRef(**data["dataset"]),
            recipe=Recipe(**data["recipe"]),
            seed=int(data["seed"]),
            engine=data.get("engine", "torch"),
            device=data.get("device", "auto"),
            gpus=int(data.get("gpus", 1)),
            compile_model=bool(data.get("compile_model", False)),
        )


def result_key(trial_id: str) -> str:
    return f"trials/{trial_id}/result.json"


def checkpoint_key(trial_id: str) -> str:
    return f"trials/{trial_id}/checkpoint.pt"


class Diverged(Exception):
    """The loss became NaN or infinite."""


def _lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero, per optimizer step."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    # Clamped: a streamed epoch may yield a step more or less than the planned count.
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    return 0.5 * recipe.lr * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Norm weights and biases (1-d tensors) are not decayed, as in timm's recipes.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0},
    ]


@torch.no_grad()
def evaluate(model: torch.nn.Module, engine: TrainEngine, batches: TrainData, batch_size: int):
    """Returns (top-1 error in percent, mean cross-entropy) on ``batches``."""
    model.eval()
    wrong, loss_sum = 0, 0.0
    for images, labels in batches.eval(batch_size):
        with engine.autocast():
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        wrong += (logits.argmax(1) != labels).sum().item()
    return 100.0 * wrong / len(batches), loss_sum / len(batches)


def _save_checkpoint(store, trial_id, engine, epoch, history, generator) -> None:
    buffer = io.BytesIO()
    state = {"engine": engine.state_dict(), "epoch": epoch, "history": history}
    torch.save(state | {"generator": generator.get_state()}, buffer)
    store.put_bytes(checkpoint_key(trial_id), buffer.getvalue())


def load_checkpoint_bytes(data: bytes, engine: str = "torch") -> dict[str, Any]:
    """Unpickles a checkpoint with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a crafted checkpoint cannot run code. DeepSpeed's ZeRO optimizer state
    holds three plain DeepSpeed objects (loss scaler, stage enum, fragment address), which are
    allow-listed by name for that engine only (``torch.serialization.
    get_unsafe_globals_in_checkpoint`` lists them)."""
    allowed = []
    if engine == "deepspeed":
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    with torch.serialization.safe_globals(allowed):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _load_checkpoint(store, trial_id, engine: str, progress: Progress) -> dict[str, Any] | None:
    """The trial's last checkpoint; None when there is none or it is truncated or corrupt (then
    it is set aside as ``checkpoint.pt.corrupt-<time>`` and the trial starts from scratch)."""
    key = checkpoint_key(trial_id)
    try:
        return load_checkpoint_bytes(store.get_bytes(key), engine)
    except MissingObjectError:
        return None
    except (CorruptObjectError, pickle.UnpicklingError, RuntimeError, EOFError) as e:
        aside = store.set_aside(key)
        progress(
            f"checkpoint of trial {trial_id} is unusable ({e}); set aside as {aside}, "
            "training from scratch"
        )
        return None


def _configure_threads() -> None:
    threads = int(os.environ.get("APRFLOW_TORCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)


def _train(store: ArtifactStore, trial: Trial, progress: Progress) -> dict[str, Any]:
    """The training loop proper; raises on failure, :class:`Diverged` on a NaN loss."""
    from components.sample.anynet import build_model
    from components.sample.space import AnyNetSpec, complexity, uses_small_stem

    trial_id = trial.trial_id
    recipe = trial.recipe
    spec = AnyNetSpec.from_dict(trial.spec)
    small_input = uses_small_stem(trial.dataset.resolution, None)
    torch.manual_seed(trial.seed)
    generator = torch.Generator().manual_seed(trial.seed)
    model = build_model(spec, num_classes=trial.dataset.num_classes, small_input=small_input)
    # compile_model is passed only when asked for: an engine that cannot compile is refused
    # by name (create_engine), and the plan refused it earlier (engines.check_compile).
    compile_option = {"compile_model": True} if trial.compile_model else {}
    engine = create_engine(
        trial.engine, batch_size=recipe.batch_size, device=trial.device, **compile_option
    )
    cache_before = compile_cache_counters()
    # Several processes (torchrun, one per GPU): each takes its share of every batch, like a
    # DistributedSampler, so the global batch (and the averaged gradient) is the recipe's;
    # only rank 0 writes.
    # (A trial planned for one GPU may still run in a bigger world: a multi-node TrainJob,
    # components/trainjob; its result records the world size.)
    rank, world = rank_and_world()
    if trial.gpus > 1 and world != trial.gpus:
        raise ValueError(f"trial planned for {trial.gpus} processes runs in {world}")
    optimizer = torch.optim.SGD(
        _param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=True,
    )
    model = engine.setup(model, optimizer)
    # One interface for both input paths (components.data.loader): in memory for small sets,
    # streamed from the shards by DataLoader workers for the others.
    train = open_split(store, trial.dataset, "train", engine.device, trial.seed)
    test = open_split(store, trial.dataset, "test", engine.device, trial.seed)
    history: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_error": []}
    start_epoch = 0
    checkpoint = _load_checkpoint(store, trial_id, trial.engine, progress)
    if checkpoint is not None:
        engine.load_state_dict(checkpoint["engine"])
        generator.set_state(checkpoint["generator"])
        history, start_epoch = checkpoint["history"], checkpoint["epoch"]
        progress(f"resuming trial {trial_id} after epoch {start_epoch}")
    steps_per_epoch = max(1, len(train) // recipe.batch_size)
    images_seen, train_seconds = 0, 0.0
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        tic = time.perf_counter()
        loss_sum, n_batches = 0.0, 0
        for step, (images, labels) in enumerate(train.train(recipe, generator, epoch)):
            if world > 1:
                images, labels = images[rank::world], labels[rank::world]
            lr = _lr_at(recipe, epoch * steps_per_epoch + step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with engine.autocast():
                loss = F.cross_entropy(
                    model(images), labels, label_smoothing=recipe.label_smoothing
                )
            if not torch.isfinite(loss):
                raise Diverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            engine.step(loss)
            loss_sum += loss.item()
            n_batches += 1
            images_seen += len(labels) * world
        train_seconds += time.perf_counter() - tic
        test_error, test_loss = evaluate(model, engine, test, recipe.eval_batch_size)
        history["train_loss"].append(loss_sum / n_batches)
        history["test_loss"].append(test_loss)
        history["test_error"].append(test_error)
        progress(
            f"  epoch {epoch + 1}/{recipe.epochs}: train loss {loss_sum / n_batches:.3f}, "
            f"test error {test_error:.1f}%"
        )
        if rank == 0:
            _save_checkpoint(store, trial_id, engine, epoch + 1, history, generator)
    at_224 = complexity(spec, resolution=224)
    trained = complexity(
        replace(spec, num_classes=trial.dataset.num_classes),
        resolution=trial.dataset.resolution,
        small_input=small_input,
    )
    return {
        "top1_error": history["test_error"][-1],
        "test_loss": history["test_loss"][-1],
        "history": history,
        "flops": at_224.flops,
        "params": at_224.params,
        "flops_trained": trained.flops,
        "params_trained": sum(p.numel() for p in model.parameters()),
        "train_images_per_s": images_seen / train_seconds if train_seconds else None,
        # What it really ran on (the trial's ``device`` may be "auto").
        "device_used": describe_device(engine.device),
        "precision": engine.precision,
        "torch_version": torch.__version__,
        "world_size": world,
        "compiled": engine.compiled,
    } | ({"compile_cache": _compile_cache_use(cache_before)} if engine.compiled else {})


def _compile_cache_use(before: dict[str, int]) -> dict[str, Any]:
    """The inductor FX-graph cache hits and misses of this trial's compilations, and the
    folder: hits > 0 = graphs of an earlier trial of the same architecture shape were reused."""
    after = compile_cache_counters()
    return {key: after[key] - before[key] for key in after} | {
        "dir": os.environ.get(COMPILE_CACHE_ENV, "")
    }


def _stored_result(store: ArtifactStore, trial_id: str, progress: Progress) -> dict | None:
    """The trial's stored result marked ``reused``; None when there is none, or when it is
    truncated or corrupt (then it is set aside as ``result.json.corrupt-<time>``)."""
    key = result_key(trial_id)
    try:
        result = store.get_json(key)
        if not isinstance(result, dict) or result.get("status") not in STATUSES:
            raise CorruptObjectError(f"object {key!r} holds no trial result")
    except MissingObjectError:
        return None
    except CorruptObjectError as e:
        aside = store.set_aside(key)
        progress(f"trial {trial_id}: {e}; set aside as {aside}, training again")
        return None
    progress(f"trial {trial_id} already done ({result['status']}): reusing its result")
    return result | {"reused": True}


def _lease_or_result(
    store: ArtifactStore, trial_id: str, progress: Progress
) -> tuple[Lease | None, dict | None]:
    """Takes the trial's lease, or waits until its holder publishes the result (the caller
    has just looked for one)."""
    ttl = float(os.environ.get(LEASE_TTL_ENV, DEFAULT_LEASE_TTL_S))
    waiting = False
    while True:
        lease, holder = Lease.try_acquire(store, f"trials/{trial_id}", ttl)
        if lease is not None:
            return lease, None
        if not waiting:
            progress(
                f"trial {trial_id} is being trained by {holder.get('host')} (pid "
                f"{holder.get('pid')}): waiting for its result"
            )
            waiting = True
        time.sleep(min(5.0, ttl / 4))
        if (stored := _stored_result(store, trial_id, progress)) is not None:
            return None, stored


def run_trial(store: ArtifactStore, trial: Trial, progress: Progress = print) -> dict[str, Any]:
    """Runs ``trial`` unless its result exists, writes ``result.json`` and returns the result.

    Returns:
        The result dict: ``trial_id``, ``status`` (``ok``/``diverged``/``failed``), ``reason``,
        the trial's inputs, ``top1_error`` (percent), ``history``, ``flops``/``params`` (at 224²
        with the spec's stem, the study's FLOP band quantity), ``wall_time_s``, ``reused``.

    Raises:
        StoreError: when the artifact store fails (nothing is recorded then).
    """
    trial_id = trial.trial_id
    if (stored := _stored_result(store, trial_id, progress)) is not None:
        return stored
    if rank_and_world()[0] > 0:
        # A follower rank of a multi-GPU trial: trains its share; rank 0 holds the lease and
        # writes the checkpoint and the result.
        return _run_leased(store, trial, progress, write=False)
    # One trainer per trial: a second run of the same study waits for this one's result.
    lease, stored = _lease_or_result(store, trial_id, progress)
    if stored is not None:
        return stored
    with lease.hold():
        if (stored := _stored_result(store, trial_id, progress)) is not None:
            return stored  # finished by the previous holder while this process waited
        return _run_leased(store, trial, progress)


def _run_leased(
    store: ArtifactStore, trial: Trial, progress: Progress, write: bool = True
) -> dict[str, Any]:
    trial_id = trial.trial_id
    _configure_threads()
    tic = time.perf_counter()
    outcome: dict[str, Any] = {"status": "ok", "reason": ""}
    try:
        outcome |= _train(store, trial, progress)
    except StoreError:
        raise
    except Diverged as e:
        outcome = {"status": "diverged", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - any model/training error is the trial's failure
        traceback.print_exc()
        outcome = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    result = {
        "trial_id": trial_id,
        **trial.to_dict(),
        "trainer_version": TRAINER_VERSION,
        **outcome,
        "wall_time_s": round(time.perf_counter() - tic, 3),
    }
    if write:
        store.put_json(result_key(trial_id), result)
    return result | {"reused": False}
