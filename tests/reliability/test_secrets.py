"""Secrets placed in URIs are never echoed or persisted: the userinfo and secret query
parameters of a URI are redacted (``user:***@``, ``token=***``) wherever aprflow prints, logs or
reports it, and a transfer model list with a credentialed weights URI is refused before
anything is written.

Each test puts a known secret value into a URI and checks that it appears in no output. (The
environment-credentials check of a whole study is in test_study.py.)
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.common.uris import carries_credentials, redact_uri

SECRET = "aprflow-uri-secret-7d41c9-do-not-log"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("http://user:pw@host:5000/x", "http://user:***@host:5000/x"),
        # An AWS secret access key may hold "/" and "+": still the password.
        ("s3://AKIAEXAMPLE:wJal/rX+Utn@bucket/w.pt", "s3://AKIAEXAMPLE:***@bucket/w.pt"),
        ("http://u:p@ss@host/x", "http://u:***@host/x"),  # a raw "@" in the password
        ("https://ghp_token123@github.com/o/r", "https://***@github.com/o/r"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1"
            "&X-Amz-Signature=beef",
            "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=***"
            "&X-Amz-Signature=***",
        ),
        (
            "https://a.blob.core.windows.net/c?sv=2020&sig=ab%3D",
            "https://a.blob.core.windows.net/c?sv=2020&sig=***",
        ),
        ("s3://bucket/w.pt?token=abc&v=2", "s3://bucket/w.pt?token=***&v=2"),
        # Free text: every URI of a message, quoted or not.
        (
            'Could not connect to the endpoint URL: "http://u:pw@127.0.0.1:9/bkt"; check x',
            'Could not connect to the endpoint URL: "http://u:***@127.0.0.1:9/bkt"; check x',
        ),
        (
            "{'store_uri': 's3://b/x?token=t1', 'tracking_uri': 'http://a:b@h'}",
            "{'store_uri': 's3://b/x?token=***', 'tracking_uri': 'http://a:***@h'}",
        ),
    ],
)
def test_redact_uri_hides_userinfo_and_secret_query_values(text, redacted):
    assert redact_uri(text) == redacted
    assert carries_credentials(text)


@pytest.mark.parametrize(
    "text",
    [
        "http://host:5000/a@b",  # a port, then an "@" in the path
        "sqlite:////tmp/x@y/mlflow.db",
        "file:///data/w@v2.pt",
        "s3://bucket/w@v2.pt?versionId=3",
        "/weights/r50@best.pth and bob@example.com",
    ],
)
def test_redact_uri_leaves_uris_without_secrets_alone(text):
    assert redact_uri(text) == text
    assert not carries_credentials(text)


def test_progress_lines_are_redacted(capsys):
    from components.common.progress import report

    report("local", f"browse the runs with: mlflow ui --backend-store-uri http://u:{SECRET}@h")
    err = capsys.readouterr().err  # progress goes to stderr
    assert SECRET not in err and "http://u:***@h" in err


def _aprflow(argv: list[str], capsys) -> tuple[int, str, str]:
    from pipelines.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_never_prints_a_tracking_password(local_env, closed_port, monkeypatch, capsys):
    """MLFLOW_TRACKING_URI from the environment with a password: refused in one line that
    shows the account but not the password."""
    monkeypatch.chdir(local_env)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:{SECRET}@127.0.0.1:{closed_port}")
    code, out, err = _aprflow(["run", "apr-study", "--dry-run"], capsys)
    assert SECRET not in out + err
    assert code == 1 and err.startswith("error: the MLflow tracking URI http://user:***@")
    assert "MLFLOW_TRACKING_PASSWORD" in err and len(err.splitlines()) == 1


def test_a_store_uri_with_a_query_token_is_refused_redacted(local_env, s3_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    store_uri = f"s3://{s3_env}/store?X-Amz-Signature={SECRET}"
    code, out, err = _aprflow(
        ["run", "apr-study", f"--set=store_uri={store_uri}", "--dry-run"], capsys
    )
    assert SECRET not in out + err
    assert code == 1 and "store_uri carries credentials" in err and "X-Amz-Signature=***" in err


def test_s3_errors_never_print_the_endpoint_secret(local_env, closed_port, monkeypatch, capsys):
    """A token in APRFLOW_S3_ENDPOINT_URL (userinfo and query), the server unreachable: the
    store's error names the endpoint, redacted, in the library and on the command line."""
    from components.common.storage import StoreError, open_store

    monkeypatch.chdir(local_env)
    for key, value in {
        "APRFLOW_S3_ENDPOINT_URL": f"http://user:{SECRET}@127.0.0.1:{closed_port}",
        "APRFLOW_S3_MAX_ATTEMPTS": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreError) as caught:
        open_store("s3://bucket/x").get_bytes("trials/t/result.json")
    assert SECRET not in str(caught.value) and "http://user:***@127.0.0.1" in str(caught.value)

    code, out, err = _aprflow(
        ["run", "apr-study", "--set=store_uri=s3://bucket/x", "--dry-run"], capsys
    )
    assert code == 1 and SECRET not in out + err and "user:***@" in err

    monkeypatch.setenv("APRFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}/?token={SECRET}")
    code, out, err = _aprflow(
        ["run", "apr-study", "--set=store_uri=s3://bucket/x", "--dry-run"], capsys
    )
    assert code == 1 and SECRET not in out + err and "token=***" in err


