"""Training engines: how a loss becomes an optimizer step on some hardware.

The trial loop (``components.train.trial``) talks only to :class:`TrainEngine`, so that the
plain PyTorch engine and the DeepSpeed engine (ZeRO, multi-GPU) here are interchangeable.
Engines take keyword options through :func:`create_engine` (``batch_size`` is accepted by
every engine, so the loop can always pass it).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.common.errors import AprflowError

DEVICES = ("auto", "cuda", "cpu")
# Engines that can train a ``torch.compile``-d model (``compile_model``).
COMPILE_ENGINES = ("torch",)
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


def rank_and_world() -> tuple[int, int]:
    """This process' rank and the number of processes of its trial (torchrun's RANK and
    WORLD_SIZE; 0 and 1 in a plain process)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``, for a trial's result record."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def check_compile(engine: str, compile_model: bool) -> None:
    """Raises ValueError when ``compile_model`` is asked of an engine that cannot compile."""
    if compile_model and engine not in COMPILE_ENGINES:
        raise ValueError(
            f"compile_model needs engine {' or '.join(COMPILE_ENGINES)}: engine {engine!r} "
            "trains eager models only (set compile_model=false or engine=torch)"
        )


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

    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aprflow"
    folder = Path(os.environ.setdefault(COMPILE_CACHE_ENV, str(default / "inductor")))
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


class TrainEngine(ABC):
    """Owns the model's device placement, mixed precision and optimizer step."""

    name: str
    device: torch.device
    precision: str  # "bf16-autocast", "bf16" or "fp32": recorded in the trial's result
    compiled: bool = False  # whether the module it returns is torch.compile-d

    @abstractmethod
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        """Moves the model to the engine's device and returns the module to call."""

    @abstractmethod
    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, optimizer step and gradient reset for one batch."""

    @abstractmethod
    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Model and optimizer state for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned."""


class TorchEngine(TrainEngine):
    """Plain PyTorch: CUDA with bf16 autocast and channels_last when a GPU is there, else CPU.

    On the CPU, autocast and channels_last are left off: they slow small convolutions there.
    ``batch_size`` is accepted for symmetry with :class:`DeepSpeedEngine` and unused.

    ``compile_model``: :meth:`setup` returns ``torch.compile(model)`` (default mode, inductor;
    on the CPU it needs a C++ compiler), with the kernels cached in :func:`compile_cache_dir`.
    Checkpoints hold the eager module's state, so they load with or without compiling.
    """

    name = "torch"

    def __init__(
        self, device: str = "auto", batch_size: int | None = None, compile_model: bool = False
    ) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("engine 'torch' trains in one process: use engine 'deepspeed'")
        self.device = resolve_device(device or "auto")
        self._on_gpu = self.device.type == "cuda"
        self.precision = "bf16-autocast" if self._on_gpu else "fp32"
        self.compiled = compile_model
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        memory_format = torch.channels_last if self._on_gpu else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.optimizer = optimizer
        if self.compiled:
            compile_cache_dir()
            return torch.compile(self.model)
        return self.model

    def step(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._on_gpu):
            yield

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


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
            "install it with `pip install deepspeed` (or use engine 'torch')"
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

    * ``train_micro_batch_size_per_gpu = batch_size`` and ``gradient_accumulation_steps = 1``.
      The trial loop feeds its own batches, so DeepSpeed uses the batch size for bookkeeping
      only (throughput logs); the default of 32 is harmless when the caller does not pass the
      recipe's batch size.
    * ``zero_optimization.stage = zero_stage``: 0 (the default) is plain data parallelism.
      ZeRO 1 shards the optimizer state across ranks, ZeRO 2 also the gradients: they save
      memory with several GPUs and only add overhead in one process. ``zero_allow_untested
      _optimizer`` is set for them because the trial's optimizer is SGD.
    * bf16 (bf16 weights, fp32 master weights kept by DeepSpeed) only on CUDA; fp32 on CPU.
    * ``gradient_clipping = 0``: DeepSpeed otherwise clips at 1.0 by default, which the torch
      engine does not do. No DeepSpeed LR scheduler: the trial loop sets ``lr`` on the client
      optimizer's ``param_groups`` every step, and :meth:`setup` makes sure those are the
      groups DeepSpeed's optimizer steps with.

    Checkpoints are plain torch objects (module ``state_dict`` + optimizer ``state_dict``), not
    a DeepSpeed checkpoint directory. With ZeRO 1/2 the optimizer part is this rank's shard
    (the whole state in a single process).
    """

    name = "deepspeed"

    def __init__(self, batch_size: int = 32, zero_stage: int = 0, device: str = "auto") -> None:
        if zero_stage not in (0, 1, 2):
            raise ValueError(f"zero_stage must be 0, 1 or 2, not {zero_stage!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size!r}")
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
        self.precision = "bf16" if self._on_gpu else "fp32"
        _init_process_group(self._deepspeed, "nccl" if self._on_gpu else "gloo")
        if self._on_gpu:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            accelerator.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        self.batch_size = batch_size
        self.zero_stage = zero_stage
        self.engine = None  # the deepspeed.DeepSpeedEngine, after setup
        self.optimizer: torch.optim.Optimizer | None = None  # the client optimizer

    def config(self) -> dict[str, Any]:
        """The DeepSpeed configuration this engine initialises with."""
        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": self.batch_size,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 0.0,
            "zero_optimization": {"stage": self.zero_stage},
            "bf16": {"enabled": self._on_gpu},
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
        wrapped = self.engine.optimizer
        if wrapped.param_groups is not optimizer.param_groups:
            # A wrapper with its own groups: point the client optimizer at them, so the LR the
            # trial loop sets on ``optimizer.param_groups`` is the one DeepSpeed steps with.
            optimizer.param_groups = wrapped.param_groups
        self.optimizer = optimizer
        return self.engine

    def step(self, loss: torch.Tensor) -> None:
        # DeepSpeed's step also zeroes the gradients.
        self.engine.backward(loss)
        self.engine.step()

    def autocast(self) -> contextlib.AbstractContextManager:
        # bf16 itself comes from the config (bf16 weights); autocast on CUDA lets the fp32
        # batches the loop produces meet them. The CPU runs in fp32.
        if self._on_gpu:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
