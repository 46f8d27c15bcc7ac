"""The frame of every ``aprflow`` command: common options, streams, exit codes, errors.

Every command (``aprflow run``, ``aprflow train``, ``aprflow data build`` ...) follows the same
conventions, as kubectl, MLflow's and timm's command lines do:

- the result goes to **stdout** (JSON with ``--json``); progress and logs go to **stderr**
  through stdlib :mod:`logging` (``-q`` hides progress, ``-v`` adds debug lines), so
  ``aprflow train ... --json | jq`` works;
- exit status **0** on success, **1** on a failure, **2** on a usage error (argparse's own, or a
  :class:`UsageError` found after parsing); **141** (128 + SIGPIPE) when the reader of stdout
  went away (``| head``), without a message;
- a failure is one ``error: ...`` line on stderr (secrets in URIs redacted); ``--debug`` shows
  the traceback instead.

A command::

    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="aprflow sample", description="...")
        parser.add_argument("--n", type=int, required=True)
        add_common_options(parser, json_output=True)
        return parser

    def _main(args: argparse.Namespace) -> int:
        result = {"n": args.n}
        print_result(args, result, text=f"sampled {args.n}")
        return 0

    def main(argv: list[str] | None = None) -> int:
        return run_cli(build_parser(), _main, argv)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import select
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from components.common.errors import AprflowError
from components.common.progress import LOGGER, configure_logging
from components.common.uris import redact_uri

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# What a shell reports for a process killed by SIGPIPE: `aprflow ... | head` ends like `cat`.
EXIT_BROKEN_PIPE = 128 + 13
DISTRIBUTION = "aprflow"


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in its help, except where there is none to show (a required
    option, or one whose absence means "off")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


class UsageError(AprflowError):
    """A usage mistake found after parsing (an unknown ``--set`` key, a missing pair of
    options): one ``error: ...`` line and exit status 2, like argparse's own usage errors."""


class _VersionAction(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked (an
    :mod:`importlib.metadata` scan costs start-up time on every other call)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version(DISTRIBUTION)
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown (not installed)"
        print(f"{DISTRIBUTION} {number}")
        parser.exit()


def add_common_options(parser: argparse.ArgumentParser, *, json_output: bool = False) -> None:
    """Adds ``--debug``, ``-q/--quiet``, ``-v/--verbose``, ``--version`` and, for a command
    that prints a result, ``--json``.

    The options may be given to a parent parser and to its sub-parsers (``aprflow --debug
    data build`` and ``aprflow data build --debug``): their defaults are suppressed, so a value
    given at one level is not reset by the other; read them with :func:`debug_enabled`.

    Args:
        parser: the command's parser (or sub-parser).
        json_output: the command prints a result: add ``--json`` (print it as JSON).
    """
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show the traceback instead of one 'error: ...' line",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=argparse.SUPPRESS,
        help="show only warnings and errors on stderr (no progress)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="show debug lines on stderr too",
    )
    group.add_argument("--version", action=_VersionAction, help="print the version and exit")
    if json_output:
        group.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def debug_enabled(args: argparse.Namespace) -> bool:
    """True if ``--debug`` was given at any level of the command line."""
    return bool(getattr(args, "debug", False))


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` count minus ``-q`` count: 0 is the default (progress shown)."""
    return int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def error_line(error: BaseException) -> str:
    """The one ``error: ...`` line of a failure, secrets redacted.

    Bad input (:class:`AprflowError`, ``ValueError``) and system errors (``OSError``: a missing
    file, a refused connection) say what went wrong; anything else is a bug and says how to get
    its traceback.
    """
    if isinstance(error, (AprflowError, ValueError)):
        message = str(error)
    elif isinstance(error, OSError):
        message = f"{error.strerror or error}: {error.filename}" if error.filename else str(error)
    else:
        message = (
            f"internal error {type(error).__name__}: {error} (rerun with --debug for the traceback)"
        )
    return f"error: {redact_uri(message)}"


def _stdout_closed() -> bool:
    """True if stdout is a pipe whose reader has gone (``| head`` exited).

    Tells a closed stdout from a ``BrokenPipeError`` of a socket (MLflow, S3), which is a real
    failure and is reported.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # captured or replaced stdout: not a pipe
        return False
    if not hasattr(select, "poll"):
        return False
    poll = select.poll()
    poll.register(fd, select.POLLERR)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _silence_stdout() -> None:
    """Points stdout's descriptor at /dev/null, so the interpreter's flush at exit does not
    fail again on the closed pipe (Python's documented idiom for SIGPIPE)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_cli(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parses ``argv``, sets up logging from ``-q/-v`` and runs ``main(args)``.

    Args:
        parser: the command's parser, with :func:`add_common_options`.
        main: the command; returns its exit status (None is 0).
        argv: arguments without the program name; None reads ``sys.argv``.

    Returns:
        0 on success (or ``main``'s own status), 1 on a failure, 2 on a usage error, 141 when
        stdout was closed by its reader. ``--help`` and ``--version`` return 0.

    Raises:
        Exception: whatever ``main`` raised, when ``--debug`` was given (the interpreter
            prints its traceback and exits 1).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's usage error (2)
        if exit_.code is None:
            return EXIT_OK
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    # The level is the command's own: a later command (or task) in this process gets the level
    # it had before, INFO where none was set (NOTSET would defer to the root logger's WARNING).
    logger = logging.getLogger(LOGGER)
    previous_level = logger.level or logging.INFO
    configure_logging(verbosity(args))
    try:
        return _run_main(main, args)
    finally:
        logger.setLevel(previous_level)


def _run_main(main: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Runs ``main(args)`` and turns what it raises into an exit status (see :func:`run_cli`)."""
    try:
        status = main(args)
        # Flushed here: a closed pipe found by the interpreter's flush at exit would print
        # "Exception ignored ... BrokenPipeError" and exit 120.
        sys.stdout.flush()
        return EXIT_OK if status is None else status
    except BrokenPipeError as e:
        if _stdout_closed():
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if debug_enabled(args):
            raise
        return _failed(e)
    except KeyboardInterrupt:
        if debug_enabled(args):
            raise
        print("error: interrupted", file=sys.stderr)
        return 128 + 2
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into a line
        if debug_enabled(args):
            raise  # the interpreter prints the traceback and exits 1
        return _failed(e)


def _failed(error: BaseException) -> int:
    """Prints the one ``error: ...`` line of ``error`` and returns its exit status."""
    print(error_line(error), file=sys.stderr)
    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILURE


def print_result(args: argparse.Namespace, result: Any, text: str | None = None) -> None:
    """Prints a command's result on stdout: JSON with ``--json`` or when there is no ``text``
    (a result that is JSON by nature), else ``text``. Secrets in URIs are redacted.

    Args:
        args: the parsed arguments (``args.json`` is read when present).
        result: a JSON-serialisable value (paths and other objects print as their ``str``).
        text: the human-readable form.
    """
    if text is None or getattr(args, "json", False):
        text = json.dumps(result, indent=2, default=str)
    print(redact_uri(text), flush=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean n_models?"`` for a mistyped ``word`` (difflib), else ``""``.

    Example::

        raise UsageError(f"unknown key {key!r}; {did_you_mean(key, keys) or 'valid: ...'}")
    """
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}?" if close else ""
