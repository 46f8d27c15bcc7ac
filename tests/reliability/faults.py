"""Helpers of the fault-injection tests: a tiny trial, aprflow as a process, a private S3 server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from helpers import BIN, free_port, running_server

from components.data.datasets import materialize
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    from components.train.trial import Trial

ROOT = Path(__file__).resolve().parents[2]
APRFLOW = [sys.executable, "-m", "pipelines"]


def tiny_trial(store, epochs: int = 2) -> Trial:
    """A few-second trial: one small architecture on 8-px faces."""
    from components.train.trial import Trial

    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    dataset = materialize(store, "faces", resolution=8)
    recipe = resolve_recipe("apr_tiny", {"epochs": epochs})
    return Trial(spec=spec, dataset=dataset, recipe=recipe, seed=0)


def quiet(_: str) -> None:
    """A progress callback that drops lines."""


def aprflow_env(**extra: str) -> dict[str, str]:
    """The environment of an aprflow subprocess: this one's, one torch thread, plus ``extra``."""
    return os.environ | {"APRFLOW_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"} | extra


def start_aprflow(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Starts ``aprflow ARGS`` in its own process group, stdout and stderr into ``log``, in the
    log's folder (MLflow's SQLite store puts artifacts under ./mlruns)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*APRFLOW, *args],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def private_moto_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A moto_server of this test alone (the shared ``s3_endpoint`` must not be paused)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = running_server(command, f"{endpoint}/moto-api/", folder / "moto.log")
    process = next(server)
    try:
        yield endpoint, process
    finally:
        os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot terminate
        next(server, None)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    """Polls ``predicate`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RefusingProxy:
    """A TCP proxy in front of a server that can refuse connections for a while, as a
    restarting S3 endpoint or load balancer does: its listening socket is closed (connection
    refused) and open connections are cut, then it listens again on the same port."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._connections: list[socket.socket] = []
        self.refusing = threading.Event()  # set while connections are refused
        self._listen()

    def _listen(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by refuse()
            upstream = socket.create_connection(self.upstream)
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def refuse(self, seconds: float) -> None:
        """Refuses connections for ``seconds`` (call from a thread), then accepts again."""
        self._server.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._connections = []
        self.refusing.set()
        time.sleep(seconds)
        self._listen()
        self.refusing.clear()
