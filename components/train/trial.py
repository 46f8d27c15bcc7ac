"""One trial: train an architecture on a dataset with a recipe and seed, and record the result.

Training is timm's recipe machinery around our AnyNet: ``timm.optim.create_optimizer_v2``
(no weight decay on norms and biases), ``timm.scheduler.create_scheduler_v2`` stepped per
optimizer update, ``timm.data.Mixup`` (Mixup/CutMix, label smoothing), ``timm.loss``
(soft-target / binary cross-entropy), ``timm.utils.ModelEmaV3`` and ``DropPath`` stochastic
depth in the AnyNet blocks, as :class:`~components.train.recipes.Recipe` says.

A trial is idempotent and resumable:

* its id is the hash of (architecture spec, dataset content hash, resolved recipe, seed,
  engine and its options, extra test sets, :data:`TRAINER_VERSION`, and a pinned device,
  several GPUs or ``compile_model`` when set), and everything it writes lives under
  ``trials/<id>/``;
* a finished trial (``result.json`` present) is never trained again;
* a checkpoint is written after every epoch and, within an epoch, every
  :data:`CHECKPOINT_EVERY_S` seconds (``APRFLOW_CHECKPOINT_EVERY_S``: not part of the id, it
  changes when, not what, is saved); it holds the model, optimizer, scheduler, EMA, grad
  scaler, every random generator (torch CPU and CUDA, NumPy's global one that timm's Mixup
  and RandAugment draw from, Python's, the data generator at the epoch's start) and the step
  inside the epoch. A restarted trial (a killed pod) resumes from it exactly: it skips the
  batches of the interrupted epoch already trained (same (seed, epoch) order) and ends with
  the weights an uninterrupted run has (bitwise on the CPU; tests/train/test_resume.py);
* one process trains a trial at a time: it holds the trial's lease
  (:class:`~components.common.storage.Lease`), and a second run of the same study waits for
  the result instead of training it again;
* a truncated or corrupt ``result.json`` or checkpoint is set aside (``<key>.corrupt-<time>``)
  and recomputed, never a crash and never a permanent ``failed``.

Failures: a NaN/inf loss gives ``status = "diverged"`` with the epoch and step; an out-of-memory
halves the micro-batch (gradients accumulate over the micro-batches, so the optimizer still
sees the recipe's batch) and trains again from the last checkpoint (``micro_batch_size`` and
``oom_retries`` in the result; a batch that does not fit as micro-batches of one image is
``failed``); any other error in building or training the model gives ``status = "failed"``
with the reason, so one bad architecture does not stop a study. Errors of the infrastructure
(the store, the tracking server, a CUDA/NCCL runtime error, a missing GPU) are not the trial's
result: they raise, nothing final is written, ``trials/<id>/attempts.json`` counts the
attempt, and a re-run retries the trial.

Reported numbers: ``top1_error`` is the test error of the trained weights (those stored in
the checkpoint and read by transfer), not of the EMA: RSB's A1-A3 train without EMA; with
``model_ema`` the EMA's test error is ``ema_top1_error`` and ``history["ema_test_error"]``.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import pickle
import platform
import random
import re
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from components.common.hashing import content_hash
from components.common.progress import report
from components.common.storage import (
    ArtifactStore,
    CorruptObjectError,
    Lease,
    MissingObjectError,
    StoreError,
)
from components.common.tracking import TrackingError
from components.data.datasets import DatasetRef
from components.data.loader import TrainData, open_split
from components.train.engines import (
    COMPILE_CACHE_ENV,
    DeviceError,
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
# Mid-epoch checkpoints: at most this often (seconds); 0 = after every optimizer update.
CHECKPOINT_EVERY_ENV = "APRFLOW_CHECKPOINT_EVERY_S"
CHECKPOINT_EVERY_S = 300.0
# glibc's mallopt parameters (malloc.h) and the switch of their tuning (see _configure_host).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_TUNING_ENV = "APRFLOW_MALLOC_TUNING"

# Bump when a change to the training code changes what a trial produces.
# 2: timm optimizer/scheduler/Mixup/losses/EMA/drop path, micro-batches, engine options.
TRAINER_VERSION = 2
STATUSES = ("ok", "diverged", "failed")
# RuntimeErrors of the machine rather than the model: retried, never cached as a result.
_INFRASTRUCTURE_MESSAGE = re.compile(
    r"CUDA error|CUDA driver|cuda runtime error|NCCL|CUBLAS_STATUS_(?!NOT_SUPPORTED)|"
    r"CUDNN_STATUS_INTERNAL_ERROR|ECC error|Connection reset by peer|Broken pipe"
)

Progress = Callable[[str], None]
# How often, at most, a long epoch hands its running training loss to TrainHooks.step.
STEP_LOSS_EVERY_S = 60.0


def _no_op(*_: Any) -> None:
    pass


@dataclass(frozen=True)
class TrainHooks:
    """What a trial reports while it trains (its live MLflow run), on rank 0 only.

    Attributes:
        start: called once the trial really trains (not for a stored result, not while it
            waits for another process's result).
        epoch: ``(epoch, history, ended_at)`` after each epoch's evaluation: epoch 1 = the
            first, ``history`` the per-epoch series so far, ``ended_at`` the epoch's end in
            Unix seconds (the result's ``epoch_times`` holds the same).
        step: ``(update, loss, at)``: the mean training loss since the last call, at most
            every :data:`STEP_LOSS_EVERY_S` seconds within an epoch.
    """

    start: Callable[[], None] = _no_op
    epoch: Callable[[int, dict[str, list[float]], float], None] = _no_op
    step: Callable[[int, float, float], None] = _no_op


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
    # Options of the engine (create_engine): torch {"precision": auto|fp32|bf16|fp16},
    # deepspeed {"zero_stage": 0-2, "precision": ...}. They change the numbers: in the id.
    engine_options: dict[str, Any] = field(default_factory=dict)
    # Extra datasets with the same classes whose test split the final weights are also
    # evaluated on (RSB's ImageNet-val vs -V2): ``evaluations[<name>]`` in the result.
    test_sets: tuple[DatasetRef, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "test_sets", tuple(self.test_sets))
        for extra in self.test_sets:
            if extra.num_classes != self.dataset.num_classes:
                raise ValueError(
                    f"test set {extra.name!r} has {extra.num_classes} classes, the trained "
                    f"dataset {self.dataset.name!r} {self.dataset.num_classes}: a test set "
                    "must share the classes"
                )
        names = [extra.name for extra in self.test_sets]
        reserved = {"test", "val"} | {self.dataset.name}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ValueError(
                f"test sets {names} must have distinct names other than "
                f"{', '.join(sorted(reserved))}"
            )

    @property
    def trial_id(self) -> str:
        placement = {"device": self.device} if self.device != "auto" else {}
        placement |= {"gpus": self.gpus} if self.gpus != 1 else {}
        placement |= {"compile_model": True} if self.compile_model else {}
        return content_hash(
            placement
            | {
                "spec": self.spec,
                "dataset": _dataset_identity(self.dataset),
                "recipe": self.recipe.to_dict(),
                "seed": self.seed,
                "engine": self.engine,
                "engine_options": self.engine_options,
                "test_sets": [_dataset_identity(extra) for extra in self.test_sets],
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
            "engine_options": dict(self.engine_options),
            "test_sets": [extra.to_dict() for extra in self.test_sets],
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
            engine_options=dict(data.get("engine_options") or {}),
            test_sets=tuple(DatasetRef(**extra) for extra in data.get("test_sets") or ()),
        )


def _dataset_identity(ref: DatasetRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "content_hash": ref.content_hash,
        "resolution": ref.resolution,
        "input": ref.input,
    }


def result_key(trial_id: str) -> str:
    return f"trials/{trial_id}/result.json"


def checkpoint_key(trial_id: str) -> str:
    return f"trials/{trial_id}/checkpoint.pt"


def attempts_key(trial_id: str) -> str:
    """``trials/<id>/attempts.json``: the trial's starts and infrastructure errors (the chunk
    runner adds its child processes' entries to the same object)."""
    return f"trials/{trial_id}/attempts.json"


class Diverged(Exception):
    """The loss became NaN or infinite."""


class InfrastructureError(RuntimeError):
    """An error of the machine, store or tracking server during a trial: retried by a re-run,
    never recorded as the trial's result."""


class NeverFits(Exception):
    """A batch that runs out of memory even as micro-batches of one image."""


def is_infrastructure_error(error: BaseException) -> bool:
    """Whether ``error`` is the infrastructure's (store, tracking, a missing GPU, a CUDA/NCCL
    runtime error by its message) rather than the trial's own failure."""
    if isinstance(error, StoreError | TrackingError | DeviceError | InfrastructureError):
        return True
    if isinstance(error, torch.OutOfMemoryError):
        return False
    return isinstance(error, RuntimeError) and bool(_INFRASTRUCTURE_MESSAGE.search(str(error)))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, engine: TrainEngine, batches: TrainData, batch_size: int, classes: int
) -> dict[str, float]:
    """Top-1 and top-5 error in percent and mean cross-entropy on ``batches``; counts stay on
    the device and are read once. With 5 classes or fewer the top 5 always hold the label, so
    ``top5_error`` is None (no number that could mislead a comparison)."""
    model.eval()
    k = min(5, classes)
    totals = torch.zeros(3, dtype=torch.float64, device=engine.device)
    for images, labels in batches.eval(batch_size):
        with engine.autocast():
            logits = model(engine.cast_inputs(images)).float()
        top = logits.topk(k, dim=1).indices
        totals[0] += F.cross_entropy(logits, labels, reduction="sum")
        totals[1] += (top[:, 0] != labels).sum()
        totals[2] += (top != labels[:, None]).all(1).sum()
    loss_sum, wrong, wrong_k = totals.tolist()
    n = len(batches)
    return {
        "top1_error": 100.0 * wrong / n,
        "top5_error": 100.0 * wrong_k / n if classes > 5 else None,
        "loss": loss_sum / n,
    }


def _rng_state() -> dict[str, Any]:
    """The global random generators (torch CPU and CUDA, NumPy, Python) as plain tensors and
    containers, loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def checkpoint_fault(error: BaseException) -> str:
    """What is wrong with a checkpoint that ``torch.load(weights_only=True)`` refused, in a few
    words: the first sentence of the unpickler's own error (torch wraps it in one that
    recommends ``weights_only=False``, which would run whatever code a damaged or crafted file
    holds, so that advice is never passed on)."""
    inner = error.__context__ if isinstance(error, pickle.UnpicklingError) else None
    inner = inner or error
    first = re.split(r"\.\s|\n", str(inner).strip(), maxsplit=1)[0][:200]
    # The damaged bytes are quoted in it (a class name): keep the reason one printable line.
    first = "".join(c if c.isprintable() else "?" for c in first)
    return f"{type(inner).__name__}: {first}" if first else f"{type(inner).__name__}: no data"


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
            f"checkpoint of trial {trial_id} is unusable ({checkpoint_fault(e)}); set aside as "
            f"{aside}, "
            "training from scratch"
        )
        return None


def _configure_host() -> None:
    """Torch's threads (``APRFLOW_TORCH_THREADS``) and glibc's allocator for a training loop.

    glibc gives every allocation above its mmap threshold its own mapping and returns it to
    the kernel when freed, so each step's CPU activations are page-faulted in again: about
    400,000 faults per epoch, 10-15 % of a small model's CPU epoch (``bench_train_vs_timm``).
    A fixed 32 MiB threshold (glibc's maximum) and a 1 GiB trim threshold keep freed memory
    for the next step; the DataLoader workers, forked from this process, inherit it.
    ``APRFLOW_MALLOC_TUNING=0`` leaves glibc's defaults; other C libraries are left alone.
    """
    threads = int(os.environ.get("APRFLOW_TORCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    if os.environ.get(MALLOC_TUNING_ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocated memory since the last reset, or this process' peak RSS on the
    CPU (Linux reports ru_maxrss in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def create_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, updates_per_epoch: int):
    """timm's scheduler for the recipe (``sched``, warm-up from ``warmup_lr`` over
    ``warmup_epochs``, fractions allowed, decay to ``min_lr`` at the last update), counted in
    optimizer updates: ``step_update(k)`` sets the learning rate of update ``k`` (from 0)."""
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=recipe.sched,
        num_epochs=recipe.epochs,
        warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr,
        min_lr=recipe.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def _criterion(recipe: Recipe, mixing: bool) -> torch.nn.Module:
    """timm train.py's choice of training loss: targets are soft (Mixup/CutMix mixes them and
    smooths the labels) or class indices (then the loss smooths)."""
    from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.bce_loss:
        smoothing = 0.0 if mixing else recipe.label_smoothing
        return BinaryCrossEntropy(smoothing=smoothing, target_threshold=recipe.bce_target_thresh)
    if mixing:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def train_batch(
    module: torch.nn.Module,
    engine: TrainEngine,
    criterion: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    micro_batch: int,
) -> torch.Tensor:
    """One optimizer update on a batch, as micro-batches of at most ``micro_batch`` images
    whose gradients accumulate (each micro-batch's mean loss weighted by its share of the
    batch, so the update is the whole batch's). Returns the batch's mean loss, detached and on
    the device (no synchronisation)."""
    n = len(images)
    total = torch.zeros((), device=images.device)
    for start in range(0, n, micro_batch):
        part = slice(start, start + micro_batch)
        with engine.autocast():
            loss = criterion(module(engine.cast_inputs(images[part])), targets[part])
        weight = min(micro_batch, n - start) / n
        engine.backward(loss, weight)
        total += loss.detach().float() * weight
    engine.optimizer_step()
    return total


def _train(
    store: ArtifactStore,
    trial: Trial,
    progress: Progress,
    memory: dict[str, int],
    hooks: TrainHooks = TrainHooks(),
) -> dict[str, Any]:
    """The training loop proper; raises on failure, :class:`Diverged` on a NaN loss,
    ``torch.OutOfMemoryError`` when a micro-batch does not fit.

    ``memory`` holds ``micro_batch`` (0: the checkpoint's, else the recipe's batch; set here)
    and ``oom_retries``, shared with the caller, which halves the micro-batch on an
    out-of-memory and calls again (resuming from the last checkpoint)."""
    from timm.data import Mixup
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    from components.sample.anynet import build_model
    from components.sample.space import AnyNetSpec, complexity, uses_small_stem

    trial_id = trial.trial_id
    recipe = trial.recipe
    spec = AnyNetSpec.from_dict(trial.spec)
    classes = trial.dataset.num_classes
    small_input = uses_small_stem(trial.dataset.resolution, None)
    torch.manual_seed(trial.seed)
    np.random.seed(trial.seed)
    random.seed(trial.seed)
    generator = torch.Generator().manual_seed(trial.seed)
    model = build_model(
        spec, num_classes=classes, small_input=small_input, drop_path_rate=recipe.drop_path
    )
    checkpoint = _load_checkpoint(store, trial_id, trial.engine, progress)
    if not memory["micro_batch"]:
        saved = checkpoint or {}
        memory["micro_batch"] = saved.get("micro_batch_size", recipe.batch_size)
        memory["oom_retries"] = saved.get("oom_retries", 0)
    micro_batch = memory["micro_batch"]
    # After an out-of-memory, evaluation batches are bounded by the micro-batch as well.
    eval_batch = recipe.eval_batch_size if memory["oom_retries"] == 0 else micro_batch
    eval_batch = min(eval_batch, recipe.eval_batch_size)
    # compile_model is passed only when asked for: an engine that cannot compile is refused
    # by name (create_engine), and the plan refused it earlier (engines.check_compile).
    compile_option = {"compile_model": True} if trial.compile_model else {}
    engine = create_engine(
        trial.engine,
        batch_size=recipe.batch_size,
        micro_batches=math.ceil(recipe.batch_size / micro_batch),
        device=trial.device,
        **compile_option,
        **trial.engine_options,
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
    optimizer = create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        **({"eps": recipe.opt_eps} if recipe.opt_eps is not None else {}),
    )
    module = engine.setup(model, optimizer)
    model = engine.model
    # One interface for both input paths (components.data.loader): in memory for small sets,
    # streamed from the shards by DataLoader workers for the others.
    train = open_split(store, trial.dataset, "train", engine.device, trial.seed)
    test = open_split(store, trial.dataset, "test", engine.device, trial.seed)
    updates_per_epoch = train.batches_per_epoch(recipe)
    # Built on the optimizer that steps (DeepSpeed's wrapper under DeepSpeed); a pure function
    # of the update count, set before every update.
    scheduler = create_schedule(engine.optimizer, recipe, updates_per_epoch)
    mixing = recipe.mixup > 0 or recipe.cutmix > 0
    mixup = (
        Mixup(
            mixup_alpha=recipe.mixup,
            cutmix_alpha=recipe.cutmix,
            prob=recipe.mixup_prob,
            switch_prob=recipe.mixup_switch_prob,
            label_smoothing=recipe.label_smoothing,
            num_classes=classes,
        )
        if mixing
        else None
    )
    criterion = _criterion(recipe, mixing)
    ema = ModelEmaV3(model, decay=recipe.model_ema_decay) if recipe.model_ema else None

    history: dict[str, list[float]] = {
        key: []
        for key in (
            "train_loss",
            "test_loss",
            "test_error",
            "test_top5_error",
            "lr",
            "images_per_s",
            "peak_memory_mb",
        )
    }
    if ema is not None:
        history["ema_test_error"] = []
    # Each epoch's end (Unix seconds): the timestamps of its metrics in MLflow.
    epoch_times: list[float] = []
    start_epoch, start_step, num_updates = 0, 0, 0
    partial = {"loss_sum": torch.zeros(()), "images": 0, "seconds": 0.0}
    totals = {"images": 0, "seconds": 0.0}  # over the epochs, for train_images_per_s
    epoch_generator = generator.get_state()
    pending_rng: dict[str, Any] | None = None
    if checkpoint is not None:
        engine.load_state_dict(checkpoint["engine"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None:
            ema.module.load_state_dict(checkpoint["ema"])
        history = checkpoint["history"]
        epoch_times = checkpoint.get("epoch_times", [])  # none in an older trainer's
        start_epoch, start_step = checkpoint["epoch"], checkpoint["step"]
        num_updates = checkpoint["num_updates"]
        partial, totals = checkpoint["partial"], checkpoint["totals"]
        epoch_generator = checkpoint["generator"]
        generator.set_state(epoch_generator)
        if start_step == 0:
            _set_rng_state(checkpoint["rng"])
        else:
            # Restored once the batches already trained have been drawn again (the loader may
            # draw from the global generators while starting, as it did before the step).
            pending_rng = checkpoint["rng"]
        where = f"epoch {start_epoch}" + (f", step {start_step}" if start_step else "")
        progress(f"resuming trial {trial_id} after {where}")

    def save(epoch: int, step: int) -> None:
        if rank != 0:
            return
        state = {
            "engine": engine.state_dict(),
            "epoch": epoch,
            "step": step,
            "num_updates": num_updates,
            "history": history,
            "epoch_times": epoch_times,
            "generator": epoch_generator,
            "rng": _rng_state(),
            "scheduler": scheduler.state_dict(),
            "partial": partial,
            "totals": totals,
            "micro_batch_size": micro_batch,
            "oom_retries": memory["oom_retries"],
        }
        buffer = io.BytesIO()
        torch.save(state | ({"ema": ema.module.state_dict()} if ema is not None else {}), buffer)
        store.put_bytes(checkpoint_key(trial_id), buffer.getvalue())

    every_s = float(os.environ.get(CHECKPOINT_EVERY_ENV, CHECKPOINT_EVERY_S))
    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.device)
        first_step = start_step if epoch == start_epoch else 0
        if first_step == 0:
            epoch_generator = generator.get_state()
            partial = {"loss_sum": torch.zeros(()), "images": 0, "seconds": 0.0}
        loss_sum = partial["loss_sum"].to(engine.device)
        # The first non-finite loss of the epoch (step, value), kept on the device: checked
        # at checkpoints and the epoch's end, not every step (no synchronisation per step).
        bad_step = torch.full((), -1, dtype=torch.long, device=engine.device)
        bad_value = torch.zeros((), device=engine.device)
        last_save = last_loss = tic = time.perf_counter()
        loss_mark = (loss_sum.clone(), first_step)  # the step-level loss: sum and step so far
        step = first_step - 1  # the last batch trained (none yet this epoch)

        # The batches trained before an interruption are skipped by the loader (their random
        # draws replayed, nothing decoded).
        batches = train.train(recipe, generator, epoch, start=first_step)
        for step, (images, labels) in enumerate(batches, start=first_step):
            if pending_rng is not None:
                _set_rng_state(pending_rng)
                pending_rng = None
            if world > 1:
                images, labels = images[rank::world], labels[rank::world]
            scheduler.step_update(num_updates)
            targets = labels
            if mixup is not None:
                if len(images) % 2:  # Mixup pairs the batch with its reverse: even sizes only
                    images, labels = images[:-1], labels[:-1]
                images, targets = mixup(images, labels)
            loss = train_batch(module, engine, criterion, images, targets, micro_batch)
            num_updates += 1
            if ema is not None:
                ema.update(model, step=num_updates)
            bad = (bad_step < 0) & ~torch.isfinite(loss)
            bad_step = torch.where(bad, step + 1, bad_step)
            bad_value = torch.where(bad, loss, bad_value)
            loss_sum += loss
            partial["images"] += len(labels) * world
            now = time.perf_counter()
            if rank == 0 and now - last_loss >= STEP_LOSS_EVERY_S:
                steps = step + 1 - loss_mark[1]
                hooks.step(num_updates, float(loss_sum - loss_mark[0]) / steps, time.time())
                loss_mark, last_loss = (loss_sum.clone(), step + 1), now
            if now - last_save >= every_s:
                _check_finite(bad_step, bad_value, epoch)
                partial["loss_sum"] = loss_sum.cpu()
                partial["seconds"] += now - tic
                save(epoch, step + 1)
                last_save = tic = time.perf_counter()
        if pending_rng is not None:  # checkpointed after the epoch's last batch
            _set_rng_state(pending_rng)
            pending_rng = None
        _check_finite(bad_step, bad_value, epoch)
        partial["seconds"] += time.perf_counter() - tic
        trained_batches = step + 1
        train_loss = float(loss_sum) / max(1, trained_batches)
        test_result = evaluate(module, engine, test, eval_batch, classes)
        history["train_loss"].append(train_loss)
        history["test_loss"].append(test_result["loss"])
        history["test_error"].append(test_result["top1_error"])
        history["test_top5_error"].append(test_result["top5_error"])
        history["lr"].append(max(group["lr"] for group in engine.optimizer.param_groups))
        history["images_per_s"].append(partial["images"] / max(partial["seconds"], 1e-9))
        history["peak_memory_mb"].append(_peak_memory_mb(engine.device))
        line = (
            f"  epoch {epoch + 1}/{recipe.epochs}: train loss {train_loss:.3f}, "
            f"test error {test_result['top1_error']:.1f}%"
        )
        if ema is not None:
            ema_error = evaluate(ema.module, engine, test, eval_batch, classes)
            history["ema_test_error"].append(ema_error["top1_error"])
            line += f" (EMA {ema_error['top1_error']:.1f}%)"
        progress(line)
        epoch_times.append(time.time())
        if rank == 0:
            hooks.epoch(epoch + 1, history, epoch_times[-1])
        totals["images"] += partial["images"]
        totals["seconds"] += partial["seconds"]
        partial = {"loss_sum": torch.zeros(()), "images": 0, "seconds": 0.0}
        epoch_generator = generator.get_state()
        save(epoch + 1, 0)

    evaluations = {"test": _final(history)}
    if trial.dataset.n_val > 0:
        val = open_split(store, trial.dataset, "val", engine.device, trial.seed)
        evaluations["val"] = evaluate(module, engine, val, eval_batch, classes)
    for extra in trial.test_sets:
        data = open_split(store, extra, "test", engine.device, trial.seed)
        evaluations[extra.name] = evaluate(module, engine, data, eval_batch, classes)
    at_224 = complexity(spec, resolution=224)
    trained = complexity(
        replace(spec, num_classes=classes),
        resolution=trial.dataset.resolution,
        small_input=small_input,
    )
    return (
        {
            "top1_error": history["test_error"][-1],
            "top5_error": history["test_top5_error"][-1],
            "test_loss": history["test_loss"][-1],
            "evaluations": evaluations,
            "history": history,
            "epoch_times": epoch_times,
            "flops": at_224.flops,
            "params": at_224.params,
            "flops_trained": trained.flops,
            "params_trained": sum(p.numel() for p in model.parameters()),
            "train_images_per_s": totals["images"] / totals["seconds"]
            if totals["seconds"]
            else None,
            # What it really ran on (the trial's ``device`` may be "auto").
            "device_used": describe_device(engine.device),
            "precision": engine.precision,
            "torch_version": torch.__version__,
            "world_size": world,
            "compiled": engine.compiled,
        }
        | ({"ema_top1_error": history["ema_test_error"][-1]} if ema is not None else {})
        | ({"compile_cache": _compile_cache_use(cache_before)} if engine.compiled else {})
    )


def _check_finite(bad_step: torch.Tensor, bad_value: torch.Tensor, epoch: int) -> None:
    """Raises :class:`Diverged` when the epoch saw a non-finite loss (one synchronisation)."""
    if int(bad_step) >= 0:
        raise Diverged(f"loss became {float(bad_value)} at epoch {epoch + 1}, step {int(bad_step)}")


def _final(history: dict[str, list[float]]) -> dict[str, float]:
    """The last epoch's test evaluation, as ``evaluate`` returns it."""
    return {
        "top1_error": history["test_error"][-1],
        "top5_error": history["test_top5_error"][-1],
        "loss": history["test_loss"][-1],
    }


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


def train_progress(line: str) -> None:
    """The default progress of a trial: a ``[train]`` line on stderr (stdout is for results)."""
    report("train", line)


def run_trial(
    store: ArtifactStore,
    trial: Trial,
    progress: Progress = train_progress,
    hooks: TrainHooks = TrainHooks(),
) -> dict[str, Any]:
    """Runs ``trial`` unless its result exists, writes ``result.json`` and returns the result.

    ``hooks`` hear of the training as it goes (:class:`TrainHooks`); a stored result calls none.

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
        return _run_leased(store, trial, progress, hooks=hooks)


def _run_leased(
    store: ArtifactStore,
    trial: Trial,
    progress: Progress,
    write: bool = True,
    hooks: TrainHooks = TrainHooks(),
) -> dict[str, Any]:
    trial_id = trial.trial_id
    _configure_host()
    attempt = _count_attempt(store, trial_id) if write else 0
    started_at = time.time()
    hooks.start()
    tic = time.perf_counter()
    outcome: dict[str, Any] = {"status": "ok", "reason": ""}
    memory = {"micro_batch": 0, "oom_retries": 0}  # 0: the checkpoint's, else the batch
    try:
        while True:
            try:
                outcome |= _train(store, trial, progress, memory, hooks)
                break
            except torch.OutOfMemoryError:
                if memory["micro_batch"] == 1:
                    raise NeverFits(
                        f"out of memory with micro-batches of 1 image after "
                        f"{memory['oom_retries']} halvings of the batch of "
                        f"{trial.recipe.batch_size}: this model does not fit on the device "
                        "(use a smaller resolution or model)"
                    ) from None
                memory["micro_batch"] = math.ceil(memory["micro_batch"] / 2)
                memory["oom_retries"] += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                progress(
                    f"trial {trial_id}: out of memory; micro-batch halved to "
                    f"{memory['micro_batch']} (gradients accumulate to the batch of "
                    f"{trial.recipe.batch_size}), again from the last checkpoint"
                )
    except Diverged as e:
        outcome = {"status": "diverged", "reason": str(e)}
    except NeverFits as e:
        outcome = {"status": "failed", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - any model/training error is the trial's failure
        if is_infrastructure_error(e):
            if write:
                _note_infrastructure_error(store, trial_id, attempt, e)
            raise
        traceback.print_exc()
        outcome = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    result = {
        "trial_id": trial_id,
        **trial.to_dict(),
        "trainer_version": TRAINER_VERSION,
        **outcome,
        "micro_batch_size": memory["micro_batch"] or trial.recipe.batch_size,
        "oom_retries": memory["oom_retries"],
        "attempt": attempt,
        "wall_time_s": round(time.perf_counter() - tic, 3),
        "started_at": started_at,
        "ended_at": time.time(),
    }
    if write:
        store.put_json(result_key(trial_id), result)
    return result | {"reused": False}


def _read_attempts(store: ArtifactStore, trial_id: str) -> dict[str, Any]:
    try:
        record = store.get_json(attempts_key(trial_id))
    except (MissingObjectError, CorruptObjectError):
        record = None
    if not isinstance(record, dict):
        record = {"trial_id": trial_id}
    return record


def _count_attempt(store: ArtifactStore, trial_id: str) -> int:
    """Counts this start of the trial in ``attempts.json`` (``trial_starts``); returns it."""
    record = _read_attempts(store, trial_id)
    record["trial_starts"] = int(record.get("trial_starts", 0)) + 1
    store.put_json(attempts_key(trial_id), record)
    return record["trial_starts"]


def _note_infrastructure_error(
    store: ArtifactStore, trial_id: str, attempt: int, error: BaseException
) -> None:
    """Records an infrastructure error in ``attempts.json``; a failing store is left alone
    (the error being raised says more)."""
    try:
        record = _read_attempts(store, trial_id)
        record.setdefault("infrastructure_errors", []).append(
            {"attempt": attempt, "at": time.time(), "error": f"{type(error).__name__}: {error}"}
        )
        store.put_json(attempts_key(trial_id), record)
    except StoreError:
        pass
