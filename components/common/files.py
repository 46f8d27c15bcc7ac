"""Atomic file writes (readers see the old file or the new one, never half of one) and the
user's cache folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def stage_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a new temporary file beside ``path`` (``.<name>.*.tmp``), flushed to
    disk, and returns it; the caller publishes it with ``os.replace`` or ``os.link``.

    The folder must exist. On any error no temporary file stays.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # named by the caller's path, not the temporary name nobody asked for
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # Durable before it is published: after a power loss the new name never points
            # at a file whose blocks were not written yet.
            os.fsync(f.fileno())
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``.

    The folder must exist. On any error ``path`` is left untouched and no temporary file stays.
    """
    tmp = stage_bytes(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8, written verbatim (no newline changes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def user_cache_dir() -> Path:
    """aprflow's folder of per-user caches (compiled kernels, shards, MLflow's schema):
    ``$XDG_CACHE_HOME/aprflow``, else ``~/.cache/aprflow``. Not created here."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aprflow"
