"""The training input pipeline: one interface, an in-memory path and a streaming path.

The trainer asks :func:`open_split` for a split and gets a :class:`TrainData`:

* :class:`InMemoryBatches` (``input: memory``): the split decoded once and kept on the
  engine's device as uint8; batches are normalised and augmented there (random crop with
  reflection padding, flips) from the trial's ``torch.Generator``. For the tiny sets, where a
  DataLoader's per-image work would cost more than the model.
* :class:`StreamBatches` (``input: stream``): a ``torch.utils.data.DataLoader`` over
  :class:`ShardStream`, an ``IterableDataset`` that reads the split's tar shards (through a
  local :class:`ShardCache` with a size limit, so an epoch does not re-read S3), decodes and
  augments each image in worker processes with timm's transforms (RandomResizedCrop, flip),
  and hands pinned batches to the device.

Order is deterministic: the in-memory path draws from the trial's generator (saved in the
checkpoint); the streaming path derives shard order, shuffle buffer and every augmentation from
``(seed, epoch)`` alone, so a resumed trial sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from components.common.files import atomic_write_bytes
from components.common.storage import ArtifactStore, LocalStore, open_store
from components.data.build import load_manifest, load_split, shard_keys
from components.data.descriptor import DatasetRef, mix_seed
from components.data.shards import decode_rgb, image_part, iter_own_shard

CACHE_DIR_ENV = "APRFLOW_SHARD_CACHE"
CACHE_LIMIT_ENV = "APRFLOW_SHARD_CACHE_GB"
WORKERS_ENV = "APRFLOW_DATA_WORKERS"
DEFAULT_CACHE_LIMIT_GB = 20.0
SHUFFLE_BUFFER = 1000

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainData(ABC):
    """A split as the trainer consumes it."""

    #: seconds the consumer spent waiting for batches during the last iteration
    wait_seconds: float = 0.0

    @abstractmethod
    def __len__(self) -> int:
        """Images in the split."""

    @abstractmethod
    def train(self, recipe: Any, generator: torch.Generator, epoch: int) -> Iterator[Batch]:
        """Augmented, shuffled training batches of one epoch (the last partial batch dropped)."""

    @abstractmethod
    def eval(self, batch_size: int) -> Iterator[Batch]:
        """Every image once, unaugmented, in a fixed order."""


class InMemoryBatches(TrainData):
    """Batches of a small in-memory split, normalised and augmented on the engine's device."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, device: torch.device) -> None:
        self.x = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        self.y = torch.from_numpy(y).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1).clamp_min(1e-3) * 255

    def __len__(self) -> int:
        return len(self.y)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def train(self, recipe, generator: torch.Generator, epoch: int = 0) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator).to(self.x.device)
        # Drop the last partial batch: a batch of one breaks batch norm.
        n_full = len(self) // recipe.batch_size * recipe.batch_size or len(self)
        for start in range(0, n_full, recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            images = self._prepare(self.x[index])
            if recipe.crop_padding:
                images = random_crop(images, recipe.crop_padding, generator)
            if recipe.hflip:
                flip = (torch.rand(len(index), generator=generator) < 0.5).to(images.device)
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
            yield images, self.y[index]

    def eval(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            yield (
                self._prepare(self.x[start : start + batch_size]),
                self.y[start : start + batch_size],
            )


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pads by reflection and crops back at one random offset per batch (cheap on CPU)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


class ShardCache:
    """Local copies of a store's shards, least recently used evicted beyond ``max_bytes``.

    A local-directory store needs no copy: its files are read in place.
    """

    def __init__(
        self, store: ArtifactStore, root: str | Path | None = None, max_bytes: int | None = None
    ) -> None:
        self.store = store
        base = Path(root or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache/aprflow/shards")
        self.root = base / hashlib.sha256(store.uri.encode()).hexdigest()[:12]
        limit_gb = float(os.environ.get(CACHE_LIMIT_ENV, DEFAULT_CACHE_LIMIT_GB))
        self.max_bytes = int(limit_gb * (1 << 30)) if max_bytes is None else max_bytes
        self.fetched = 0  # shards downloaded by this cache object (tests, benchmarks)

    def path(self, key: str) -> Path:
        """A local path holding the shard ``key`` (downloaded once, then reused)."""
        if isinstance(self.store, LocalStore):
            return self.store.root / key
        local = self.root / key
        if local.is_file():
            os.utime(local)  # most recently used
            return local
        data = self.store.get_bytes(key)
        local.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(local, data)
        self.fetched += 1
        self.evict(keep=local)
        return local

    def evict(self, keep: Path | None = None) -> None:
        """Deletes least recently used shards until the cache fits its limit."""
        files = sorted(
            (p for p in self.root.rglob("*.tar") if p != keep), key=lambda p: p.stat().st_mtime
        )
        total = sum(p.stat().st_size for p in files) + (keep.stat().st_size if keep else 0)
        for path in files:
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds torch's and Python's global generators (timm's transforms use both) for one
    image, restoring them afterwards so that nothing else's randomness moves."""
    # The CPU generator only: torch.manual_seed would also queue seeds for every accelerator
    # back end, recording a stack trace each time (most of the per-image cost).
    cpu = torch.default_generator
    torch_state, python_state = cpu.get_state(), random.getstate()
    cpu.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        cpu.set_state(torch_state)
        random.setstate(python_state)


def train_transform(resolution: int, mean, std, hflip: bool) -> Callable:
    """timm's training transform: RandomResizedCrop (scale 0.08-1), optional flip, normalise."""
    from timm.data import create_transform

    return create_transform(
        resolution,
        is_training=True,
        hflip=0.5 if hflip else 0.0,
        color_jitter=0.0,
        interpolation="bilinear",
        mean=tuple(mean),
        std=tuple(std),
    )


def eval_transform(resolution: int, mean, std) -> Callable:
    """Shorter side to ``resolution``, centre crop, normalise (what ``load_split`` does)."""
    from timm.data import create_transform

    return create_transform(
        resolution,
        is_training=False,
        crop_pct=1.0,
        interpolation="bilinear",
        mean=tuple(mean),
        std=tuple(std),
    )


class ShardStream(IterableDataset):
    """(image tensor, label) pairs streamed from tar shards, split across DataLoader workers.

    Args:
        store_uri: the artifact store (each worker opens its own client).
        keys: the split's shard keys.
        transform: PIL image -> normalised CHW tensor.
        seed: the trial's seed.
        shuffle: shuffle shard order and images (training), else the stored order.
        cache_dir: local shard cache folder (default ``APRFLOW_SHARD_CACHE`` or
            ``~/.cache/aprflow/shards``).
    """

    def __init__(
        self,
        store_uri: str,
        keys: list[str],
        transform: Callable,
        seed: int,
        shuffle: bool,
        cache_dir: str | None = None,
    ) -> None:
        self.store_uri, self.keys, self.transform = store_uri, list(keys), transform
        self.seed, self.shuffle, self.cache_dir = seed, shuffle, cache_dir
        self.epoch = 0

    def _shards(self, worker: int, workers: int) -> tuple[list[str], int, int]:
        """This worker's shards, and which of their samples it keeps (``i % every == keep``).

        With at least as many shards as workers, each worker reads whole shards; with fewer
        (a small split), every worker reads every shard and keeps every ``workers``-th sample.
        """
        keys = list(self.keys)
        if self.shuffle:
            order = np.random.default_rng(mix_seed(self.seed, self.epoch)).permutation(len(keys))
            keys = [keys[i] for i in order]
        if len(keys) >= workers:
            return keys[worker::workers], 1, 0
        return keys, workers, worker

    def _samples(self, keys: list[str], every: int, keep: int) -> Iterator[tuple[str, bytes, int]]:
        cache = ShardCache(open_store(self.store_uri), self.cache_dir)
        position = 0
        for key in keys:
            for name, parts in iter_own_shard(cache.path(key).read_bytes()):
                found = image_part(parts)
                if found is None or "cls" not in parts:
                    continue
                if position % every == keep:
                    yield f"{key}:{name}", found[1], int(parts["cls"])
                position += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        samples = self._samples(*self._shards(worker, workers))
        if self.shuffle:
            samples = _shuffle_buffer(samples, mix_seed(self.seed, self.epoch, worker, workers))
        for name, data, label in samples:
            with _seeded(mix_seed(self.seed, self.epoch, name)):
                image = self.transform(decode_rgb(data))
            yield image, label


def _shuffle_buffer(items: Iterator, seed: int, size: int = SHUFFLE_BUFFER) -> Iterator:
    """Shuffles a stream through a buffer of ``size`` items, seeded."""
    rng = np.random.default_rng(seed)
    buffer = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(int(rng.integers(len(buffer))))
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


def full_batches(batches: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Re-batches so that every batch is full, as the in-memory path's are.

    Each DataLoader worker batches its own images, so each ends an epoch with a partial batch;
    those are joined into full ones and the remainder is dropped (a batch of one breaks batch
    norm), unless the split is smaller than one batch: then it is the epoch's only batch.
    """
    pending: list[Batch] = []
    waiting = 0
    yielded = False
    for images, labels in batches:
        if len(labels) == batch_size and not pending:
            yielded = True
            yield images, labels
            continue
        pending.append((images, labels))
        waiting += len(labels)
        while waiting >= batch_size:
            joined_x = torch.cat([b[0] for b in pending])
            joined_y = torch.cat([b[1] for b in pending])
            yielded = True
            yield joined_x[:batch_size], joined_y[:batch_size]
            pending = [(joined_x[batch_size:], joined_y[batch_size:])]
            waiting -= batch_size
    if not yielded and waiting > 1:
        yield torch.cat([b[0] for b in pending]), torch.cat([b[1] for b in pending])


def default_workers() -> int:
    """DataLoader workers: ``APRFLOW_DATA_WORKERS`` or the CPUs this process may use, up to 8."""
    if WORKERS_ENV in os.environ:
        return int(os.environ[WORKERS_ENV])
    return max(1, min(8, len(os.sched_getaffinity(0)) - 1))


class StreamBatches(TrainData):
    """Batches from a :class:`ShardStream` through a DataLoader with workers and pinned memory.

    Args:
        store_uri: the artifact store.
        keys: the split's shard keys.
        n_images: images in the split.
        resolution: training image side.
        mean, std: per-channel normalisation (fractions of 255).
        device: where batches go.
        seed: the trial's seed.
        workers: DataLoader workers (0 = in this process).
        cache_dir: local shard cache folder.
    """

    def __init__(
        self,
        store_uri: str,
        keys: list[str],
        n_images: int,
        resolution: int,
        mean,
        std,
        device: torch.device,
        seed: int,
        workers: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.store_uri, self.keys, self.n_images = store_uri, keys, n_images
        self.resolution, self.mean, self.std = resolution, mean, std
        self.device, self.seed = device, seed
        self.workers = default_workers() if workers is None else workers
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return self.n_images

    def _loaded(self, stream: ShardStream, batch_size: int) -> Iterator[Batch]:
        """The DataLoader's batches on the device, timing the waits for them."""
        loader = DataLoader(
            stream,
            batch_size=batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        self.wait_seconds = 0.0
        iterator = iter(loader)
        while True:
            tic = time.perf_counter()
            try:
                images, labels = next(iterator)
            except StopIteration:
                return
            self.wait_seconds += time.perf_counter() - tic
            yield (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )

    def train(self, recipe, generator: torch.Generator, epoch: int = 0) -> Iterator[Batch]:
        transform = train_transform(self.resolution, self.mean, self.std, recipe.hflip)
        stream = ShardStream(self.store_uri, self.keys, transform, self.seed, True, self.cache_dir)
        stream.epoch = epoch
        yield from full_batches(self._loaded(stream, recipe.batch_size), recipe.batch_size)

    def eval(self, batch_size: int) -> Iterator[Batch]:
        transform = eval_transform(self.resolution, self.mean, self.std)
        stream = ShardStream(self.store_uri, self.keys, transform, self.seed, False, self.cache_dir)
        yield from self._loaded(stream, batch_size)


def open_split(
    store: ArtifactStore,
    ref: DatasetRef,
    split: str,
    device: torch.device,
    seed: int = 0,
    workers: int | None = None,
) -> TrainData:
    """The split as the trainer consumes it, by ``ref.input`` (``memory`` or ``stream``)."""
    manifest = load_manifest(store, ref)
    if ref.input == "memory":
        x, y = load_split(store, ref, split)
        return InMemoryBatches(x, y, manifest["mean"], manifest["std"], device)
    return StreamBatches(
        store.uri,
        shard_keys(manifest, split),
        manifest["splits"][split]["n"],
        ref.resolution,
        manifest["mean"],
        manifest["std"],
        device,
        seed,
        workers,
    )