def test_tracking_errors_never_print_the_password():
    from components.common.tracking import TrackingError, check_tracking

    for uri in (f"http://user:{SECRET}@127.0.0.1:9", f"sqlite:///tmp/db?token={SECRET}"):
        with pytest.raises(TrackingError, match="carries credentials") as caught:
            check_tracking(uri)
        assert SECRET not in str(caught.value)


def test_analysis_table_redacts_run_links(store):
    """The links to MLflow runs go into results.csv and report.html: a UI URL with userinfo
    (APRFLOW_MLFLOW_UI_URL) is redacted there."""
    from components.analyze.run import gather_results

    spec = {
        "depths": [1, 1, 1, 1],
        "widths": [8, 8, 8, 8],
        "bottleneck_ratios": [1.0, 1.0, 1.0, 1.0],
        "group_widths": [8, 8, 8, 8],
    }
    trial = {"spec": spec, "dataset": {"name": "digits"}, "recipe": {"name": "apr_tiny"}}
    store.put_json("trials/t1/trial.json", trial | {"seed": 0})  # planned, not run
    link = f"http://user:{SECRET}@ui/#/experiments/1/runs/r1"
    table = gather_results(store, ["t1"], {"t1": {"run_id": "r1", "run_url": link}})
    assert table["run_url"].tolist() == ["http://user:***@ui/#/experiments/1/runs/r1"]


CREDENTIALED_WEIGHTS = [
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/w.pt",
    f"s3://AKIAEXAMPLE:ab/{SECRET}@bucket/w.pt",
    f"s3://bucket/w.pt?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}",
]


@pytest.mark.parametrize("weights", CREDENTIALED_WEIGHTS)
def test_model_list_with_credentialed_weights_is_refused_when_parsed(weights):
    from components.transfer.errors import TransferError
    from components.transfer.sources import parse_model_list

    text = f"model,weights\ntest_resnet,random\nresnet18,{weights}\n"
    with pytest.raises(TransferError, match="line 3: the weights URI of 'resnet18' carries") as e:
        parse_model_list(text, "models.csv")
    assert SECRET not in str(e.value) and "\n" not in str(e.value)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_transfer_study_with_credentialed_weights_writes_nothing(tmp_path, capsys):
    """Before the fix the model was refused only when loaded: its URI was already in the
    plan (store), results.csv and report.html."""
    from components.common.storage import open_store
    from components.transfer.cli import main

    store_root = tmp_path / "store"
    open_store(str(store_root)).put_json("marker.json", {})  # a store to list before and after
    before = _files(store_root)
    models = tmp_path / "models.csv"
    models.write_text(f"model,weights\ntest_resnet,random\nresnet18,{CREDENTIALED_WEIGHTS[0]}\n")
    argv = ["study", "--models", str(models), "--datasets", "digits", "--resolution", "16"]
    argv += ["--regimes", "knn", "--store", str(store_root), "--out-dir"]
    code = main([*argv, str(tmp_path / "out"), "--bootstrap", "0"])
    captured = capsys.readouterr()
    assert code == 1 and SECRET not in captured.out + captured.err
    assert captured.err.startswith(f"error: {models} line 3: the weights URI of 'resnet18'")
    assert _files(store_root) == before and not (tmp_path / "out").exists()
