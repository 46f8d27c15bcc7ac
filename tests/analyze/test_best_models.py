"""The study's best models per dataset are MLflow models: logged on their trial runs,
registered, loadable without unpickling code, linked from the results table and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.slow
def test_best_models_are_registered_and_load_with_weights_only(local_env, monkeypatch):
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from components.analyze.models import Classifier
    from components.analyze.run import analyze_study
    from components.common import tracking
    from components.common.storage import open_store
    from components.common.tracking.models import MODEL_TAG, RANK_TAG
    from components.data.datasets import prepare_all
    from components.sample.samplers import sample_specs
    from components.train.run import plan_study, train_trial
    from components.transfer.features import _load_trial_backbone

    monkeypatch.setenv("APRFLOW_TORCH_THREADS", "1")
    # mlflow.pytorch refuses pickled models unless this is set: the logged ones need not.
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    refs = [r.to_dict() for r in prepare_all(["faces", "shapes"], 12, 0)]
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), seed=0).specs]
    ids, study, parent = plan_study(
        specs, refs, "models", "apr_tiny", {"epochs": 1}, [0], "torch", None, None
    )
    results = [train_trial(trial_id, study, None, None) for trial_id in ids]
    faces = [r for r in results if r["dataset"]["name"] == "faces"]
    best = min(faces, key=lambda r: r["top1_error"])
    analysis = dict(trial_ids=ids, study=study, parent_run_id=parent, reference=None)
    analyze_study(
        **analysis, store_uri=None, tracking_uri=None, out_dir=local_env / "out", best_models=1
    )

    uri = tracking.resolve_tracking_uri()
    client = MlflowClient(uri)
    (version,) = client.search_model_versions(f"name = '{study}-faces'")
    assert version.tags[RANK_TAG] == "1" and version.tags[tracking.TRIAL_TAG] == best["trial_id"]
    # The two datasets' models were exported at once, by two processes: each logged model was
    # created before the other dataset's version was registered.
    (other,) = client.search_model_versions(f"name = '{study}-shapes'")

    def logged_at(v) -> int:  # the logged model's creation: the start of its logging
        model_id = client.get_run(v.run_id).data.tags[MODEL_TAG].removeprefix("models:/")
        return client.get_logged_model(model_id).creation_timestamp

    (start, end), (other_start, other_end) = (
        (logged_at(v), v.creation_timestamp) for v in (version, other)
    )
    assert start < other_end and other_start < end, "exported one after the other"
    run = client.get_run(version.run_id)
    assert run.data.tags[tracking.TRIAL_TAG] == best["trial_id"]
    assert run.data.tags[MODEL_TAG].startswith("models:/")
    # The registered model is the trial's weights behind its dataset's normalisation.
    model = mlflow.pytorch.load_model(f"models:/{study}-faces/1")
    trained = _load_trial_backbone(best["trial_id"], open_store(None), None, keep_head=True)
    images = torch.rand(3, 3, 12, 12)  # another batch size than the input example's
    expected = Classifier(trained.model, trained.mean, trained.std).eval()(images)
    assert torch.allclose(model(images), expected, atol=1e-5)
    table = pd.read_csv(local_env / "out" / "results.csv", dtype=str, keep_default_na=False)
    urls = dict(zip(table["trial_id"], table["model_url"], strict=True))
    assert urls[best["trial_id"]].endswith(f"/#/models/{study}-faces/versions/1")
    assert sum(url != "" for url in urls.values()) == 2  # one per dataset
    # The report's "Best models" table links the registered version by its load URI.
    link = f'<a href="{urls[best["trial_id"]]}" target="_blank" rel="noopener">'
    html = (local_env / "out" / "report.html").read_text()
    assert html.count(link) == 1 and f"{link}models:/{study}-faces/1</a>" in html
    markdown = (local_env / "out" / "report.md").read_text()
    assert f"[models:/{study}-faces/1]({urls[best['trial_id']]})" in markdown
    # best_models=0 logs nothing, and the report says why there is no link.
    analyze_study(
        **analysis, store_uri=None, tracking_uri=None, out_dir=local_env / "none", best_models=0
    )
    table = pd.read_csv(local_env / "none" / "results.csv", dtype=str, keep_default_na=False)
    assert (table["model_url"] == "").all()
    html = (local_env / "none" / "report.html").read_text()
    assert "table-best-models" not in html and "<code>best_models=0</code> logs none" in html
    # A top_k that takes in every model is refused before any model is logged.
    with pytest.raises(ValueError, match="top_k=2 compares every one of the study's 2 models"):
        analyze_study(
            **analysis, store_uri=None, tracking_uri=None, out_dir=local_env / "k", top_k=2
        )
    assert not (local_env / "k").exists()
    # A re-run of the analysis logs and registers nothing new.
    analyze_study(
        **analysis, store_uri=None, tracking_uri=None, out_dir=local_env / "again", best_models=1
    )
    assert len(client.search_model_versions(f"name = '{study}-faces'")) == 1


def test_best_models_is_a_bounded_parameter_of_the_apr_study():
    import yaml

    from components.analyze.component import analyze_study
    from components.analyze.run import DEFAULT_BEST_MODELS
    from pipelines.apr_study import apr_study
    from pipelines.config import (
        ConfigError,
        load_config,
        parameter_descriptions,
        pipeline_parameters,
    )

    assert pipeline_parameters(apr_study)["best_models"].default == DEFAULT_BEST_MODELS
    assert analyze_study.component_spec.inputs["best_models"].default == DEFAULT_BEST_MODELS
    assert "0 = none, at most 50" in parameter_descriptions(apr_study)["best_models"]
    # The committed pipeline hands the run's value to the analysis task.
    compiled = Path(__file__).parents[2] / "pipelines" / "compiled" / "apr_study.yaml"
    spec = next(yaml.safe_load_all(compiled.read_text()))
    task = spec["root"]["dag"]["tasks"]["analyze-study"]
    assert task["inputs"]["parameters"]["best_models"] == {"componentInputParameter": "best_models"}
    assert spec["root"]["inputDefinitions"]["parameters"]["best_models"]["defaultValue"] == 3
    assert load_config(apr_study, None, {"best_models": 0})["best_models"] == 0
    for value in (-1, 51):
        with pytest.raises(ConfigError, match=r"'best_models' must be in \[0, 50\]"):
            load_config(apr_study, None, {"best_models": value})


def test_the_analysis_refuses_best_models_out_of_range_before_any_work(tmp_path):
    from components.analyze.run import analyze_study

    with pytest.raises(ValueError, match=r"best_models must be in \[0, 50\], got 51"):
        analyze_study(
            ["t"], "s", "run", None, str(tmp_path / "store"), None, tmp_path / "out", best_models=51
        )
    with pytest.raises(ValueError, match=r"top_k must be in \[0, 500\], got 501"):
        analyze_study(
            ["t"], "s", "run", None, str(tmp_path / "store"), None, tmp_path / "out", top_k=501
        )
    assert list(tmp_path.iterdir()) == []


def _results_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "run_id": ["r1", "r2"],
            "dataset": ["faces", "faces"],
            "status": ["ok", "ok"],
            "top1_error": [10.0, 20.0],
        }
    )


def test_model_logging_runs_in_a_second_process_and_fails_softly(tmp_path, capsys):
    """The best models are logged by a second process beside the statistics: leaving the
    block on an error stops it; a process that fails gives no links and a progress line, not a
    failed analysis; ``k`` 0 starts nothing."""
    from components.analyze.run import ModelLogging

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad_store = "ftp://nowhere/store"  # the process cannot open it: it exits 1
    with (
        pytest.raises(RuntimeError, match="statistics failed"),
        ModelLogging(uri, bad_store, "s", 1) as models,
    ):
        process = models._process
        assert process is not None and process.pid != os.getpid()
        raise RuntimeError("statistics failed")
    assert process.poll() is not None  # stopped, not left running
    with ModelLogging(uri, bad_store, "s", 1) as models:
        models.submit(_results_rows())
        assert models.urls() == {}
    assert "the best models are not in MLflow: their process exited 1" in capsys.readouterr().err
    with ModelLogging(uri, bad_store, "s", 0) as models:
        models.submit(_results_rows())
        assert models._process is None and models.urls() == {}
    assert "best_models is 0: no model is logged to MLflow" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"best_models must be in \[0, 50\], got 51"):
        ModelLogging(uri, bad_store, "s", 51)


# Logs a small model after the model process' preload, as a forked worker does: prints the
# modules the logging imported itself and how often it scanned the installed packages.
MODEL_AFTER_PRELOAD = textwrap.dedent(
    """
    import json, sys
    import importlib_metadata
    from components.analyze.models import preload
    from components.common import tracking
    from components.common.tracking.models import log_trial_model
    preload()
    scans = []
    scan = importlib_metadata.packages_distributions
    importlib_metadata.packages_distributions = lambda: scans.append(1) or scan()
    before = set(sys.modules)
    import torch
    uri = sys.argv[1]
    parent = tracking.start_study_run(uri, "preload", "study-1", {})
    run_id = tracking.log_trial_run(uri, tracking.TrialLog(parent, "t1", "model-t1"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    example = torch.rand(2, 3, 2, 2)
    log_trial_model(uri, run_id, model, example, "preload-model", {})
    print(json.dumps({"imported": sorted(set(sys.modules) - before), "scans": len(scans)}))
    """
)


@pytest.mark.slow
@pytest.mark.extended  # a speed guard, not a behaviour: make test stays within its budget
def test_a_forked_model_logger_imports_no_git_and_scans_no_packages(tmp_path):
    """The model process imports GitPython and builds MLflow's package map before it forks
    its workers: each worker would otherwise spend about a second of its own on them."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-c", MODEL_AFTER_PRELOAD, uri],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logged = json.loads(done.stdout.splitlines()[-1])
    assert logged["scans"] == 0
    late = [name for name in logged["imported"] if name.split(".")[0] == "git"]
    assert late == [], f"logging a model imported {late[:10]}: add them to PRELOAD"
