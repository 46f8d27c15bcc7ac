"""WebDataset-style tar shards: ``<key>.png|jpg`` + ``<key>.cls`` per image, nothing else.

Tar headers carry no time, owner or mode of the machine that wrote them, so the same records
give the same bytes (the shards' hash is the dataset's content hash). The layout is the one
``webdataset`` reads (``key.ext`` members grouped by key, ``.cls`` an ASCII class index).
"""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from components.common.limits import MAX_IMAGE_PIXELS

# PIL's own guard, for every image opened in this process (torchvision's loaders too): Image.open
# reads the size from the header and raises DecompressionBombError above twice this, only
# warning above it (Pillow 13.0.0, src/PIL/Image.py, _decompression_bomb_check). The warning
# is made an error, so that no reader decodes such an image either; open_image and
# check_pixels refuse everything above the bound whatever the warning filters are.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
# What PIL and check_pixels raise for an image of more than MAX_IMAGE_PIXELS.
TOO_MANY_PIXELS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
# Shards of about this size stream well from S3 and let several workers share a split.
SHARD_MAX_BYTES = 64 << 20
SHARD_MAX_IMAGES = 5000


@dataclass(frozen=True)
class Record:
    """One encoded image and its class index, as stored in a shard."""

    key: str
    data: bytes
    extension: str  # "png" or "jpg"
    label: int


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644  # mtime, uid and gid stay 0: deterministic bytes
    tar.addfile(info, io.BytesIO(data))


def shard_bytes(records: Iterable[Record]) -> bytes:
    """One tar shard holding ``records`` in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for record in records:
            _add(tar, f"{record.key}.{record.extension}", record.data)
            _add(tar, f"{record.key}.cls", str(record.label).encode())
    return buffer.getvalue()


def group_into_shards(
    records: list[Record], max_bytes: int | None = None, max_images: int | None = None
) -> list[list[Record]]:
    """Splits ``records`` (in order) into shards of at most ``max_images`` / ~``max_bytes``
    (default: the module's :data:`SHARD_MAX_IMAGES` / :data:`SHARD_MAX_BYTES`)."""
    max_bytes = max_bytes or SHARD_MAX_BYTES
    max_images = max_images or SHARD_MAX_IMAGES
    shards: list[list[Record]] = [[]]
    size = 0
    for record in records:
        if shards[-1] and (len(shards[-1]) >= max_images or size + len(record.data) > max_bytes):
            shards.append([])
            size = 0
        shards[-1].append(record)
        size += len(record.data) + 1024  # two tar headers
    return shards if shards[0] else []


def iter_samples(data: bytes | str, name: str = "") -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yields ``(key, {extension: bytes})`` for each sample of a tar shard, in shard order.

    Args:
        data: the shard's bytes, or a local path.
        name: the shard's name for error messages.

    Raises:
        tarfile.TarError: for a file that is not a tar archive.
    """
    fileobj = io.BytesIO(data) if isinstance(data, bytes) else None
    path = None if isinstance(data, bytes) else data
    with tarfile.open(name=path, fileobj=fileobj, mode="r:*") as tar:
        current: str | None = None
        parts: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            folder = member.name[: len(member.name) - len(base)]
            stem, dot, extension = base.partition(".")
            if not dot:
                continue
            key = folder + stem
            if key != current and parts:
                yield current, parts
                parts = {}
            current = key
            parts[extension.lower()] = tar.extractfile(member).read()
        if parts:
            yield current, parts


def iter_own_shard(data: bytes) -> Iterator[tuple[str, dict[str, bytes]]]:
    """:func:`iter_samples` for the shards :func:`shard_bytes` writes (plain USTAR members),
    reading the 512-byte headers directly: about 5x faster than :mod:`tarfile`, which matters
    per image in the training stream. Anything else falls back to :mod:`tarfile`."""
    offset, current, parts, samples = 0, None, {}, []
    while offset + 512 <= len(data):
        header = data[offset : offset + 512]
        if header == b"\0" * 512:
            break
        if header[156:157] not in (b"0", b"\0") or header[345:346] != b"\0":
            yield from iter_samples(data)  # links, long names, pax headers: the full reader
            return
        name = header[:100].split(b"\0", 1)[0].decode()
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        body = data[offset + 512 : offset + 512 + size]
        offset += 512 + (size + 511) // 512 * 512
        stem, _, extension = name.rpartition("/")[2].partition(".")
        key = name[: len(name) - len(name.rpartition("/")[2])] + stem
        if key != current and parts:
            samples.append((current, parts))
            parts = {}
        current = key
        parts[extension.lower()] = body
    if parts:
        samples.append((current, parts))
    yield from samples


def image_part(parts: dict[str, bytes]) -> tuple[str, bytes] | None:
    """The (extension, bytes) of a sample's image member, if it has one."""
    for extension, data in parts.items():
        if f".{extension}" in IMAGE_EXTENSIONS:
            return extension, data
    return None


def check_pixels(size: tuple[int, int]) -> None:
    """Raises PIL's DecompressionBombError for an image of more than ``MAX_IMAGE_PIXELS``."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{width} x {height} pixels, more than the {MAX_IMAGE_PIXELS:,} accepted"
        )


def open_image(data: bytes) -> Image.Image:
    """Opens image bytes, refusing a decompression bomb before a pixel is decoded (PIL reads
    only the header until ``load()``).

    Raises:
        TOO_MANY_PIXELS: for more than ``MAX_IMAGE_PIXELS`` pixels.
        Exception: whatever PIL raises for data that is not an image it reads.
    """
    image = Image.open(io.BytesIO(data))
    try:
        check_pixels(image.size)
    except TOO_MANY_PIXELS:
        image.close()
        raise
    return image


def decode_rgb(data: bytes) -> Image.Image:
    """Decodes image bytes fully and returns an RGB image (raises on corrupt data and on more
    than ``MAX_IMAGE_PIXELS`` pixels)."""
    with open_image(data) as image:
        image.load()
        return image.convert("RGB")


def resize_center(image: Image.Image, resolution: int) -> Image.Image:
    """Resizes the shorter side to ``resolution`` (bilinear) and crops the centre square."""
    width, height = image.size
    if (width, height) == (resolution, resolution):
        return image
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def encode(image: Image.Image, encoding: str, jpeg_quality: int = 95) -> tuple[str, bytes]:
    """Encodes ``image`` as PNG or JPEG; returns ``(extension, bytes)``."""
    buffer = io.BytesIO()
    if encoding == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality)
        return "jpg", buffer.getvalue()
    image.save(buffer, format="PNG")
    return "png", buffer.getvalue()


def decode_shard_arrays(data: bytes | str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every image of a shard to uint8 RGB ``resolution``² (NHWC) plus int64 labels."""
    images, labels = [], []
    for _, parts in iter_samples(data):
        found = image_part(parts)
        if found is None or "cls" not in parts:
            continue
        image = resize_center(decode_rgb(found[1]), resolution)
        images.append(np.asarray(image, dtype=np.uint8))
        labels.append(int(parts["cls"]))
    if not images:
        return np.zeros((0, resolution, resolution, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
