"""Progress lines for long work: which stage, item i/N, time since the study started."""

from __future__ import annotations

import sys
import time


def elapsed(since: float) -> str:
    """Formats the seconds since the epoch time ``since`` as ``H:MM:SS``."""
    seconds = max(0, int(time.time() - since))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def report(stage: str, message: str, started_at: float | None = None) -> None:
    """Prints ``[stage | elapsed] message`` to stdout, flushed (pod logs are line-buffered)."""
    clock = f" | {elapsed(started_at)} elapsed" if started_at is not None else ""
    print(f"[{stage}{clock}] {message}", file=sys.stdout, flush=True)
