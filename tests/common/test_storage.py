"""The artifact store: local directory and S3 (against a real S3 server on loopback)."""

import contextlib
import hashlib
import json
import os
import time

import pytest

from components.common.storage import (
    CorruptObjectError,
    Lease,
    LocalStore,
    MissingObjectError,
    S3Store,
    StoreError,
    open_store,
)


def _exercise(store) -> None:
    assert not store.exists("a/b.json")
    uri = store.put_json("a/b.json", {"x": [1, 2]})
    assert uri.endswith("/a/b.json")
    assert store.exists("a/b.json")
    assert store.get_json("a/b.json") == {"x": [1, 2]}
    store.put_bytes("a/c.bin", b"\x00\x01")
    store.put_bytes("z/d.bin", b"2")
    assert store.list("a/") == ["a/b.json", "a/c.bin"]
    assert store.list("a/b") == ["a/b.json"]
    assert store.list("") == ["a/b.json", "a/c.bin", "z/d.bin"]
    assert store.list("nothing/here/") == []
    assert store.get_bytes("a/c.bin") == b"\x00\x01"
    store.put_bytes("a/c.bin", b"new")  # replaced, not appended
    assert store.get_bytes("a/c.bin") == b"new"
    with pytest.raises(StoreError, match="no object 'missing'"):
        store.get_bytes("missing")
    with pytest.raises(ValueError, match="invalid store key"):
        store.put_bytes("../escape", b"")
    with pytest.raises(ValueError, match="NaN|Out of range"):
        store.put_json("nan.json", {"x": float("nan")})
    assert not store.exists("nan.json")


def test_local_store_round_trip(tmp_path):
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    store.check()
    _exercise(store)
    assert not list((tmp_path / "store").rglob("*.tmp")), "atomic writes leave no temp files"


def test_file_uri_and_default(tmp_path, monkeypatch):
    assert open_store(f"file://{tmp_path}").root == tmp_path.resolve()
    monkeypatch.setenv("APRFLOW_STORE_URI", str(tmp_path / "env"))
    assert open_store().root == (tmp_path / "env").resolve()


def test_local_store_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write to the artifact store directory"):
        open_store(str(blocker / "store")).check()


def test_s3_store_round_trip(s3_env):
    store = open_store(f"s3://{s3_env}/some/prefix")
    assert isinstance(store, S3Store)
    store.check()
    _exercise(store)
    assert store.key_uri("a/b.json") == f"s3://{s3_env}/some/prefix/a/b.json"


def test_s3_missing_bucket_is_a_clear_error(s3_env):
    with pytest.raises(StoreError, match="check APRFLOW_S3_ENDPOINT_URL"):
        open_store("s3://no-such-bucket-here/x").check()


def test_s3_unreachable_endpoint_fails_fast(monkeypatch):
    import time

    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("APRFLOW_S3_MAX_ATTEMPTS", "2")  # the default (10) rides out ~1 min
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    tic = time.monotonic()
    with pytest.raises(StoreError, match="127.0.0.1:9 failed after up to 2 attempts"):
        open_store("s3://bucket/prefix").check()
    assert time.monotonic() - tic < 30


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3:///nobucket"])
def test_unsupported_uris(uri):
    with pytest.raises(StoreError, match="s3://BUCKET"):
        open_store(uri)


def _corrupt_local(store: LocalStore, key: str, data: bytes) -> None:
    """Damages an object behind the store's back, as a disk error or a stray tool would."""
    (store.root / key).write_bytes(data)


def _corrupt_s3(store: S3Store, key: str, data: bytes) -> None:
    """Replaces an object's bytes but keeps the metadata recorded at its write."""
    import boto3

    client = boto3.client("s3", endpoint_url=store.endpoint_url)
    full = store._key(key)
    metadata = client.head_object(Bucket=store.bucket, Key=full)["Metadata"]
    client.put_object(Bucket=store.bucket, Key=full, Body=data, Metadata=metadata)


