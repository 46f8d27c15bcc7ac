"""The seed study (Wightman, Touvron, Jégou 2021, "ResNet strikes back: An improved training
procedure in timm", arXiv 2110.00476, §5): its parameter files and checks, the apr-study's
named architectures, the paper file's planned cost, and the toy file end to end."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from helpers import run_aprflow

from components.common.errors import AprflowError
from pipelines.config import ConfigError, load_config, parse_overrides

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "pipelines" / "configs"
TOY, PAPER = CONFIGS / "seed_study.toy.yaml", CONFIGS / "seed_study.paper.yaml"


def _arguments(path: Path | None, *overrides: str) -> dict:
    from pipelines.seed_study import seed_study

    return load_config(seed_study, path, parse_overrides(list(overrides)))


@pytest.mark.parametrize("path", [TOY, PAPER], ids=["toy", "paper"])
def test_the_parameter_files_pass_the_cluster_checks(path):
    from pipelines.seed_preflight import check_seed_study

    arguments = _arguments(path)
    check_seed_study(arguments, local=False)
    lines = path.read_text().splitlines()
    header = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    for cited in ("Wightman, Touvron, Jégou 2021", "ResNet strikes back", "arXiv 2110.00476"):
        assert cited in header, cited
    assert "aprflow " in header and "seed-study" in header


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["architecture=resnet5O"], "unknown timm model 'resnet5O': did you mean resnet50"),
        (["dataset_settings={}"], "no second test set"),
        # An AnyNet spec is JSON text (quoted in YAML: unquoted, YAML reads a mapping).
        (["""architecture='{"depths": [1]}'"""], r"field\(s\) \['widths'\] are required"),
        (["architecture={depths: [1]}"], "'architecture' must be a str"),
    ],
)
def test_bad_seed_studies_are_refused_before_anything_runs(overrides, message):
    from pipelines.seed_preflight import check_seed_study

    with pytest.raises(AprflowError, match=message):
        check_seed_study(_arguments(TOY, *overrides), local=False)


def test_a_correlation_needs_three_seeds():
    with pytest.raises(ConfigError, match=r"n_seeds. must be in \[3, 1000\], got 2"):
        _arguments(TOY, "n_seeds=2")


def test_the_apr_study_takes_named_architectures():
    from pipelines.apr_study import apr_study
    from pipelines.preflight import PreflightError, check_study
    from pipelines.sweep import planned_specs, planned_trials

    demo = CONFIGS / "apr_study.toy.yaml"
    arguments = load_config(
        apr_study, demo, parse_overrides(["n_models=0", "architectures=[resnet10t, test_vit]"])
    )
    check_study(arguments, local=False)
    assert planned_specs(arguments) == [{"timm": "resnet10t"}, {"timm": "test_vit"}]
    assert planned_trials(arguments) == 2 * 3  # x the demo's 3 datasets, 1 seed
    mixed = arguments | {"n_models": 2}
    assert [s.get("timm") for s in planned_specs(mixed)] == [None, None, "resnet10t", "test_vit"]
    with pytest.raises(PreflightError, match="at least one architecture"):
        check_study(arguments | {"architectures": []}, local=False)
    with pytest.raises(PreflightError, match="more than once"):
        check_study(arguments | {"architectures": ["test_vit", "test_vit"]}, local=False)


def test_the_paper_files_cost_is_the_planners(tmp_path, monkeypatch):
    """With ImageNet's and the second test set's names bound in a store (their counts only),
    the paper file passes the local checks, and the planner's plan for GPUs (the dry run's
    lines; ``aprflow run --dry-run`` prints them on a machine with a GPU) holds the trials,
    tasks and GPU-hours that the file's header states."""
    from components.common.storage import open_store
    from components.data.build import name_key
    from components.data.descriptor import DatasetRef
    from components.train.chunk import LOCAL_SLOTS_ENV
    from pipelines.seed_preflight import check_seed_study, dry_run_summary

    store = open_store(str(tmp_path / "store"))
    for name, n_train, n_test in (("imagenet", 1_281_167, 50_000), ("imagenet_v2", 1000, 9000)):
        ref = DatasetRef(name, f"datasets/{name}/manifest.json", name, 1000, 224, n_train, n_test)
        store.put_json(name_key(name), {"ref": ref.to_dict()})
    monkeypatch.setenv("APRFLOW_STORE_URI", store.uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv(LOCAL_SLOTS_ENV, raising=False)  # planned for the cluster's GPUs
    arguments = _arguments(PAPER)
    check_seed_study(arguments, runs_dir=tmp_path / "runs")
    plan = dry_run_summary(arguments).splitlines()
    assert plan[0] == "100 trials in 100 chunks: 100 training tasks"
    assert "312 pods" in plan[1] and "NVIDIA H200" in plan[3]
    hours = float(re.search(r"estimated ([\d.]+) device-hours", plan[2]).group(1))
    header = " ".join(PAPER.read_text().split())
    assert f"{hours / 100:.1f} GPU-hours per seed" in header
    assert f"{hours:,.0f} GPU-hours for the 100 seeds" in header
    assert "312 pods" in header


@pytest.mark.extended
def test_the_toy_seed_study_end_to_end(tmp_path):
    """The toy file through the real CLI and kfp.local (about 2 min 20 s on an idle 2-core
    machine): every seed trained, the report's std and r finite with their intervals, the
    figure written, one MLflow parent with one nested run per seed."""
    from mlflow.tracking import MlflowClient

    done = run_aprflow(["run", "seed-study", "--config", str(TOY)], tmp_path, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = Path(done.stdout.strip())
    study_dir = report.parent
    summary = json.loads((study_dir / "summary.json").read_text())
    n_seeds = 8
    assert summary["trials"] == {"planned": n_seeds, "ok": n_seeds, "failed": []}
    assert [r["test_set"] for r in summary["spread"]] == ["test", "shapes_v2"]
    for record in summary["spread"]:
        assert record["n_seeds"] == n_seeds and record["n_images"] == 300
        assert 0 < record["std_ci_low"] < record["std"] < record["std_ci_high"]
        assert math.isfinite(record["binomial_sd"])
    (pair,) = summary["pairs"]
    assert pair["test_sets"] == ["test", "shapes_v2"] and pair["n_seeds"] == n_seeds
    assert -1 <= pair["ci_low"] <= pair["value"] <= pair["ci_high"] <= 1
    assert summary["headline"].startswith(("Yes", "No", "Not resolved"))
    assert f"n = {n_seeds} seeds of resnet10t" in summary["headline"]
    from markupsafe import escape  # as the report's template escapes text

    html = report.read_text()
    assert escape(summary["question"]) in html and escape(summary["headline"]) in html
    assert "<img" in html
    assert (study_dir / "figures" / "seeds.png").stat().st_size > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("seed-toy")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        and "aprflow.trial_id" in r.data.tags
    ]
    assert len(trials) == n_seeds and parent.info.status == "FINISHED"
    assert {r.data.params["model"] for r in trials} == {"resnet10t"}
    assert sorted(int(r.data.params["seed"]) for r in trials) == list(range(n_seeds))
    metrics = parent.data.metrics
    assert metrics["seed_pair_r/shapes/test vs shapes_v2"] == pytest.approx(pair["value"])
    assert re.search(r"seed_std/shapes/shapes_v2", " ".join(metrics))
