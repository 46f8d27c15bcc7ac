"""Materialisation: a descriptor becomes train/val/test tar shards, a manifest and a summary.

Layout in the artifact store::

    datasets/<name>-<key>/train-000000.tar ...   WebDataset-style shards (components.data.shards)
    datasets/<name>-<key>/val-000000.tar ...
    datasets/<name>-<key>/test-000000.tar ...
    datasets/<name>-<key>/summary.png, summary.html   class histogram + sample grid
    datasets/<name>-<key>/manifest.json          written last: its presence means complete
    datasets/_names/<name>.json                  the name -> manifest pointer of a named build
    datasets/_names/<name>/lease-NNNNNN.json     the leases under which the name was bound

``<key>`` is the hash of the descriptor, the source's file listing and the format version:
the same inputs give the same key and are not rebuilt, also across studies. Everything is read,
validated and split before the first byte is written, so bad input fails with nothing in the
store; a build interrupted while uploading leaves shards without a manifest, which every reader
treats as absent (and the next build overwrites). A name is bound once: to bind it to other
content takes ``replace`` (see the names section below).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.common.hashing import content_hash
from components.common.limits import MAX_IMAGE_PIXELS
from components.common.progress import report
from components.common.storage import ArtifactStore, Lease, StoreError
from components.common.uris import redact_uri
from components.common.validation import short_repr
from components.data.builtin import BUILTIN_DATASETS
from components.data.descriptor import (
    DATA_FORMAT_VERSION,
    SPLITS,
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    check_name,
)
from components.data.shards import (
    TOO_MANY_PIXELS,
    Record,
    check_pixels,
    decode_shard_arrays,
    encode,
    group_into_shards,
    open_image,
    resize_center,
    shard_bytes,
)
from components.data.sources import Scan, SourceItem

NAMES_PREFIX = "datasets/_names/"
# Characters that no file or class name may hold: control characters (a newline or NUL breaks
# one-line listings and messages, and store keys refuse them), the backslash (store keys refuse
# it: it is no key separator on every back end) and the Unicode bidirectional controls
# U+202A-U+202E and U+2066-U+2069, which make a name display as another one ("Trojan Source",
# CVE-2021-42574).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
Progress = Callable[[str], None]


def _progress(message: str) -> None:
    report("data", message)


@dataclass
class _Image:
    """A validated image, its stored bytes spooled to a local temporary file."""

    index: int
    name: str
    label: str
    split: str | None
    extension: str
    offset: int
    length: int
    width: int
    height: int
    stored_side: int
    channel_sum: np.ndarray
    channel_sq: np.ndarray
    pixels: int


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns sorted (train, val, test) indices, each class split at the given fractions.

    Every class gets at least one test image, and one validation image when ``val_fraction``
    is positive; the rest is training data.
    """
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(len(members) * test_fraction))
        n_val = max(1, round(len(members) * val_fraction)) if val_fraction > 0 else 0
        test.extend(members[:n_test])
        val.extend(members[n_test : n_test + n_val])
        train.extend(members[n_test + n_val :])
    return np.sort(train).astype(int), np.sort(val).astype(int), np.sort(test).astype(int)


