"""Shared fixtures: real servers on loopback (an S3 protocol server, an MLflow server).

Test modules import torch, timm, MLflow, scipy, matplotlib and the pipeline definitions inside
the tests and fixtures that use them, so collecting the suite stays fast
(tests/test_light_imports.py checks it).
"""

from __future__ import annotations

import builtins
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import BIN, free_port, mlflow_server_command, running_server

from components.common.storage import open_store

_PRINT = builtins.print


@pytest.fixture(autouse=True)
def print_is_left_alone() -> Iterator[None]:
    """Fails the test that leaves ``builtins.print`` replaced (kfp.local's indenting print can
    leak from its parallel tasks: pipelines.local.original_print), and puts it back, so that
    the leak is blamed on its test instead of breaking every later test that reads stdout."""
    yield
    if builtins.print is not _PRINT:
        builtins.print = _PRINT
        pytest.fail("builtins.print was left replaced (run kfp.local inside original_print())")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3 protocol server (moto_server) on loopback; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    yield from (endpoint for _ in running_server(command, f"{endpoint}/moto-api/", log))


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> str:
    """Environment for the S3 store against the loopback server, with a fresh bucket."""
    import uuid

    import boto3

    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"aprflow-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real `mlflow server` process with a SQLite back end; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = mlflow_server_command(folder, port)
    yield from (url for _ in running_server(command, f"{url}/health", folder / "server.log"))


@pytest.fixture
def store(tmp_path):
    """An empty local artifact store in ``tmp_path``."""
    return open_store(str(tmp_path / "store"))


@pytest.fixture
def local_env(tmp_path, monkeypatch) -> Path:
    """Store and MLflow defaults inside ``tmp_path`` (what `aprflow run` uses under runs/)."""
    monkeypatch.setenv("APRFLOW_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("APRFLOW_S3_ENDPOINT_URL", raising=False)
    return tmp_path


def have(program: str) -> bool:
    return shutil.which(program) is not None or (BIN / program).exists()


os.environ.setdefault("MPLBACKEND", "Agg")
