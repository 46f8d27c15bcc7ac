"""Atomic file writes for the analysis outputs: readers see the old file or the new one.

``analysis`` stands alone (no import from ``components``), so it keeps this one small
helper; every file the package writes goes through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path`` and rename it into
    place. The folder must exist; on any error ``path`` is untouched and no temporary file
    stays."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        # mkstemp creates the file owner-only; reports are meant to be read by others.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
