"""``python ARGS`` as a fork of a local run's warm process (:mod:`components.common.warm_start`).

Run as ``python -I -S warm_launcher.py SOCKET ARGS...`` (the standard library only, no site
packages: it starts in milliseconds). It sends ARGS, its working folder, its environment and
its open file descriptors to the warm process listening on the Unix socket SOCKET, which forks
a process that runs ARGS with them. This process stands for that one until it ends: a signal
it receives is passed on, it exits with the other's exit status (or dies of its signal), and
when it is killed the other is killed too. When the warm process is gone or refuses (see
:func:`components.common.warm_start.refusal`), it becomes ``python ARGS`` itself (``exec``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# The signals passed on to the forked process (SIGKILL cannot be: the warm process kills it
# when this process is gone).
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
REFUSED, STARTED, ENDED = b"R", b"P", b"S"
PID = struct.Struct("!q")
STATUS = struct.Struct("!i")


def open_fds(inheritable_only: bool = False, exclude: int = -1) -> list[int]:
    """This process' open file descriptors, or only its inheritable ones (what ``python ARGS``
    would have), without ``exclude``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd == exclude:
            continue
        try:
            inheritable = os.get_inheritable(fd)  # raises for the listing's own, closed by now
        except OSError:
            continue
        if inheritable or not inheritable_only:
            found.append(fd)
    return sorted(found)


def read_exactly(connection: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer when the other side closed the connection."""
    data = b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            break
        data += part
    return data


def become_python(args: list[str], why: str | None = None) -> None:
    """Replaces this process by ``python ARGS`` (the same interpreter, site packages on)."""
    if why:
        print(f"[warm-start] {why}: starting a new interpreter", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, *args])


def exit_like(status: int) -> None:
    """Ends this process as the forked one ended: its exit code, or killed by its signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


def main() -> None:
    address, *args = sys.argv[1:]
    connection = socket.socket(socket.AF_UNIX)
    try:
        connection.connect(address)
    except OSError:
        become_python(args)  # no warm process (it ended, or never started)
    try:
        fds = open_fds(inheritable_only=True, exclude=connection.fileno())
    except OSError as e:  # no /proc
        become_python(args, f"its file descriptors are unknown ({e})")
    request = json.dumps(
        {"args": args, "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds}
    ).encode()
    try:
        socket.send_fds(connection, [STATUS.pack(len(request))], fds)
        connection.sendall(request)
        answer = read_exactly(connection, 1)
        if answer != STARTED:
            reason = connection.recv(4096).decode(errors="replace") if answer else ""
            become_python(args, f"the warm process refused ({reason or 'no answer'})")
        pid = PID.unpack(read_exactly(connection, PID.size))[0]
    except OSError as e:
        become_python(args, f"the warm process failed ({e})")
    for number in FORWARDED_SIGNALS:
        signal.signal(number, lambda number, frame: connection.send(bytes([number])))
    answer = read_exactly(connection, 1 + STATUS.size)
    if answer[:1] != ENDED or len(answer) != 1 + STATUS.size:
        print(f"[warm-start] lost track of process {pid}", file=sys.stderr, flush=True)
        sys.exit(1)
    exit_like(STATUS.unpack(answer[1:])[0])


if __name__ == "__main__":
    main()
