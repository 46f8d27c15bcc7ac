"""The training input pipeline: one interface, an in-memory path and a streaming path.

The trainer asks :func:`open_split` for a split and gets a :class:`TrainData`:

* :class:`InMemoryBatches` (``input: memory``): the split decoded once and kept on the
  engine's device as uint8; batches are augmented there per image (a random crop of the
  reflection-padded image and a random flip, each image its own, in one batched gather on
  the uint8 pixels), normalised, and resized to the training resolution. For the tiny sets,
  where a DataLoader's per-image work would cost more than the model.
* :class:`StreamBatches` (``input: stream``): a ``torch.utils.data.DataLoader`` over
  :class:`ShardSamples`, which reads the split's tar shards (through a local
  :class:`ShardCache` with a size limit, so an epoch does not re-read S3) and decodes and
  augments each image in the worker processes with timm's transforms (RandomResizedCrop,
  flip, RandAugment ...) at the training resolution; batches go to the device as uint8.

Both honour the recipe's ``aug_repeats`` (repeated augmentation, timm's
``RepeatAugSampler``: each selected image several times in a row, each copy augmented
differently, the epoch as long as the split) and ``train_resolution_ratio`` (train at
``round(ratio x resolution)`` px, evaluate at the dataset's resolution: RSB A3's 160/224).

Order is deterministic: which images an epoch visits, in which order, is a function of
``(seed, epoch)`` alone on both paths (a resumed trial can skip the batches it has done); the
memory path draws its crops and flips from the trial's generator (saved in the checkpoint);
the streaming path derives every image's augmentation from ``(seed, epoch, image, copy)``,
whatever the number of workers.
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

from components.common.files import atomic_write_bytes, user_cache_dir
from components.common.storage import ArtifactStore, LocalStore, open_store
from components.data.build import load_manifest, load_split
from components.data.descriptor import (
    CACHE_DIR_ENV,
    CACHE_LIMIT_ENV,
    DatasetRef,
    mix_seed,
)
from components.data.shards import decode_rgb, image_part, iter_own_shard
from components.train.recipes import check_input

WORKERS_ENV = "APRFLOW_DATA_WORKERS"
DEFAULT_CACHE_LIMIT_GB = 20.0
SHUFFLE_WINDOW = 4096
DEFAULT_WORKERS = 4
# The smallest training side train_resolution_ratio can ask for (an AnyNet stem and four
# stride-2 stages still see a pixel).
MIN_TRAIN_RESOLUTION = 8

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainData(ABC):
    """A split as the trainer consumes it."""

    #: seconds the consumer spent waiting for batches during the last iteration
    wait_seconds: float = 0.0

    @abstractmethod
    def __len__(self) -> int:
        """Images in the split."""

    @abstractmethod
    def train(
        self, recipe: Any, generator: torch.Generator, epoch: int, start: int = 0
    ) -> Iterator[Batch]:
        """Augmented, shuffled training batches of one epoch (the last partial batch dropped).

        Which images each batch holds depends on ``(seed, epoch)`` only. ``start`` skips the
        epoch's first batches without making them (a resumed epoch): the batches yielded are
        exactly those from ``start`` on of a full pass from the same generator state."""

    @abstractmethod
    def eval(self, batch_size: int) -> Iterator[Batch]:
        """Every image once, unaugmented, in a fixed order."""

    def batches_per_epoch(self, recipe: Any) -> int:
        """How many batches :meth:`train` yields per epoch (the schedule's steps)."""
        return len(train_batches(list(range(epoch_images(len(self), recipe))), recipe.batch_size))

    def close(self) -> None:  # noqa: B027 - most splits hold nothing to release
        """Releases what the split holds beyond memory (worker processes); the trial calls it
        when it is done with the split."""


def train_resolution(resolution: int, ratio: float) -> int:
    """The training image side: ``round(ratio x resolution)``, at least
    :data:`MIN_TRAIN_RESOLUTION` px (evaluation stays at ``resolution``)."""
    return max(MIN_TRAIN_RESOLUTION, round(ratio * resolution))


def _repeat_sampler(n: int, repeats: int):
    from timm.data.distributed_sampler import RepeatAugSampler

    # One process (rank 0 of 1), no shuffle of its own: the caller's permutation is the
    # shuffle; the sampler repeats and selects as in timm's distributed training.
    return RepeatAugSampler(range(n), num_replicas=1, rank=0, shuffle=False, num_repeats=repeats)


def epoch_images(n: int, recipe: Any) -> int:
    """Images per epoch: ``n``, or with ``aug_repeats`` as many as timm's
    ``RepeatAugSampler`` selects (``n`` rounded down to a multiple of 256 from 256 images on:
    the epoch stays as long as the split, as in timm)."""
    return len(_repeat_sampler(n, recipe.aug_repeats)) if recipe.aug_repeats else n


def repeat_order(order: list[int], repeats: int) -> list[tuple[int, int]]:
    """``(image, copy)`` pairs of an epoch: ``order`` itself (copy 0) without repeats, else
    timm's ``RepeatAugSampler`` over the permutation ``order``: each image ``repeats`` times in
    a row (copies 0, 1, ...), cut to the sampler's epoch length. With ``order`` =
    :func:`shuffled_order` this is exactly the sampler's own order after
    ``set_epoch(mix_seed(seed, epoch))``."""
    if not repeats:
        return [(index, 0) for index in order]
    picked = [order[i] for i in _repeat_sampler(len(order), repeats)]
    copies: dict[int, int] = {}
    pairs = []
    for index in picked:
        pairs.append((index, copies.get(index, 0)))
        copies[index] = pairs[-1][1] + 1
    return pairs


def shuffled_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of ``range(n)`` from (seed, epoch) alone (what timm's samplers draw with
    a generator seeded per epoch)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


class InMemoryBatches(TrainData):
    """Batches of a small in-memory split, augmented and normalised on the engine's device.

    Args:
        x: images, NHWC uint8.
        y: labels.
        mean, std: per-channel normalisation (fractions of 255).
        device: where the split lives and batches are made.
        seed: the trial's seed (with the epoch, it fixes each epoch's order).
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, mean, std, device: torch.device, seed: int = 0
    ) -> None:
        self.x = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        self.y = torch.from_numpy(y).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1).clamp_min(1e-3) * 255
        self.seed = seed

    def __len__(self) -> int:
        return len(self.y)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def train(
        self, recipe, generator: torch.Generator, epoch: int = 0, start: int = 0
    ) -> Iterator[Batch]:
        """Batches in an order from (seed, epoch), with ``aug_repeats``; per-image crops and
        flips drawn from ``generator`` (skipped batches still draw theirs); resized to
        :func:`train_resolution` (bilinear with antialiasing, after cropping at the stored
        resolution: the resize is a pure function of the batch, so the augmentations are the
        same at every training resolution)."""
        check_input(recipe, "memory")
        pairs = repeat_order(shuffled_order(len(self), self.seed, epoch), recipe.aug_repeats)
        height, width = self.x.shape[2:]
        size = (
            train_resolution(height, recipe.train_resolution_ratio),
            train_resolution(width, recipe.train_resolution_ratio),
        )
        batches = train_batches([index for index, _ in pairs], recipe.batch_size)
        augment = recipe.crop_padding > 0 or recipe.hflip
        for number, batch in enumerate(batches):
            draws = (
                augmentation_draws(len(batch), height, width, recipe, generator)
                if augment
                else None
            )
            if number < start:
                continue
            index = torch.tensor(batch, device=self.x.device)
            images = self.x[index] if draws is None else crop_and_flip(self.x[index], *draws)
            images = self._prepare(images)
            if size != (height, width):
                images = F.interpolate(
                    images, size=size, mode="bilinear", antialias=True, align_corners=False
                )
            yield images, self.y[index]

    def eval(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            yield (
                self._prepare(self.x[start : start + batch_size]),
                self.y[start : start + batch_size],
            )


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside ``[0, size)`` mirrored back in without repeating the edge (``F.pad``'s
    ``reflect``; valid up to ``size - 1`` outside)."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


def augmentation_draws(
    n: int, height: int, width: int, recipe, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of :func:`crop_and_flip` for ``n`` images, from ``generator`` (CPU):
    per image the source rows and columns of its crop of the image reflection-padded by
    ``recipe.crop_padding`` (offsets in ``[0, 2 * padding]``), columns reversed for a flip
    (probability 0.5 with ``recipe.hflip``)."""
    padding = recipe.crop_padding
    if padding >= min(height, width):
        raise ValueError(f"crop_padding {padding} must be below the image side ({height}x{width})")
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator) - padding
    rows = _reflect(offsets[0, :, None] + torch.arange(height), height)
    cols = _reflect(offsets[1, :, None] + torch.arange(width), width)
    if recipe.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    return rows, cols


