"""MLflow views of a tiny study against a real `mlflow server` on loopback.

One module-scoped study (4 sampled AnyNetX models + 1 broken spec x faces, shapes, 1 epoch at
12 px) runs through the same functions as the pipeline's tasks (plan, train each trial,
analyze); the tests then look at it the way a user does in MLflow: the experiment's kind, the
parent run as the study, the trial runs, the searches of docs/mlflow.md, and the run
states.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from components.common import tracking
from components.common.storage import open_store
from components.sample.space import REFERENCE_SPECS, AnyNetSpec

EXPERIMENT = "views-study"

# The three searches of docs/mlflow.md (filter strings typed into MLflow's runs search box).
BEST_ON_SHAPES = "params.dataset = 'shapes' and tags.aprflow.status = 'ok'"
FAILED = "tags.aprflow.status = 'failed'"
ONE_ARCHITECTURE = "params.model = '{model}'"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(mlflow_server, tmp_path_factory):
    """Runs the tiny study once; returns what the tests compare MLflow against."""
    from mlflow.tracking import MlflowClient

    from components.analyze.run import analyze_study
    from components.data.datasets import prepare_all
    from components.sample.samplers import sample_specs
    from components.train.run import plan_study, train_trial

    root = tmp_path_factory.mktemp("views")
    store_uri = str(root / "store")
    saved = os.environ.get("APRFLOW_TORCH_THREADS")
    os.environ["APRFLOW_TORCH_THREADS"] = "1"  # two shared cores
    try:
        refs = prepare_all(["faces", "shapes"], 12, 0, store_uri)
        specs = [s.to_dict() for s in sample_specs("anynetx_a", 4, (150e6, 250e6), seed=0).specs]
        # As KFP hands pipeline arguments over inside a dict: ints as floats or text.
        config = {
            "study_name": EXPERIMENT,
            "n_models": 4.0,
            "flops_min": 150e6,
            "resolution": "12.0",
        }
        plan = dict(
            specs=[*specs, specs[0] | {"block_type": "no_such_block"}],  # fails to build
            datasets=[r.to_dict() for r in refs],
            study_name=EXPERIMENT,
            recipe="apr_tiny",
            recipe_overrides={"epochs": 1},
            seeds=[0],
            engine="torch",
            store_uri=store_uri,
            tracking_uri=mlflow_server,
            kfp_run_id="kfp-run-1",
            config=config,
        )
        ids, study_id, parent = plan_study(**plan)
        results = [train_trial(t, study_id, store_uri, mlflow_server, "kfp-run-1") for t in ids]
        analysis = dict(
            trial_ids=ids,
            study=study_id,
            parent_run_id=parent,
            reference="faces",
            store_uri=store_uri,
            tracking_uri=mlflow_server,
        )
        summary = analyze_study(out_dir=root / "out", **analysis)
    finally:
        if saved is None:
            os.environ.pop("APRFLOW_TORCH_THREADS", None)
        else:
            os.environ["APRFLOW_TORCH_THREADS"] = saved
    client = MlflowClient(tracking_uri=mlflow_server)
    return {
        "uri": mlflow_server,
        "client": client,
        "experiment_id": client.get_experiment_by_name(EXPERIMENT).experiment_id,
        "parent": parent,
        "specs": specs,
        "refs": {r.name: r for r in refs},
        "results": {r["trial_id"]: r for r in results},
        "summary": summary,
        "out": root / "out",
        "store": open_store(store_uri),
        "study_id": study_id,
        "plan": plan,
        "analysis": analysis,
        "config": config,
    }


def _search(study, filter_string: str, order_by: list[str] | None = None) -> list:
    return study["client"].search_runs(
        [study["experiment_id"]], filter_string=filter_string, order_by=order_by
    )


def _trial_ids(runs) -> set[str]:
    return {run.data.tags[tracking.TRIAL_TAG] for run in runs}


def test_experiment_opens_as_model_training(study, mlflow_server):
    experiment = study["client"].get_experiment(study["experiment_id"])
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # An experiment that exists without the tag (made by hand or an older aprflow) gets it.
    client = study["client"]
    old = client.create_experiment("views-untagged")
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    tracking.start_study_run(mlflow_server, "views-untagged", "s-untagged", {})
    tags = client.get_experiment(old).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_parent_run_holds_the_study(study):
    parent = study["client"].get_run(study["parent"])
    params, metrics = parent.data.params, parent.data.metrics
    # The full config, the population and its FLOP band, the recipe per dataset.
    assert json.loads(params["config.flops_min"]) == 150e6 and params["config.resolution"] == "12"
    assert params["config.n_models"] == "4" and params["config.study_name"] == EXPERIMENT
    # One param per quantity: what the config holds is not repeated (its recipe is not given).
    assert "n_models" not in params and params["recipe"] == "apr_tiny"
    assert "recipe.name" not in params
    assert params["population.size"] == "5"  # 4 sampled + 1 broken spec
    flops = [AnyNetSpec.from_dict(s).derived_quantities()["flops"] for s in study["specs"]]
    assert int(params["population.flops_min"]) == min(flops) >= 150e6
    assert int(params["population.flops_max"]) == max(flops) <= 250e6
    assert params["dataset.shapes.recipe"] == params["dataset.faces.recipe"] == "apr_tiny"
    assert params["dataset.shapes.version"] == study["refs"]["shapes"].content_hash
    assert params["analysis.reference"] == "faces" and params["recipe.epochs"] == "1"
    # Study-level metrics are exactly summary.json's (per dataset and per reference pair).
    written = json.loads((study["out"] / "summary.json").read_text())["metrics"]
    assert written == study["summary"]["metrics"]
    assert metrics == pytest.approx(written, rel=1e-12, abs=0)
    for key in ("mean_error/shapes", "median_error/shapes", "min_error/shapes"):
        assert key in metrics
    assert {"spearman_rho/shapes", "kendall_tau/shapes", "topk_overlap/shapes"} <= set(metrics)
    # The Kendall interval, where the bootstrap gives one, beside Spearman's.
    tau = study["summary"]["apr"]["targets"]["shapes"]["kendall"]
    for bound in ("ci_low", "ci_high"):
        assert metrics.get(f"kendall_{bound}/shapes") == tau.get(bound)
    # The report files, and the config as a whole.
    client = study["client"]
    report = {a.path for a in client.list_artifacts(study["parent"], "report")}
    assert {"report/report.html", "report/summary.json", "report/results.csv"} <= report
    figures = [a.path for a in client.list_artifacts(study["parent"], "report/figures")]
    assert "report/figures/ecdf.png" in figures
    assert "config.json" in {a.path for a in client.list_artifacts(study["parent"])}
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.KFP_RUN_TAG] == "kfp-run-1"


def test_trial_runs_are_named_and_described(study):
    runs = _search(study, f"tags.`{tracking.PARENT_TAG}` = '{study['parent']}'")
    assert _trial_ids(runs) == set(study["results"]) and len(runs) == 10
    for run in runs:
        result = study["results"][run.data.tags[tracking.TRIAL_TAG]]
        spec = AnyNetSpec.from_dict(result["spec"])
        model, dataset = spec.spec_hash(), result["dataset"]["name"]
        suffix = "" if result["status"] == "ok" else f"-{result['status']}"
        assert run.info.run_name == f"{model[:8]}-{dataset}-apr_tiny-s0{suffix}"
        tags, params = run.data.tags, run.data.params
        assert tags["aprflow.status"] == result["status"] and tags["aprflow.dataset"] == dataset
        assert tags["aprflow.study_id"] == study["study_id"] and tags["aprflow.model"] == model
        assert params["model"] == model and params["dataset"] == dataset
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == dataset
        assert used.dataset.digest == study["refs"][dataset].content_hash
        assert tags[tracking.CHECKPOINT_TAG] == study["store"].key_uri(
            f"trials/{result['trial_id']}/checkpoint.pt"
        )
        # Only the recipe fields a trainer's trial uses on the memory input.
        assert "recipe.lr" in params and "recipe.lr_grid" not in params
        assert "recipe.auto_augment" not in params and "dataset_hash" not in params
        if result["status"] == "ok":
            derived = spec.derived_quantities()
            # FLOPs and parameters are metrics (numbers sort), the rest params.
            architecture = {k: v for k, v in derived.items() if k not in ("flops", "params")}
            assert {k: params[k] for k in architecture} == {
                k: str(v) for k, v in architecture.items()
            }
            assert "flops" not in params and run.data.metrics["flops"] == result["flops"]
            assert run.data.metrics["top1_error"] == result["top1_error"]
            assert not {"test_error", "test/top1_error", "train_images_per_s"} & set(
                run.data.metrics
            )
            assert run.info.status == "FINISHED"
            # The run lasted as long as the trial trained (not the moment of its logging).
            took = (run.info.end_time - run.info.start_time) / 1000
            assert took >= 0.5 * result["wall_time_s"]
        else:
            assert "total_depth" not in params  # a broken spec has no complexity
            assert run.info.status == "FAILED"


def test_readme_searches_find_the_runs(study):
    results = study["results"].values()
    # 1. Best models per dataset: ok runs on shapes, best first.
    best = _search(study, BEST_ON_SHAPES, order_by=["metrics.top1_error ASC"])
    on_shapes = sorted(
        (r for r in results if r["dataset"]["name"] == "shapes" and r["status"] == "ok"),
        key=lambda r: r["top1_error"],
    )
    assert len(best) == 4
    assert [r.data.metrics["top1_error"] for r in best] == [r["top1_error"] for r in on_shapes]
    # With a threshold, as in the issue: the models under the median error.
    threshold = sorted(r["top1_error"] for r in on_shapes)[2]
    below = _search(study, f"params.dataset = 'shapes' and metrics.top1_error < {threshold}")
    assert _trial_ids(below) == {r["trial_id"] for r in on_shapes if r["top1_error"] < threshold}
    assert 1 <= len(below) <= 2
    # 2. Failed trials: the broken spec on both datasets.
    failed = _search(study, FAILED)
    assert _trial_ids(failed) == {r["trial_id"] for r in results if r["status"] == "failed"}
    assert len(failed) == 2
    assert _trial_ids(_search(study, "tags.aprflow.status != 'ok'")) == _trial_ids(failed)
    # 3. One architecture across datasets.
    model = AnyNetSpec.from_dict(study["specs"][0]).spec_hash()
    same = _search(study, ONE_ARCHITECTURE.format(model=model))
    assert sorted(r.data.params["dataset"] for r in same) == ["faces", "shapes"]
    by_name = _search(study, f"attributes.run_name LIKE '{model[:8]}%'")
    assert _trial_ids(by_name) == _trial_ids(same)


def test_results_table_links_each_trial_to_its_run(study):
    table = pd.read_csv(study["out"] / "results.csv", dtype=str)
    client, uri = study["client"], study["uri"]
    assert len(table) == 10
    for row in table.itertuples():
        run = client.get_run(row.run_id)
        assert run.data.tags[tracking.TRIAL_TAG] == row.trial_id
        expected = f"{uri}/#/experiments/{study['experiment_id']}/runs/{row.run_id}"
        assert row.run_url == expected
    # The report's model table links each analysed model to its run on each dataset.
    html = (study["out"] / "report.html").read_text()
    ok = table[table["status"] == "ok"]
    assert len(ok) == 8 and all(url in html for url in ok["run_url"])


def test_no_run_left_running_and_a_rerun_adds_nothing(study):
    from components.analyze.run import analyze_study
    from components.train.run import plan_study, train_trial

    def everything():
        return study["client"].search_runs([study["experiment_id"]], max_results=1000)

    before = {r.info.run_id for r in everything()}
    assert not _search(study, "attributes.status = 'RUNNING'")
    ids, study_id, parent = plan_study(**study["plan"])
    assert (study_id, parent) == (study["study_id"], study["parent"])
    for trial_id in ids:
        assert train_trial(trial_id, study_id, study["plan"]["store_uri"], study["uri"])["reused"]
    analyze_study(out_dir=study["out"].parent / "again", **study["analysis"])
    assert {r.info.run_id for r in everything()} == before, "no duplicate runs"
    assert not _search(study, "attributes.status = 'RUNNING'")
    history = study["client"].get_metric_history(study["parent"], "mean_error/shapes")
    assert len(history) == 1, "the same value is not logged twice"


def test_a_killed_trial_run_is_completed_not_duplicated(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    config = {"note": "x" * 7000, "nested": {"a": [1, 2]}}
    parent = tracking.start_study_run(
        mlflow_server, "views-killed", "s-killed", {"n": 1}, "", config
    )
    experiment_id = client.get_run(parent).info.experiment_id
    # Params longer than MLflow's 6000 characters are cut; config.json keeps them whole.
    params = client.get_run(parent).data.params
    assert len(params["config.note"]) == 6000 and params["config.note"].endswith("...")
    assert params["config.nested.a"] == "[1, 2]"
    whole = client.download_artifacts(parent, "config.json", str(tmp_path))
    assert json.loads(Path(whole).read_text()) == config
    assert tracking.start_study_run(mlflow_server, "views-killed", "s-killed", {"n": 1}) == parent
    keys = {tracking.TRIAL_TAG: "t-killed", tracking.PARENT_TAG: parent}
    # A task killed right after creating its run: RUNNING, nothing logged.
    empty = client.create_run(experiment_id, tags=keys).info.run_id
    orphan = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent}).info.run_id
    log = tracking.TrialLog(
        parent,
        "t-killed",
        run_name="m-killed",
        params={"dataset": "faces"},
        history={"top1_error": [40.0, 30.0]},
    )
    assert tracking.log_trial_run(mlflow_server, log) == empty
    run = client.get_run(empty)
    assert run.info.status == "FINISHED" and run.info.run_name == "m-killed"
    assert run.data.metrics == {"top1_error": 30.0}
    assert run.data.params == {"dataset": "faces"}
    assert tracking.log_trial_run(mlflow_server, log) == empty
    assert len(client.get_metric_history(empty, "top1_error")) == 2
    # A trial recorded as failed and later recomputed (its corrupt result set aside) updates
    # its run: status, name, metrics.
    failed = replace(log, trial_id="t-2", run_name="m-2-failed", history={}, status="failed")
    rerun = tracking.log_trial_run(mlflow_server, failed)
    assert client.get_run(rerun).info.status == "FAILED"
    recomputed = replace(log, trial_id="t-2", run_name="m-2")
    assert tracking.log_trial_run(mlflow_server, recomputed) == rerun
    run = client.get_run(rerun)
    assert run.info.status == "FINISHED" and run.info.run_name == "m-2"
    assert run.data.tags[tracking.STATUS_TAG] == "ok" and run.data.metrics["top1_error"] == 30.0
    # A run whose task never logged a result was killed: it is ended so when the study
    # finishes, marked failed.
    tracking.finish_study_run(mlflow_server, parent, {"score": 1.0})
    orphan_run = client.get_run(orphan)
    assert orphan_run.info.status == "KILLED"
    assert orphan_run.data.tags[tracking.STATUS_TAG] == "failed"
    assert client.get_run(parent).info.status == "FINISHED"


def test_transfer_study_has_one_run_per_model_dataset_and_regime(study):
    from components.transfer.cli import main
    from components.transfer.run import evaluate_transfer

    trial_id = next(
        t
        for t, r in study["results"].items()
        if r["status"] == "ok" and r["dataset"]["name"] == "faces"
    )
    kwargs = dict(
        backbone=f"trial:{trial_id}",
        datasets=["faces", "shapes"],
        resolution=12,
        store_uri=study["plan"]["store_uri"],
        methods="knn,linear",
        experiment="views-transfer",
        tracking_uri=study["uri"],
    )
    rows = evaluate_transfer(**kwargs)
    client = study["client"]
    experiment = client.get_experiment_by_name("views-transfer")
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("aprflow.kind") == "transfer"]
    children = [r for r in runs if r.data.tags.get(tracking.PARENT_TAG) == parent.info.run_id]
    assert len(runs) == 5 and len(children) == 4
    for run in children:
        dataset, method = run.data.params["dataset"], run.data.params["method"]
        expected = {
            r["metric"]: r["value"]
            for r in rows
            if (r["dataset"], r["method"]) == (dataset, method)
        }
        assert run.data.metrics == expected and run.info.status == "FINISHED"
        assert run.data.tags["aprflow.regime"] == method
        assert run.inputs.dataset_inputs[0].dataset.name == dataset
    knn_faces = next(
        r["value"] for r in rows if (r["dataset"], r["metric"]) == ("faces", "knn_top1")
    )
    assert parent.data.metrics["knn_top1/faces"] == knn_faces
    assert parent.info.status == "FINISHED"
    # The same evaluation from the command line finds the same runs again.
    argv = ["--backbone", kwargs["backbone"], "--datasets", "faces", "shapes", "--resolution"]
    argv += ["12", "--store", kwargs["store_uri"], "--experiment", "views-transfer"]
    assert main([*argv, "--tracking-uri", study["uri"]]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 5, "a re-run adds no runs"


def test_derived_architecture_quantities_are_exact():
    # RegNetX-400MF as AnyNet: the pycls reference counts (Radosavovic et al. 2020,
    # arXiv 2003.13678).
    assert REFERENCE_SPECS["regnetx_400mf"].derived_quantities() == {
        "total_depth": 22,
        "total_width": 640,
        "mean_bottleneck_ratio": 1.0,
        "mean_group_width": 16.0,
        "flops": 397_678_568,
        "params": 5_157_512,
    }


def test_run_links_and_names():
    assert tracking.trial_run_name("1fd3aa936acb6398", "shapes", "apr_tiny", 0, "ok") == (
        "1fd3aa93-shapes-apr_tiny-s0"
    )
    assert tracking.trial_run_name("1fd3aa936acb6398", "shapes", "a1", 2, "diverged") == (
        "1fd3aa93-shapes-a1-s2-diverged"
    )
    assert tracking.run_url("http://mlflow:5000/", "3", "abc") == (
        "http://mlflow:5000/#/experiments/3/runs/abc"
    )
    # A SQLite store is browsed with `mlflow ui` on its default address.
    sqlite = f"sqlite:///{Path('runs/mlflow.db').resolve()}"
    assert tracking.run_url(sqlite, "1", "r") == "http://127.0.0.1:5000/#/experiments/1/runs/r"
    assert tracking.safe_key("spearman_rho/ImageNet (100%)") == "spearman_rho/ImageNet _100__"
    assert tracking.safe_key("a..b") == "a.b"


def test_ui_address_can_be_set_for_cluster_internal_servers(monkeypatch):
    monkeypatch.setenv(tracking.UI_URL_ENV, "https://mlflow.example.org/")
    assert tracking.run_url("http://mlflow.aprflow.svc:5000", "2", "r") == (
        "https://mlflow.example.org/#/experiments/2/runs/r"
    )
