"""The console of a local run: one progress bar for the study, one line per finished trial.

kfp.local prints every task's executor input, its own log records and each task's output, from
several threads at once. While a pipeline runs, ``sys.stdout`` and ``sys.stderr`` are replaced
by a :class:`StudyConsole`: every line goes to the run's log file, and the terminal shows only
the stage lines of our components (``[data]``, ``[plan]``, ``[analyze]`` ...), one line per
finished trial and a progress bar: trials done/total, failed, elapsed, ETA. On a terminal the
bar is redrawn in place; in a log (CI, ``| tee``) each trial line carries the same counts. The
console is progress: it goes to stderr, leaving stdout to the command's result.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from components.common.progress import (
    TrialDone,
    format_seconds,
    parse_report_line,
    parse_trial_done,
)

_TRIAL_POSITION = re.compile(r"^trial \d+/(?P<total>\d+) ")
BAR_WIDTH = 24


class StudyConsole(io.TextIOBase):
    """A stand-in for ``sys.stdout``/``sys.stderr`` during a local pipeline run.

    Use it as a context manager: it swaps the two streams on entry and restores them on exit.

    Args:
        log_path: file that receives every line printed during the run (created with its
            folder).
        terminal: where the readable console goes; default the ``sys.stderr`` at entry.
        refresh_s: how often the bar's clock is redrawn on a terminal.
    """

    def __init__(self, log_path: Path, terminal: TextIO | None = None, refresh_s: float = 1.0):
        super().__init__()
        self.log_path = Path(log_path)
        self._terminal = terminal
        self._refresh_s = refresh_s
        self._lock = threading.RLock()
        self._pending: dict[int, str] = {}  # each thread's unfinished line
        self._log: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar_shown = False
        self.total: int | None = None
        self.finished = 0
        self.failed = 0
        self.trained = 0
        self._training_since: float | None = None

    # -- the stream interface ---------------------------------------------------------------
    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            key = threading.get_ident()
            *lines, rest = (self._pending.pop(key, "") + text).split("\n")
            if rest:
                self._pending[key] = rest
            for line in lines:
                self._handle(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.flush()

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> StudyConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: `tail -f` of the log follows the tasks as they print.
        self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._saved = (sys.stdout, sys.stderr)
        if self._terminal is None:
            self._terminal = sys.stderr
        self._started = time.monotonic()
        sys.stdout = sys.stderr = self
        if self._is_tty():
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            for rest in self._pending.values():
                self._handle(rest)
            self._pending.clear()
            if self._bar_shown:
                self._terminal.write(f"\r\033[K{self.bar()}\n")
                self._terminal.flush()
            sys.stdout, sys.stderr = self._saved
            self._log.close()
            self._log = None

    # -- what the terminal shows --------------------------------------------------------------
    # Drawn here rather than by tqdm: the ETA must count only trained trials (a resumed study
    # reports hundreds of reused trials in its first second, which would make tqdm's rate
    # promise an end minutes too early), and in a log each trial line carries the counts.
    def bar(self) -> str:
        """``[=====>      ] 12/24 trials, 1 failed, 0:01:23 elapsed, ETA 0:01:20``."""
        total = self.total or 0
        filled = BAR_WIDTH * self.finished // total if total else 0
        arrow = ">" if 0 < filled < BAR_WIDTH else ""
        gauge = ("=" * filled + arrow).ljust(BAR_WIDTH)
        return f"[{gauge}] {self.counts()}"

    def counts(self) -> str:
        """Trials done/total, failed, elapsed and the estimated time left."""
        now = time.monotonic()
        text = f"{self.finished}/{self.total or '?'} trials, {self.failed} failed, "
        text += f"{format_seconds(now - self._started)} elapsed"
        if self.total and self.trained and self._training_since and self.finished < self.total:
            per_trial = (now - self._training_since) / self.trained
            text += f", ETA {format_seconds(per_trial * (self.total - self.finished))}"
        return text

    def _is_tty(self) -> bool:
        terminal = self._terminal or sys.stderr
        return bool(getattr(terminal, "isatty", lambda: False)())

    def _show(self, line: str) -> None:
        tty = self._is_tty()
        self._terminal.write(("\r\033[K" if tty else "") + line + "\n")
        if tty and self.total:
            self._terminal.write(self.bar())
            self._bar_shown = True
        self._terminal.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh_s):
            with self._lock:
                if self._bar_shown:
                    self._terminal.write(f"\r\033[K{self.bar()}")
                    self._terminal.flush()

    def _handle(self, line: str) -> None:
        self._log.write(line + "\n")
        parsed = parse_report_line(line)
        if parsed is None:
            return  # kfp.local's own output: in the log only
        stage, message = parsed
        if stage != "train":
            self._show(line.strip())
            return
        if self._training_since is None:
            self._training_since = time.monotonic()
        done = parse_trial_done(message)
        if done is not None:
            self._trial_done(done)
        elif (position := _TRIAL_POSITION.match(message)) is not None:
            self.total = int(position["total"])
        # Per-epoch lines of a trial stay in the log.

    def _trial_done(self, done: TrialDone) -> None:
        self.total = done.total
        self.finished += 1
        self.failed += done.status != "ok"
        self.trained += not done.reused
        width = len(str(done.total))
        status = done.status + (" (reused)" if done.reused else "")
        line = f"  trial {done.index:>{width}}/{done.total} {status:<8} {done.detail}"
        if not self._is_tty():
            line += f"  [{self.counts()}]"
        self._show(line)
