"""The evaluate_transfer KFP component run through kfp.local's SubprocessRunner."""

import csv

import pytest
from helpers import kfp_local_session

from components.transfer.component import evaluate_transfer

# kfp.local warns when an image name lacks "python"; ours is a Python image.
pytestmark = pytest.mark.filterwarnings("ignore:.*non-Python base image")


@pytest.fixture
def env(trained_trial, tmp_path):
    uri, trial_id = trained_trial
    with kfp_local_session(uri, tmp_path):  # store_uri='' must find the trial here
        yield trial_id


def test_component_locally(env):
    trial_id = env
    task = evaluate_transfer(
        backbone=f"trial:{trial_id}", datasets=["faces"], resolution=12, store_uri=""
    )
    results = task.outputs["results"]
    with open(results.path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["metric"]) for r in rows] == [
        ("knn", "knn_top1"),
        ("knn", "knn_top5_fraction"),
        ("linear", "linear_top1"),
        ("linear", "linear_C"),
    ]
    assert results.metadata["rows"] == 4
    assert results.metadata["backbone"] == f"trial:{trial_id}"
    metrics = task.outputs["metrics"].metadata
    assert set(metrics) == {f"faces.{r['metric']}" for r in rows}
    # The logged metric is the table's number, and the trial (trained on faces) beats chance.
    assert metrics["faces.knn_top1"] == float(rows[0]["value"]) > 0.6
