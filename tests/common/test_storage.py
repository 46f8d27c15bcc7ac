"""The artifact store: local directory and S3 (against a real S3 server on loopback)."""

import pytest

from components.common.storage import LocalStore, S3Store, StoreError, open_store


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
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    tic = time.monotonic()
    with pytest.raises(StoreError, match="127.0.0.1:9"):
        open_store("s3://bucket/prefix").check()
    assert time.monotonic() - tic < 30


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3:///nobucket"])
def test_unsupported_uris(uri):
    with pytest.raises(StoreError, match="s3://BUCKET"):
        open_store(uri)
