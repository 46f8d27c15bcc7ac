"""The artifact store: one interface, a local-directory back end and an S3 back end.

Pipeline tasks pass store URIs and keys (``trials/<trial_id>/result.json``), never local paths,
so that any pod can read what another pod wrote. Keys are ``/``-separated relative paths.

Store URIs:
    * ``/abs/dir``, ``./rel/dir`` or ``file:///abs/dir``: a local directory (the default,
      ``runs/store``).
    * ``s3://bucket/prefix``: S3 or any S3-protocol server. The endpoint comes from
      ``APRFLOW_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``), credentials and region from the
      usual AWS environment variables (on Kubernetes: the chart's secret), never from the URI.

Integrity, the same on both back ends:
    * No partial object is ever visible under a final key. Local: the bytes go to a temporary
      file beside the key, which is renamed over it (:mod:`components.common.files`). S3: a
      single PUT, or a multipart upload's CompleteMultipartUpload, is the publish step: until
      it succeeds the key shows the old object or none (an abandoned multipart upload is never
      visible; a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims its parts).
    * Every write records the SHA-256 and size of the bytes; every read verifies them and raises
      :class:`CorruptObjectError` (a :class:`StoreError`) for a truncated or damaged object.
      S3 keeps them in the object's own metadata (``x-amz-meta-sha256``), published atomically
      with the bytes. The local store keeps them in a hidden sidecar file ``.<name>.sha256``
      beside the object: a portable choice (extended attributes would be atomic too, but are
      not available on every file system, e.g. macOS's API differs and many network file
      systems drop them). An overwrite takes three renames: a sidecar accepting the old and
      the new bytes, the object, a sidecar accepting only the new bytes; so a writer killed
      between any two leaves an object that its sidecar accepts (a killed pod's last
      checkpoint stays usable). An object without a sidecar (written by another tool) is read
      unverified.
    * Callers recover from a corrupt object with :meth:`ArtifactStore.set_aside`, which renames
      it to ``<key>.corrupt-<time>`` (kept for inspection) so that it can be recomputed.

S3 outages: boto3's adaptive retry mode (exponential backoff with jitter, client-side rate
limiting) with ``APRFLOW_S3_MAX_ATTEMPTS`` attempts (default 10) and connect/read timeouts of
``APRFLOW_S3_CONNECT_TIMEOUT`` / ``APRFLOW_S3_READ_TIMEOUT`` seconds (default 10 / 60); with the
defaults a request rides out about a minute of an unreachable server. Objects larger than
``APRFLOW_S3_MULTIPART_MB`` MiB (default 64) go up and down in parts (boto3 TransferConfig).
The local store's file-system errors (a full disk, a permission) are :class:`StoreError` too:
the store's failure, which a trial never records as its own result.

Leases (:class:`Lease`): an object with an expiry that one process holds while it computes
something (a trial), written with a conditional create so that two processes never both hold it.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import psutil

from components.common.errors import AprflowError
from components.common.files import atomic_write_bytes, stage_bytes
from components.common.uris import redact_uri

STORE_ENV = "APRFLOW_STORE_URI"
S3_ENDPOINT_ENV = "APRFLOW_S3_ENDPOINT_URL"
S3_ATTEMPTS_ENV = "APRFLOW_S3_MAX_ATTEMPTS"
S3_CONNECT_TIMEOUT_ENV = "APRFLOW_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT_ENV = "APRFLOW_S3_READ_TIMEOUT"
S3_MULTIPART_ENV = "APRFLOW_S3_MULTIPART_MB"
# Test-only fault injection (inert unless set): "SUFFIX" or "SUFFIX:SECONDS". A write of a key
# ending in SUFFIX prints "aprflow-fault: pausing before publishing KEY" to stderr and sleeps
# (default 3600 s) after its bytes are staged and before they are published, so that a test can
# SIGKILL the process at exactly that point (tests/reliability/test_kills.py).
FAULT_PAUSE_ENV = "APRFLOW_FAULT_PAUSE_BEFORE_PUBLISH"
DEFAULT_STORE = "runs/store"
STALE_TEMPORARY_S = 3600
CHECKSUM_META = "sha256"


class StoreError(AprflowError):
    """The store cannot be reached or a key is missing."""


class MissingObjectError(StoreError):
    """No object under the key."""


class CorruptObjectError(StoreError):
    """An object does not match the checksum recorded when it was written (truncated or damaged),
    or a JSON object does not parse. Recover with :meth:`ArtifactStore.set_aside`."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest(), f.tell()


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw.strip() else default
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise StoreError(f"{name}={raw!r} must be a number >= {minimum:g}")
    return value