def crop_and_flip(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Each image's crop (and flip) of :func:`augmentation_draws`: one batched gather of rows,
    then of columns, on any dtype and device (uint8 here: a quarter of float's traffic)."""
    n, c, h, w = images.shape
    rows, cols = rows.to(images.device), cols.to(images.device)
    images = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return images.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class ShardCache:
    """Local copies of a store's shards, least recently used evicted beyond ``max_bytes``.

    A local-directory store needs no copy: its files are read in place.
    """

    def __init__(
        self, store: ArtifactStore, root: str | Path | None = None, max_bytes: int | None = None
    ) -> None:
        self.store = store
        base = Path(root or os.environ.get(CACHE_DIR_ENV) or user_cache_dir() / "shards")
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


def _seed_all(seed: int) -> None:
    """Seeds torch's (CPU), Python's and NumPy's global generators: timm's transforms use all
    three (RandAugment picks its ops with NumPy)."""
    # The CPU generator only: torch.manual_seed would also queue seeds for every accelerator
    # back end, recording a stack trace each time.
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds the global generators for one image. In the trainer's own process (no
    DataLoader workers) their states are restored afterwards so that nothing else's
    randomness moves; a worker process has no other user of them, and saving and restoring
    three generator states would cost about as much as augmenting a small image."""
    if torch.utils.data.get_worker_info() is not None:
        _seed_all(seed)
        yield
        return
    cpu = torch.default_generator
    states = cpu.get_state(), random.getstate(), np.random.get_state()
    _seed_all(seed)
    try:
        yield
    finally:
        cpu.set_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


# The recipe fields train_transform reads (with the size, they identify the transform).
TRANSFORM_FIELDS = ("scale", "ratio", "hflip", "color_jitter", "auto_augment", "re_prob")


def train_transform(resolution: int, mean, std, recipe) -> Callable:
    """timm's training transform as the recipe says: RandomResizedCrop (``scale``, ``ratio``),
    flip (``hflip``), ``auto_augment`` (RandAugment ...), ``color_jitter``, then, as timm's
    loader with its prefetcher, a uint8 tensor that :func:`normalize` turns into floats on the
    device (a quarter of the bytes through the workers' shared memory and to the GPU, and no
    float work per image in the workers). With random erasing (``re_prob``), which works on
    normalised floats and is seeded per image here, the worker normalises and erases."""
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
        use_prefetcher=not recipe.re_prob,
    )


def eval_transform(resolution: int, mean, std) -> Callable:
    """Shorter side to ``resolution``, centre crop, a uint8 tensor (what ``load_split`` does;
    :func:`normalize` follows on the device)."""
    from timm.data import create_transform

    return create_transform(
        resolution,
        is_training=False,
        crop_pct=1.0,
        interpolation="bilinear",
        mean=tuple(mean),
        std=tuple(std),
        use_prefetcher=True,
    )


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A uint8 batch as torchvision's ``ToTensor`` + ``Normalize`` make it, with the same
    operations (so the same floats): ``(x / 255 - mean) / std``; a float batch (already
    normalised by its worker) as it is."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div_(255).sub_(mean).div_(std)


class ShardSamples(Dataset):
    """(image tensor, label) by ``(global index, epoch, copy)`` over a split's tar shards, read
    through a :class:`ShardCache`; each DataLoader worker keeps the last two shards it read in
    memory. The item names everything an image's augmentation is seeded from (with the seed),
    so the workers hold no per-epoch state.

    Args:
        store_uri: the artifact store (each worker opens its own client).
        shards: the split's shards as ``(key, images)`` in stored order.
        transform: PIL image -> CHW tensor (uint8, or normalised floats: see
            :func:`train_transform`).
        seed: the trial's seed (with the item, it seeds each image's augmentation).
        cache_dir: local shard cache folder (default ``APRFLOW_SHARD_CACHE`` or
            ``$XDG_CACHE_HOME/aprflow/shards``, by default ``~/.cache/aprflow/shards``).
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

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        """The image ``index`` as augmented for ``copy`` of it in ``epoch`` (repeated
        augmentation: each copy differently)."""
        index, epoch, copy = item
        number = int(np.searchsorted(self.starts, index, side="right")) - 1
        name, data, label = self._shard(number)[index - int(self.starts[number])]
        with _seeded(mix_seed(self.seed, epoch, name, copy)):
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


