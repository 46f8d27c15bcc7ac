"""Reading a descriptor's source: a listing of labelled images, local or under ``s3://``.

Every reader returns a :class:`Scan`: the images as lazily loaded :class:`SourceItem` s, the
files skipped while listing (with reasons), a fingerprint of the source's listing (part of the
dataset's content address) and, where the source knows them, its class folders. Directories
and ``s3://`` prefixes are read through the artifact store's back ends
(:func:`components.common.storage.open_store`), so local and S3 sources share one code path.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from components.common.limits import MAX_BRACE_EXPANSION
from components.common.storage import ArtifactStore, LocalStore, open_store
from components.data.descriptor import SPLITS, DatasetDescriptor, DatasetError
from components.data.shards import IMAGE_EXTENSIONS, image_part, iter_samples

# Folder names read as given splits; ImageNet's and torchvision's "val" is the evaluation set
# when a source has no "test" (recorded in the manifest as given_splits).
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


@dataclass(frozen=True)
class SourceItem:
    """One labelled image of a source, loaded on demand (bytes, or a decoded PIL image)."""

    name: str
    label: str
    split: str | None
    load: Callable[[], bytes | Image.Image]


@dataclass
class Scan:
    """A source's listing."""

    kind: str
    items: Iterable[SourceItem]
    fingerprint: Any
    skipped: list[dict[str, str]] = field(default_factory=list)
    class_folders: tuple[str, ...] | None = None
    class_order: tuple[str, ...] | None = None


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _tree(uri: str) -> ArtifactStore:
    """The store back end that reads the directory or S3 prefix ``uri``."""
    store = open_store(uri)
    if not is_s3(uri):
        if not Path(uri).is_dir():
            raise DatasetError(f"source directory {uri} does not exist")
        return store
    store.check()  # a missing bucket or forbidden prefix fails here, naming the prefix
    return store


def _listing_fingerprint(store: ArtifactStore, keys: list[str]) -> list:
    if isinstance(store, LocalStore):
        stats = [(store.root / key).stat() for key in keys]
        return [[k, s.st_size, s.st_mtime_ns] for k, s in zip(keys, stats, strict=True)]
    return keys  # S3: object names (see README: re-upload under new names to rebuild)


def _is_image_name(key: str) -> bool:
    return Path(key).suffix.lower() in IMAGE_EXTENSIONS


def scan_image_folder(uri: str) -> Scan:
    """An ImageFolder tree: ``<class>/<file>`` or ``<split>/<class>/<file>``."""
    store = _tree(uri)
    keys = store.list("")
    if not keys:
        raise DatasetError(f"no files under {uri}: expected <class>/<image> or train/<class>/...")
    top = {key.split("/", 1)[0] for key in keys if "/" in key}
    if isinstance(store, LocalStore):
        top |= {p.name for p in store.root.iterdir() if p.is_dir()}
    given = bool(top) and top <= set(SPLIT_FOLDERS)
    depth = 2 if given else 1
    items, skipped, folders = [], [], set()
    if isinstance(store, LocalStore):  # empty class folders exist only on a file system
        for split_dir in [store.root / t for t in top] if given else [store.root]:
            folders |= {p.name for p in split_dir.iterdir() if p.is_dir()}
    for key in keys:
        parts = key.split("/")
        if len(parts) <= depth:
            skipped.append({"file": key, "reason": "not in a class folder: top-level file"})
            continue
        label = parts[depth - 1]
        folders.add(label)
        if not _is_image_name(key):
            suffix = Path(key).suffix or "(none)"
            skipped.append({"file": key, "reason": f"not an image file: extension {suffix}"})
            continue
        split = SPLIT_FOLDERS[parts[0]] if given else None
        items.append(SourceItem(key, label, split, _reader(store, key)))
    return Scan(
        "imagefolder",
        items,
        _listing_fingerprint(store, keys),
        skipped,
        class_folders=tuple(sorted(folders)),
    )


def _reader(store: ArtifactStore, key: str) -> Callable[[], bytes]:
    return lambda: store.get_bytes(key)


_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")


def _brace_size(body: str) -> int:
    """How many choices one brace group's body stands for, counted without making them."""
    numeric = _RANGE.fullmatch(body)
    if numeric:
        return max(0, int(numeric.group(2)) - int(numeric.group(1)) + 1)
    return body.count(",") + 1


def _brace_choices(body: str) -> list[str]:
    """One brace group's choices: a (zero-padded) numeric range or comma-separated names."""
    numeric = _RANGE.fullmatch(body)
    if not numeric:
        return body.split(",")
    low, high = numeric.groups()
    width = len(low) if low.startswith("0") else 0
    return [str(i).zfill(width) for i in range(int(low), int(high) + 1)]


