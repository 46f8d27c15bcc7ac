"""The training input pipeline: one interface, an in-memory path and a streaming path.

The trainer asks :func:`open_split` for a split and gets a :class:`TrainData`:

* :class:`InMemoryBatches` (``input: memory``): the split decoded once and kept on the
  engine's device as uint8; batches are normalised and augmented there (random crop with
  reflection padding, flips) from the trial's ``torch.Generator``. For the tiny sets, where a
  DataLoader's per-image work would cost more than the model.
* :class:`StreamBatches` (``input: stream``): a ``torch.utils.data.DataLoader`` over
  :class:`ShardSamples`, which reads the split's tar shards (through a local
  :class:`ShardCache` with a size limit, so an epoch does not re-read S3) and decodes and
  augments each image in the worker processes with timm's transforms (RandomResizedCrop,
  flip); pinned batches go to the device.

Order is deterministic: the in-memory path draws from the trial's generator (saved in the
checkpoint); the streaming path derives the shard order, the shuffle and every image's
augmentation from ``(seed, epoch)`` alone, whatever the number of workers, so a resumed trial
sees the same data as an uninterrupted one.
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
from torch.utils.data import DataLoader, Dataset

from components.common.files import atomic_write_bytes
from components.common.storage import ArtifactStore, LocalStore, open_store
from components.data.build import load_manifest, load_split
from components.data.descriptor import DatasetError, DatasetRef, mix_seed
from components.data.shards import decode_rgb, image_part, iter_own_shard

CACHE_DIR_ENV = "APRFLOW_SHARD_CACHE"
CACHE_LIMIT_ENV = "APRFLOW_SHARD_CACHE_GB"
WORKERS_ENV = "APRFLOW_DATA_WORKERS"
DEFAULT_CACHE_LIMIT_GB = 20.0
SHUFFLE_WINDOW = 4096
DEFAULT_WORKERS = 4

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
        check_input(recipe, "memory")
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


def check_input(recipe, input_mode: str, dataset: str = "") -> None:
    """Raises :class:`DatasetError` when ``recipe`` sets per-image augmentations (RandAugment,
    RandomResizedCrop ranges, colour jitter, random erasing) that ``input_mode`` does not do:
    the memory input augments whole batches on the device (crop padding, flips) only."""
    wanted = recipe.stream_augmentations()
    if input_mode == "memory" and wanted:
        where = f"dataset_settings.{dataset}.input: stream" if dataset else "input: stream"
        raise DatasetError(
            f"recipe {recipe.name!r} sets {', '.join(wanted)}, which only the stream input "
            f"applies (timm's per-image transforms): train {dataset or 'the dataset'} with "
            f"{where} (aprflow train --input stream)"
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
    """Seeds torch's, Python's and NumPy's global generators (timm's transforms use all three:
    RandAugment picks its ops with NumPy) for one image, restoring them afterwards so that
    nothing else's randomness moves."""
    # The CPU generator only: torch.manual_seed would also queue seeds for every accelerator
    # back end, recording a stack trace each time (most of the per-image cost).
    cpu = torch.default_generator
    torch_state, python_state, numpy_state = (
        cpu.get_state(),
        random.getstate(),
        np.random.get_state(),
    )
    cpu.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        cpu.set_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def train_transform(resolution: int, mean, std, recipe) -> Callable:
    """timm's training transform as the recipe says: RandomResizedCrop (``scale``, ``ratio``),
    flip (``hflip``), ``auto_augment`` (RandAugment ...), ``color_jitter``, normalise, random
    erasing (``re_prob``)."""
    from timm.data import create_transform

    return create_transform(
        resolution,
        is_training=True,
        scale=recipe.scale,
        ratio=recipe.ratio,
        hflip=0.5 if recipe.hflip else 0.0,
        color_jitter=recipe.color_jitter,
        auto_augment=recipe.auto_augment or None,
        re_prob=recipe.re_prob,
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


class ShardSamples(Dataset):
    """(image tensor, label) by global index over a split's tar shards, read through a
    :class:`ShardCache`; each DataLoader worker keeps the last two shards it read in memory.

    Args:
        store_uri: the artifact store (each worker opens its own client).
        shards: the split's shards as ``(key, images)`` in stored order.
        transform: PIL image -> normalised CHW tensor.
        seed: the trial's seed (with ``epoch``, it seeds each image's augmentation).
        cache_dir: local shard cache folder (default ``APRFLOW_SHARD_CACHE`` or
            ``~/.cache/aprflow/shards``).
    """

    def __init__(
        self,
        store_uri: str,
        shards: list[tuple[str, int]],
        transform: Callable,
        seed: int,
        cache_dir: str | None = None,
    ) -> None:
        self.store_uri, self.shards, self.transform = store_uri, shards, transform
        self.seed, self.cache_dir = seed, cache_dir
        self.starts = np.cumsum([0] + [n for _, n in shards])
        self.epoch = 0
        self._loaded: dict[str, list[tuple[str, bytes, int]]] = {}
        self._cache: ShardCache | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _shard(self, number: int) -> list[tuple[str, bytes, int]]:
        key = self.shards[number][0]
        if key not in self._loaded:
            if self._cache is None:  # opened in the worker process, not pickled into it
                self._cache = ShardCache(open_store(self.store_uri), self.cache_dir)
            samples = []
            for name, parts in iter_own_shard(self._cache.path(key).read_bytes()):
                found = image_part(parts)
                if found is not None and "cls" in parts:
                    samples.append((f"{key}:{name}", found[1], int(parts["cls"])))
            if len(samples) != self.shards[number][1]:
                raise RuntimeError(
                    f"shard {key} holds {len(samples)} images, manifest says "
                    f"{self.shards[number][1]}"
                )
            self._loaded = dict(list(self._loaded.items())[-1:]) | {key: samples}
        return self._loaded[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        number = int(np.searchsorted(self.starts, index, side="right")) - 1
        name, data, label = self._shard(number)[index - int(self.starts[number])]
        with _seeded(mix_seed(self.seed, self.epoch, name)):
            image = self.transform(decode_rgb(data))
        return image, label


def epoch_order(shard_sizes: list[int], seed: int, epoch: int) -> list[int]:
    """The training order of one epoch, from (seed, epoch) alone: shards in a random order,
    images shuffled within windows of :data:`SHUFFLE_WINDOW` (so workers read few shards at
    once; the build already wrote the training split in a random order)."""
    rng = np.random.default_rng(mix_seed(seed, epoch))
    starts = np.cumsum([0, *shard_sizes])
    order = np.concatenate(
        [np.arange(starts[s], starts[s + 1]) for s in rng.permutation(len(shard_sizes))]
        or [np.zeros(0, int)]
    )
    for start in range(0, len(order), SHUFFLE_WINDOW):
        window = order[start : start + SHUFFLE_WINDOW]
        order[start : start + SHUFFLE_WINDOW] = window[rng.permutation(len(window))]
    return order.tolist()


def train_batches(order: list[int], batch_size: int) -> list[list[int]]:
    """Full batches of ``order`` (the last partial one dropped: a batch of one breaks batch
    norm), or one batch of everything when the split is smaller than a batch."""
    full = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return full or ([order] if len(order) > 1 else [])


def default_workers() -> int:
    """DataLoader workers: ``APRFLOW_DATA_WORKERS``, else 4 (a fixed default, although the
    order of batches does not depend on the number of workers)."""
    return int(os.environ.get(WORKERS_ENV, DEFAULT_WORKERS))


class StreamBatches(TrainData):
    """Batches from :class:`ShardSamples` through a DataLoader with workers and pinned memory.

    The batches (which images, in which order, augmented how) depend on (seed, epoch) only,
    not on the number of workers: the main process fixes the batches, the workers decode and
    augment them, and the DataLoader returns them in order.

    Args:
        store_uri: the artifact store.
        shards: the split's shards as ``(key, images)``.
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
        shards: list[tuple[str, int]],
        resolution: int,
        mean,
        std,
        device: torch.device,
        seed: int,
        workers: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.store_uri, self.shards = store_uri, shards
        self.resolution, self.mean, self.std = resolution, mean, std
        self.device, self.seed = device, seed
        self.workers = default_workers() if workers is None else workers
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return sum(n for _, n in self.shards)

    def _loaded(self, samples: ShardSamples, batches: list[list[int]]) -> Iterator[Batch]:
        """The DataLoader's batches on the device, timing the waits for them."""
        loader = DataLoader(
            samples,
            batch_sampler=batches,
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
        transform = train_transform(self.resolution, self.mean, self.std, recipe)
        samples = ShardSamples(self.store_uri, self.shards, transform, self.seed, self.cache_dir)
        samples.epoch = epoch
        order = epoch_order([n for _, n in self.shards], self.seed, epoch)
        yield from self._loaded(samples, train_batches(order, recipe.batch_size))

    def eval(self, batch_size: int) -> Iterator[Batch]:
        transform = eval_transform(self.resolution, self.mean, self.std)
        samples = ShardSamples(self.store_uri, self.shards, transform, self.seed, self.cache_dir)
        n = len(samples)
        yield from self._loaded(
            samples, [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        )


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
        [(shard["key"], shard["images"]) for shard in manifest["splits"][split]["shards"]],
        ref.resolution,
        manifest["mean"],
        manifest["std"],
        device,
        seed,
        workers,
    )
