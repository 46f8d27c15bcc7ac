"""Progress lines for long work: which stage, item i/N, time since the study started.

Progress is logged (stdlib :mod:`logging`, logger ``aprflow.<stage>``) to **stderr** as plain
lines, ``[stage | elapsed] message``: stdout is kept for a command's result, and on a cluster
both streams end up in the pod's log. The local runner's console (``pipelines/console.py``)
reads the same lines back to draw one progress bar per study: :func:`trial_done_line` and
:func:`parse_trial_done` are the one place that defines the per-trial line both sides agree on.

A command sets the level with ``-q``/``-v`` (:func:`configure_logging`); code run without a
command line (a Kubeflow task) logs at INFO on its first :func:`report`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass

from components.common.uris import redact_uri

LOGGER = "aprflow"


class _CurrentStderrHandler(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment it is emitted, flushed.

    A ``StreamHandler`` keeps the stream it was made with; the local runner's console replaces
    ``sys.stderr`` while a pipeline runs, and pytest's capture does too.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()  # pod logs are line-buffered
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: a failed emit is reported, not raised
            self.handleError(record)


def configure_logging(verbosity: int = 0) -> None:
    """Sends aprflow's log records to stderr, at INFO (``verbosity`` 0), WARNING (below 0:
    ``-q``) or DEBUG (above 0: ``-v``). Calling it again only changes the level."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(handler, _CurrentStderrHandler) for handler in logger.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        # Our lines only, once: a root handler set up by a library would print them again.
        logger.propagate = False
    logger.setLevel(
        logging.INFO if verbosity == 0 else logging.WARNING if verbosity < 0 else logging.DEBUG
    )


def format_seconds(seconds: float) -> str:
    """Formats a duration as ``H:MM:SS``."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def elapsed(since: float) -> str:
    """Formats the seconds since the epoch time ``since`` as ``H:MM:SS``."""
    return format_seconds(time.time() - since)


def report(stage: str, message: str, started_at: float | None = None) -> None:
    """Logs ``[stage | elapsed] message`` at INFO to stderr (logger ``aprflow.<stage>``), with
    the secrets of any URI in it redacted (:func:`~components.common.uris.redact_uri`)."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:  # a task run without a command line: progress still shows
        configure_logging()
    clock = f" | {elapsed(started_at)} elapsed" if started_at is not None else ""
    logger.getChild(stage).info(f"[{stage}{clock}] {redact_uri(message)}")


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
