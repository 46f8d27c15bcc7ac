"""Built-in datasets, materialised once as versioned shards in the artifact store.

Every built-in set needs no download: two real ones that ship inside installed packages and one
generated procedurally.

* ``digits``: scikit-learn's handwritten digits (1,797 images, 8x8, 10 classes).
* ``faces``: scikit-image's LFW subset (100 faces vs 100 non-face crops, 25x25, 2 classes).
* ``shapes``: generated shapes on noisy coloured backgrounds (6 classes, any size).

A materialised dataset lives under ``datasets/<name>-<descriptor hash>/`` as ``train.npz``,
``test.npz`` (``x``: uint8 NHWC RGB, ``y``: int64) and ``manifest.json``. The descriptor (name,
resolution, split, seed, format version) decides the key, so a second study reuses the shards;
the manifest's ``content_hash`` (of the shard bytes) is what trial identities are built from.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from components.common.errors import AprflowError
from components.common.hashing import content_hash
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store

DATA_FORMAT_VERSION = 1


class DatasetError(AprflowError):
    """An unknown, empty or malformed dataset."""


@dataclass(frozen=True)
class RawImages:
    """A dataset before splitting: images (N,H,W) or (N,H,W,3) in [0, 255], labels, names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DatasetRef:
    """What a trial needs to find a materialised dataset and to build its identity."""

    name: str
    manifest_key: str
    content_hash: str
    num_classes: int
    resolution: int
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


def _digits(seed: int) -> RawImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images * (255.0 / 16.0)  # sklearn stores 0..16 intensities
    return RawImages(images, bunch.target, tuple(str(n) for n in bunch.target_names))


def _faces(seed: int) -> RawImages:
    from skimage.data import lfw_subset

    images = lfw_subset().astype(np.float64)
    if images.max() <= 1.0:  # some scikit-image versions return floats in [0, 1]
        images *= 255.0
    labels = np.repeat([1, 0], 100)  # the first 100 are faces, the rest background crops
    return RawImages(images, labels, ("non-face", "face"))


SHAPES = ("circle", "square", "triangle", "cross", "ring", "bars")


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = rng.uniform(0.22, 0.4) * size
    cy, cx = rng.uniform(radius, size - radius, size=2)
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= radius**2
    if kind == "square":
        return (np.abs(dy) <= radius * 0.8) & (np.abs(dx) <= radius * 0.8)
    if kind == "triangle":
        return (dy <= radius * 0.7) & (dy >= 2 * np.abs(dx) - radius)
    if kind == "cross":
        arm = radius * 0.3
        inside = np.maximum(np.abs(dy), np.abs(dx)) <= radius
        return ((np.abs(dy) <= arm) | (np.abs(dx) <= arm)) & inside
    if kind == "ring":
        dist = np.sqrt(dy**2 + dx**2)
        return (dist <= radius) & (dist >= radius * 0.55)
    period = max(2.0, radius / 2)  # "bars": stripes inside a square
    return (np.abs(dy) <= radius) & (np.abs(dx) <= radius) & ((dy // period) % 2 == 0)


def _shapes(seed: int, per_class: int = 200, size: int = 32) -> RawImages:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, kind in enumerate(SHAPES):
        for _ in range(per_class):
            # Random colours, but always a visible contrast between shape and background.
            dark, light = rng.uniform(0, 100, size=3), rng.uniform(155, 255, size=3)
            background, foreground = (dark, light) if rng.random() < 0.5 else (light, dark)
            mask = _shape_mask(kind, size, rng)[..., None]
            image = np.where(mask, foreground, background) + rng.normal(0, 15, (size, size, 3))
            images.append(np.clip(image, 0, 255))
            labels.append(label)
    return RawImages(np.stack(images), np.asarray(labels), SHAPES)


BUILTIN_DATASETS: dict[str, Callable[[int], RawImages]] = {
    "digits": _digits,
    "faces": _faces,
    "shapes": _shapes,
}


def load_raw(name: str, seed: int = 0) -> RawImages:
    """Loads a built-in dataset by name.

    Raises:
        DatasetError: for an unknown name (the message lists the valid ones).
    """
    if name not in BUILTIN_DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}: choose from {', '.join(sorted(BUILTIN_DATASETS))}"
        )
    return BUILTIN_DATASETS[name](seed)