def _integrity(store, corrupt, scratch) -> None:
    payload = os.urandom(1000)
    store.put_bytes("t/ckpt.pt", payload)
    store.put_json("t/result.json", {"status": "ok"})
    assert store.get_bytes("t/ckpt.pt") == payload
    corrupt(store, "t/ckpt.pt", payload[:500])  # truncated
    with pytest.raises(CorruptObjectError, match="'t/ckpt.pt' .* is corrupt: 500 bytes"):
        store.get_bytes("t/ckpt.pt")
    corrupt(store, "t/ckpt.pt", bytes(1000))  # same size, other bytes
    with pytest.raises(CorruptObjectError):
        store.get_bytes("t/ckpt.pt")
    with pytest.raises(CorruptObjectError):
        store.get_file("t/ckpt.pt", scratch / "ckpt.pt")
    assert not list(scratch.iterdir()), "verified before anything is written"
    corrupt(store, "t/result.json", b'{"status": "o')
    with pytest.raises(CorruptObjectError):
        store.get_json("t/result.json")
    aside = store.set_aside("t/result.json")
    assert aside.startswith("t/result.json.corrupt-")
    assert not store.exists("t/result.json")
    assert store.list("t/result") == [aside], "the bad bytes stay for inspection"
    with pytest.raises(CorruptObjectError):
        store.get_bytes(aside)  # still recognised as corrupt
    with pytest.raises(MissingObjectError):
        store.get_bytes("t/result.json")
    # An object written by another tool (no checksum) is read as it is, and a JSON object that
    # does not parse is corrupt too.
    assert store.create_if_absent("t/lease.json", b"{}")
    assert not store.create_if_absent("t/lease.json", b"other")
    assert store.get_json("t/lease.json") == {}


def test_local_store_checksums_detect_damage(tmp_path):
    store = open_store(str(tmp_path / "store"))
    (tmp_path / "scratch").mkdir()
    _integrity(store, _corrupt_local, tmp_path / "scratch")
    # The sidecars are no keys of their own.
    assert store.list("t/") == sorted(["t/ckpt.pt", "t/lease.json", *store.list("t/result")])
    raw = tmp_path / "store" / "raw.json"
    raw.write_text('{"a": 1}')  # no sidecar: read unverified
    assert store.get_json("raw.json") == {"a": 1}
    raw.write_text('{"a": ')
    with pytest.raises(CorruptObjectError, match="not valid JSON"):
        store.get_json("raw.json")
    assert store.verified_path("raw.json") == raw
    store.put_bytes("big.bin", b"x" * 10)
    _corrupt_local(store, "big.bin", b"x" * 9)
    with pytest.raises(CorruptObjectError):
        store.verified_path("big.bin")


class _Killed(BaseException):
    """A writer's death, raised where a SIGKILL could land."""


@pytest.mark.parametrize("renames_done", [0, 1, 2, 3])
def test_local_overwrite_killed_between_renames_leaves_a_valid_object(
    tmp_path, monkeypatch, renames_done
):
    # An overwrite is three renames (transition sidecar, object, final sidecar); a kill after
    # any number of them must leave the old or the new bytes, and a sidecar that accepts them.
    store = open_store(str(tmp_path / "store"))
    store.put_bytes("t/checkpoint.pt", b"old" * 100)
    real_replace, done = os.replace, []

    def replace_then_die(src, dst):
        if len(done) == renames_done:
            raise _Killed
        real_replace(src, dst)
        done.append(dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(_Killed) if renames_done < 3 else contextlib.nullcontext():
        store.put_bytes("t/checkpoint.pt", b"new" * 200)
    monkeypatch.setattr(os, "replace", real_replace)
    expected = b"old" * 100 if renames_done < 2 else b"new" * 200
    assert store.get_bytes("t/checkpoint.pt") == expected
    assert store.verified_path("t/checkpoint.pt").read_bytes() == expected
    store.put_bytes("t/checkpoint.pt", b"next")  # the next writer starts from a clean state
    assert store.get_bytes("t/checkpoint.pt") == b"next"
    sidecar = tmp_path / "store" / "t" / ".checkpoint.pt.sha256"
    assert sidecar.read_text() == f"{hashlib.sha256(b'next').hexdigest()} 4\n"
    _corrupt_local(store, "t/checkpoint.pt", b"nexT")
    with pytest.raises(CorruptObjectError):
        store.get_bytes("t/checkpoint.pt")


def test_s3_store_checksums_detect_damage(s3_env, tmp_path):
    import boto3

    store = open_store(f"s3://{s3_env}/p")
    _integrity(store, _corrupt_s3, tmp_path)
    head = boto3.client("s3", endpoint_url=store.endpoint_url).head_object(
        Bucket=s3_env, Key="p/t/lease.json"
    )
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"{}").hexdigest()


