"""Progress lines for long work: which stage, item i/N, time since the study started.

Tasks print plain lines (``[stage | elapsed] message``) because on a cluster they end up in pod
logs. The local runner's console (``pipelines/console.py``) reads the same lines back to draw
one progress bar per study: :func:`trial_done_line` and :func:`parse_trial_done` are the one
place that defines the per-trial line both sides agree on.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

from components.common.uris import redact_uri


def format_seconds(seconds: float) -> str:
    """Formats a duration as ``H:MM:SS``."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def elapsed(since: float) -> str:
    """Formats the seconds since the epoch time ``since`` as ``H:MM:SS``."""
    return format_seconds(time.time() - since)


def report(stage: str, message: str, started_at: float | None = None) -> None:
    """Prints ``[stage | elapsed] message`` to stdout, flushed (pod logs are line-buffered),
    with the secrets of any URI in it redacted (:func:`~components.common.uris.redact_uri`)."""
    clock = f" | {elapsed(started_at)} elapsed" if started_at is not None else ""
    print(f"[{stage}{clock}] {redact_uri(message)}", file=sys.stdout, flush=True)


# A report line: "[stage]" or "[stage | 0:00:12 elapsed]", then the message.
_REPORT_LINE = re.compile(r"^\s*\[(?P<stage>[\w-]+)(?: \| [^\]]*)?\] (?P<message>.*)$")
_TRIAL_DONE = re.compile(
    r"^trial (?P<index>\d+)/(?P<total>\d+) (?P<status>ok|diverged|failed)"
    r"(?P<reused> \(reused\))?: (?P<detail>.*)$"
)


@dataclass(frozen=True)
class TrialDone:
    """A finished trial as its task reports it.

    Attributes:
        index: 1-based position of the trial in the study's plan.
        total: number of trials in the study.
        status: ``ok``, ``diverged`` or ``failed``.
        reused: the result came from an earlier run (nothing was trained).
        detail: the outcome in words (error, or the reason of a failure) and the trial's names.
    """

    index: int
    total: int
    status: str
    reused: bool
    detail: str


def trial_done_line(done: TrialDone) -> str:
    """The message of a finished trial's report line (see :func:`parse_trial_done`)."""
    reused = " (reused)" if done.reused else ""
    detail = " ".join(done.detail.split())  # one line, whatever a failure's reason holds
    return f"trial {done.index}/{done.total} {done.status}{reused}: {detail}"


def parse_report_line(line: str) -> tuple[str, str] | None:
    """``(stage, message)`` of a :func:`report` line, else None."""
    match = _REPORT_LINE.match(line)
    return (match["stage"], match["message"]) if match else None


def parse_trial_done(message: str) -> TrialDone | None:
    """The :class:`TrialDone` of a ``train`` report message written by :func:`trial_done_line`."""
    match = _TRIAL_DONE.match(message)
    if match is None:
        return None
    return TrialDone(
        index=int(match["index"]),
        total=int(match["total"]),
        status=match["status"],
        reused=match["reused"] is not None,
        detail=match["detail"],
    )
