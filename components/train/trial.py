"""One trial: train an architecture on a dataset with a recipe and seed, and record the result.

Training is timm's recipe machinery around the trial's network (a sampled AnyNet, or a named
timm model: :func:`components.sample.models.build_model`): ``timm.optim.create_optimizer_v2``
(no weight decay on norms and biases), ``timm.scheduler.create_scheduler_v2`` stepped per
optimizer update, ``timm.data.Mixup`` (Mixup/CutMix, label smoothing), ``timm.loss``
(soft-target / binary cross-entropy), ``timm.utils.ModelEmaV3`` and ``DropPath`` stochastic
depth (the AnyNet blocks', or the timm model's own ``drop_path_rate``), as
:class:`~components.train.recipes.Recipe` says.

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
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from components.common.progress import report
from components.common.storage import (
    ArtifactStore,
    CorruptObjectError,
    Lease,
    MissingObjectError,
    StoreError,
)
from components.common.tracking import TrackingError
from components.data.loader import TrainData, open_split
from components.train.definition import (
    TRAINER_VERSION,
    Trial,
    attempts_key,
    checkpoint_key,
    lease_prefix,
    result_key,
)
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

if TYPE_CHECKING:
    from timm.data import Mixup
    from timm.scheduler.scheduler import Scheduler
    from timm.utils import ModelEmaV3

# A trial's lease expires this long after its holder's last renewal (every third of it).
LEASE_TTL_ENV = "APRFLOW_LEASE_TTL_S"
DEFAULT_LEASE_TTL_S = 120.0
# How often a trial that another process is training looks for its result.
RESULT_POLL_S = 1.0
# Mid-epoch checkpoints: at most this often (seconds); 0 = after every optimizer update.
CHECKPOINT_EVERY_ENV = "APRFLOW_CHECKPOINT_EVERY_S"
CHECKPOINT_EVERY_S = 300.0
# glibc's mallopt parameters (malloc.h) and the switch of their tuning (see _configure_host).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_TUNING_ENV = "APRFLOW_MALLOC_TUNING"

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


@dataclass
class MicroBatching:
    """How a trial's batches fit in memory, across the attempts of one run of it.

    Attributes:
        micro_batch: images per forward and backward pass; 0 until the first attempt sets it
            (the checkpoint's, else the recipe's batch).
        oom_retries: out-of-memory halvings so far (the checkpoint's, then this run's).
    """

    micro_batch: int = 0
    oom_retries: int = 0

    def start(self, checkpoint: dict[str, Any] | None, batch_size: int) -> None:
        """On the first attempt: the checkpoint's micro-batch and halvings (an earlier run's
        out-of-memory), else the whole batch."""
        if not self.micro_batch:
            saved = checkpoint or {}
            self.micro_batch = saved.get("micro_batch_size", batch_size)
            self.oom_retries = saved.get("oom_retries", 0)

    def eval_batch(self, eval_batch_size: int) -> int:
        """Images per evaluation batch: after an out-of-memory, at most the micro-batch."""
        return min(eval_batch_size, self.micro_batch) if self.oom_retries else eval_batch_size

    def halve(self, batch_size: int) -> None:
        """Halves the micro-batch after an out-of-memory.

        Raises:
            NeverFits: when the micro-batch is already one image.
        """
        if self.micro_batch == 1:
            raise NeverFits(
                f"out of memory with micro-batches of 1 image after {self.oom_retries} "
                f"halvings of the batch of {batch_size}: this model does not fit on the "
                "device (use a smaller resolution or model)"
            )
        self.micro_batch = math.ceil(self.micro_batch / 2)
        self.oom_retries += 1


@dataclass
class TrainSetup:
    """What one attempt of a trial trains with, built by :func:`_set_up`.

    Attributes:
        small_input: whether the network has the small-input stem (an AnyNet at <= 64 px;
            recorded in the result).
        model: the engine's model: its weights are checkpointed, the EMA follows them.
        module: what is called for the forward pass (the compiled or wrapped model).
        scheduler: timm's scheduler on the optimizer that steps, set before every update.
        mixup: timm's Mixup/CutMix, None when the recipe does not mix.
        ema: the EMA of the weights, None without ``model_ema``.
        train, test: the dataset's splits, in memory or streamed from shards.
        generator: the data generator; the loader draws each epoch's order and augmentation.
        micro_batch: images per forward and backward pass (:class:`MicroBatching`).
        oom_retries: out-of-memory halvings before this attempt (checkpointed).
        eval_batch: images per evaluation batch.
        rank: this process' rank; only rank 0 writes and calls the hooks.
        world: the processes training the trial, each on its share of every batch.
        compile_cache_before: inductor's cache counters before this trial compiled anything.
    """

    trial: Trial
    small_input: bool
    engine: TrainEngine
    model: torch.nn.Module
    module: torch.nn.Module
    scheduler: Scheduler
    criterion: torch.nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    train: TrainData
    test: TrainData
    generator: torch.Generator
    micro_batch: int
    oom_retries: int
    eval_batch: int
    rank: int
    world: int
    compile_cache_before: dict[str, int]


@dataclass
class History:
    """The per-epoch series of a trial (the result's ``history``): one value per epoch."""

    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    test_top5_error: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    # Only with ``model_ema``: no series of Nones for a trial without an EMA.
    ema_test_error: list[float] | None = None

    def to_dict(self) -> dict[str, list]:
        """The series by name, copied (the result's, a checkpoint's and the hooks' form)."""
        return {name: list(series) for name, series in vars(self).items() if series is not None}

    def last_test(self) -> dict[str, float | None]:
        """The last epoch's test evaluation, as :func:`evaluate` returns it."""
        return {
            "top1_error": self.test_error[-1],
            "top5_error": self.test_top5_error[-1],
            "loss": self.test_loss[-1],
        }


@dataclass
class EpochProgress:
    """The current epoch's training so far: checkpointed within the epoch, so that a resumed
    epoch reports the loss and throughput of all its batches.

    Attributes:
        loss_sum: the sum of the batches' mean losses: on the device while the epoch trains
            (added to without a synchronisation), on the CPU in a checkpoint.
        images: images trained, by all ranks.
        seconds: training time, without the checkpoint writes.
    """

    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    images: int = 0
    seconds: float = 0.0

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's ``partial``: plain values, the loss sum on the CPU."""
        return {"loss_sum": self.loss_sum.cpu(), "images": self.images, "seconds": self.seconds}


@dataclass
class Throughput:
    """Images trained and seconds taken over the finished epochs (``train_images_per_s``)."""

    images: int = 0
    seconds: float = 0.0


@dataclass
class TrainState:
    """Where a trial's training stands: what a checkpoint holds besides the weights, optimizer,
    scheduler and EMA.

    Attributes:
        history: the finished epochs' series.
        epoch: the epoch being trained (0 = the first); the recipe's epochs once done.
        step: the batches of ``epoch`` trained so far.
        num_updates: optimizer updates so far: the scheduler's clock and the EMA's step.
        epoch_times: each finished epoch's end (Unix seconds): its metrics' timestamps.
        epoch_progress: the loss, images and seconds of ``epoch`` so far.
        totals: the images and seconds of the finished epochs.
        epoch_generator: the data generator's state at the start of ``epoch``: a resumed
            epoch draws its order again from it.
        pending_rng: the global generators of a mid-epoch checkpoint, restored once the
            resumed epoch's first batch is drawn (not checkpointed).
    """

    history: History
    epoch_generator: torch.Tensor
    epoch: int = 0
    step: int = 0
    num_updates: int = 0
    epoch_times: list[float] = field(default_factory=list)
    epoch_progress: EpochProgress = field(default_factory=EpochProgress)
    totals: Throughput = field(default_factory=Throughput)
    pending_rng: dict[str, Any] | None = None

    def restore_pending_rng(self) -> None:
        """Restores the global generators of a mid-epoch checkpoint, once."""
        if self.pending_rng is not None:
            _set_rng_state(self.pending_rng)
            self.pending_rng = None


@dataclass
class NonFiniteLoss:
    """The epoch's first non-finite loss, kept on the device: checked at checkpoints and at
    the epoch's end, not every step (no synchronisation per step).

    Attributes:
        step: the batch (from 1) whose loss was not finite; -1 while all were.
        value: that loss.
    """

    step: torch.Tensor
    value: torch.Tensor

    @classmethod
    def on(cls, device: torch.device) -> NonFiniteLoss:
        """None seen yet, on ``device``."""
        return cls(
            torch.full((), -1, dtype=torch.long, device=device), torch.zeros((), device=device)
        )

    def note(self, step: int, loss: torch.Tensor) -> None:
        """Keeps ``loss`` of batch ``step`` (from 0) if it is the first non-finite one."""
        bad = (self.step < 0) & ~torch.isfinite(loss)
        self.step = torch.where(bad, step + 1, self.step)
        self.value = torch.where(bad, loss, self.value)

    def check(self, epoch: int) -> None:
        """Raises :class:`Diverged` when there was one (one synchronisation)."""
        if int(self.step) >= 0:
            raise Diverged(
                f"loss became {float(self.value)} at epoch {epoch + 1}, step {int(self.step)}"
            )


@dataclass
class StepLossMark:
    """The last hand-over of the running training loss to ``TrainHooks.step``: the epoch's
    loss sum then (a copy on the device), its batches trained then and the time."""

    loss_sum: torch.Tensor
    step: int
    at: float

    def report(self, hooks: TrainHooks, state: TrainState, now: float) -> None:
        """Hands the mean loss since the mark to ``hooks.step`` once
        :data:`STEP_LOSS_EVERY_S` have passed (reading it synchronises, so not every step)."""
        if now - self.at < STEP_LOSS_EVERY_S:
            return
        loss_sum = state.epoch_progress.loss_sum
        mean = float(loss_sum - self.loss_sum) / (state.step - self.step)
        hooks.step(state.num_updates, mean, time.time())
        self.loss_sum, self.step, self.at = loss_sum.clone(), state.step, now


def _train(
    store: ArtifactStore,
    trial: Trial,
    progress: Progress,
    memory: MicroBatching,
    hooks: TrainHooks = TrainHooks(),
) -> dict[str, Any]:
    """The training loop proper; raises on failure, :class:`Diverged` on a NaN loss,
    ``torch.OutOfMemoryError`` when a micro-batch does not fit.

    ``memory`` is shared with the caller, which halves the micro-batch on an out-of-memory and
    calls again (resuming from the last checkpoint)."""
    setup, checkpoint = _set_up(store, trial, progress, memory)
    try:
        state = _restore(setup, checkpoint, progress)
        every_s = float(os.environ.get(CHECKPOINT_EVERY_ENV, CHECKPOINT_EVERY_S))
        while state.epoch < trial.recipe.epochs:
            train_loss = _train_epoch(store, setup, state, hooks, every_s)
            _end_epoch(setup, state, train_loss, progress, hooks)
            _save_checkpoint(store, setup, state)
        return _result(store, setup, state)
    finally:
        setup.train.close()
        setup.test.close()


def _set_up(
    store: ArtifactStore, trial: Trial, progress: Progress, memory: MicroBatching
) -> tuple[TrainSetup, dict[str, Any] | None]:
    """Seeds the generators, builds the model, engine, optimizer, data, scheduler, Mixup, loss
    and EMA, in an order that fixes the random draws; returns them with the trial's last
    checkpoint (None when there is none), and sets ``memory`` from it on a first attempt."""
    from timm.utils import ModelEmaV3

    from components.sample.models import build_model, small_input

    recipe, classes = trial.recipe, trial.dataset.num_classes
    resolution = trial.dataset.resolution
    torch.manual_seed(trial.seed)
    np.random.seed(trial.seed)
    random.seed(trial.seed)
    generator = torch.Generator().manual_seed(trial.seed)
    model = build_model(trial.spec, classes, resolution, drop_path_rate=recipe.drop_path)
    checkpoint = _load_checkpoint(store, trial.trial_id, trial.engine, progress)
    memory.start(checkpoint, recipe.batch_size)
    engine = _create_engine(trial, memory.micro_batch)
    cache_before = compile_cache_counters()
    rank, world = _rank_and_world(trial)
    module = engine.setup(model, _create_optimizer(model, recipe))
    # One interface for both input paths (components.data.loader): in memory for small sets,
    # streamed from the shards by DataLoader workers for the others.
    train = open_split(store, trial.dataset, "train", engine.device, trial.seed)
    test = open_split(store, trial.dataset, "test", engine.device, trial.seed)
    # Built on the optimizer that steps (DeepSpeed's wrapper under DeepSpeed); a pure function
    # of the update count, set before every update.
    scheduler = create_schedule(engine.optimizer, recipe, train.batches_per_epoch(recipe))
    mixup = _mixup(recipe, classes)
    criterion = _criterion(recipe, mixing=mixup is not None)
    ema = ModelEmaV3(engine.model, decay=recipe.model_ema_decay) if recipe.model_ema else None
    setup = TrainSetup(
        trial=trial,
        small_input=small_input(trial.spec, resolution),
        engine=engine,
        model=engine.model,
        module=module,
        scheduler=scheduler,
        criterion=criterion,
        mixup=mixup,
        ema=ema,
        train=train,
        test=test,
        generator=generator,
        micro_batch=memory.micro_batch,
        oom_retries=memory.oom_retries,
        eval_batch=memory.eval_batch(recipe.eval_batch_size),
        rank=rank,
        world=world,
        compile_cache_before=cache_before,
    )
    return setup, checkpoint


def _create_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """timm's optimizer for the recipe (no weight decay on norms and biases)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(
        model,
        opt=recipe.opt,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        momentum=recipe.momentum,
        **({"eps": recipe.opt_eps} if recipe.opt_eps is not None else {}),
    )


def _create_engine(trial: Trial, micro_batch: int) -> TrainEngine:
    """The trial's engine, accumulating gradients over micro-batches of ``micro_batch``."""
    # compile_model is passed only when asked for: an engine that cannot compile is refused
    # by name (create_engine), and the plan refused it earlier (definition.check_compile).
    compile_option = {"compile_model": True} if trial.compile_model else {}
    return create_engine(
        trial.engine,
        batch_size=trial.recipe.batch_size,
        micro_batches=math.ceil(trial.recipe.batch_size / micro_batch),
        device=trial.device,
        **compile_option,
        **trial.engine_options,
    )


def _rank_and_world(trial: Trial) -> tuple[int, int]:
    """This process' rank and the world size.

    Several processes (torchrun, one per GPU) each take their share of every batch, like a
    DistributedSampler, so the global batch (and the averaged gradient) is the recipe's. A
    trial planned for one GPU may still run in a bigger world (a multi-node TrainJob,
    components/trainjob; its result records the world size).

    Raises:
        ValueError: when a trial planned for several processes runs in another number.
    """
    rank, world = rank_and_world()
    if trial.gpus > 1 and world != trial.gpus:
        raise ValueError(f"trial planned for {trial.gpus} processes runs in {world}")
    return rank, world


def _mixup(recipe: Recipe, classes: int) -> Mixup | None:
    """timm's Mixup/CutMix (with label smoothing) when the recipe mixes, else None."""
    from timm.data import Mixup

    if not (recipe.mixup > 0 or recipe.cutmix > 0):
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        prob=recipe.mixup_prob,
        switch_prob=recipe.mixup_switch_prob,
        label_smoothing=recipe.label_smoothing,
        num_classes=classes,
    )


