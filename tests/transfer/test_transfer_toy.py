"""The toy transfer study end to end: ``aprflow run transfer-study --config
pipelines/configs/transfer_study.toy.yaml`` through kfp.local from an empty store, as from a
fresh clone (nothing downloaded, nothing trained before).

About 3.5 minutes on 2 shared cores, so ``make test-all`` runs it; the pipeline's steps run
through kfp.local within ``make test`` (tests/transfer/test_transfer_pipeline.py) and the toy
file's checks and plan in seconds (tests/transfer/test_transfer_preflight.py).
"""

import json
import math
import re
from pathlib import Path

import pytest
from helpers import run_aprflow

ROOT = Path(__file__).parents[2]
TOY = ROOT / "pipelines" / "configs" / "transfer_study.toy.yaml"
SCORES = (
    "knn/knn_top1",
    "knn/knn_top5_fraction",
    "logme/logme",
    "leep/leep",
    "linear/linear_top1",
)

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_the_toy_file_runs_end_to_end_and_its_header_holds(tmp_path):
    from mlflow.tracking import MlflowClient

    done = run_aprflow(["run", "transfer-study", "--config", str(TOY)], tmp_path, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = Path(done.stdout.strip())
    assert report.name == "report.html" and report.parent.name.startswith("transfer-toy-")
    folder = report.parent

    rows = (folder / "results.csv").read_text().splitlines()
    assert not [row for row in rows if ",failed," in row]
    comparison = json.loads((folder / "comparison.json").read_text())
    scores = comparison["targets"]["digits"]["scores_vs_finetune"]
    for key in SCORES:
        assert scores[key]["n_models"] == 10, key
        for stat in ("kendall", "weighted_tau"):
            values = [scores[key][stat][part] for part in ("value", "ci_low", "ci_high")]
            assert all(math.isfinite(v) for v in values), (key, stat, values)
    # The numbers the toy file's header states.
    header = {
        "knn/knn_top1": -0.13,
        "knn/knn_top5_fraction": -0.02,
        "logme/logme": -0.16,
        "leep/leep": -0.07,
        "linear/linear_top1": 0.04,
    }
    for key, value in header.items():
        assert round(scores[key]["kendall"]["value"], 2) == value, key
        assert scores[key]["kendall"]["ci_low"] < 0 < scores[key]["kendall"]["ci_high"], key

    html = report.read_text()
    assert "Does a cheap score predict fine-tuned accuracy on digits?" in html
    images = set(re.findall(r'<img alt="(\w+)" src="data:image/png;base64,', html))
    assert {"scores_vs_finetune_digits", "learning_curves"} <= images, images
    assert (folder / "curves.csv").read_text().count("\n") > 10

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("transfer-toy")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 10 * 5  # models x regimes on one target
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
