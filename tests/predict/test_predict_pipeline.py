"""The toy apr-predict run end to end through the CLI and kfp.local, and its re-run.

The population is the demo's study at a smaller size (3 architectures, 1 epoch, on digits and
faces, named apr-demo as the toy file's population); the toy file then predicts their ranking
on shapes with k = 3 (all of them). About 4 minutes on 2 cores: ``make test-all`` runs it;
``tests/predict/test_predict.py`` checks the predictors, the statistics and the report in
seconds within ``make test``.
"""

import json
import math
import re
from pathlib import Path

import pytest
from helpers import run_aprflow

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "pipelines" / "configs"
N_MODELS = 3
SCORES = ("knn/knn_top1", "knn/knn_top5_fraction", "logme/logme", "leep/leep", "linear/linear_top1")
BASELINES = ("source:digits", "source:faces", "source", "random")

pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_toy_prediction_end_to_end_and_its_rerun_reuses_features_and_trials(tmp_path):
    from mlflow.tracking import MlflowClient

    population = [
        *("--config", str(CONFIGS / "apr_study.toy.yaml"), "--set", f"n_models={N_MODELS}"),
        *("--set", "epochs=1", "--set", "datasets=digits,faces"),
    ]
    done = run_aprflow(["run", "apr-study", *population], tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    predict = [
        *("run", "apr-predict", "--config", str(CONFIGS / "apr_predict.toy.yaml")),
        *("--set", f"k={N_MODELS}", "--set", "n_bootstrap=200", "--set", "random_draws=200"),
    ]
    first = run_aprflow(predict, tmp_path, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = Path(first.stdout.strip())
    assert report.name == "report.html" and report.parent.name.startswith("apr-predict-")
    trained = re.findall(rf"^  trial +\d/{N_MODELS} ok  ", first.stderr, re.MULTILINE)
    assert len(trained) == N_MODELS, first.stderr  # trained on shapes here, none reused

    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["k"] == summary["n_trained"] == N_MODELS
    assert set(summary["predictors"]) == set(SCORES) | set(BASELINES)
    for key, result in summary["predictors"].items():
        assert result["n_models"] == N_MODELS, key
        for stat in ("kendall", "weighted_tau"):
            values = [result[stat][part] for part in ("value", "ci_low", "ci_high")]
            assert all(v is not None and math.isfinite(v) for v in values), (key, stat, result)
    html = report.read_text()
    assert html.split('<p class="answer">')[1].startswith("On shapes, ")
    assert f"(n = {N_MODELS})" in html.split('<p class="answer">')[1].split("</p>")[0]

    again = run_aprflow(predict, tmp_path, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == first.stdout  # the same study
    reused_scores = re.findall(r"chunk \d+: results found in the store, reused", again.stderr)
    assert len(reused_scores) >= 1 and "splits cached" not in again.stderr
    reused = re.findall(r"^  trial +\d/\d ok \(reused\) ", again.stderr, re.MULTILINE)
    assert len(reused) == N_MODELS, again.stderr
    rerun = json.loads((report.parent / "summary.json").read_text())
    assert rerun["predictors"]["logme/logme"]["kendall"]["value"] == pytest.approx(
        summary["predictors"]["logme/logme"]["kendall"]["value"]
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("apr-predict")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["aprflow.kind"] == "predict"
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == len(runs) - 1, "every other run is nested under the one parent"
    predictors = [r for r in nested if "aprflow.predictor" in r.data.tags]
    assert len(predictors) == len(SCORES) + len(BASELINES)
    trials = [r for r in nested if "aprflow.recipe" in r.data.tags]
    assert len(trials) == N_MODELS
    scores = [r for r in nested if "aprflow.regime" in r.data.tags]
    assert len(scores) == 2 * N_MODELS * 4  # models x the four cheap regimes
    assert client.list_artifacts(parent.info.run_id, "report")
