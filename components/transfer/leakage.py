"""Train/test leakage checked by image content.

A target's test images must not be images the scored model was trained on: its kNN, probe or
fine-tuned accuracy would then measure memory, not transfer. Dataset names and versions do
not tell: the built-in digits split with another seed puts most of its test images into the
training split of the first build. So images are compared by content:

* The **content hash** of an image is the SHA-256 of its decoded pixels: ``"<H>x<W>:"`` in
  ASCII, then the RGB bytes in row-major order (:func:`pixel_hash`). Decoded pixels rather
  than file bytes, because the bytes of one image depend on its container and encoder (a build
  that resizes re-encodes every image as PNG, whose zlib stream changes with Pillow's version
  and settings; metadata chunks ride along; BMP, TIFF or PNG hold the same pixels), while a
  network sees the pixels only. Exact copies only: the same photo at another size, or
  re-compressed with loss, hashes differently.
* A split's hashes are computed once per dataset version (its content hash, which fixes every
  image) and cached in the store under ``transfer/image-hashes/<content hash>/<split>.bin``
  (32 bytes per image, in split order), and in this process for the last few splits read.
* A model's **source images** are the training split of a trial's dataset (found from the
  trial's record) and, for weights trained elsewhere, a list given in the model list's
  ``source_hashes`` column: a text file (local or ``s3://``) of hex SHA-256 hashes, one per
  line (a further word on the line, such as a file name, is ignored; ``#`` lines are
  comments), as ``aprflow transfer hashes IMAGES...`` prints them; at most
  :data:`MAX_SOURCE_HASHES`.

The overlap of a (model, target) pair is the number of the target's test images whose hash is
among the source's, and its share of the test split; the study refuses a pair above its
``max_overlap``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.storage import ArtifactStore, StoreError
from components.transfer.errors import TransferError

HASH_PREFIX = "transfer/image-hashes"
#: numpy dtype of one SHA-256 digest.
DIGEST = np.dtype("S32")
#: Hashes a source list may hold: ImageNet-21k's 14.2M training images fit; held as 32-byte
#: digests that is 512 MB, and the file is read one bounded line at a time.
MAX_SOURCE_HASHES = 16_000_000
#: Longest line of a hash list: a hash, a separator and a file path.
MAX_LINE_CHARS = 4096
#: Splits whose hashes this process keeps after reading them (the targets of a study and a
#: few sources), so that every model of a chunk does not read them again.
MEMO_SPLITS = 16
_MEMO: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()


def pixel_hash(rgb: np.ndarray) -> bytes:
    """The 32-byte SHA-256 content hash of a decoded image (uint8 ``H x W x 3``)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"an RGB image is H x W x 3, got shape {rgb.shape}")
    digest = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}:".encode())
    digest.update(rgb.tobytes())
    return digest.digest()


def image_bytes_hash(data: bytes) -> bytes:
    """The content hash of an encoded image (PNG, JPEG, ...): its decoded RGB pixels."""
    from components.data.shards import decode_rgb

    return pixel_hash(np.asarray(decode_rgb(data), dtype=np.uint8))


def _hash_shards(store: ArtifactStore, keys: list[str]) -> np.ndarray:
    from components.data.shards import image_part, iter_own_shard

    hashes = []
    for key in keys:
        for _, parts in iter_own_shard(store.get_bytes(key)):
            found = image_part(parts)
            if found is not None and "cls" in parts:  # the records load_split decodes
                hashes.append(image_bytes_hash(found[1]))
    return np.array(hashes, dtype=DIGEST)


def split_hashes(store: ArtifactStore, ref, split: str) -> np.ndarray:
    """Content hashes of a dataset version's split, in split order (``S32`` digests).

    Computed once per dataset version and cached in the store (see the module docstring).

    Raises:
        TransferError: when the split's shards cannot be read from the store.
    """
    memo_key = (store.uri, ref.content_hash, split)
    if memo_key in _MEMO:
        _MEMO.move_to_end(memo_key)
        return _MEMO[memo_key]
    key = f"{HASH_PREFIX}/{ref.content_hash}/{split}.bin"
    try:
        if store.exists(key):
            hashes = np.frombuffer(store.get_bytes(key), dtype=DIGEST)
        else:
            from components.data.build import load_manifest, shard_keys

            hashes = _hash_shards(store, shard_keys(load_manifest(store, ref), split))
            store.put_bytes(key, hashes.tobytes())
    except StoreError as e:
        raise TransferError(
            f"cannot hash the {split} images of {ref.name} (version {ref.content_hash}): {e}"
        ) from None
    _MEMO[memo_key] = hashes
    while len(_MEMO) > MEMO_SPLITS:
        _MEMO.popitem(last=False)
    return hashes