def _ordered_map(fn, items: Iterable, workers: int = 8, window: int = 64) -> Iterator:
    """``map(fn, items)`` on a thread pool, in order, with at most ``window`` items in flight
    (reading S3 objects one by one is latency-bound; decoding releases the GIL)."""
    with ThreadPoolExecutor(workers) as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def _prepare(item: SourceItem, descriptor: DatasetDescriptor) -> tuple[SourceItem, Any]:
    """Loads, decodes and encodes one item: ``(item, (extension, bytes, sha, rgb, size))`` or
    ``(item, reason)`` when it must be skipped."""
    policy = descriptor.image
    bomb = f"too many pixels: more than {MAX_IMAGE_PIXELS:,}, not decoded"
    try:
        loaded = item.load()
    except (OSError, StoreError) as e:
        return item, f"cannot be read: {e}"
    except TOO_MANY_PIXELS:  # a reader that decodes (torchvision's) met one
        return item, bomb
    original = loaded if isinstance(loaded, bytes) else None
    try:
        if original is not None:
            with open_image(original) as opened:
                opened.load()
                image_format = opened.format
                rgb = opened.convert("RGB")
        else:
            check_pixels(loaded.size)
            image_format, rgb = None, loaded.convert("RGB")
    except TOO_MANY_PIXELS:
        return item, bomb
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a corrupt file
        detail = str(e).split(" <", 1)[0]  # PIL's messages end in an object's address
        return item, f"corrupt or unreadable image: {type(e).__name__}: {detail}"
    size = rgb.size
    if min(size) < 1:
        return item, "image has no pixels"
    if policy.resolution is not None:
        rgb = resize_center(rgb, policy.resolution)
        extension, data = encode(rgb, policy.encoding, policy.jpeg_quality)
    elif original is not None and image_format in ("PNG", "JPEG"):
        extension, data = ("png" if image_format == "PNG" else "jpg"), original
    else:
        extension, data = encode(rgb, policy.encoding, policy.jpeg_quality)
    sha = hashlib.sha256(original if original is not None else data).hexdigest()
    return item, (extension, data, sha, rgb, size)


