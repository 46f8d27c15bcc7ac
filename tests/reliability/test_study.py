"""Whole local studies: credentials never leak into any output, and a study killed mid-run
(SIGKILL of its whole process group) resumes to the same results table as an uninterrupted run.

The uninterrupted run is the credential test's study (S3 store on the loopback server, known
secret values in the environment); the killed one uses a local store: the trials and their
results are the same, whatever the store.
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
from faults import aprflow_env, start_aprflow, wait_for

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAAPRFLOWLEAKCHECK7",
    "AWS_SECRET_ACCESS_KEY": "aprflow-secret-4f9c1e0b7d2a-do-not-log",
    "AWS_SESSION_TOKEN": "aprflow-session-token-8a1d5c-do-not-log",
    "MLFLOW_TRACKING_PASSWORD": "aprflow-mlflow-password-93be-do-not-log",
}
STUDY = ["--set=study_name=reliability", "--set=n_models=2", "--set=datasets=[faces]"]
STUDY += ["--set=resolution=8", "--set=epochs=2"]


def _results(runs: Path) -> list[tuple[str, str, str]]:
    (table,) = runs.glob("reliability-*/results.csv")
    with open(table) as f:
        rows = [(r["trial_id"], r["status"], r["top1_error"]) for r in csv.DictReader(f)]
    return sorted(rows)


@pytest.fixture(scope="module")
def secret_study(s3_endpoint, tmp_path_factory) -> Path:
    """An uninterrupted tiny study on S3 with known secrets in the environment."""
    import boto3

    folder = tmp_path_factory.mktemp("secret-study")
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=SECRETS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRETS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="secret-study")
    env = aprflow_env(
        APRFLOW_STORE_URI="s3://secret-study/store",
        APRFLOW_S3_ENDPOINT_URL=s3_endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
        **SECRETS,
    )
    log = folder / "console.log"
    process = start_aprflow(
        ["run", "apr-study", *STUDY, "--runs-dir", str(folder / "runs")], env, log
    )
    assert process.wait(timeout=400) == 0, log.read_text()[-3000:]
    compiled = start_aprflow(["compile", "--out", str(folder / "compiled")], env, folder / "c.log")
    assert compiled.wait(timeout=120) == 0
    for key in client.list_objects_v2(Bucket="secret-study")["Contents"]:
        data = client.get_object(Bucket="secret-study", Key=key["Key"])["Body"].read()
        (folder / "bucket" / key["Key"]).parent.mkdir(parents=True, exist_ok=True)
        (folder / "bucket" / key["Key"]).write_bytes(data)
    return folder


@pytest.mark.slow
def test_credentials_never_reach_any_output(secret_study):
    files = [p for p in secret_study.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    # Logs, the report, the results table, MLflow's database and artifacts (mlruns/), compiled
    # YAML, every store object.
    assert {".log", ".html", ".csv", ".db", ".yaml", ".json", ".pt", ".png"} <= kinds, kinds
    assert list(secret_study.glob("mlruns/*/*/artifacts/*")), "MLflow artifacts are checked too"
    assert len(files) > 20
    leaks = [
        (str(path.relative_to(secret_study)), name)
        for path in files
        for name, value in SECRETS.items()
        if value.encode() in path.read_bytes()
    ]
    assert leaks == []


@pytest.mark.slow
@pytest.mark.extended
def test_study_killed_mid_run_resumes_to_the_same_results(secret_study, tmp_path):
    env = aprflow_env(
        APRFLOW_STORE_URI=str(tmp_path / "store"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    args = ["run", "apr-study", *STUDY, "--runs-dir", str(tmp_path / "runs")]
    process = start_aprflow(args, env, tmp_path / "killed.log")
    checkpoints = lambda: list((tmp_path / "store").glob("trials/*/checkpoint.pt"))  # noqa: E731
    wait_for(checkpoints, 300, "the first checkpoint of the study")
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and every kfp.local task process
    process.wait(timeout=30)
    assert not list((tmp_path / "runs").glob("reliability-*/results.csv"))
    done_before = len(list((tmp_path / "store").glob("trials/*/result.json")))
    log = tmp_path / "resumed.log"
    resumed = start_aprflow(args, env, log)
    assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]
    task_logs = "".join(p.read_text() for p in (tmp_path / "runs" / "logs").glob("*.log"))
    assert "resuming trial" in task_logs or done_before == 2
    print(f"\nstudy killed with {done_before} of 2 trials done; resumed to identical results")
    assert _results(tmp_path / "runs") == _results(secret_study / "runs")
