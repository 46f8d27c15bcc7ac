"""Training engines: how a loss becomes an optimizer step on some hardware.

The trial loop (``components.train.trial``) talks only to :class:`TrainEngine`, so that the
plain PyTorch engine here and a DeepSpeed engine (ZeRO, multi-GPU) are interchangeable.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class TrainEngine(ABC):
    """Owns the model's device placement, mixed precision and optimizer step."""

    name: str
    device: torch.device

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
    """

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._on_gpu = self.device.type == "cuda"
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> nn.Module:
        memory_format = torch.channels_last if self._on_gpu else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.optimizer = optimizer
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


ENGINES = {"torch": TorchEngine}


def create_engine(name: str) -> TrainEngine:
    """Returns a new engine by name.

    Raises:
        ValueError: for an unknown engine (the message lists the valid ones).
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: choose from {', '.join(sorted(ENGINES))}")
    return ENGINES[name]()