def to_rgb_uint8(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resizes images to ``resolution``² (bilinear) and returns uint8 RGB, NHWC."""
    out = np.empty((len(images), resolution, resolution, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels).convert("RGB")
        out[i] = np.asarray(picture.resize((resolution, resolution), Image.Resampling.BILINEAR))
    return out


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (train, test) indices with every class in both at ``test_fraction``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(len(members) * test_fraction))
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(train), np.sort(test)


def _npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def materialize(
    store: ArtifactStore,
    name: str,
    resolution: int,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> DatasetRef:
    """Writes the dataset's shards to ``store`` unless they are there already.

    Args:
        store: the artifact store.
        name: a built-in dataset name.
        resolution: image side in pixels after resizing.
        seed: seed of the generator (``shapes``) and of the train/test split.
        test_fraction: share of each class held out for testing.

    Returns:
        The reference trials use to find and identify the data.
    """
    if resolution < 8:
        raise DatasetError(f"resolution {resolution} is too small: use at least 8 pixels")
    descriptor = {
        "name": name,
        "resolution": resolution,
        "seed": seed,
        "test_fraction": test_fraction,
        "format": DATA_FORMAT_VERSION,
    }
    prefix = f"datasets/{name}-{content_hash(descriptor)}"
    manifest_key = f"{prefix}/manifest.json"
    if store.exists(manifest_key):
        return DatasetRef(**store.get_json(manifest_key)["ref"])
    raw = load_raw(name, seed)
    if len(raw.images) == 0:
        raise DatasetError(f"dataset {name!r} has no images")
    images = to_rgb_uint8(raw.images, resolution)
    train, test = stratified_split(raw.labels, test_fraction, seed)
    shards = {
        "train": _npz_bytes(images[train], raw.labels[train].astype(np.int64)),
        "test": _npz_bytes(images[test], raw.labels[test].astype(np.int64)),
    }
    digest = hashlib.sha256()
    for split in ("train", "test"):
        digest.update(shards[split])
        store.put_bytes(f"{prefix}/{split}.npz", shards[split])
    ref = DatasetRef(
        name=name,
        manifest_key=manifest_key,
        content_hash=digest.hexdigest()[:16],
        num_classes=len(raw.class_names),
        resolution=resolution,
        n_train=len(train),
        n_test=len(test),
    )
    train_pixels = images[train].reshape(-1, 3) / 255.0
    manifest = {
        "ref": ref.to_dict(),
        "descriptor": descriptor,
        "class_names": list(raw.class_names),
        "mean": train_pixels.mean(axis=0).round(4).tolist(),
        "std": train_pixels.std(axis=0).round(4).tolist(),
    }
    # The manifest goes last: its presence means the shards are complete.
    store.put_json(manifest_key, manifest)
    return ref


def load_split(store: ArtifactStore, ref: DatasetRef, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(x, y)`` of a materialised split: uint8 NHWC images and int64 labels."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = ref.manifest_key.rsplit("/", 1)[0]
    with np.load(io.BytesIO(store.get_bytes(f"{prefix}/{split}.npz"))) as shard:
        return shard["x"], shard["y"]


def load_manifest(store: ArtifactStore, ref: DatasetRef) -> dict:
    """Returns the manifest (class names, channel mean and std, descriptor)."""
    return store.get_json(ref.manifest_key)


def prepare_all(
    names: list[str], resolution: int, seed: int, store_uri: str | None = None
) -> list[DatasetRef]:
    """Materialises every dataset in ``names`` into the store at ``store_uri``.

    Unknown names are all rejected before anything is written.
    """
    unknown = sorted(set(names) - set(BUILTIN_DATASETS))
    if unknown:
        raise DatasetError(
            f"unknown dataset(s) {', '.join(unknown)}: choose from "
            f"{', '.join(sorted(BUILTIN_DATASETS))}"
        )
    if len(set(names)) != len(names):
        raise DatasetError(f"dataset list {names} names a dataset twice")
    store = open_store(store_uri)
    store.check()
    refs = []
    for name in names:
        ref = materialize(store, name, resolution, seed=seed)
        report(
            "data",
            f"{name}: {ref.n_train} train / {ref.n_test} test images, "
            f"{ref.num_classes} classes, {resolution}px ({ref.content_hash})",
        )
        refs.append(ref)
    return refs