def test_s3_multipart_transfers_carry_the_checksum(s3_env, tmp_path, monkeypatch):
    import boto3

    monkeypatch.setenv("APRFLOW_S3_MULTIPART_MB", "5")
    store = open_store(f"s3://{s3_env}/p")
    data = os.urandom(11 << 20)  # three parts
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    store.put_file("big.bin", source)
    client = boto3.client("s3", endpoint_url=store.endpoint_url)
    head = client.head_object(Bucket=s3_env, Key="p/big.bin")
    assert head["ETag"].endswith('-3"'), "uploaded in 3 parts"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.get_file("big.bin", tmp_path / "back.bin").read_bytes() == data
    store.put_bytes("big2.bin", data)  # bytes go up in parts too
    assert client.head_object(Bucket=s3_env, Key="p/big2.bin")["ETag"].endswith('-3"')
    assert store.get_bytes("big2.bin") == data
    _corrupt_s3(store, "big.bin", data[: 6 << 20])
    with pytest.raises(CorruptObjectError):
        store.get_file("big.bin", tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "big.bin"], "no temp left"


def test_bad_s3_settings_are_clear_errors(monkeypatch):
    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", "not a url")
    with pytest.raises(StoreError, match="S3 endpoint 'not a url' is not usable"):
        open_store("s3://bucket/x")
    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("APRFLOW_S3_MAX_ATTEMPTS", "zero")
    with pytest.raises(StoreError, match="APRFLOW_S3_MAX_ATTEMPTS='zero' must be a number >= 1"):
        open_store("s3://bucket/x")
    monkeypatch.delenv("APRFLOW_S3_MAX_ATTEMPTS")
    with pytest.raises(StoreError, match="carries credentials") as caught:
        open_store("s3://AKIAKEY:s3cr3t@bucket/x")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("key", ["a/../b", "/abs", "a\\b", "a/\x00b", "a/b\n", "a//b", ""])
def test_keys_cannot_escape_the_store(tmp_path, key):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(ValueError, match="invalid store key"):
        store.put_bytes(key, b"x")
    assert not list(tmp_path.rglob("*")) or list(tmp_path.rglob("*")) == [tmp_path / "store"]


def _leases(store) -> None:
    lease, holder = Lease.try_acquire(store, "trials/x", ttl=60)
    assert lease is not None and holder is None
    second, holder = Lease.try_acquire(store, "trials/x", ttl=60)
    assert second is None and holder["pid"] == os.getpid()
    lease.release()
    third, _ = Lease.try_acquire(store, "trials/x", ttl=60)
    assert third is not None and third.key == "trials/x/lease-000001.json"
    # Expired (its holder stopped renewing): the next contender takes over.
    store.put_json(third.key, third.owner | {"expires_at": time.time() - 1})
    fourth, _ = Lease.try_acquire(store, "trials/x", ttl=60)
    assert fourth.key == "trials/x/lease-000002.json"
    # Held by a process of this host that is gone (a SIGKILLed run): taken over at once.
    store.put_json(fourth.key, fourth.owner | {"pid": 2**22 + 12345, "expires_at": 2e9})
    # Renewed every ttl/3 while held: still live after its ttl. The ttl leaves a loaded
    # machine's S3 renewal a second of slack.
    fifth, _ = Lease.try_acquire(store, "trials/x", ttl=1.5)
    assert fifth.key == "trials/x/lease-000003.json"
    with fifth.hold():
        time.sleep(2.0)
        assert Lease.try_acquire(store, "trials/x")[0] is None
    assert json.loads(store.get_bytes(fifth.key))["released"] is True


def test_local_leases(tmp_path):
    _leases(open_store(str(tmp_path / "store")))


def test_s3_leases_use_conditional_writes(s3_env):
    _leases(open_store(f"s3://{s3_env}/p"))


def test_temporaries_of_killed_writers_are_invisible_and_cleaned(tmp_path):
    store = open_store(str(tmp_path / "store"))
    store.put_bytes("t/x.bin", b"1")
    stale = tmp_path / "store" / "t" / ".x.bin.abc123.tmp"  # as a SIGKILLed writer leaves it
    fresh = tmp_path / "store" / "t" / ".x.bin.def456.tmp"  # a writer staging right now
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.list("t/") == ["t/x.bin"]
    store.put_bytes("t/x.bin", b"2")
    assert not stale.exists() and fresh.exists()
