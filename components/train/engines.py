"""Training engines: how a loss becomes an optimizer step on some hardware.

The trial loop (``components.train.trial``) talks only to :class:`TrainEngine`, so that the
plain PyTorch engine and the DeepSpeed engine (ZeRO, multi-GPU) here are interchangeable.
Engines take keyword options through :func:`create_engine` (``batch_size`` and
``micro_batches`` are accepted by every engine, so the loop can always pass them; a trial's
``engine_options``, e.g. ``{"precision": "bf16"}`` or ``{"zero_stage": 2}``, come on top).

One optimizer update of the trial loop is ``backward(loss, weight)`` per micro-batch (the
batch split after an out-of-memory; ``weight`` = the micro-batch's share of the batch, so the
accumulated gradient is the whole batch's mean) followed by ``optimizer_step()``. The learning
rate schedule (timm's) is built by the trial on :attr:`TrainEngine.optimizer`, the optimizer
that really steps (DeepSpeed's wrapper under DeepSpeed).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.common.errors import AprflowError
from components.common.files import user_cache_dir
from components.train.definition import DEVICES, PRECISIONS

COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


class DeviceError(AprflowError):
    """A device that was asked for and is not there (or a name that is not a device)."""


def resolve_device(requested: str = "auto") -> torch.device:
    """The device a trial trains on: ``auto`` = the GPU of this rank (``LOCAL_RANK``) when
    torch sees one, else the CPU; ``cuda`` = that GPU or :class:`DeviceError` (never a silent
    fall-back to the CPU); ``cpu`` = the CPU."""
    if requested not in DEVICES:
        raise DeviceError(f"device {requested!r}: choose from {', '.join(DEVICES)}")
    has_gpu = torch.cuda.is_available()
    if requested == "cuda" and not has_gpu:
        raise DeviceError(
            "device 'cuda' was asked for but this machine has no usable GPU "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): run on a "
            "GPU node (the cluster pipeline requests nvidia.com/gpu) or set device=auto or cpu"
        )
    if requested == "cpu" or not has_gpu:
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def use_cudnn_autotuner(device: torch.device) -> None:
    """On a GPU, lets cuDNN time its convolution algorithms for each input shape once and keep
    the fastest: a trial's shapes are fixed (one batch size and resolution), and timm's
    ``train.py`` does the same (huggingface/pytorch-image-models ``train.py``,
    ``torch.backends.cudnn.benchmark = True`` for CUDA). It costs no reproducibility that a GPU
    run had: cuDNN's default backward algorithms already accumulate in nondeterministic order.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def rank_and_world() -> tuple[int, int]:
    """This process' rank and the number of processes of its trial (torchrun's RANK and
    WORLD_SIZE; 0 and 1 in a plain process)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``, for a trial's result record."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def compile_cache_dir() -> Path:
    """The folder inductor caches compiled kernels and FX graphs in, made this process'.

    ``TORCHINDUCTOR_CACHE_DIR`` when set (a cluster may point it at a volume), else
    ``$XDG_CACHE_HOME/aprflow/inductor`` (``~/.cache/aprflow/inductor``), which outlives a
    trial: every later trial of the same architecture shape (spec, resolution, classes, batch
    size) on this machine, or in this chunk task's pod, loads the graphs instead of compiling.
    Set in the environment of the process that compiles (a chunk's trial child), which is
    what inductor reads at each lookup.
    """
    import torch._functorch.config
    import torch._inductor.config

    folder = Path(os.environ.setdefault(COMPILE_CACHE_ENV, str(user_cache_dir() / "inductor")))
    # The FX graph and AOT autograd caches are on by default (torch 2.14); set them here too,
    # in case a site's environment turned them off (torch reads these flags at lookup).
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_cache_counters() -> dict[str, int]:
    """This process' inductor FX-graph cache hits and misses so far (torch._dynamo counters)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {"hits": inductor["fxgraph_cache_hit"], "misses": inductor["fxgraph_cache_miss"]}


def check_precision(precision: str, on_gpu: bool) -> None:
    """Raises ValueError for an unknown precision; :class:`DeviceError` for fp16 without a GPU
    (the machine's lack, not the trial's: a trial does not record it as its result)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp16" and not on_gpu:
        raise DeviceError(
            "precision 'fp16' needs a GPU (loss scaling on CUDA): run on a GPU or use fp32/bf16"
        )


class TrainEngine(ABC):
    """Owns the model's device placement, mixed precision and optimizer step."""

    name: str
    device: torch.device
    precision: str  # "bf16-autocast", "bf16", "fp16" or "fp32": recorded in the trial's result
    compiled: bool = False  # whether the module it returns is torch.compile-d
    #: the optimizer that steps (the LR schedule is built on it), after :meth:`setup`
    optimizer: torch.optim.Optimizer | None = None

    @property
    @abstractmethod
    def model(self) -> nn.Module:
        """The plain (unwrapped, uncompiled) model, after :meth:`setup`."""

    @abstractmethod
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Moves the model to the engine's device and returns the module to call."""

    @abstractmethod
    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Backward pass of one micro-batch's mean loss, which is ``weight`` of the batch
        (gradients accumulate until :meth:`optimizer_step`)."""

    @abstractmethod
    def optimizer_step(self) -> None:
        """Optimizer step on the accumulated gradients, then gradient reset."""

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, optimizer step and gradient reset for one whole batch."""
        self.backward(loss)
        self.optimizer_step()

    @abstractmethod
    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes."""

    def cast_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The batch in the dtype the module's forward takes (as it comes, unless the engine
        keeps half-precision weights without autocast)."""
        return images

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned."""


class TorchEngine(TrainEngine):
    """Plain PyTorch: CUDA with bf16 autocast and channels_last when a GPU is there, else CPU.

    ``precision``: ``auto`` (bf16 autocast on a GPU, fp32 on the CPU, where autocast and
    channels_last slow small convolutions), ``fp32``, ``bf16`` (autocast, also on the CPU) or
    ``fp16`` (CUDA autocast with a ``torch.amp.GradScaler``: dynamic loss scaling, a step with
    inf/NaN gradients is skipped; its state is in the checkpoint).
    ``batch_size`` and ``micro_batches`` are accepted for symmetry with
    :class:`DeepSpeedEngine` and unused (gradients simply accumulate).

    ``compile_model``: :meth:`setup` returns ``torch.compile(model)`` (default mode, inductor;
    on the CPU it needs a C++ compiler), with the kernels cached in :func:`compile_cache_dir`.
    Checkpoints hold the eager module's state, so they load with or without compiling.
    """

    name = "torch"

    def __init__(
        self,
        device: str = "auto",
        batch_size: int | None = None,
        compile_model: bool = False,
        precision: str = "auto",
        micro_batches: int = 1,
    ) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("engine 'torch' trains in one process: use engine 'deepspeed'")
        self.device = resolve_device(device or "auto")
        self._on_gpu = self.device.type == "cuda"
        use_cudnn_autotuner(self.device)
        check_precision(precision, self._on_gpu)
        if precision == "auto":
            precision = "bf16" if self._on_gpu else "fp32"
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.precision = f"{precision}-autocast" if self._autocast_dtype else "fp32"
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.compiled = compile_model
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        return self._model

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        memory_format = torch.channels_last if self._on_gpu else torch.contiguous_format
        self._model = model.to(self.device, memory_format=memory_format)
        self.optimizer = optimizer
        if self.compiled:
            compile_cache_dir()
            return torch.compile(self._model)
        return self._model

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        loss = loss * weight if weight != 1.0 else loss
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self._model.state_dict(), "optimizer": self.optimizer.state_dict()}
        return state | ({"scaler": self.scaler.state_dict()} if self.scaler else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


_SINGLE_PROCESS_ENV = {
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "1",
    "MASTER_ADDR": "127.0.0.1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _import_deepspeed():
    try:
        import deepspeed
    except ImportError as e:
        raise RuntimeError(
            f"the 'deepspeed' engine needs the deepspeed package ({e}): "
            "install torch first, then `pip install --no-build-isolation 'aprflow[deepspeed]'` "
            "(its build imports torch), or use engine 'torch'"
        ) from e
    return deepspeed


def _init_process_group(deepspeed, backend: str) -> None:
    """Initialises torch.distributed through DeepSpeed once per process.

    Launchers (the ``deepspeed`` launcher, torchrun, a Kubeflow PyTorchJob) set RANK,
    WORLD_SIZE, MASTER_ADDR, ... and those are kept; a plain process (a KFP task, a test) gets
    the single-process values for whatever is missing. A group that already exists is reused.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        for key, value in _SINGLE_PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        if os.environ["WORLD_SIZE"] == "1" and "TORCHELASTIC_RUN_ID" not in os.environ:
            # A world of one agrees on its port with nobody (torchrun's workers do, with their
            # agent): a free one, never a MASTER_PORT inherited from a process that holds it.
            os.environ["MASTER_PORT"] = str(_free_port())
        else:
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # A no-op when DeepSpeed's communication backend is up already; when torch.distributed
    # was initialised by someone else, DeepSpeed adopts that group instead of creating one.
    try:
        deepspeed.init_distributed(dist_backend=backend)
    except RuntimeError as e:
        if "Error building extension" not in str(e):
            raise
        # On the CPU DeepSpeed JIT-compiles its shared-memory comm op (deepspeed_shm_comm) the
        # first time, into TORCH_EXTENSIONS_DIR (~/.cache/torch_extensions): ~30 s, and it
        # needs a C++ compiler.
        raise RuntimeError(
            "DeepSpeed could not compile its communication op: install a C++ compiler "
            "(g++, ninja) or prebuild the op as images/cpu/Dockerfile does "
            f"(ShareMemCommBuilder().load()), or use engine 'torch'. {str(e)[:300]}"
        ) from e


class DeepSpeedEngine(TrainEngine):
    """DeepSpeed: ``deepspeed.initialize`` around the trial's model and client optimizer.

    Runs in a plain single process (world size 1, gloo on the CPU, nccl on CUDA) as well as
    under a launcher that set the distributed environment. The configuration is explicit:

    * ``train_micro_batch_size_per_gpu = ceil(batch_size / micro_batches)`` and
      ``gradient_accumulation_steps = micro_batches`` (1 unless an out-of-memory split the
      batch). The trial loop feeds its own batches, so DeepSpeed uses the batch size for
      bookkeeping only; it calls DeepSpeed's ``step`` after every micro-batch and DeepSpeed
      steps the optimizer at the accumulation boundary.
    * ``zero_optimization.stage = zero_stage``: 0 (the default) is plain data parallelism.
      ZeRO 1 shards the optimizer state across ranks, ZeRO 2 also the gradients: they save
      memory with several GPUs and only add overhead in one process. ``zero_allow_untested
      _optimizer`` is set for them because the trial's optimizer is SGD.
    * ``precision``: ``auto`` = bf16 on CUDA (bf16 weights, fp32 master weights kept by
      DeepSpeed), fp32 on the CPU; ``bf16`` (CUDA only here), ``fp16`` (CUDA, DeepSpeed's
      dynamic loss scaling) or ``fp32``.
    * ``gradient_clipping = 0``: DeepSpeed otherwise clips at 1.0 by default, which the torch
      engine does not do. No DeepSpeed LR scheduler: the trial builds timm's scheduler on
      :attr:`optimizer`, which is DeepSpeed's own (the wrapper whose ``param_groups`` it
      steps with), so nothing is aliased by hand.

    Checkpoints are plain torch objects (module ``state_dict`` + optimizer ``state_dict``), not
    a DeepSpeed checkpoint directory. With ZeRO 1/2 the optimizer part is this rank's shard
    (the whole state in a single process).
    """

    name = "deepspeed"

    def __init__(
        self,
        batch_size: int = 32,
        zero_stage: int = 0,
        device: str = "auto",
        precision: str = "auto",
        micro_batches: int = 1,
    ) -> None:
        if zero_stage not in (0, 1, 2):
            raise ValueError(f"zero_stage must be 0, 1 or 2, not {zero_stage!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size!r}")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be positive, not {micro_batches!r}")
        self._deepspeed = _import_deepspeed()
        from deepspeed.accelerator import get_accelerator

        accelerator = get_accelerator()
        self._on_gpu = accelerator.device_name() == "cuda"
        wanted = resolve_device(device)  # 'cuda' without a GPU fails here, before any work
        if (wanted.type == "cuda") != self._on_gpu:
            raise DeviceError(
                f"device {device!r} but DeepSpeed's accelerator is {accelerator.device_name()!r}: "
                "set DS_ACCELERATOR=cpu to train DeepSpeed on the CPU of a GPU machine"
            )
        use_cudnn_autotuner(wanted)
        check_precision(precision, self._on_gpu)
        if precision == "bf16" and not self._on_gpu:
            raise ValueError("engine 'deepspeed' trains in fp32 on the CPU: use precision fp32")
        if precision == "auto":
            precision = "bf16" if self._on_gpu else "fp32"
        self.precision = precision
        _init_process_group(self._deepspeed, "nccl" if self._on_gpu else "gloo")
        if self._on_gpu:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            accelerator.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        self.batch_size = batch_size
        self.micro_batches = micro_batches
        self.zero_stage = zero_stage
        self.engine = None  # the deepspeed.DeepSpeedEngine, after setup

    @property
    def model(self) -> nn.Module:
        return self.engine.module

    def config(self) -> dict[str, Any]:
        """The DeepSpeed configuration this engine initialises with."""
        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": -(-self.batch_size // self.micro_batches),
            "gradient_accumulation_steps": self.micro_batches,
            "gradient_clipping": 0.0,
            "zero_optimization": {"stage": self.zero_stage},
            "bf16": {"enabled": self.precision == "bf16"},
            "fp16": {"enabled": self.precision == "fp16"},
            "steps_per_print": 10**12,
            "wall_clock_breakdown": False,
        }
        if self.zero_stage > 0:
            config["zero_allow_untested_optimizer"] = True
        return config

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        self.engine, _, _, _ = self._deepspeed.initialize(
            model=model, optimizer=optimizer, config=self.config()
        )
        # The optimizer DeepSpeed steps: the client one (ZeRO 0, fp32) or its wrapper (ZeRO,
        # bf16/fp16), whose param_groups are the ones stepped with.
        self.optimizer = self.engine.optimizer
        return self.engine

    def backward(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        # DeepSpeed divides the loss by gradient_accumulation_steps itself; undone here so the
        # micro-batch counts by its share of the batch (exact for unequal micro-batches too).
        factor = weight * self.micro_batches
        self.engine.backward(loss * factor if factor != 1.0 else loss)
        # Called after every micro-batch: DeepSpeed steps (and zeroes the gradients) at the
        # accumulation boundary only.
        self.engine.step()

    def optimizer_step(self) -> None:
        """Nothing left to do: :meth:`backward` of the last micro-batch stepped."""

    @property
    def _half_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        # The half precision itself comes from the config (half weights). DeepSpeed turns an
        # outer autocast off inside its forward (cast_inputs), so this context covers what runs
        # outside it: the loss on the logits. The CPU runs in fp32.
        if self._half_dtype is not None:
            return torch.autocast("cuda", dtype=self._half_dtype)
        return contextlib.nullcontext()

    def cast_inputs(self, images: torch.Tensor) -> torch.Tensor:
        # DeepSpeed's forward runs with an outer torch.autocast turned off unless the config's
        # torch_autocast section is on (deepspeed v0.19.8 runtime/torch_autocast.py,
        # autocast_if_enabled; runtime/engine.py forward), so fp32 batches would meet bf16/fp16
        # weights: "Input type (torch.cuda.FloatTensor) and weight type (CUDABFloat16Type)
        # should be the same", seen on an H200 (tests/train/test_engines.py).
        return images.to(self._half_dtype) if self._half_dtype is not None else images

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.engine.module.state_dict(),
            "optimizer": self.engine.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        self.engine.module.load_state_dict(state["model"])
        if isinstance(self.engine.optimizer, ZeROOptimizer):
            # DeepSpeed's ZeRO/bf16 optimizers take one state per rank and keep fp32 master
            # weights, which must come from the checkpoint to continue identically.
            self.engine.optimizer.load_state_dict(
                [state["optimizer"]], load_optimizer_states=True, load_from_fp32_weights=True
            )
        else:
            self.engine.optimizer.load_state_dict(state["optimizer"])


ENGINES: dict[str, type[TrainEngine]] = {"torch": TorchEngine, "deepspeed": DeepSpeedEngine}


def create_engine(name: str, **options: Any) -> TrainEngine:
    """Returns a new engine by name, built with ``options`` (e.g. ``batch_size=...``).

    Raises:
        ValueError: for an unknown engine (the message lists the valid ones), or an option the
            engine does not take (the message lists those it does).
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose from {', '.join(sorted(ENGINES))}")
    cls = ENGINES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"engine {name!r} does not take {', '.join(unknown)}: "
            f"its options are {', '.join(accepted) or 'none'}"
        )
    return cls(**options)