def _restore(
    setup: TrainSetup, checkpoint: dict[str, Any] | None, progress: Progress
) -> TrainState:
    """The state to train from: the start, or ``checkpoint``'s, whose weights, optimizer,
    scheduler, EMA and random generators are loaded into ``setup`` and the process."""
    state = TrainState(
        history=History(ema_test_error=[] if setup.ema is not None else None),
        epoch_generator=setup.generator.get_state(),
    )
    if checkpoint is None:
        return state
    setup.engine.load_state_dict(checkpoint["engine"])
    setup.scheduler.load_state_dict(checkpoint["scheduler"])
    if setup.ema is not None:
        setup.ema.module.load_state_dict(checkpoint["ema"])
    state = TrainState(
        history=History(**checkpoint["history"]),
        epoch_generator=checkpoint["generator"],
        epoch=checkpoint["epoch"],
        step=checkpoint["step"],
        num_updates=checkpoint["num_updates"],
        epoch_times=checkpoint.get("epoch_times", []),  # none in an older trainer's
        epoch_progress=EpochProgress(**checkpoint["partial"]),
        totals=Throughput(**checkpoint["totals"]),
    )
    setup.generator.set_state(state.epoch_generator)
    if state.step == 0:
        _set_rng_state(checkpoint["rng"])
    else:
        # Restored once the batches already trained have been drawn again (the loader may
        # draw from the global generators while starting, as it did before the step).
        state.pending_rng = checkpoint["rng"]
    where = f"epoch {state.epoch}" + (f", step {state.step}" if state.step else "")
    progress(f"resuming trial {setup.trial.trial_id} after {where}")
    return state