def train_batches(order: list, batch_size: int) -> list[list]:
    """Full batches of ``order`` (the last partial one dropped: a batch of one breaks batch
    norm), or one batch of everything when the split is smaller than a batch."""
    full = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return full or ([order] if len(order) > 1 else [])


def default_workers() -> int:
    """DataLoader workers: ``APRFLOW_DATA_WORKERS``, else 4 (a fixed default, although the
    order of batches does not depend on the number of workers)."""
    return int(os.environ.get(WORKERS_ENV, DEFAULT_WORKERS))


class EpochBatches:
    """A DataLoader's batch sampler whose batches are set before each pass: one DataLoader
    (and its persistent workers) serves every epoch, each with its own batches."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamBatches(TrainData):
    """Batches from :class:`ShardSamples` through a DataLoader with persistent workers.

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
        # Per use ("train", "eval"): the transform's settings, its DataLoader and batch list.
        self._loaders: dict[str, tuple[tuple, DataLoader, EpochBatches]] = {}
        self._on_device: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return sum(n for _, n in self.shards)

    def _loader(self, use: str, settings: tuple, transform: Callable) -> DataLoader:
        """The DataLoader for ``use`` with ``transform``, kept across epochs with persistent
        workers (as timm's loader): a new one per epoch would fork the trainer's process again,
        and the trainer would then pay copy-on-write faults on its own memory in that epoch."""
        if use in self._loaders and self._loaders[use][0] == settings:
            return self._loaders[use][1]
        samples = ShardSamples(self.store_uri, self.shards, transform, self.seed, self.cache_dir)
        batches = EpochBatches()
        loader = DataLoader(
            samples,
            batch_sampler=batches,
            num_workers=self.workers,
            # Unpinned, as timm's loader by default (timm/data/loader.py create_loader,
            # pin_memory=False; train.py --pin-mem off): a batch is a few hundred KB of uint8,
            # and a pinning thread in the trainer's process competes with the Python that
            # launches a small model's kernels. Pinned and persistent workers also stall the
            # interpreter's exit 5 s per worker
            # (https://github.com/pytorch/pytorch/issues/81794).
            pin_memory=False,
            persistent_workers=self.workers > 0,
            # The DataLoader draws its workers' base seeds from this generator, not the global
            # one: the trainer's global RNG (DropPath, Mixup) is the same whether the loader
            # is new (a resumed epoch) or persistent (workers seed each image themselves).
            generator=torch.Generator(),
        )
        self._loaders[use] = (settings, loader, batches)
        return loader

    def close(self) -> None:
        """Stops the persistent workers now (each exits on its queue's end marker) instead of
        at the process's exit, when a worker that misses its marker costs a 5-s join timeout
        (torch/utils/data/dataloader.py, ``_MultiProcessingDataLoaderIter._shutdown_workers``)
        and a long-lived chunk process would keep idle workers between trials."""
        for _, loader, _ in self._loaders.values():
            if loader._iterator is not None:  # the persistent workers' iterator
                loader._iterator._shutdown_workers()
                loader._iterator = None
        self._loaders.clear()

    def _loaded(self, loader: DataLoader, batches: list[list]) -> Iterator[Batch]:
        """The batches ``batches`` through ``loader`` on the device, timing the waits."""
        loader.batch_sampler.batches = batches
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
                normalize(images.to(self.device, non_blocking=True), *self._moments()),
                labels.to(self.device, non_blocking=True),
            )

    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalisation's mean and std on the device, shaped for a batch."""
        if self._on_device is None:
            self._on_device = tuple(
                torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(self.device)
                for v in (self.mean, self.std)
            )
        return self._on_device

    def train(
        self, recipe, generator: torch.Generator, epoch: int = 0, start: int = 0
    ) -> Iterator[Batch]:
        """The epoch's batches (order and augmentation from (seed, epoch) only; ``generator``
        is unused), at :func:`train_resolution`, with ``aug_repeats`` over the shard-local
        :func:`epoch_order` (a fully random order would read a shard per image); from batch
        ``start`` on (the skipped ones are neither read nor decoded)."""
        size = train_resolution(self.resolution, recipe.train_resolution_ratio)
        settings = (size, *(getattr(recipe, field) for field in TRANSFORM_FIELDS))
        loader = self._loader("train", settings, train_transform(size, self.mean, self.std, recipe))
        order = epoch_order([n for _, n in self.shards], self.seed, epoch)
        items = [(index, epoch, copy) for index, copy in repeat_order(order, recipe.aug_repeats)]
        yield from self._loaded(loader, train_batches(items, recipe.batch_size)[start:])

    def eval(self, batch_size: int) -> Iterator[Batch]:
        loader = self._loader("eval", (), eval_transform(self.resolution, self.mean, self.std))
        n = len(self)
        yield from self._loaded(
            loader,
            [
                [(j, 0, 0) for j in range(i, min(i + batch_size, n))]
                for i in range(0, n, batch_size)
            ],
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
        return InMemoryBatches(x, y, manifest["mean"], manifest["std"], device, seed)
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
