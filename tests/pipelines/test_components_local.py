"""Each KFP component run on its own through kfp.local's SubprocessRunner.

The tasks run in subprocesses of this Python environment with the same component code that
runs in our image on Kubeflow; they share a store and an MLflow database in a temp folder.
"""

import json
import os
from typing import NamedTuple

import pytest
from helpers import kfp_local_session
from kfp import dsl
from trial_checks import checkpoint_test_error

from components.analyze.component import analyze_study
from components.common.storage import open_store
from components.data.component import prepare_datasets
from components.sample.component import sample_architectures
from components.sample.spec_io import read_specs_jsonl
from components.train.component import list_trials, plan_study, train_trial

# kfp.local warns when an image name lacks "python"; ours is a Python image.
pytestmark = pytest.mark.filterwarnings("ignore:.*non-Python base image")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("components")
    with kfp_local_session(str(root / "store"), root):
        yield root


@pytest.fixture(scope="module")
def data(env):
    return prepare_datasets(datasets=["faces", "shapes"], resolution=12, seed=0, store_uri="")


@pytest.fixture(scope="module")
def sample(env):
    return sample_architectures(
        space="anynetx_a", n_models=2, flops_min=150e6, flops_max=250e6, seed=0
    )


@dsl.pipeline
def plan_pipeline() -> NamedTuple("Plan", study_id=str, parent_run_id=str):
    """plan_study takes input artifacts, which kfp.local passes only inside a pipeline."""
    data = prepare_datasets(datasets=["faces", "shapes"], resolution=12, seed=0, store_uri="")
    sample = sample_architectures(
        space="anynetx_a", n_models=2, flops_min=150e6, flops_max=250e6, seed=0
    )
    plan = plan_study(
        specs=sample.outputs["specs"],
        datasets=data.outputs["refs"],
        study_name="components",
        recipe="apr_tiny",
        epochs=1,
        seeds=[0],
        engine="torch",
        store_uri="",
        tracking_uri="",
        kfp_run_id="local-test",
    )
    return NamedTuple("Plan", study_id=str, parent_run_id=str)(
        plan.outputs["study_id"], plan.outputs["parent_run_id"]
    )


@pytest.fixture(scope="module")
def plan(env):
    return plan_pipeline()


def test_prepare_datasets(data):
    with open(data.outputs["refs"].path) as f:
        refs = json.load(f)
    assert [r["name"] for r in refs] == ["faces", "shapes"]
    assert refs[0]["num_classes"] == 2 and refs[1]["num_classes"] == 6
    assert data.outputs["refs"].metadata["datasets"]["faces"] == refs[0]["content_hash"]


def test_sample_architectures(sample):
    specs = read_specs_jsonl(sample.outputs["specs"].path)
    assert len(specs) == 2 and specs[0] != specs[1]
    assert sample.outputs["specs"].metadata["accepted"] == 2
    with open(sample.outputs["population"].path) as f:
        population = f.read()
    assert "| cumulative depth |" in population and "data:image/png;base64," in population


@pytest.mark.slow
@pytest.mark.extended
def test_plan_train_analyze(env, plan):
    from mlflow.tracking import MlflowClient

    study = plan.outputs["study_id"]
    assert study.startswith("components-")
    items = list_trials(study_id=study, store_uri="").output
    assert len(items) == 2 * 2 and all(item["study_id"] == study for item in items)
    trained = []
    for item in items:
        task = train_trial(trial=item, store_uri="", tracking_uri="", kfp_run_id="local-test")
        assert task.outputs["Output"] == item["trial_id"]
        # The error the task reports is that of the trial's stored weights on the test split.
        assert task.outputs["metrics"].metadata["top1_error"] == pytest.approx(
            checkpoint_test_error(open_store(str(env / "store")), item["trial_id"]), abs=1e-9
        )
        trained.append(task.outputs["Output"])
    report = analyze_study(
        chunk_trials=[1] * len(trained),
        study_id=study,
        parent_run_id=plan.outputs["parent_run_id"],
        reference="faces",
        store_uri="",
        tracking_uri="",
    )
    with open(report.outputs["report"].path) as f:
        html = f.read()
    assert "<img" in html
    # Each study dataset's own summary (class histogram + samples, from its build).
    assert '<h2 id="dataset-summaries">Datasets</h2>' in html
    assert 'id="fig-dataset-faces"' in html and 'id="fig-dataset-shapes"' in html
    with open(report.outputs["summary"].path) as f:
        markdown = f.read()
    assert "faces" in markdown and "](data:image/png;base64," in markdown
    assert "](figures/" not in markdown, "the Kubeflow UI cannot follow relative links"
    with open(report.outputs["results"].path) as f:
        assert len(f.read().strip().splitlines()) == 1 + 4
    assert "mean_error/shapes" in report.outputs["metrics"].metadata
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    parent = client.get_run(plan.outputs["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp.run_id"] == "local-test"