def _train_epoch(
    store: ArtifactStore, setup: TrainSetup, state: TrainState, hooks: TrainHooks, every_s: float
) -> float:
    """Trains epoch ``state.epoch`` from its batch ``state.step`` on, checkpointing at most
    every ``every_s`` seconds; returns the epoch's mean training loss.

    The loss sum and the non-finite check stay on the device: they are read at checkpoints,
    at the step-loss hand-overs and at the epoch's end, so a step adds no synchronisation.

    Raises:
        Diverged: when a loss of the epoch was not finite.
    """
    device, epoch = setup.engine.device, state.epoch
    setup.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained = state.epoch_progress
    trained.loss_sum = trained.loss_sum.to(device)
    non_finite = NonFiniteLoss.on(device)
    last_save = tic = time.perf_counter()
    step_loss = StepLossMark(trained.loss_sum.clone(), state.step, tic)
    # The batches trained before an interruption are skipped by the loader (their random
    # draws replayed, nothing decoded).
    batches = setup.train.train(setup.trial.recipe, setup.generator, epoch, start=state.step)
    for step, (images, labels) in enumerate(batches, start=state.step):
        state.restore_pending_rng()
        loss, images_trained = _train_step(setup, state, images, labels)
        non_finite.note(step, loss)
        trained.loss_sum += loss
        trained.images += images_trained
        state.step = step + 1
        now = time.perf_counter()
        if setup.rank == 0:
            step_loss.report(hooks, state, now)
        if now - last_save >= every_s:
            non_finite.check(epoch)
            trained.seconds += now - tic
            _save_checkpoint(store, setup, state)
            last_save = tic = time.perf_counter()
    state.restore_pending_rng()  # checkpointed after the epoch's last batch
    non_finite.check(epoch)
    trained.seconds += time.perf_counter() - tic
    return float(trained.loss_sum) / max(1, state.step)


