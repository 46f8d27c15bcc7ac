"""Processes that start warm in a local run: forks of one process that imported torch, timm and
MLflow once, instead of new interpreters that import them again (seconds of CPU each).

``aprflow run`` starts the warm process (:func:`serve`, from ``pipelines/local.py``) and sets
:data:`WARM_PYTHON_ENV` to a launcher that runs ``python ARGS`` as a fork of it
(:mod:`components.common.warm_launcher`). The tasks start the processes that import most
through :func:`python_executable`: a training task's fork server (:func:`forkserver_launcher`)
and the analysis' model-logging process. Without the variable (on a cluster, where each task is
a pod) they start ``sys.executable`` as before.

Nothing else changes for the process that is started: it has the launcher's arguments, working
folder, environment and file descriptors (standard streams included), its exit status is the
launcher's, and a signal sent to the launcher reaches it. What a fork cannot change is refused
(:func:`refusal`), and the launcher then starts a new interpreter.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import importlib
import json
import multiprocessing
import os
import runpy
import select
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from components.common import warm_launcher as launcher

# The launcher's path (an executable): set by `aprflow run` for its tasks.
WARM_PYTHON_ENV = "APRFLOW_WARM_PYTHON"
# Environment variables read when an interpreter starts or a library is loaded (the module
# search path, hash seed and buffering; OpenMP's, MKL's and torch's settings): a forked process
# keeps the warm process' values, so a request whose values differ is refused ...
START_TIME_PREFIXES = ("PYTHON", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_")
# ... except these. Torch reads them where they are used: the CUDA check at each call
# (pytorch/pytorch v2.14.1: torch/cuda/__init__.py, _nvml_based_avail, line 206), the inductor
# cache folder at each lookup. OpenMP's and MKL's thread counts are read when torch loads, but
# the processes started warm set theirs: a trial from APRFLOW_TORCH_THREADS, which `aprflow
# run` sets (components/train/trial.py, _configure_host), the model logging one thread.
READ_WHEN_USED = (
    "PYTORCH_NVML_BASED_CUDA_CHECK",
    "TORCHINDUCTOR_CACHE_DIR",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
# The most file descriptors a request may bring (the standard streams, a fork server's two).
MAX_FDS = 64
MAX_REQUEST_BYTES = 1 << 20


def python_executable() -> str:
    """The warm launcher when this is a task of a local run (:data:`WARM_PYTHON_ENV`), else this
    interpreter."""
    launcher_path = os.environ.get(WARM_PYTHON_ENV, "")
    return launcher_path if os.access(launcher_path, os.X_OK) else sys.executable


@contextlib.contextmanager
def forkserver_launcher() -> Iterator[None]:
    """Within it, multiprocessing starts new interpreters (its fork server) through
    :func:`python_executable` (``multiprocessing.set_executable``); afterwards as before."""
    from multiprocessing import spawn

    previous = spawn.get_executable()
    multiprocessing.set_executable(python_executable())
    try:
        yield
    finally:
        multiprocessing.set_executable(previous)


def write_launcher(folder: Path, address: str) -> Path:
    """Writes the executable ``folder/python`` that runs ``python ARGS`` as a fork of the warm
    process listening at ``address`` (:mod:`~components.common.warm_launcher`)."""
    import shlex

    path = folder / "python"
    command = [sys.executable, "-I", "-S", launcher.__file__, address]
    path.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Request:
    """What the launcher sent: ``python ARGS`` to run with its folder, environment and file
    descriptors (``fds[i]`` here is the launcher's ``numbers[i]``)."""

    args: list[str]
    cwd: str
    env: dict[str, str]
    numbers: list[int]
    fds: list[int]


def refusal(request: Request, environ: dict[str, str], threads: int) -> str | None:
    """Why ``request`` cannot run as a fork of the warm process, whose environment was
    ``environ`` when it imported and which runs ``threads`` threads, or None.

    A fork runs ``-c CODE`` or ``-m MODULE`` with no interpreter option but ``-B`` (a new
    interpreter would be needed to change the others; multiprocessing passes on its parent's
    options, and kfp's tasks run with ``-B``), under the same :data:`START_TIME_PREFIXES`
    variables (but :data:`READ_WHEN_USED`), in a process with one Python thread (a fork of a
    threaded process may inherit a lock another thread held). Native threads are not counted:
    torch and pyarrow's jemalloc start one each when imported, in a multiprocessing fork
    server too, and jemalloc's own fork handlers make it safe."""
    args = _without_settable_options(request.args)
    if len(args) < 2 or args[0] not in ("-c", "-m"):
        return f"only -c or -m, with no option but -B, got {' '.join(request.args[:3])}"
    changed = sorted(
        key
        for key in set(environ) | set(request.env)
        if key.startswith(START_TIME_PREFIXES)
        and key not in READ_WHEN_USED
        and environ.get(key) != request.env.get(key)
    )
    if changed:
        return f"{', '.join(changed)} differ from the warm process'"
    if threads != 1:
        return f"the warm process runs {threads} Python threads"
    if not _can_watch_processes():
        return "this kernel has no pidfd_open (Linux 5.3)"
    return None


def _without_settable_options(args: list[str]) -> list[str]:
    """``args`` without the leading ``-B`` (no bytecode files: ``sys.dont_write_bytecode``)."""
    return args[1:] if args[:1] == ["-B"] else args


@functools.cache
def _can_watch_processes() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def preload(modules: Iterable[str]) -> None:
    """Imports ``modules``, skipping those not installed."""
    for module in modules:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(module)


def in_child(function: Callable[[], object]) -> int:
    """Runs ``function`` in a forked child, which then exits (1 on an error, printed); returns
    its pid. Ignore SIGCHLD before (as :func:`serve` does) and the kernel reaps it."""
    pid = os.fork()
    if pid:
        return pid
    _restore_signals()
    _run_then_exit(function)


def serve(listener: socket.socket, environ: dict[str, str]) -> Callable[[], None] | None:
    """Answers launchers (:mod:`~components.common.warm_launcher`) on ``listener`` until the
    standard input ends: each connection gets a forked process that forks the requested one,
    passes signals to it and reports its end. Returns None here, and in each requested process
    the function that runs ``python ARGS`` (call it, outside any frame of the server's, so that
    the process ends as an interpreter does).

    Args:
        environ: this process' environment before its imports (which set variables of their
            own), against which :func:`refusal` compares a request's.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    _can_watch_processes()  # asked once: its forks inherit the answer
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(sys.stdin, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
                return None
            if listener not in ready:
                continue
            connection, _ = listener.accept()
            threads = threading.active_count()  # counted here: a fork has one
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                selector.close()
                listener.close()
                return _answer(connection, environ, threads)
            connection.close()


def _answer(connection: socket.socket, environ: dict[str, str], threads: int) -> Callable[[], None]:
    """In the server's child: starts the requested process, reports its pid, passes signals to
    it, reports its exit status and exits; returns only in the requested process (which exits
    1 when it cannot take the launcher's state)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process it watches
    try:
        try:
            request = _receive(connection)
            reason = refusal(request, environ, threads) or _occupied(request, connection)
        except (OSError, ValueError, KeyError, TypeError) as e:
            request, reason = None, f"a bad request: {e!r}"
        if reason:
            connection.sendall(launcher.REFUSED + reason.encode())
            return os._exit(0)
        pid = os.fork()
        if pid == 0:
            connection.close()
            return _become(request)
        for fd in request.fds:
            os.close(fd)
        _report(connection, pid)
    except BaseException:  # noqa: BLE001 - this process must not go on as the server
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _report(connection: socket.socket, pid: int) -> None:
    """Reports process ``pid`` to the launcher, watches it and reports its exit status."""
    try:
        connection.sendall(launcher.STARTED + launcher.PID.pack(pid))
        _watch(connection, pid)
    except OSError:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        connection.sendall(launcher.ENDED + launcher.STATUS.pack(status))


def _receive(connection: socket.socket) -> Request:
    head, fds, flags, _ = socket.recv_fds(connection, launcher.STATUS.size, MAX_FDS)
    if flags & socket.MSG_CTRUNC or len(head) != launcher.STATUS.size:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"more than {MAX_FDS} file descriptors, or a cut header")
    (size,) = launcher.STATUS.unpack(head)
    if not 0 < size <= MAX_REQUEST_BYTES:
        raise ValueError(f"a request of {size} bytes")
    body = json.loads(launcher.read_exactly(connection, size))
    if len(body["fds"]) != len(fds):
        raise ValueError(f"{len(fds)} file descriptors for {len(body['fds'])} numbers")
    return Request(body["args"], body["cwd"], body["env"], body["fds"], fds)


def _occupied(request: Request, connection: socket.socket) -> str | None:
    """A file descriptor number the request needs that this process uses for something else
    (which its owner would close later, under the requested process' feet)."""
    mine = set(launcher.open_fds()) - {0, 1, 2, connection.fileno(), *request.fds}
    taken = sorted(mine & set(request.numbers))
    return f"file descriptors {taken} are in use" if taken else None


def _watch(connection: socket.socket, pid: int) -> None:
    """Until process ``pid`` ends: passes on the signals the launcher sends, and kills it when
    the launcher is gone."""
    ended = os.pidfd_open(pid)
    try:
        while ended not in select.select([connection, ended], [], [])[0]:
            data = connection.recv(64)
            for number in data or [signal.SIGKILL]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, number)
            if not data:
                return
    finally:
        os.close(ended)


