"""The artifact store: one interface, a local-directory back end and an S3 back end.

Pipeline tasks pass store URIs and keys (``trials/<trial_id>/result.json``), never local paths,
so that any pod can read what another pod wrote. Keys are ``/``-separated relative paths.

Store URIs:
    * ``/abs/dir``, ``./rel/dir`` or ``file:///abs/dir``: a local directory (the default,
      ``runs/store``). Writes are atomic (temporary file + rename), so a killed writer never
      leaves half a file behind.
    * ``s3://bucket/prefix``: S3 or any S3-protocol server. The endpoint comes from
      ``APRFLOW_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``), credentials and region from the
      usual AWS environment variables (on Kubernetes: the chart's secret).
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components.common.errors import AprflowError
from components.common.files import atomic_write_bytes

STORE_ENV = "APRFLOW_STORE_URI"
S3_ENDPOINT_ENV = "APRFLOW_S3_ENDPOINT_URL"
DEFAULT_STORE = "runs/store"


class StoreError(AprflowError):
    """The store cannot be reached or a key is missing."""


class ArtifactStore(ABC):
    """Bytes under keys, plus JSON and file conveniences built on them."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Writes ``data`` under ``key`` (replacing it atomically) and returns the key's URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Returns the bytes under ``key``; raises StoreError if there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Returns the keys that start with ``prefix``, sorted."""

    @abstractmethod
    def check(self) -> None:
        """Raises StoreError with a fix if the store cannot be written; returns otherwise."""

    def key_uri(self, key: str) -> str:
        """The URI of ``key``, for logs, MLflow tags and KFP artifact metadata."""
        return f"{self.uri.rstrip('/')}/{key}"

    def put_json(self, key: str, value: Any) -> str:
        """Writes ``value`` as indented JSON (NaN refused: results must be valid JSON)."""
        return self.put_bytes(key, json.dumps(value, indent=2, allow_nan=False).encode())

    def get_json(self, key: str) -> Any:
        """Reads the JSON under ``key``."""
        return json.loads(self.get_bytes(key))

    def put_file(self, key: str, path: str | Path) -> str:
        """Uploads a local file."""
        return self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | Path) -> Path:
        """Downloads ``key`` to the local ``path`` (atomically) and returns the path."""
        path = Path(path)
        _atomic_write(path, self.get_bytes(key))
        return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}: use a relative path like 'trials/abc/x.json'")
    return key


class LocalStore(ArtifactStore):
    """A directory on the local file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        _atomic_write(self._path(key), data)
        return self.key_uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no object {key!r} in store {self.uri}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        # Walk only the prefix's folder: a store holds thousands of trial folders.
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.endswith(".tmp"))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as e:
            raise StoreError(
                f"cannot write to the artifact store directory {self.root}: {e.strerror}; "
                f"set {STORE_ENV} to a writable directory or s3:// URI"
            ) from None


class S3Store(ArtifactStore):
    """An S3 bucket (or S3-protocol server) under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Fail fast on an unreachable endpoint instead of retrying for minutes.
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})
        self._client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _explain(self, error: Exception) -> StoreError:
        where = self.endpoint_url or "the default AWS endpoint"
        return StoreError(
            f"S3 store {self.uri} at {where} failed: {error}; check {S3_ENDPOINT_ENV}, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that the bucket exists"
        )

    def put_bytes(self, key: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # A single PUT is atomic in S3: readers see the old object or the new one.
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None
        return self.key_uri(key)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise StoreError(f"no object {key!r} in store {self.uri}") from None
            raise self._explain(e) from None
        except BotoCoreError as e:
            raise self._explain(e) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._explain(e) from None
        except BotoCoreError as e:
            raise self._explain(e) from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None
        return sorted(keys)

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None


def default_store_uri() -> str:
    """The store URI from ``APRFLOW_STORE_URI``, else ``runs/store`` (resolved to an absolute
    path so that subprocesses started elsewhere agree)."""
    uri = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return uri if "://" in uri else Path(uri).resolve().as_uri()


def open_store(uri: str | None = None) -> ArtifactStore:
    """Opens the store at ``uri`` (default: :func:`default_store_uri`).

    Raises:
        StoreError: for an unsupported scheme.
    """
    uri = uri or default_store_uri()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} names no bucket: use s3://BUCKET/PREFIX")
        endpoint = os.environ.get(S3_ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint)
    raise StoreError(
        f"unsupported store URI {uri!r}: use a local directory, file:///DIR or s3://BUCKET/PREFIX"
    )