def _train_step(
    setup: TrainSetup, state: TrainState, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """One optimizer update on this rank's share of a batch: learning rate, Mixup/CutMix, the
    micro-batches' forward and backward passes, the step and the EMA.

    Returns:
        The batch's mean loss (detached, on the device) and the images trained by all ranks.
    """
    if setup.world > 1:
        images, labels = images[setup.rank :: setup.world], labels[setup.rank :: setup.world]
    setup.scheduler.step_update(state.num_updates)
    targets = labels
    if setup.mixup is not None:
        if len(images) % 2:  # Mixup pairs the batch with its reverse: even sizes only
            images, labels = images[:-1], labels[:-1]
        images, targets = setup.mixup(images, labels)
    loss = train_batch(
        setup.module, setup.engine, setup.criterion, images, targets, setup.micro_batch
    )
    state.num_updates += 1
    if setup.ema is not None:
        setup.ema.update(setup.model, step=state.num_updates)
    return loss, len(labels) * setup.world


def _end_epoch(
    setup: TrainSetup, state: TrainState, train_loss: float, progress: Progress, hooks: TrainHooks
) -> None:
    """Evaluates the epoch's weights (and EMA) on the test split, records the epoch in the
    history, reports it, and moves ``state`` to the start of the next epoch."""
    engine, history, trained = setup.engine, state.history, state.epoch_progress
    classes = setup.trial.dataset.num_classes
    tested = evaluate(setup.module, engine, setup.test, setup.eval_batch, classes)
    history.train_loss.append(train_loss)
    history.test_loss.append(tested["loss"])
    history.test_error.append(tested["top1_error"])
    history.test_top5_error.append(tested["top5_error"])
    history.lr.append(max(group["lr"] for group in engine.optimizer.param_groups))
    history.images_per_s.append(trained.images / max(trained.seconds, 1e-9))
    # Read before the EMA's evaluation: the peak of the epoch's training and its test.
    history.peak_memory_mb.append(_peak_memory_mb(engine.device))
    line = (
        f"  epoch {state.epoch + 1}/{setup.trial.recipe.epochs}: train loss {train_loss:.3f}, "
        f"test error {tested['top1_error']:.1f}%"
    )
    if setup.ema is not None:
        ema_error = evaluate(setup.ema.module, engine, setup.test, setup.eval_batch, classes)
        history.ema_test_error.append(ema_error["top1_error"])
        line += f" (EMA {ema_error['top1_error']:.1f}%)"
    progress(line)
    state.epoch_times.append(time.time())
    if setup.rank == 0:
        hooks.epoch(state.epoch + 1, history.to_dict(), state.epoch_times[-1])
    state.totals.images += trained.images
    state.totals.seconds += trained.seconds
    state.epoch, state.step = state.epoch + 1, 0
    state.epoch_progress = EpochProgress()
    state.epoch_generator = setup.generator.get_state()


def _save_checkpoint(store: ArtifactStore, setup: TrainSetup, state: TrainState) -> None:
    """Writes ``checkpoint.pt`` (rank 0 only): the weights, optimizer, scheduler, EMA, every
    random generator and ``state``, for :func:`_restore` to resume from exactly."""
    if setup.rank != 0:
        return
    checkpoint = {
        "engine": setup.engine.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "num_updates": state.num_updates,
        "history": state.history.to_dict(),
        "epoch_times": state.epoch_times,
        "generator": state.epoch_generator,
        "rng": _rng_state(),
        "scheduler": setup.scheduler.state_dict(),
        "partial": state.epoch_progress.to_checkpoint(),
        "totals": asdict(state.totals),
        "micro_batch_size": setup.micro_batch,
        "oom_retries": setup.oom_retries,
    }
    if setup.ema is not None:
        checkpoint["ema"] = setup.ema.module.state_dict()
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    store.put_bytes(checkpoint_key(setup.trial.trial_id), buffer.getvalue())


def _result(store: ArtifactStore, setup: TrainSetup, state: TrainState) -> dict[str, Any]:
    """The trained trial's numbers: the last epoch's test evaluation, the final weights on the
    validation split and the extra test sets, the model's complexity and what it ran on."""
    from components.sample.models import complexity

    trial, engine, history = setup.trial, setup.engine, state.history
    classes, eval_batch = trial.dataset.num_classes, setup.eval_batch
    evaluations = {"test": history.last_test()}
    if trial.dataset.n_val > 0:
        with closing(open_split(store, trial.dataset, "val", engine.device, trial.seed)) as val:
            evaluations["val"] = evaluate(setup.module, engine, val, eval_batch, classes)
    for extra in trial.test_sets:
        with closing(open_split(store, extra, "test", engine.device, trial.seed)) as data:
            evaluations[extra.name] = evaluate(setup.module, engine, data, eval_batch, classes)
    at_224 = complexity(trial.spec, 224)
    trained = complexity(trial.spec, trial.dataset.resolution, classes)
    totals = state.totals
    return (
        {
            "top1_error": history.test_error[-1],
            "top5_error": history.test_top5_error[-1],
            "test_loss": history.test_loss[-1],
            "evaluations": evaluations,
            "history": history.to_dict(),
            "epoch_times": state.epoch_times,
            "flops": at_224.flops,
            "params": at_224.params,
            "flops_trained": trained.flops,
            "params_trained": sum(p.numel() for p in setup.model.parameters()),
            # The stem as trained: an AnyNet's stride-1 one at <= 64 px, else the model's own
            # (a timm model always keeps timm's).
            "small_input": setup.small_input,
            "train_images_per_s": totals.images / totals.seconds if totals.seconds else None,
            # What it really ran on (the trial's ``device`` may be "auto").
            "device_used": describe_device(engine.device),
            "precision": engine.precision,
            "torch_version": torch.__version__,
            "world_size": setup.world,
            "compiled": engine.compiled,
        }
        | ({"ema_top1_error": history.ema_test_error[-1]} if setup.ema is not None else {})
        | (
            {"compile_cache": _compile_cache_use(setup.compile_cache_before)}
            if engine.compiled
            else {}
        )
    )


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
        lease, holder = Lease.try_acquire(store, lease_prefix(trial_id), ttl)
        if lease is not None:
            return lease, None
        if not waiting:
            progress(
                f"trial {trial_id} is being trained by {holder.get('host')} (pid "
                f"{holder.get('pid')}): waiting for its result"
            )
            waiting = True
        # Every second: the wait ends a chunk (its trial was a helper's, chunk.Helping).
        time.sleep(min(RESULT_POLL_S, ttl / 4))
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
    memory = MicroBatching()
    try:
        while True:
            try:
                outcome |= _train(store, trial, progress, memory, hooks)
                break
            except torch.OutOfMemoryError:
                memory.halve(trial.recipe.batch_size)  # NeverFits at one image
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                progress(
                    f"trial {trial_id}: out of memory; micro-batch halved to "
                    f"{memory.micro_batch} (gradients accumulate to the batch of "
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
        "micro_batch_size": memory.micro_batch or trial.recipe.batch_size,
        "oom_retries": memory.oom_retries,
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