def _become(request: Request) -> Callable[[], None]:
    """In the requested process: takes the launcher's file descriptors, folder and environment,
    and returns the function that runs its arguments."""
    _restore_signals()
    high = max([*request.numbers, *request.fds]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in request.fds]
    for fd in request.fds:
        os.close(fd)
    for fd, number in zip(moved, request.numbers, strict=True):
        os.dup2(fd, number)
    for fd in moved:
        os.close(fd)
    if sys.stdout.isatty():
        sys.stdout.reconfigure(line_buffering=True)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    args = _without_settable_options(request.args)
    sys.dont_write_bytecode = args != request.args
    option, target, *rest = args
    if option == "-c":
        sys.argv, sys.path[0] = ["-c", *rest], ""
        return lambda: _run_then_exit(lambda: _run_code(target))
    sys.argv, sys.path[0] = [target, *rest], request.cwd
    # As in a new interpreter, the module runs as __main__ and is not imported (runpy warns
    # about a module already imported: the warm process imported it for a preload of its own).
    sys.modules.pop(target, None)
    return lambda: _run_then_exit(
        lambda: runpy.run_module(target, run_name="__main__", alter_sys=True)
    )


def _run_code(code: str) -> None:
    import types

    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    exec(compile(code, "<string>", "exec"), main.__dict__)


def _run_then_exit(run: Callable[[], object]) -> None:
    """Runs ``run`` and ends the process as an interpreter ends, with the same exit status,
    but for tearing down the modules: the threads it started are waited for, ``atexit``
    functions run and the standard streams are flushed, then it exits. Tearing down what the
    warm process imported (torch, timm, MLflow) took about 0.3 s of each process' end,
    and a task's end waits for its fork server's."""
    import traceback

    interrupted, code = False, 0
    try:
        run()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints it
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # as the interpreter does: dies of the SIGINT it did not handle
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _restore_signals() -> None:
    """The handlers a new interpreter starts with."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
