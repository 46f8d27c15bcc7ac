"""The built-in datasets: no download, so the demo and the tests run anywhere.

Two real sets ship inside installed packages and two are generated procedurally:

* ``digits``: scikit-learn's handwritten digits (1,797 images, 8x8, 10 classes).
* ``faces``: scikit-image's LFW subset (100 faces vs 100 non-face crops, 25x25, 2 classes).
* ``shapes``: generated shapes on noisy coloured backgrounds (6 classes, 32x32).
* ``shapes_v2``: ``shapes`` drawn again: the same generator and classes, new images. It is a
  test set of ``shapes``' distribution for ``shapes`` models (``test_sets: [shapes_v2]``), as
  ImageNet-V2 is for ImageNet models (Recht, Roelofs, Schmidt, Shankar 2019, "Do ImageNet
  Classifiers Generalize to ImageNet?", arXiv 1902.10811): the seed study's second test set.

:data:`BUILTIN_DATASETS` also says what each set is (origin, licence, images per class), so that
``aprflow data list`` and ``aprflow data describe`` show a built-in set without loading it.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from components.common.cli import did_you_mean
from components.data.descriptor import DatasetError


@dataclass(frozen=True)
class RawImages:
    """A dataset before splitting: images (N,H,W) or (N,H,W,3) in [0, 255], labels, names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


# scikit-learn's digits, as its ``load_digits`` reads them (scikit-learn/scikit-learn 1.9.1:
# sklearn/datasets/_base.py, load_digits, lines 1000-1006, through
# load_gzip_compressed_csv_data, lines 451-454): one CSV row per image, 64 intensities 0..16
# then the digit. Read here without importing scikit-learn, whose import (with SciPy's) is
# about a second of the dataset task; a test compares the two.
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def _digits(seed: int) -> RawImages:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the built-in digits are scikit-learn's: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]).joinpath(*DIGITS_FILE)
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    images = data[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)
    labels = data[:, -1].astype(int)
    return RawImages(images, labels, tuple(str(n) for n in range(10)))


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


# The random stream of shapes_v2 after its seed: numpy seeds [seed, 1], a state that no
# shapes seed below 2**32 gives (an int seed s is the sequence [s]).
SHAPES_V2_STREAM = 1


def _shapes(
    seed: int, per_class: int = 200, size: int = 32, stream: tuple[int, ...] = ()
) -> RawImages:
    rng = np.random.default_rng([seed, *stream])
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


def _shapes_v2(seed: int) -> RawImages:
    return _shapes(seed, stream=(SHAPES_V2_STREAM,))


@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in dataset: its loader and what ``aprflow data describe`` says about it.

    Attributes:
        load: returns the images for a seed (only the generated sets depend on it).
        description: what the images show, in one line.
        origin: where the images come from.
        licence: the images' licence, as far as it is known.
        image_side: the images' side in pixels before resizing.
        colour: ``grayscale`` or ``RGB``.
        class_counts: ``(class name, images)`` in label order; a test checks them against
            ``load``, so that listing a built-in set never loads it.
    """

    load: Callable[[int], RawImages]
    description: str
    origin: str
    licence: str
    image_side: int
    colour: str
    class_counts: tuple[tuple[str, int], ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.class_counts)

    @property
    def n_images(self) -> int:
        return sum(count for _, count in self.class_counts)


DIGIT_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)

BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        load=_digits,
        description="handwritten digits 0-9, 8x8 grayscale",
        origin="the test set of the UCI 'Optical Recognition of Handwritten Digits' data "
        "(Alpaydin and Kaynak, 1998) as shipped with scikit-learn (load_digits)",
        licence="CC BY 4.0 (UCI Machine Learning Repository)",
        image_side=8,
        colour="grayscale",
        class_counts=tuple((str(d), n) for d, n in enumerate(DIGIT_COUNTS)),
    ),
    "faces": BuiltinDataset(
        load=_faces,
        description="faces vs background crops, 25x25 grayscale",
        origin="100 faces and 100 background crops of Labeled Faces in the Wild (Huang et al., "
        "2007) as shipped with scikit-image (skimage.data.lfw_subset)",
        licence="none stated by LFW (news photographs collected for research); redistributed "
        "with scikit-image",
        image_side=25,
        colour="grayscale",
        class_counts=(("non-face", 100), ("face", 100)),
    ),
    "shapes": BuiltinDataset(
        load=_shapes,
        description="six shapes on noisy coloured backgrounds, 32x32 RGB",
        origin="generated by aprflow from the seed (components/data/builtin.py)",
        licence="generated by aprflow: no third-party images",
        image_side=32,
        colour="RGB",
        class_counts=tuple((kind, 200) for kind in SHAPES),
    ),
    "shapes_v2": BuiltinDataset(
        load=_shapes_v2,
        description="shapes drawn again: new images of the same six classes, 32x32 RGB",
        origin="generated by aprflow from the seed with shapes' generator on another random "
        "stream (components/data/builtin.py): a test set of the same distribution for shapes "
        "models",
        licence="generated by aprflow: no third-party images",
        image_side=32,
        colour="RGB",
        class_counts=tuple((kind, 200) for kind in SHAPES),
    ),
}


def unknown_builtin(name: str) -> DatasetError:
    """The error for a name that is no built-in dataset, with the nearest built-in names."""
    hint = did_you_mean(name, BUILTIN_DATASETS)
    return DatasetError(
        f"unknown built-in dataset {name!r}: {hint + ' ' if hint else ''}choose from "
        f"{', '.join(sorted(BUILTIN_DATASETS))}"
    )


def load_raw(name: str, seed: int = 0) -> RawImages:
    """Loads a built-in dataset by name.

    Raises:
        DatasetError: for an unknown name (the message lists the valid ones).
    """
    if name not in BUILTIN_DATASETS:
        raise unknown_builtin(name)
    return BUILTIN_DATASETS[name].load(seed)


def to_rgb_uint8(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resizes images to ``resolution``² (bilinear) and returns uint8 RGB, NHWC."""
    out = np.empty((len(images), resolution, resolution, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels).convert("RGB")
        out[i] = np.asarray(picture.resize((resolution, resolution), Image.Resampling.BILINEAR))
    return out