def expand_braces(pattern: str) -> list[str]:
    """Expands ``{000..012}`` (zero-padded ranges) and ``{a,b}`` alternatives, like webdataset.

    The names are counted before any is made, so that a pattern naming billions of shards
    fails at once instead of filling memory.

    >>> expand_braces("s-{00..02}.tar")
    ['s-00.tar', 's-01.tar', 's-02.tar']

    Raises:
        DatasetError: for nested braces or more than ``MAX_BRACE_EXPANSION`` names.
    """
    parts = _BRACES.split(pattern)  # text, body, text, body, ..., text
    texts, bodies = parts[0::2], parts[1::2]
    if _BRACES.search("".join(texts)):
        raise DatasetError(f"{pattern[:200]}: nested braces are not supported")
    count = 1
    for body in bodies:
        size = _brace_size(body)
        count *= size
        # Each group on its own too: an empty range elsewhere would make the product 0.
        if size > MAX_BRACE_EXPANSION or count > MAX_BRACE_EXPANSION:
            raise DatasetError(
                f"{pattern[:200]} names more than {MAX_BRACE_EXPANSION:,} shards: pack the "
                "data into fewer, larger shards or give a narrower range"
            )
    groups = [_brace_choices(body) for body in bodies]
    return [
        "".join(text + choice for text, choice in zip(texts, chosen, strict=False)) + texts[-1]
        for chosen in itertools.product(*groups)
    ]


def _split_uri(uri: str) -> tuple[str, str]:
    """``(folder URI, file name)`` of a local path or S3 URI."""
    folder, _, name = uri.rstrip("/").rpartition("/")
    return (folder or "."), name


def _read_uri(uri: str, stores: dict[str, ArtifactStore]) -> bytes:
    """The bytes of a local file or ``s3://bucket/key`` (S3 stores opened once per bucket)."""
    if is_s3(uri):
        parsed = urlparse(uri)
        bucket = f"s3://{parsed.netloc}"
        if bucket not in stores:
            stores[bucket] = open_store(bucket)
        return stores[bucket].get_bytes(parsed.path.lstrip("/"))
    return Path(uri).read_bytes()


def scan_webdataset(pattern: str, classes: tuple[str, ...]) -> Scan:
    """WebDataset shards: every sample's image member and its ``.cls`` (an index, or a name)."""
    shards = expand_braces(pattern)
    stores: dict[str, ArtifactStore] = {}
    for shard in shards:
        if not is_s3(shard) and not Path(shard).is_file():
            raise DatasetError(f"shard {shard} of {pattern} does not exist")
    fingerprint = [
        [s, Path(s).stat().st_size, Path(s).stat().st_mtime_ns] if not is_s3(s) else s
        for s in shards
    ]
    skipped: list[dict[str, str]] = []

    def items() -> Iterator[SourceItem]:
        for shard in shards:
            try:
                samples = list(iter_samples(_read_uri(shard, stores)))
            except (tarfile.TarError, OSError) as e:
                skipped.append({"file": shard, "reason": f"unreadable tar shard: {e}"})
                continue
            for key, parts in samples:
                name = f"{_split_uri(shard)[1]}:{key}"
                found = image_part(parts)
                if found is None:
                    skipped.append({"file": name, "reason": "no image: sample has no image member"})
                    continue
                if "cls" not in parts:
                    skipped.append({"file": name, "reason": "no label: sample has no .cls member"})
                    continue
                text = parts["cls"].decode(errors="replace").strip()
                label = text
                if text.isdigit() and classes:
                    if int(text) >= len(classes):
                        skipped.append(
                            {"file": name, "reason": f"label outside the class list: {text}"}
                        )
                        continue
                    label = classes[int(text)]
                data = found[1]
                yield SourceItem(name, label, None, lambda data=data: data)

    return Scan("webdataset", items(), fingerprint, skipped)


PATH_COLUMNS = ("path", "file", "uri", "image")
LABEL_COLUMNS = ("label", "class")


def scan_manifest(uri: str) -> Scan:
    """A CSV or Parquet table of (path-or-URI, label[, split])."""
    import pandas as pd

    stores: dict[str, ArtifactStore] = {}
    try:
        raw = _read_uri(uri, stores)
    except OSError as e:
        raise DatasetError(f"cannot read manifest {uri}: {e.strerror or e}") from None
    try:
        if uri.endswith(".parquet"):
            table = pd.read_parquet(io.BytesIO(raw))
        else:
            table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a malformed file
        raise DatasetError(f"manifest {uri} is not a readable table: {e}") from None
    columns = {c.lower(): c for c in table.columns}
    path_col = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
    label_col = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if path_col is None or label_col is None:
        raise DatasetError(
            f"manifest {uri} needs a path column ({'/'.join(PATH_COLUMNS)}) and a label column "
            f"({'/'.join(LABEL_COLUMNS)}); it has {', '.join(map(str, table.columns))}"
        )
    split_col = columns.get("split")
    folder = _split_uri(uri)[0]
    items, skipped = [], []
    for record in table.to_dict("records"):
        path = str(record[path_col])
        target = path if is_s3(path) or path.startswith("/") else f"{folder}/{path}"
        split = None
        if split_col is not None and str(record[split_col]):
            split = SPLIT_FOLDERS.get(str(record[split_col]).lower())
            if split is None:
                skipped.append(
                    {
                        "file": path,
                        "reason": f"unknown split: {record[split_col]!r} is not train/val/test",
                    }
                )
                continue
        if not _is_image_name(path):
            skipped.append({"file": path, "reason": "not an image file: no image extension"})
            continue
        items.append(
            SourceItem(
                path,
                str(record[label_col]),
                split,
                lambda target=target: _read_uri(target, stores),
            )
        )
    return Scan("manifest", items, hashlib.sha256(raw).hexdigest(), skipped)


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not inspect.isclass(cls):
        raise DatasetError(f"torchvision.datasets has no dataset class {name!r} (e.g. CIFAR10)")
    return cls


