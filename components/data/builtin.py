"""The built-in datasets: no download, so the demo and the tests run anywhere.

Two real sets ship inside installed packages and one is generated procedurally:

* ``digits``: scikit-learn's handwritten digits (1,797 images, 8x8, 10 classes).
* ``faces``: scikit-image's LFW subset (100 faces vs 100 non-face crops, 25x25, 2 classes).
* ``shapes``: generated shapes on noisy coloured backgrounds (6 classes, any size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from components.data.descriptor import DatasetError


@dataclass(frozen=True)
class RawImages:
    """A dataset before splitting: images (N,H,W) or (N,H,W,3) in [0, 255], labels, names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


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