def parse_hash_lines(lines: Iterable[str], name: str) -> np.ndarray:
    """Digests of a hash list's lines (see the module docstring), checked one by one.

    Raises:
        TransferError: for a word that is not 64 hex digits, a line longer than
            :data:`MAX_LINE_CHARS` or more than :data:`MAX_SOURCE_HASHES` hashes.
    """
    digests = []
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_CHARS:
            raise TransferError(
                f"{name} line {number}: longer than {MAX_LINE_CHARS} characters; a hash list "
                "holds one hex SHA-256 per line"
            )
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            digest = bytes.fromhex(words[0])
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise TransferError(
                f"{name} line {number}: {words[0][:80]!r} is not a SHA-256 in hex (64 digits); "
                "make the list with 'aprflow transfer hashes IMAGES...'"
            )
        if len(digests) == MAX_SOURCE_HASHES:
            raise TransferError(
                f"{name}: more than {MAX_SOURCE_HASHES:,} hashes (ImageNet-21k has 14.2M "
                "training images; 32 bytes each are held in memory)"
            )
        digests.append(digest)
    return np.array(digests, dtype=DIGEST)


def _bounded_lines(path: Path) -> Iterator[str]:
    """The file's lines, none read past :data:`MAX_LINE_CHARS` + 1 characters."""
    with path.open(encoding="utf-8", errors="replace") as f:
        while line := f.readline(MAX_LINE_CHARS + 1):
            yield line


def read_hash_list(path: Path, name: str) -> np.ndarray:
    """The digests of a local hash list file (:func:`parse_hash_lines`).

    Raises:
        TransferError: for an unreadable file or a malformed list.
    """
    try:
        return parse_hash_lines(_bounded_lines(path), name)
    except OSError as e:
        raise TransferError(f"cannot read source hash list {name}: {e.strerror or e}") from None


def trial_training_images(store: ArtifactStore, trial_id: str) -> tuple[np.ndarray, str]:
    """The content hashes of the training split a trial trained on (found from its record),
    and what they are in words.

    Raises:
        TransferError: when that split cannot be hashed.
        StoreError: when the trial's record cannot be read.
    """
    from components.train.definition import Trial, result_key

    source = Trial.from_dict(store.get_json(result_key(trial_id))).dataset
    words = f"the training split of {source.name} ({source.content_hash})"
    return split_hashes(store, source, "train"), words


@dataclass(frozen=True)
class Overlap:
    """Test images of a target that are among a model's source images.

    Attributes:
        images: test images whose content hash is among the source's.
        n_test: images of the test split.
        source: what the source images are, in words (for messages).
    """

    images: int
    n_test: int
    source: str

    @property
    def fraction(self) -> float:
        """Share of the test split that is source images (0 for an empty split)."""
        return self.images / self.n_test if self.n_test else 0.0


def overlap(test_hashes: np.ndarray, source_hashes: np.ndarray, source: str) -> Overlap:
    """How many of ``test_hashes`` (a test split, with repeats) are in ``source_hashes``."""
    images = int(np.isin(test_hashes, source_hashes).sum()) if len(source_hashes) else 0
    return Overlap(images, len(test_hashes), source)


def check_max_overlap(value: float) -> float:
    """Returns ``value`` if it is a share in [0, 1], else raises :class:`TransferError`."""
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise TransferError(
            f"max_overlap is a share of the test split in [0, 1] (0.01: 1 %), got {value!r}"
        )
    return float(value)


def refusal(found: Overlap, model: str, target, max_overlap: float) -> str:
    """The one-line reason to refuse ``model`` on ``target`` (a ``DatasetRef``) when the
    overlap exceeds ``max_overlap`` (a share of the test split), else ''."""
    if found.fraction <= max_overlap:
        return ""
    return (
        f"leakage: {model}: {found.images} of the {found.n_test} test images of {target.name} "
        f"({target.content_hash}; {found.fraction:.1%}) are among its training images "
        f"({found.source}): above max_overlap {max_overlap:.1%}"
    )


def hash_image_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, str]]:
    """``(hex hash, path)`` of every image file under ``paths`` (files, or folders walked in
    sorted order for the image extensions the data component reads).

    Raises:
        TransferError: for a path that does not exist or a file that is not a readable image.
    """
    from components.data.shards import IMAGE_EXTENSIONS

    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(
                p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif given.is_file():
            files = [given]
        else:
            raise TransferError(f"no image file or folder at {given}")
        for file in files:
            try:
                digest = image_bytes_hash(file.read_bytes())
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a corrupt file
                raise TransferError(f"{file}: not a readable image ({type(e).__name__})") from None
            yield digest.hex(), str(file)
