"""Dataset descriptors: what a dataset is made of, as small validated frozen dataclasses.

A descriptor names a dataset, where its images come from (``source``), how it is split, which
classes it keeps and how images are stored. Its canonical JSON (plus the source's file listing)
is the content address of the materialised shards, so the same inputs are never built twice.

Sources (``source`` URIs):
    * ``builtin:NAME``: a built-in set (digits, faces, shapes), no download.
    * a directory or ``s3://bucket/prefix``: an ImageFolder tree ``<class>/<image>``, or with
      ``train/``, ``val/``, ``test/`` sub-trees used as given splits.
    * a shard pattern ending in ``.tar`` (``dir/shard-{000000..000009}.tar``, local or S3):
      WebDataset shards holding ``<key>.jpg|png`` + ``<key>.cls``.
    * a ``.csv`` or ``.parquet`` manifest with columns ``path`` (relative to the manifest's
      folder, or an absolute path / ``s3://`` URI), ``label`` and optionally ``split``.
    * ``torchvision:CLASS:ROOT``: a ``torchvision.datasets`` class read from files under ROOT
      (``download=False``).
    * ``derived:PARENT``: a subset of a dataset built before (see :mod:`components.data.subsets`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from components.common.errors import AprflowError
from components.common.limits import MAX_RESOLUTION, MAX_SEED, MIN_RESOLUTION

# Where a trainer caches the shards it streams, and how large that cache may grow; here, not in
# the loader, so that the pipeline compiler can name them without importing torch.
CACHE_DIR_ENV = "APRFLOW_SHARD_CACHE"
CACHE_LIMIT_ENV = "APRFLOW_SHARD_CACHE_GB"

# Bump when a change to the materialisation changes the bytes written for the same inputs.
DATA_FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
SPLIT_MODES = ("auto", "given", "stratified")
ENCODINGS = ("png", "jpeg")
INPUT_MODES = ("memory", "stream")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class DatasetError(AprflowError):
    """An unknown, empty or malformed dataset, or a rule it cannot satisfy."""


def mix_seed(*values: object) -> int:
    """A 63-bit seed from several values (stable across processes and runs, unlike ``hash``)."""
    digest = hashlib.sha256(",".join(map(str, values)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_name(name: str) -> str:
    """Returns ``name`` if it is a valid dataset name, else raises :class:`DatasetError`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use 1-63 lower-case letters, digits, '_', '.' or "
            "'-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class SplitRule:
    """How images are assigned to train/val/test.

    Attributes:
        mode: ``auto`` (the source's own splits when it has them, else stratified), ``given``
            (the source must have splits) or ``stratified`` (ignore the source's splits).
        val_fraction: share of each class held out for validation (from train when the source
            gives train and test only). 0 = no validation split.
        test_fraction: share of each class held out for testing when splitting.
        seed: seed of the stratified split and of the train shard order.
    """

    mode: str = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise DatasetError(f"split mode {self.mode!r}: choose from {', '.join(SPLIT_MODES)}")
        if not 0 <= self.val_fraction < 1 or not 0 < self.test_fraction < 1:
            raise DatasetError(
                f"split fractions val={self.val_fraction}, test={self.test_fraction}: "
                "use 0 <= val < 1 and 0 < test < 1"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise DatasetError(f"split seed {self.seed} must be in [0, {MAX_SEED}]")
        if self.val_fraction + self.test_fraction >= 1:
            raise DatasetError(
                f"split fractions val={self.val_fraction} + test={self.test_fraction} leave no "
                "training images: keep their sum below 1"
            )

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> SplitRule:
        """Parses ``auto``, ``given``, ``stratified`` or ``[MODE,]val=F,test=F`` (CLI form)."""
        values: dict[str, Any] = {"seed": seed}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            if not sep:
                values["mode"] = key
                continue
            if key not in ("val", "test"):
                raise DatasetError(f"--split {text!r}: unknown part {key!r} (use val=F,test=F)")
            try:
                values[f"{key}_fraction"] = float(value)
            except ValueError:
                raise DatasetError(f"--split {text!r}: {key}={value!r} is not a number") from None
        if "mode" not in values and ("val_fraction" in values or "test_fraction" in values):
            values["mode"] = "stratified"
        return cls(**values)


@dataclass(frozen=True)
class ImagePolicy:
    """How images are stored in the shards.

    Attributes:
        resolution: when set, every image is resized (shorter side, then centre crop) to
            ``resolution`` x ``resolution`` at build time; ``None`` keeps the source's size.
        encoding: ``png`` (lossless) or ``jpeg``, for images that are re-encoded (resized, or
            not already PNG/JPEG). Unresized PNG/JPEG files are stored byte for byte.
        jpeg_quality: JPEG quality when ``encoding`` is ``jpeg``.
    """

    resolution: int | None = None
    encoding: str = "png"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.resolution is not None and not (
            isinstance(self.resolution, int) and MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION
        ):
            raise DatasetError(
                f"resolution {self.resolution!r} is out of range: use {MIN_RESOLUTION}-"
                f"{MAX_RESOLUTION} pixels"
            )
        if self.encoding not in ENCODINGS:
            raise DatasetError(
                f"image encoding {self.encoding!r}: choose from {', '.join(ENCODINGS)}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise DatasetError(f"jpeg_quality {self.jpeg_quality} must be in 1..100")


@dataclass(frozen=True)
class SubsetRule:
    """A derived dataset: which classes and images of the parent it keeps, and their labels.

    Steps apply in order: class subset, per-class budget, coarse labels.

    Attributes:
        classes: keep this many classes drawn at random (0 = all).
        nested: draw ``classes`` as a prefix of one seeded class permutation, so that the
            subsets of one seed and draw nest (2 within 5 within 10 ...); else each size is an
            independent draw.
        draw: index of the draw (several draws of the same size differ by this).
        per_class: keep at most this many training images per class (0 = all); val and test
            stay whole so that evaluations compare.
        coarse: child class -> parent class map; labels become the parents.
        seed: seed of the draws.
        held_out: keep the classes the draw of ``classes`` leaves out instead (the held-out
            classes of an induction test: features trained on the drawn classes, evaluated on
            the others); left out of :meth:`to_dict` when off, so that the content address of
            every other subset stays what it was.
    """

    classes: int = 0
    nested: bool = True
    draw: int = 0
    per_class: int = 0
    coarse: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    held_out: bool = False

    def __post_init__(self) -> None:
        if self.held_out and not self.classes:
            raise DatasetError("held_out keeps the classes a draw leaves out: it needs classes")
        if self.classes < 0 or self.per_class < 0 or self.draw < 0:
            raise DatasetError("subset classes, per_class and draw must be 0 or more")
        if self.classes == 1:
            raise DatasetError("a class subset needs at least 2 classes")
        if not (self.classes or self.per_class or self.coarse):
            raise DatasetError(
                "a subset needs a rule: --n-classes K, --per-class N or --coarse MAP"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self) | {"coarse": [list(pair) for pair in self.coarse]}
        if not self.held_out:
            del data["held_out"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubsetRule:
        return cls(**(data | {"coarse": tuple(tuple(p) for p in data.get("coarse", ()))}))


@dataclass(frozen=True)
class DatasetDescriptor:
    """Everything that decides a materialised dataset's content.

    Attributes:
        name: the dataset's name in the store (``aprflow data list``) and in studies.
        source: where the images come from (see the module docstring).
        split: how images are assigned to splits.
        classes: the class list to keep (in label order); empty = every class found.
        image: how images are stored.
        subset: for ``derived:PARENT`` sources, the rule applied to the parent.
    """

    name: str
    source: str
    split: SplitRule = field(default_factory=SplitRule)
    classes: tuple[str, ...] = ()
    image: ImagePolicy = field(default_factory=ImagePolicy)
    subset: SubsetRule | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.source:
            raise DatasetError(f"dataset {self.name!r} has no source")
        if len(set(self.classes)) != len(self.classes):
            raise DatasetError(f"dataset {self.name!r}: the class list names a class twice")
        if self.source.startswith("derived:") != (self.subset is not None):
            raise DatasetError("a subset rule goes with a 'derived:PARENT' source, and only there")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "split": asdict(self.split),
            "classes": list(self.classes),
            "image": asdict(self.image),
            "subset": self.subset.to_dict() if self.subset else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetDescriptor:
        return cls(
            name=data["name"],
            source=data["source"],
            split=SplitRule(**data.get("split", {})),
            classes=tuple(data.get("classes", ())),
            image=ImagePolicy(**data.get("image", {})),
            subset=SubsetRule.from_dict(data["subset"]) if data.get("subset") else None,
        )


@dataclass(frozen=True)
class DatasetRef:
    """What a trial needs to find a materialised dataset and to build its identity.

    Attributes:
        name: dataset name.
        manifest_key: store key of the manifest (the shards sit beside it).
        content_hash: hash of the shard bytes; part of every trial id.
        num_classes: number of classes.
        resolution: training image side in pixels (images are resized to it when stored at
            another size).
        n_train, n_test, n_val: images per split.
        input: how the trainer feeds it: ``memory`` (decoded once, batches on the device) or
            ``stream`` (shards streamed by DataLoader workers, augmented per image).
        recipe: this dataset's training recipe in a study ('' = the study's recipe).
        epochs: this dataset's epochs in a study (0 = the study's).
    """

    name: str
    manifest_key: str
    content_hash: str
    num_classes: int
    resolution: int
    n_train: int
    n_test: int
    n_val: int = 0
    input: str = "memory"
    recipe: str = ""
    epochs: int = 0

    def __post_init__(self) -> None:
        if self.input not in INPUT_MODES:
            raise DatasetError(f"input {self.input!r}: choose from {', '.join(INPUT_MODES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def prefix(self) -> str:
        """The store folder that holds the manifest and shards."""
        return self.manifest_key.rsplit("/", 1)[0]