def _class_sort_key(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _unusable_characters(text: str, also: str = "") -> str:
    """The control characters and backslashes of ``text`` (a store key refuses them), and any
    character of ``also``, quoted for a message; '' when it holds none."""
    found = dict.fromkeys(c for c in text if ord(c) < 32 or c in "\\\x7f" + also)
    return ", ".join(repr(c) for c in found)


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name (empty, or holding a control character, a
    backslash or a bidirectional control), or None when it can."""
    if not label.strip():
        return "unusable class name: empty"
    bad = _unusable_characters(label, BIDI_CONTROLS)
    return f"unusable class name: {short_repr(label)} holds {bad}" if bad else None


def _usable_items(items: Iterable[SourceItem], skipped: list) -> Iterator[SourceItem]:
    """``items`` less those whose file name (a store key of a local or S3 source, which refuses
    control characters and backslashes) or class name is unusable: skipped and counted, the
    name escaped so that the listing keeps one line per file."""
    for item in items:
        bad = _unusable_characters(item.name)
        problem = f"unusable file name: it holds {bad}" if bad else label_problem(item.label)
        if problem is None:
            yield item
            continue
        name = item.name if item.name.isprintable() else repr(item.name)[1:-1]
        skipped.append({"file": name, "reason": problem})


def _check_class_list(descriptor: DatasetDescriptor) -> None:
    """Refuses an explicit class list of fewer than 2 classes or with an unusable name."""
    classes = descriptor.classes
    if classes and len(classes) < 2:
        raise DatasetError(
            f"the class list {short_repr(list(classes))} has {len(classes)} class: a "
            "classification dataset needs at least 2"
        )
    for name in classes:
        if (problem := label_problem(name)) is not None:
            raise DatasetError(f"the class list of {descriptor.name!r}: {problem}")


def _resolve_classes(
    descriptor: DatasetDescriptor, scan: Scan, counts: Counter, skipped: list
) -> tuple[str, ...]:
    if descriptor.classes:
        empty = [c for c in descriptor.classes if not counts[c]]
        if empty:
            raise DatasetError(
                f"class(es) {', '.join(empty)} of the class list have no images in "
                f"{descriptor.source}"
            )
        return descriptor.classes
    found = set(counts) | set(scan.class_folders or ()) | set(scan.class_order or ())
    found = {c for c in found if label_problem(c) is None}  # their files are counted already
    for name in sorted(found - {c for c in found if counts[c]}):
        skipped.append({"file": f"{name}/", "reason": "empty class: no images, class dropped"})
    order = scan.class_order or tuple(sorted(found, key=_class_sort_key))
    classes = tuple(c for c in order if counts[c])
    if len(classes) < 2:
        raise DatasetError(
            f"{descriptor.source} has {len(classes)} class(es) with images: a classification "
            "dataset needs at least 2"
        )
    return classes


def _assign_splits(
    images: list[_Image], labels: np.ndarray, descriptor: DatasetDescriptor, classes: tuple
) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Indices (into ``images``) per split, and how given splits were read."""
    rule = descriptor.split
    given = {im.split for im in images if im.split is not None}
    if rule.mode == "given" and not given:
        raise DatasetError(
            f"{descriptor.source} has no train/val/test splits but the split mode is 'given'"
        )
    notes: dict[str, str] = {}
    if given and rule.mode != "stratified":
        if any(im.split is None for im in images):
            raise DatasetError(
                f"{descriptor.source}: some images have a split and some do not; give every "
                "image a split or use --split stratified"
            )
        by_split = {s: [i for i, im in enumerate(images) if im.split == s] for s in SPLITS}
        if not by_split["test"] and by_split["val"]:
            by_split["test"], by_split["val"] = by_split["val"], []
            notes["test"] = "the source's 'val' split (the source has no 'test')"
        if not by_split["test"] or not by_split["train"]:
            raise DatasetError(
                f"{descriptor.source} gives splits {sorted(given)} but needs train and test "
                "(or val as test): add them or use --split stratified"
            )
        if not by_split["val"] and rule.val_fraction > 0:
            train = np.asarray(by_split["train"])
            keep, val = _carve_val(labels[train], rule.val_fraction, rule.seed, classes)
            by_split["train"], by_split["val"] = train[keep].tolist(), train[val].tolist()
            notes["val"] = f"{rule.val_fraction:g} of each class of the source's train split"
        return by_split, notes
    needed = 1 + (1 if rule.val_fraction > 0 else 0) + 1
    counts = np.bincount(labels, minlength=len(classes))
    for label, count in enumerate(counts):
        if count < needed:
            raise DatasetError(
                f"class {classes[label]!r} has {count} image(s): the split val="
                f"{rule.val_fraction:g}, test={rule.test_fraction:g} needs at least {needed} "
                "per class (one per split)"
            )
    train, val, test = stratified_split(labels, rule.val_fraction, rule.test_fraction, rule.seed)
    notes["all"] = f"stratified, seed {rule.seed}"
    return {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}, notes


def _carve_val(labels: np.ndarray, fraction: float, seed: int, classes: tuple):
    """Splits a given train split into (train, val) positions, stratified."""
    counts = np.bincount(labels, minlength=len(classes))
    for label, count in enumerate(counts):
        if 0 < count < 2:
            raise DatasetError(
                f"class {classes[label]!r} has {count} training image(s): carving a validation "
                "split needs at least 2 per class (or use --split val=0)"
            )
    train, _, val = stratified_split(labels, 0.0, fraction, seed)
    return train, val


def _check_split_coverage(by_split: dict[str, list[int]], labels: np.ndarray, classes) -> None:
    for split, indices in by_split.items():
        if not indices:
            continue
        present = np.bincount(labels[indices], minlength=len(classes))
        missing = [classes[i] for i in np.flatnonzero(present == 0)]
        if missing:
            raise DatasetError(
                f"class(es) {', '.join(missing[:5])} have no images in the {split} split: "
                "every class needs images in every split"
            )


def _size_stats(values: list[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {"min": int(array.min()), "max": int(array.max()), "mean": round(float(array.mean()), 1)}


def dataset_prefix(name: str, key: str) -> str:
    return f"datasets/{name}-{key}"


def dataset_key(descriptor: DatasetDescriptor, fingerprint: Any) -> str:
    """The content address of a build: descriptor, source listing and format version."""
    return content_hash(
        {"descriptor": descriptor.to_dict(), "source": fingerprint, "format": DATA_FORMAT_VERSION}
    )


def materialize_scan(
    store: ArtifactStore,
    descriptor: DatasetDescriptor,
    scan: Scan,
    shuffle_train: bool = True,
    progress: Progress = _progress,
) -> DatasetRef:
    """Builds ``descriptor`` from its listed source into ``store`` unless it is there already.

    Args:
        store: the artifact store.
        descriptor: the dataset's descriptor.
        scan: the source's listing (:func:`components.data.sources.scan`).
        shuffle_train: write the training split in a seeded random order (so that streaming
            it shard by shard mixes classes); off for the built-in sets, whose in-memory
            training reproduces the figures measured with their earlier array format.
        progress: where progress lines go.

    Returns:
        The dataset's reference.

    Raises:
        DatasetError: for a rule the data cannot satisfy (nothing is written then).
    """
    _check_class_list(descriptor)
    key = dataset_key(descriptor, scan.fingerprint)
    prefix = dataset_prefix(descriptor.name, key)
    manifest_key = f"{prefix}/manifest.json"
    if store.exists(manifest_key):
        progress(f"{descriptor.name}: already built ({manifest_key}), reusing it")
        return DatasetRef(**store.get_json(manifest_key)["ref"])
    started = time.time()
    read_skipped: list[dict[str, str]] = []
    with tempfile.TemporaryFile(prefix="aprflow-data-") as spool:
        images = _read_all(descriptor, scan, spool, read_skipped, progress, started)
        skipped = scan.skipped + read_skipped  # a streamed listing adds to scan.skipped as read
        counts = Counter(im.label for im in images)
        classes = _resolve_classes(descriptor, scan, counts, skipped)
        index_of = {c: i for i, c in enumerate(classes)}
        images = [im for im in images if im.label in index_of]
        labels = np.asarray([index_of[im.label] for im in images], dtype=np.int64)
        by_split, notes = _assign_splits(images, labels, descriptor, classes)
        _check_split_coverage(by_split, labels, classes)
        if shuffle_train:
            order = np.random.default_rng(descriptor.split.seed).permutation(len(by_split["train"]))
            by_split["train"] = [by_split["train"][i] for i in order]
        manifest = _write(store, descriptor, prefix, spool, images, labels, classes, by_split)
        samples = _samples(spool, images, labels, by_split["train"])
    manifest |= {
        "name": descriptor.name,
        "key": key,
        "descriptor": descriptor.to_dict(),
        "source_kind": scan.kind,
        "given_splits": notes,
        "skipped": skipped,
        "skipped_by_reason": dict(Counter(_reason_kind(s["reason"]) for s in skipped)),
        "n_skipped": len(skipped),
        "seed": descriptor.split.seed,
        "format": DATA_FORMAT_VERSION,
        "built_seconds": round(time.time() - started, 2),
    }
    from components.data.summary import write_summary

    manifest["summary"] = write_summary(store, prefix, manifest, samples)
    store.put_json(manifest_key, manifest)  # last: its presence means the build is complete
    ref = DatasetRef(**manifest["ref"])
    progress(
        f"{descriptor.name}: {ref.n_train} train / {ref.n_val} val / {ref.n_test} test images, "
        f"{ref.num_classes} classes, {len(skipped)} skipped ({ref.content_hash})"
    )
    return ref


def _reason_kind(reason: str) -> str:
    """Reasons read ``KIND: detail``; the manifest counts skipped files per kind."""
    return reason.split(":", 1)[0]


def _read_all(descriptor, scan, spool, skipped, progress, started) -> list[_Image]:
    """Pass one: read, validate and spool every image; duplicates and bad files skipped."""
    split_rank = {None: 0, "train": 0, "val": 1, "test": 2}
    items = scan.items
    if isinstance(items, list):  # a duplicate is kept in the first of train, val, test
        items = sorted(items, key=lambda it: split_rank[it.split])  # stable: listing order
    items = _usable_items(items, skipped)
    seen: dict[str, SourceItem] = {}
    images: list[_Image] = []
    last_report = time.time()
    for n, (item, outcome) in enumerate(
        _ordered_map(lambda it: _prepare(it, descriptor), items), 1
    ):
        if time.time() - last_report > 10:
            progress(f"{descriptor.name}: read {n} images ({time.time() - started:.0f} s)")
            last_report = time.time()
        if isinstance(outcome, str):
            skipped.append({"file": item.name, "reason": outcome})
            continue
        if descriptor.classes and item.label not in descriptor.classes:
            skipped.append(
                {"file": item.name, "reason": f"label outside the class list: {item.label!r}"}
            )
            continue
        extension, data, sha, rgb, size = outcome
        if sha in seen:
            first = seen[sha]
            where = f" in split {first.split}" if first.split else ""
            skipped.append(
                {"file": item.name, "reason": f"duplicate: same bytes as {first.name}{where}"}
            )
            continue
        seen[sha] = item
        pixels = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
        offset = spool.tell()
        spool.write(data)
        images.append(
            _Image(
                index=len(images),
                name=item.name,
                label=item.label,
                split=item.split,
                extension=extension,
                offset=offset,
                length=len(data),
                width=size[0],
                height=size[1],
                stored_side=min(rgb.size),
                channel_sum=pixels.sum(axis=0),
                channel_sq=(pixels**2).sum(axis=0),
                pixels=len(pixels),
            )
        )
    return images


def _read_spooled(spool, image: _Image) -> bytes:
    spool.seek(image.offset)
    return spool.read(image.length)


def _write(store, descriptor, prefix, spool, images, labels, classes, by_split) -> dict[str, Any]:
    """Pass two: shards per split, uploaded; returns the manifest's data fields."""
    digest = hashlib.sha256()
    splits: dict[str, Any] = {}
    for split in SPLITS:
        indices = by_split.get(split, [])
        records = [
            Record(
                key=f"{split}-{position:08d}",
                data=_read_spooled(spool, images[i]),
                extension=images[i].extension,
                label=int(labels[i]),
            )
            for position, i in enumerate(indices)
        ]
        shards = []
        for number, group in enumerate(group_into_shards(records)):
            data = shard_bytes(group)
            digest.update(data)
            shard_key = f"{prefix}/{split}-{number:06d}.tar"
            store.put_bytes(shard_key, data)
            shards.append({"key": shard_key, "images": len(group), "bytes": len(data)})
        per_class = np.bincount(labels[indices], minlength=len(classes)) if indices else None
        splits[split] = {
            "n": len(indices),
            "shards": shards,
            "per_class": {c: int(per_class[i]) for i, c in enumerate(classes)} if indices else {},
        }
    train = [images[i] for i in by_split["train"]]
    pixels = sum(im.pixels for im in train)
    mean = sum(im.channel_sum for im in train) / pixels
    std = np.sqrt(np.maximum(sum(im.channel_sq for im in train) / pixels - mean**2, 0))
    train_counts = [c for c in splits["train"]["per_class"].values()]
    sides = sorted(im.stored_side for im in images)
    resolution = descriptor.image.resolution or sides[len(sides) // 2]
    checksum = digest.hexdigest()
    ref = DatasetRef(
        name=descriptor.name,
        manifest_key=f"{prefix}/manifest.json",
        content_hash=checksum[:16],
        num_classes=len(classes),
        resolution=resolution,
        n_train=splits["train"]["n"],
        n_test=splits["test"]["n"],
        n_val=splits["val"]["n"],
    )
    return {
        "ref": ref.to_dict(),
        "class_names": list(classes),
        "splits": splits,
        "n_images": len(images),
        "image_size": {
            "width": _size_stats([im.width for im in images]),
            "height": _size_stats([im.height for im in images]),
            "stored_min_side": _size_stats(sides),
        },
        "imbalance": round(max(train_counts) / min(train_counts), 3),
        "mean": mean.round(4).tolist(),
        "std": std.round(4).tolist(),
        "checksum": checksum,
    }


def _samples(spool, images, labels, train: list[int], per_class: int = 6) -> list:
    """A few training images per class for the summary grid: ``(label index, bytes)``."""
    taken: Counter = Counter()
    out = []
    for i in train:
        label = int(labels[i])
        if taken[label] < per_class:
            taken[label] += 1
            out.append((label, _read_spooled(spool, images[i])))
    return out


# --- names -----------------------------------------------------------------------------------
#
# A name is bound once. ``datasets/_names/<name>.json`` points it at one build; a build of other
# content under a bound name is refused unless it is told to replace the binding. The binding
# is written under the name's lease (objects ``datasets/_names/<name>/lease-<generation>.json``,
# :class:`~components.common.storage.Lease`), after checking that it is still the one read
# when the build started: of two overlapping builds of one name, the second to finish is refused,
# with ``replace`` too (it would silently undo the first).

# How long a name's lease outlives a holder that stopped renewing it (its holders keep it for
# one read and one write).
NAME_LEASE_TTL_S = 30.0


def name_key(name: str) -> str:
    return f"{NAMES_PREFIX}{check_name(name)}.json"


def check_target(descriptor: DatasetDescriptor) -> None:
    """Refuses a name that a build must not take: a built-in dataset's (studies keep using the
    built-in set under it) or, for a subset, its own parent's (the parent would be lost)."""
    name = descriptor.name
    if name in BUILTIN_DATASETS:
        raise DatasetError(
            f"{name!r} is the name of a built-in dataset, which studies always use under that "
            "name: choose another name"
        )
    if descriptor.source == f"derived:{name}":
        raise DatasetError(
            f"a subset of {name!r} cannot be named {name!r}: the dataset it is derived from "
            "would become unreachable; choose another --name"
        )


def _same_content(store: ArtifactStore, a: DatasetRef, b: DatasetRef) -> bool:
    """Whether two builds hold the same shard bytes under the same class names."""
    if a.manifest_key == b.manifest_key:
        return True
    if a.content_hash != b.content_hash:
        return False
    first, second = load_manifest(store, a), load_manifest(store, b)
    return (first["checksum"], first["class_names"]) == (second["checksum"], second["class_names"])


def _binding(record: dict[str, Any]) -> str:
    """A bound name's build, for messages: its source (redacted, cut short) and content hash."""
    source = short_repr(redact_uri(record["descriptor"]["source"]))
    return f"the build of {source} (content {record['ref']['content_hash']})"


def _name_lease(store: ArtifactStore, name: str) -> Lease:
    """Takes the lease of ``name``'s binding, waiting while another build holds it."""
    while True:
        lease, _ = Lease.try_acquire(store, f"{NAMES_PREFIX}{name}", NAME_LEASE_TTL_S)
        if lease is not None:
            return lease
        time.sleep(0.1)


def bind_name(
    store: ArtifactStore,
    ref: DatasetRef,
    descriptor: DatasetDescriptor,
    seen: dict[str, Any] | None,
    replace: bool = False,
) -> DatasetRef:
    """Binds ``descriptor.name`` to the build ``ref``; returns the build the name stands for.

    Args:
        store: the artifact store.
        ref: the finished build.
        descriptor: its descriptor.
        seen: the name's record read before the build started (None: the name was free).
        replace: rebind a name that is bound to other content.

    Raises:
        DatasetError: when the name is bound to other content and ``replace`` is not set, or
            when another build bound it after ``seen`` was read.
    """
    name = descriptor.name
    if seen is not None:
        if _same_content(store, DatasetRef(**seen["ref"]), ref):
            return DatasetRef(**seen["ref"])  # bound to this content already: nothing to write
        if not replace:
            raise DatasetError(
                f"dataset name {name!r} in {store.uri} is bound to {_binding(seen)}: choose "
                "another name, or pass --replace to rebind it (this build is kept, so "
                "rebinding costs no second build)"
            )
    with _name_lease(store, name).hold():
        current = named_dataset(store, name)
        if current is not None and current != seen:
            if _same_content(store, DatasetRef(**current["ref"]), ref):
                return DatasetRef(**current["ref"])
            raise DatasetError(
                f"dataset name {name!r} in {store.uri} was bound to {_binding(current)} by "
                "another build while this one ran: check which one you want, then run again "
                "(with --replace to rebind it)"
            )
        record = {"ref": ref.to_dict(), "descriptor": descriptor.to_dict()}
        store.put_json(name_key(name), record | {"registered_at": time.time()})
    return ref


def named_dataset(store: ArtifactStore, name: str) -> dict[str, Any] | None:
    """The pointer record of a named build, or None when the name was never built here."""
    key = name_key(name)
    return store.get_json(key) if store.exists(key) else None


def list_named(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every named build in the store, by name (the names' leases sit in sub-folders)."""
    keys = store.list(NAMES_PREFIX)
    return [store.get_json(k) for k in keys if "/" not in k.removeprefix(NAMES_PREFIX)]


def build_dataset(
    store: ArtifactStore,
    descriptor: DatasetDescriptor,
    progress: Progress = _progress,
    replace: bool = False,
) -> DatasetRef:
    """Scans the descriptor's source, materialises it (or reuses the build) and binds its name.

    Args:
        store: the artifact store.
        descriptor: the dataset's descriptor; its name is bound to the build.
        progress: where progress lines go.
        replace: rebind the name when it is bound to other content (else that is refused).

    Returns:
        The build the name stands for (an equal earlier build when the content is the same).

    Raises:
        DatasetError: for a reserved name (:func:`check_target`), a name bound to other content
            (see :func:`bind_name`) or data that the rules refuse.
    """
    from components.data.sources import scan

    check_target(descriptor)
    seen = named_dataset(store, descriptor.name)
    if descriptor.subset is not None:
        from components.data.subsets import scan_subset

        listing = scan_subset(store, descriptor)
    else:
        listing = scan(descriptor)
    ref = materialize_scan(store, descriptor, listing, progress=progress)
    return bind_name(store, ref, descriptor, seen, replace)


# --- reading ---------------------------------------------------------------------------------


def load_manifest(store: ArtifactStore, ref: DatasetRef) -> dict:
    """The manifest of a materialised dataset (class names, counts, mean/std, skipped files)."""
    return store.get_json(ref.manifest_key)


def shard_keys(manifest: dict, split: str) -> list[str]:
    """The store keys of a split's shards, in order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return [shard["key"] for shard in manifest["splits"][split]["shards"]]


def load_split(store: ArtifactStore, ref: DatasetRef, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of a split decoded in memory: uint8 NHWC at ``ref.resolution``, int64 labels.

    Images stored at another size are resized (shorter side, centre crop).
    """
    manifest = load_manifest(store, ref)
    parts = [
        decode_shard_arrays(store.get_bytes(key), ref.resolution)
        for key in shard_keys(manifest, split)
    ]
    if not parts:
        empty = np.zeros((0, ref.resolution, ref.resolution, 3), np.uint8)
        return empty, np.zeros(0, np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def decoded_bytes(ref: DatasetRef) -> int:
    """Bytes of the decoded training split at the training resolution (uint8 RGB)."""
    return ref.n_train * ref.resolution * ref.resolution * 3


def in_memory_fits(ref: DatasetRef, limit_bytes: int = 1 << 30) -> bool:
    """Whether the training split fits the in-memory path (default limit 1 GiB decoded)."""
    return decoded_bytes(ref) <= limit_bytes