def _pause_before_publish(key: str) -> None:
    """The test-only fault hook of :data:`FAULT_PAUSE_ENV`; does nothing unless it is set."""
    setting = os.environ.get(FAULT_PAUSE_ENV)
    if not setting:
        return
    suffix, _, seconds = setting.partition(":")
    if key.endswith(suffix):
        print(f"aprflow-fault: pausing before publishing {key}", file=sys.stderr, flush=True)
        time.sleep(float(seconds or 3600))


class ArtifactStore(ABC):
    """Bytes under keys, plus JSON and file conveniences built on them."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Writes ``data`` under ``key`` (replacing it atomically) and returns the key's URI."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Returns the bytes under ``key``.

        Raises:
            StoreError: if there are none; CorruptObjectError if they fail their checksum.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Returns the keys that start with ``prefix``, sorted."""

    @abstractmethod
    def check(self) -> None:
        """Raises StoreError with a fix if the store cannot be written; returns otherwise."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes ``key`` (no error if it is absent)."""

    @abstractmethod
    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Writes ``data`` under ``key`` only if no object is there, atomically: of several
        concurrent callers exactly one gets True."""

    @abstractmethod
    def _rename(self, key: str, new_key: str) -> None:
        """Moves the object under ``key`` to ``new_key``."""

    def key_uri(self, key: str) -> str:
        """The URI of ``key``, for logs, MLflow tags and KFP artifact metadata."""
        return f"{self.uri.rstrip('/')}/{key}"

    def put_json(self, key: str, value: Any) -> str:
        """Writes ``value`` as indented JSON (NaN refused: results must be valid JSON)."""
        return self.put_bytes(key, json.dumps(value, indent=2, allow_nan=False).encode())

    def get_json(self, key: str) -> Any:
        """Reads the JSON under ``key``.

        Raises:
            CorruptObjectError: for an object that fails its checksum or is not valid JSON
                (e.g. truncated by a tool that bypassed the store).
        """
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise CorruptObjectError(
                f"object {key!r} in store {self.uri} is not valid JSON ({e})"
            ) from None

    def put_file(self, key: str, path: str | Path) -> str:
        """Uploads a local file."""
        return self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | Path) -> Path:
        """Downloads ``key`` to the local ``path`` (atomically, verified) and returns the path."""
        path = Path(path)
        _atomic_write(path, self.get_bytes(key))
        return path

    def set_aside(self, key: str) -> str:
        """Renames a corrupt object to ``<key>.corrupt-<UTC time>`` so that it can be recomputed
        while the bad bytes stay for inspection; returns the new key."""
        new_key = f"{key}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        new_key += f"-{uuid.uuid4().hex[:6]}"
        self._rename(key, new_key)
        return new_key


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(c) < 32 or c in "\\\x7f" for c in key)
    ):
        raise ValueError(f"invalid store key {key!r}: use a relative path like 'trials/abc/x.json'")
    return key


def _is_internal(name: str) -> bool:
    """Temporary files and checksum sidecars, which are no keys of their own."""
    return name.endswith(".tmp") or (name.startswith(".") and name.endswith(".sha256"))


class LocalStore(ArtifactStore):
    """A directory on the local file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}.sha256")

    def _write_sidecar(self, path: Path, *accepted: str) -> None:
        """Records the checksums (``"<sha256> <size>"`` lines) that ``path``'s bytes may have."""
        atomic_write_bytes(self._sidecar(path), "".join(f"{a}\n" for a in accepted).encode())

    def _recorded(self, path: Path) -> list[str] | None:
        """The checksum lines of ``path``'s sidecar; None when it has none."""
        try:
            return self._sidecar(path).read_text().splitlines()
        except FileNotFoundError:
            return None

    def _error(self, key: str, action: str, error: OSError) -> StoreError:
        return StoreError(f"store {self.uri}: cannot {action} {key!r}: {error}")

    @contextlib.contextmanager
    def _errors(self, key: str, action: str):
        """Turns the file system's errors (disk full, permissions, ...) into StoreError: the
        store's failure, which a trial does not record as its own result."""
        try:
            yield
        except StoreError:
            raise
        except OSError as e:
            raise self._error(key, action, e) from None

    def _stage(self, key: str, data: bytes) -> Path:
        """Writes ``data`` to a temporary file beside ``key``'s path (the caller publishes it),
        named ``.<name>.<host>-<pid>.*.tmp`` after its writer (:meth:`_remove_stale_temporaries`
        tells a dead writer's by it)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return stage_bytes(
            path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}"), data
        )

    def put_bytes(self, key: str, data: bytes) -> str:
        with self._errors(key, "write"):
            path = self._path(key)
            tmp = self._stage(key, data)
            checksum = f"{_digest(data)} {len(data)}"
            try:
                _pause_before_publish(key)
                old = self._recorded(path)
                if old is not None:  # while the object is replaced, either version reads as valid
                    self._write_sidecar(path, checksum, *old)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._write_sidecar(path, checksum)
            self._remove_stale_temporaries(path)
            return self.key_uri(key)

    @staticmethod
    def _remove_stale_temporaries(path: Path) -> None:
        """Deletes this key's temporary files that a killed writer left: at once when their
        name says that the writer was a process of this host that is gone, else once they are
        an hour old (a writer elsewhere cannot be asked; a live one stages in seconds)."""
        cutoff = time.time() - STALE_TEMPORARY_S
        this_host = f".{path.name}.{socket.gethostname()}-"
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            pid = stale.name.removeprefix(this_host).partition(".")[0]
            gone = stale.name.startswith(this_host) and pid.isdigit()
            gone = gone and not psutil.pid_exists(int(pid))
            with contextlib.suppress(FileNotFoundError):
                if gone or stale.stat().st_mtime < cutoff:
                    stale.unlink()

    def create_if_absent(self, key: str, data: bytes) -> bool:
        with self._errors(key, "write"):
            # A hard link of a complete temporary file publishes all of the bytes or fails with
            # EEXIST; O_CREAT|O_EXCL followed by a write would show a half-written object.
            path = self._path(key)
            tmp = self._stage(key, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
                self._remove_stale_temporaries(path)
            self._write_sidecar(path, f"{_digest(data)} {len(data)}")
            return True

    def _verify(self, key: str, path: Path, digest: str, size: int) -> None:
        recorded = self._recorded(path)
        if recorded is None:
            return  # written by another tool: nothing to verify against
        if f"{digest} {size}" not in recorded:
            raise CorruptObjectError(
                f"object {key!r} in store {self.uri} is corrupt: {size} bytes with SHA-256 "
                f"{digest[:12]}..., but {' | '.join(recorded)[:80]!r} was recorded when it was "
                "written (truncated or damaged)"
            )

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        for attempt in (1, 2):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise MissingObjectError(f"no object {key!r} in store {self.uri}") from None
            except OSError as e:
                raise self._error(key, "read", e) from None
            try:
                self._verify(key, path, _digest(data), len(data))
                return data
            except CorruptObjectError:
                if attempt == 2:
                    raise
                time.sleep(0.2)  # a writer may be between its two renames: look once more
        raise AssertionError("unreachable")

    def verified_path(self, key: str) -> Path:
        """The local path of ``key`` after checking its bytes against their checksum, for
        readers that open files themselves (e.g. memory-mapped shards).

        Raises:
            StoreError: if there is no object; CorruptObjectError if it fails its checksum.
        """
        path = self._path(key)
        if not path.is_file():
            raise MissingObjectError(f"no object {key!r} in store {self.uri}")
        self._verify(key, path, *_file_digest(path))
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)

    def _rename(self, key: str, new_key: str) -> None:
        path, new_path = self._path(key), self._path(new_key)
        try:
            os.replace(path, new_path)
        except FileNotFoundError:
            raise MissingObjectError(f"no object {key!r} in store {self.uri}") from None
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._sidecar(path), self._sidecar(new_path))

    def list(self, prefix: str) -> list[str]:
        # Walk only the prefix's folder: a store holds thousands of trial folders.
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not _is_internal(p.name)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def check(self) -> None:
        # Writes nothing (a failed preflight leaves no empty store behind): the root, or the
        # folder it would be created in, must be a writable directory.
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        problem = None
        if not existing.is_dir():
            problem = f"{existing} is not a directory"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = f"{existing} is not writable"
        if problem:
            raise StoreError(
                f"cannot write to the artifact store directory {self.root}: {problem}; "
                f"set {STORE_ENV} to a writable directory or s3:// URI"
            )


class S3Store(ArtifactStore):
    """An S3 bucket (or S3-protocol server) under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.attempts = int(_env_number(S3_ATTEMPTS_ENV, 10, 1))
        config = Config(
            connect_timeout=_env_number(S3_CONNECT_TIMEOUT_ENV, 10, 0.1),
            read_timeout=_env_number(S3_READ_TIMEOUT_ENV, 60, 0.1),
            retries={"mode": "adaptive", "max_attempts": self.attempts},
        )
        part = int(_env_number(S3_MULTIPART_ENV, 64, 5) * (1 << 20))  # S3's minimum part: 5 MiB
        self.transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=4
        )
        try:
            self._client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        except ValueError as e:  # botocore's "Invalid endpoint: ..."
            raise StoreError(
                redact_uri(
                    f"S3 endpoint {endpoint_url!r} is not usable ({e}): set {S3_ENDPOINT_ENV} "
                    "to a URL like http://host:9000"
                )
            ) from None

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _explain(self, error: Exception) -> StoreError:
        where = self.endpoint_url or "the default AWS endpoint"
        # botocore's message quotes the endpoint URL too, userinfo and query string included.
        return StoreError(
            redact_uri(
                f"S3 store {self.uri} at {where} failed after up to {self.attempts} attempts "
                f"({S3_ATTEMPTS_ENV}): {error}; check {S3_ENDPOINT_ENV}, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that the bucket exists"
            )
        )

    @contextlib.contextmanager
    def _errors(self, key: str = ""):
        """Turns boto errors into StoreError: a missing key into MissingObjectError, a failed
        ``IfNoneMatch`` condition into :class:`_Exists`."""
        from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if key and code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObjectError(f"no object {key!r} in store {self.uri}") from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise _Exists(key) from None
            raise self._explain(e) from None
        except (BotoCoreError, S3TransferFailedError, S3UploadFailedError) as e:
            raise self._explain(e) from None

    def _upload(self, key: str, body: BinaryIO, digest: str, size: int) -> None:
        extra = {"Metadata": {CHECKSUM_META: digest, "size": str(size)}}
        _pause_before_publish(key)
        with self._errors(key):
            if size < self.transfer.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **extra)
            else:
                self._client.upload_fileobj(
                    body, self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer
                )

    def put_bytes(self, key: str, data: bytes) -> str:
        self._upload(key, io.BytesIO(data), _digest(data), len(data))
        return self.key_uri(key)

    def put_file(self, key: str, path: str | Path) -> str:
        """Uploads a local file, in parts when it is large."""
        digest, size = _file_digest(Path(path))
        with open(path, "rb") as body:
            self._upload(key, body, digest, size)
        return self.key_uri(key)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        try:
            with self._errors(key):
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    IfNoneMatch="*",  # S3 conditional write: refused when the key exists
                    Metadata={CHECKSUM_META: _digest(data), "size": str(len(data))},
                )
        except _Exists:
            return False
        return True

    def _verify(self, key: str, metadata: dict[str, str], digest: str, size: int) -> None:
        recorded = metadata.get(CHECKSUM_META)
        if recorded is None:
            return  # written by another tool: nothing to verify against
        if recorded != digest or metadata.get("size", str(size)) != str(size):
            raise CorruptObjectError(
                f"object {key!r} in store {self.uri} is corrupt: {size} bytes with SHA-256 "
                f"{digest[:12]}..., but {recorded[:12]}... ({metadata.get('size')} bytes) was "
                "recorded when it was written"
            )

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        self._verify(key, response.get("Metadata", {}), _digest(data), len(data))
        return data

    def get_file(self, key: str, path: str | Path) -> Path:
        """Downloads ``key`` in parts when it is large, verified before it appears at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(key):
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with self._errors(key):
                self._client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            self._verify(key, head.get("Metadata", {}), *_file_digest(Path(tmp)))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except MissingObjectError:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _rename(self, key: str, new_key: str) -> None:
        source = {"Bucket": self.bucket, "Key": self._key(key)}
        with self._errors(key):
            self._client.copy(source, self.bucket, self._key(new_key), Config=self.transfer)
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def check(self) -> None:
        with self._errors():
            self._client.head_bucket(Bucket=self.bucket)


class _Exists(Exception):
    """A conditional create found the key taken (internal to S3Store)."""


@dataclass
class Lease:
    """A claim on some work (a trial) that expires unless its holder renews it.

    Leases of ``prefix`` are objects ``<prefix>/lease-<generation>.json`` that are only ever
    created with :meth:`ArtifactStore.create_if_absent`: the current lease is the highest
    generation, and taking over an expired or released one means creating the next generation,
    which exactly one contender wins. The holder renews its own object every ``ttl/3`` seconds
    while it works (:meth:`hold`) and marks it released at the end. A lease also counts as
    expired when its holder ran on this host and its process is gone (a killed local run is
    resumed at once instead of after ``ttl``).
    """

    store: ArtifactStore
    key: str
    owner: dict[str, Any]
    ttl: float

    @classmethod
    def try_acquire(
        cls, store: ArtifactStore, prefix: str, ttl: float = 120.0
    ) -> tuple[Lease | None, dict[str, Any] | None]:
        """Returns ``(lease, None)`` when this process now holds ``prefix``, else ``(None,
        holder)`` with the current holder's record."""
        last, holder = cls._current(store, prefix)
        if holder is not None and _lease_live(holder):
            return None, holder
        generation = last + 1
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "released": False,
        }
        lease = cls(store, f"{prefix}/lease-{generation:06d}.json", owner, ttl)
        if not store.create_if_absent(lease.key, lease._record()):
            return None, {"host": "?", "pid": "?", "note": "another process won the lease"}
        return lease, None

    @classmethod
    def live_holder(cls, store: ArtifactStore, prefix: str) -> dict[str, Any] | None:
        """The record of the process that holds ``prefix`` now, None when none does (a read:
        nothing is taken)."""
        _, holder = cls._current(store, prefix)
        return holder if holder is not None and _lease_live(holder) else None

    @staticmethod
    def _current(store: ArtifactStore, prefix: str) -> tuple[int, dict[str, Any] | None]:
        """The highest generation of ``prefix``'s leases (-1: none yet) and its record."""
        generations = sorted(
            int(key.rsplit("lease-", 1)[1].removesuffix(".json"))
            for key in store.list(f"{prefix}/lease-")
            if key.endswith(".json")
        )
        if not generations:
            return -1, None
        try:
            holder = store.get_json(f"{prefix}/lease-{generations[-1]:06d}.json")
        except CorruptObjectError:
            holder = {"released": True}  # a lease torn by a crash holds nothing
        return generations[-1], holder

    def _record(self) -> bytes:
        record = self.owner | {"expires_at": time.time() + self.ttl}
        return json.dumps(record, indent=2).encode()

    def renew(self) -> None:
        """Pushes the expiry ``ttl`` seconds ahead."""
        self.store.put_bytes(self.key, self._record())

    def release(self) -> None:
        """Marks the lease released: the next contender takes over at once."""
        self.owner = self.owner | {"released": True}
        self.store.put_bytes(self.key, self._record())

    @contextlib.contextmanager
    def hold(self):
        """Renews the lease in a background thread while the block runs, then releases it."""
        stop = threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(self.ttl / 3):
                with contextlib.suppress(StoreError):  # the next tick tries again
                    self.renew()

        thread = threading.Thread(target=renew_until_stopped, name="lease-renewal", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.release()


def _lease_live(holder: dict[str, Any]) -> bool:
    if holder.get("released") or holder.get("expires_at", 0) < time.time():
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False  # its process died (a killed local run)
        except PermissionError:
            pass  # alive, another user's
    return True


def default_store_uri() -> str:
    """The store URI from ``APRFLOW_STORE_URI``, else ``runs/store`` (resolved to an absolute
    path so that subprocesses started elsewhere agree)."""
    uri = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return uri if "://" in uri else Path(uri).resolve().as_uri()


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """Adds the ``--store URI`` option every command that reads or writes the store takes."""
    parser.add_argument("--store", default=None, help=f"store URI (default {default_store_uri()})")


def open_store(uri: str | None = None) -> ArtifactStore:
    """Opens the store at ``uri`` (default: :func:`default_store_uri`).

    Raises:
        StoreError: for an unsupported scheme, a URI that carries credentials, or an unusable
            S3 endpoint.
    """
    uri = uri or default_store_uri()
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(
                f"store URI {redact_uri(uri)!r} names no bucket: use s3://BUCKET/PREFIX"
            )
        if "@" in parsed.netloc or ":" in parsed.netloc:
            # Never echo the URI: it may hold a secret.
            raise StoreError(
                "the store URI carries credentials or a port: give s3://BUCKET/PREFIX and put "
                f"credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the endpoint in "
                f"{S3_ENDPOINT_ENV}"
            )
        endpoint = os.environ.get(S3_ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint)
    raise StoreError(
        f"unsupported store URI {redact_uri(uri)!r}: use a local directory, file:///DIR or "
        "s3://BUCKET/PREFIX"
    )
