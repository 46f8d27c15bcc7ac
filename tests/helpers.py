"""Helpers that tests import (``from helpers import ...``); fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: The headless browser the browser tests drive (None: they skip).
CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)


def chromium_command(profile: Path, *args: str) -> list[str]:
    """A headless Chromium command line with a fresh profile in ``profile`` (no stored
    settings, no background network), then ``args``."""
    return [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]


@contextlib.contextmanager
def kfp_local_session(store_uri: str, root: Path) -> Iterator[None]:
    """kfp.local with SubprocessRunner in this environment; tasks see the store at
    ``store_uri``, an MLflow SQLite file under ``root`` and one torch thread each.
    ``builtins.print`` is restored after, as ``aprflow run`` does (:func:`original_print`)."""
    from kfp import local

    from pipelines.local import original_print

    saved = dict(os.environ)
    os.environ["APRFLOW_STORE_URI"] = store_uri
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["APRFLOW_TORCH_THREADS"] = "1"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp"))
    try:
        with original_print():
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


BIN = Path(sys.executable).parent


def default_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``APRFLOW_*`` and ``MLFLOW_*`` variables, so that an
    ``aprflow`` command uses its local defaults (runs/ under its folder), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APRFLOW_", "MLFLOW_"))}
    return env | extra


def run_aprflow(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float | None = 900
) -> subprocess.CompletedProcess:
    """This venv's ``aprflow`` with ``args`` in ``cwd`` (output captured as text); ``env``
    defaults to :func:`default_env`."""
    return subprocess.run(
        [str(BIN / "aprflow"), *args],
        env=default_env() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not answer within {timeout} s")


def running_server(command: list[str], url: str, log: Path) -> Iterator[subprocess.Popen]:
    """Runs ``command`` (its output in ``log``) until the caller is done; yields the process
    once ``url`` answers."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_http(url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def mlflow_server_command(folder: Path, port: int) -> list[str]:
    """``mlflow server`` on loopback with its SQLite database and artifacts in ``folder``."""
    return [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
