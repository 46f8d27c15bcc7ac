"""S3 outage: the loopback S3 server is paused (SIGSTOP) in the middle of a sequence of store
operations. Within the retry budget nothing fails, nothing is lost and nothing is duplicated;
beyond it, the error names the endpoint.

Figures: the first test prints ``S3 paused 30 s: ... survived``; reproduce with
``pytest tests/reliability/test_s3_outage.py -s``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import pytest
from faults import RefusingProxy, private_moto_server

from components.common.storage import StoreError, open_store

PAUSE_S = 30
# Connection refusals are retried with backoff: with the default 10 attempts the expected total
# backoff is about a minute, so 10 s of refusals are always ridden out.
REFUSE_S = 10


def _store(endpoint: str, monkeypatch, **settings: str):
    import boto3

    for key, value in {
        "APRFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "APRFLOW_S3_MULTIPART_MB": "5",
        **settings,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    return open_store("s3://outage/study")


def _store_at(endpoint: str, monkeypatch):
    """The store of :func:`_store`'s bucket through another endpoint (a proxy)."""
    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", endpoint)
    return open_store("s3://outage/study")


@pytest.mark.slow
@pytest.mark.extended
def test_s3_paused_30s_mid_sequence_loses_nothing(tmp_path, monkeypatch):
    with private_moto_server(tmp_path) as (endpoint, server):
        # Short read timeouts so that the pause spans several retried attempts; the default
        # attempt budget (10, adaptive backoff with jitter) has to carry it.
        store = _store(endpoint, monkeypatch, APRFLOW_S3_READ_TIMEOUT="5")
        expected = {f"trials/t{i}/result.json": os.urandom(200) for i in range(6)}
        expected["trials/t0/checkpoint.pt"] = os.urandom(6 << 20)  # two parts
        items = list(expected.items())
        for key, data in items[:3]:
            store.put_bytes(key, data)
        os.kill(server.pid, signal.SIGSTOP)
        resume = threading.Timer(PAUSE_S, os.kill, (server.pid, signal.SIGCONT))
        resume.start()
        tic = time.monotonic()
        try:
            for key, data in items[3:]:  # the first of these waits out the pause
                store.put_bytes(key, data)
            keys = store.list("trials/")
            read = {key: store.get_bytes(key) for key in keys}
        finally:
            resume.join()
        blocked = time.monotonic() - tic
        print(f"\nS3 paused {PAUSE_S} s mid-sequence: survived, {len(read)} objects intact")
        assert blocked >= PAUSE_S - 1, "the operations really waited for the server"
        assert keys == sorted(expected), "nothing lost, nothing duplicated"
        assert {k: hashlib.sha256(v).hexdigest() for k, v in read.items()} == {
            k: hashlib.sha256(v).hexdigest() for k, v in expected.items()
        }


@pytest.mark.slow
def test_s3_paused_beyond_the_retry_budget_fails_naming_the_endpoint(tmp_path, monkeypatch):
    with private_moto_server(tmp_path) as (endpoint, server):
        store = _store(
            endpoint, monkeypatch, APRFLOW_S3_READ_TIMEOUT="2", APRFLOW_S3_MAX_ATTEMPTS="2"
        )
        store.put_bytes("a.json", b"{}")
        os.kill(server.pid, signal.SIGSTOP)
        tic = time.monotonic()
        with pytest.raises(StoreError, match=f"at {endpoint} failed after up to 2 attempts"):
            store.put_bytes("b.json", b"{}")
        assert time.monotonic() - tic < 20
        os.kill(server.pid, signal.SIGCONT)
        assert store.get_bytes("a.json") == b"{}"


@pytest.mark.slow
def test_s3_refusing_connections_mid_sequence_loses_nothing(tmp_path, monkeypatch):
    with private_moto_server(tmp_path) as (endpoint, _):
        proxy = RefusingProxy(int(endpoint.rsplit(":", 1)[1]))
        _store(endpoint, monkeypatch)  # the bucket, created directly
        store = _store_at(f"http://127.0.0.1:{proxy.port}", monkeypatch)
        expected = {f"trials/t{i}/result.json": os.urandom(100) for i in range(6)}
        items = list(expected.items())
        for key, data in items[:3]:
            store.put_bytes(key, data)
        outage = threading.Thread(target=proxy.refuse, args=(REFUSE_S,))
        outage.start()
        assert proxy.refusing.wait(30)
        tic = time.monotonic()
        for key, data in items[3:]:  # the first of these is refused until the proxy is back
            store.put_bytes(key, data)
        blocked = time.monotonic() - tic
        outage.join()
        print(f"\nS3 refusing connections {REFUSE_S} s: survived after {blocked:.0f} s")
        assert blocked >= REFUSE_S - 1
        assert store.list("trials/") == sorted(expected)
        assert all(store.get_bytes(key) == data for key, data in expected.items())