def _where_files_go(cls, root: str) -> str:
    folder = getattr(cls, "base_folder", None)
    inside = f"{root}/{folder}/" if isinstance(folder, str) else f"{root}/"
    return (
        f"put the files of torchvision.datasets.{cls.__name__} (as its download would) under "
        f"{inside} (aprflow never downloads: download=False)"
    )


def scan_torchvision(source: str) -> Scan:
    """``torchvision:CLASS:ROOT``: the class's train/test (or train/val) parts from ROOT."""
    _, _, rest = source.partition(":")
    name, sep, root = rest.partition(":")
    if not sep or not root:
        raise DatasetError(
            f"source {source!r}: use torchvision:CLASS:ROOT, e.g. torchvision:CIFAR10:/data/cifar"
        )
    if is_s3(root):
        raise DatasetError(
            f"torchvision datasets read local files: copy {root} to a directory first, or "
            "convert it to an ImageFolder / WebDataset source"
        )
    cls = _torchvision_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    if "train" in parameters:
        parts = {"train": {"train": True}, "test": {"train": False}}
    elif "split" in parameters:
        parts = {"train": {"split": "train"}, "test": {"split": "test"}}
    else:
        parts = {None: {}}
    datasets = {}
    for split, kwargs in parts.items():
        try:
            datasets[split] = cls(root=root, download=False, **kwargs)
        except ValueError:
            # Datasets whose evaluation split is called "val" (ImageNet).
            if kwargs.get("split") != "test":
                raise
            datasets[split] = cls(root=root, download=False, split="val")
        except (RuntimeError, FileNotFoundError, OSError) as e:
            raise DatasetError(
                f"torchvision {name} files are missing under {root} ({e}): "
                + _where_files_go(cls, root)
            ) from None
    first = next(iter(datasets.values()))
    classes = getattr(first, "classes", None)
    class_order = tuple(str(c) for c in classes) if classes else None
    listing = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
    sizes = [[p, (Path(root) / p).stat().st_size] for p in listing]

    def items() -> Iterator[SourceItem]:
        for split, dataset in datasets.items():
            for i in range(len(dataset)):
                image, target = dataset[i]
                label = class_order[int(target)] if class_order else str(int(target))
                if not isinstance(image, Image.Image):
                    image = Image.fromarray(np.asarray(image))
                yield SourceItem(f"{split or 'all'}[{i}]", label, split, lambda im=image: im)

    return Scan("torchvision", items(), [name, sizes], class_order=class_order)


def scan_builtin(name: str, resolution: int | None, seed: int) -> Scan:
    """A built-in set, resized (bilinear) to ``resolution`` as the trainer always used it, or
    kept at its own size when ``resolution`` is None.

    Raises:
        DatasetError: for a name that is no built-in set (with the nearest names).
    """
    from components.data.builtin import BUILTIN_DATASETS, load_raw, to_rgb_uint8, unknown_builtin

    if name not in BUILTIN_DATASETS:
        raise unknown_builtin(name)
    side = resolution or BUILTIN_DATASETS[name].image_side
    listing = Scan("builtin", (), [name, seed], class_order=BUILTIN_DATASETS[name].class_names)

    def items() -> Iterator[SourceItem]:
        # Loaded only when read: a build that exists already costs no sklearn import.
        raw = load_raw(name, seed)
        images = to_rgb_uint8(raw.images, side)
        for i, (image, label) in enumerate(zip(images, raw.labels, strict=True)):
            label_name = raw.class_names[int(label)]
            yield SourceItem(f"{name}[{i}]", label_name, None, lambda im=image: Image.fromarray(im))

    listing.items = items()
    return listing


def scan(descriptor: DatasetDescriptor) -> Scan:
    """Lists ``descriptor.source``.

    Raises:
        DatasetError: for a source that does not exist or cannot be read.
        StoreError: for an S3 prefix that is missing or forbidden (names the prefix).
    """
    source = descriptor.source
    if source.startswith("builtin:"):
        return scan_builtin(
            source.removeprefix("builtin:"), descriptor.image.resolution, descriptor.split.seed
        )
    if source.startswith("torchvision:"):
        return scan_torchvision(source)
    lowered = source.lower()
    if lowered.endswith(".tar") or lowered.endswith(".tar}"):
        return scan_webdataset(source, descriptor.classes)
    if lowered.endswith((".csv", ".parquet")):
        return scan_manifest(source)
    return scan_image_folder(source)


__all__ = ["SPLITS", "Scan", "SourceItem", "expand_braces", "scan"]
