"""Atomic writes for the analysis outputs: readers see the old file or folder or the new one.

``analysis`` stands alone (no import from ``components``), so it keeps these small helpers:
every file the package writes goes through :func:`write_atomic`, and :func:`analyze`'s output
folder is replaced as a whole by :func:`replaced_folder`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

import psutil


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


@contextlib.contextmanager
def replaced_folder(path: str | os.PathLike, outputs: Collection[str]) -> Iterator[Path]:
    """Yields a new folder beside ``path`` to write into; when the block ends without error,
    it takes ``path``'s place, so readers see the old outputs or the new ones, never a new
    report beside an old summary.

    Entries of an existing ``path`` whose names are not in ``outputs`` (e.g. the results table
    the analysis reads) are hard-linked into the new folder first, so they stay. The swap is
    two renames (``path`` aside, the new folder in) and the removal of the old folder. What a
    killed run leaves (hidden ``.<name>.<pid>.new-*`` / ``.old-*`` siblings) is cleaned up by
    the next run into ``path``: an old folder whose new one never came is renamed back.

    Raises:
        ValueError: ``path`` is a file, holds the current folder (which the swap would
            remove), or cannot be replaced (a mount point; no folder can be made beside it).
    """
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is a file")
    if path.exists() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise ValueError(
            f"output folder {path} holds the current folder, which replacing it would remove: "
            "write the outputs to a folder of their own"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(path)
    try:
        new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.new-"))
    except OSError as e:
        raise ValueError(
            f"cannot create a folder beside output folder {path} ({e.strerror}): the outputs "
            "are written there first, then swapped in"
        ) from None
    try:
        os.chmod(new, 0o755)  # mkdtemp's folder is owner-only; reports are read by others
        if path.is_dir():
            for entry in path.iterdir():
                if entry.name not in outputs:
                    _link_entry(entry, new / entry.name)
        yield new
        if not path.exists():
            os.rename(new, path)
            return
        old = new.with_name(new.name.replace(".new-", ".old-"))
        try:
            os.rename(path, old)
        except OSError as e:  # e.g. a mount point
            raise ValueError(
                f"cannot replace output folder {path} ({e.strerror}): use a folder inside it"
            ) from None
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _link_entry(source: Path, target: Path) -> None:
    """A hard link of ``source`` (a copy where the file system has none), folders recursively,
    symbolic links as links."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, target)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _clean_leftovers(path: Path) -> None:
    """Removes the temporary siblings of ``path`` that a killed run left (never those of a run
    still going), after renaming back an old folder whose replacement never came."""
    prefix = f".{path.name}."
    leftovers = sorted(path.parent.glob(f"{glob.escape(prefix)}*"), key=lambda p: ".new-" in p.name)
    for leftover in leftovers:
        pid, _, kind = leftover.name[len(prefix) :].partition(".")
        if not (pid.isdigit() and kind.startswith(("new-", "old-"))):
            continue  # not one of ours
        if psutil.pid_exists(int(pid)):
            continue  # its run is still going
        if kind.startswith("old-") and not path.exists():
            os.rename(leftover, path)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
