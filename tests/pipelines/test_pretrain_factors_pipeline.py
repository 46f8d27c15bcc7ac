"""The pretraining-factors pipeline: its data step (the pool, the held-out classes and every
variant built in the store, reused), its checks and dry-run plan through `aprflow run`, the
transfer step's join of trials and transfer rows, its two parameter files and documentation
page, and the toy file end to end through kfp.local (``extended``: minutes)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from helpers import run_aprflow

from components.common.storage import open_store
from pipelines.cli import main

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "pipelines" / "configs"
TOY, PAPER = CONFIGS / "pretrain_factors.toy.yaml", CONFIGS / "pretrain_factors.paper.yaml"
CITATION = (
    "Huh, Agrawal, Efros 2016",
    "What makes ImageNet good for transfer learning?",
    "arXiv 1608.08614",
)
COARSE = {str(d): "round" for d in (0, 6, 8, 9)} | {str(d): "straight" for d in (1, 4, 7)}
COARSE |= {str(d): "curved" for d in (2, 3, 5)}


def _design(**changes):
    from components.pretrain.variants import check_design

    arguments = {
        "held_out_classes": 3,
        "images_per_class": [10],
        "pool_class_counts": [3],
        "coarse_map": COARSE,
        "budget_images": 60,
        "budget_class_counts": [6, 2],
        "targets": ["shapes"],
    }
    return check_design(arguments | changes)


def test_variants_are_built_from_the_pool_never_see_the_held_out_classes_and_are_reused(
    tmp_path,
):
    from components.data.build import load_manifest
    from components.pretrain.variants import build_variants

    uri = str(tmp_path / "store")
    refs, transfer, layout = build_variants("digits", _design(), 0, 8, uri, equal_steps_epochs=2)
    assert [r.name for r in refs] == layout.datasets
    # As many optimizer steps as the reference's 2 epochs: epochs x its images / theirs.
    assert [r.epochs for r in refs] == [
        max(1, round(2 * refs[0].n_train / r.n_train)) for r in refs
    ]
    assert refs[0].epochs == 2 and refs[1].epochs > 10  # 10 images per class
    assert [r.name for r in transfer] == ["shapes", "digits-8px-h3"]
    store = open_store(uri)
    by_name = {r.name: r for r in refs + transfer}
    pool = set(layout.pool_classes)
    assert len(pool) == 7 and not pool & set(layout.held_out_classes)
    held = load_manifest(store, by_name[layout.held_out])
    assert set(held["class_names"]) == set(layout.held_out_classes)  # fine labels
    reference = load_manifest(store, by_name[layout.reference.name])
    for variant in layout.variants:
        manifest = load_manifest(store, by_name[variant.name])
        train = manifest["splits"]["train"]["per_class"]
        assert len(manifest["class_names"]) == variant.classes, variant
        if variant.factor == "labels":
            assert set(manifest["class_names"]) == {"round", "straight", "curved"}
            assert sum(train.values()) == sum(reference["splits"]["train"]["per_class"].values())
        else:
            assert set(manifest["class_names"]) <= pool, variant
        if variant.images_per_class:
            assert set(train.values()) == {variant.images_per_class}, variant
    # The dry run's training images of each variant are the builds' own.
    from pipelines.pretrain_preflight import train_images

    planned = train_images(layout, reference["splits"]["train"]["per_class"])
    assert planned == {r.name: r.n_train for r in refs}
    budgets = [v for v in layout.variants if v.factor == "budget"]
    assert [(v.classes, v.images_per_class) for v in budgets] == [(6, 10), (2, 30)]
    for variant in budgets:
        total = sum(
            load_manifest(store, by_name[variant.name])["splits"]["train"]["per_class"].values()
        )
        assert total == 60

    before = set(store.list("datasets/"))
    again, _, same = build_variants("digits", _design(), 0, 8, uri, equal_steps_epochs=2)
    assert same == layout and [r.content_hash for r in again] == [r.content_hash for r in refs]
    assert set(store.list("datasets/")) == before, "a re-run builds nothing new"


def test_equal_steps_scale_each_variants_epochs_to_the_references_steps():
    from components.pretrain.variants import equal_step_epochs

    assert equal_step_epochs(3, [700, 280, 70, 700, 240, 5000]) == [3, 8, 30, 3, 9, 1]
    with pytest.raises(ValueError, match=r"equal-step epochs of a variant must be in \[1, 10000\]"):
        equal_step_epochs(1000, [1000, 10])


def test_held_out_classes_are_the_complement_of_the_pool_and_old_subsets_keep_their_address():
    from components.data.descriptor import SubsetRule
    from components.data.subsets import choose_classes

    rule = SubsetRule(classes=7, seed=4)
    pool = set(choose_classes(10, rule))
    held = set(choose_classes(10, SubsetRule(classes=7, seed=4, held_out=True)))
    assert len(pool) == 7 and held == set(range(10)) - pool
    # A subset without held_out serialises as before the field existed: same content address.
    assert "held_out" not in rule.to_dict() and SubsetRule.from_dict(rule.to_dict()) == rule
    assert SubsetRule(classes=7, held_out=True).to_dict()["held_out"] is True


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"held_out_classes": 1}, "held_out_classes must be 0"),
        ({"images_per_class": [10, 10]}, "names a value twice"),
        ({"images_per_class": 10}, "images_per_class must be a list"),
        ({"images_per_class": list(range(1, 23))}, r"number of images_per_class must be in"),
        ({"pool_class_counts": [1]}, r"pool_class_counts \(each value\) must be in \[2"),
        ({"budget_images": 0}, "budget_images and budget_class_counts go together"),
        ({"budget_class_counts": [4]}, "needs 2 or more class counts"),
        ({"coarse_map": {"0": None}}, "coarse_map must map each class"),
        ({"coarse_map": {"0": ""}}, "coarse_map must map each class"),
        ({"targets": ["shapes", "shapes"]}, "names a dataset twice"),
        ({"targets": [f"t{i}" for i in range(101)]}, r"number of targets must be in \[1, 100\]"),
        (
            {
                "images_per_class": [],
                "pool_class_counts": [],
                "coarse_map": {},
                "budget_images": 0,
                "budget_class_counts": [],
            },
            "no factor to vary",
        ),
        ({"targets": [], "held_out_classes": 0}, "nothing to transfer to"),
    ],
)
def test_the_design_is_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        _design(**changes)


def test_a_coarse_map_read_from_yaml_with_number_names_is_taken_as_text():
    numbers = {int(child): parent for child, parent in COARSE.items()}
    assert _design(coarse_map=numbers).coarse_map == _design().coarse_map


def test_plan_layout_refuses_what_the_pool_cannot_give():
    from components.pretrain.variants import plan_layout

    digits = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match=r"class counts \[7\] do not fit the pool's 7"):
        plan_layout("digits", digits, _design(pool_class_counts=[7]), 0, 16)
    with pytest.raises(ValueError, match="leaves class\\(es\\) .* without a parent"):
        plan_layout("digits", digits, _design(coarse_map={"1": "a", "2": "b"}), 0, 16)
    one_parent = dict.fromkeys(digits, "all")
    with pytest.raises(ValueError, match="fewer parents than classes, and 2 or more"):
        plan_layout("digits", digits, _design(coarse_map=one_parent), 0, 16)
    with pytest.raises(ValueError, match=r"\[30\] images per class exceed the 20"):
        plan_layout("digits", digits, _design(), 0, 16, smallest_class=20)
    with pytest.raises(ValueError, match="leaves 1 of the 10 classes"):
        plan_layout("digits", digits, _design(held_out_classes=9), 0, 16)
    with pytest.raises(ValueError, match="names the source"):
        plan_layout("digits", digits, _design(targets=["digits"]), 0, 16)


def test_the_transfer_rows_join_their_trials_variant_and_seed():
    import pandas as pd

    from components.pretrain.run import transfer_frame

    trials = pd.DataFrame({"trial_id": ["a", "b"], "dataset": ["pool", "pool-n10"], "seed": [0, 1]})
    rows = [
        {"model": "trial:a", "dataset": "shapes", "regime": "linear", "metric": "linear_top1",
         "value": 0.5, "status": "ok", "status_reason": ""},
        {"model": "trial:a", "dataset": "shapes", "regime": "linear", "metric": "linear_C",
         "value": 1.0, "status": "ok", "status_reason": ""},
        {"model": "trial:b", "dataset": "shapes", "regime": "finetune", "metric": "top1",
         "value": None, "status": "failed", "status_reason": "out of memory"},
        {"model": "trial:zz", "dataset": "shapes", "regime": "knn", "metric": "knn_top1",
         "value": 0.9, "status": "ok", "status_reason": ""},
    ]  # fmt: skip
    frame = transfer_frame(trials, rows)
    assert frame[["trial_id", "variant", "seed", "regime"]].values.tolist() == [
        ["a", "pool", 0, "linear"],
        ["b", "pool-n10", 1, "finetune"],
    ]
    assert frame["value"].iloc[0] == 50.0 and math.isnan(frame["value"].iloc[1])
    assert frame["status_reason"].iloc[1] == "out of memory"


def test_the_transfer_plan_takes_the_finished_trials_and_names_the_others(tmp_path, capsys):
    from analysis.pretrain_factors import Layout, Variant
    from components.pretrain.run import PretrainError, plan_transfer
    from components.train.definition import result_key
    from components.transfer.steps import plan_key
    from components.transfer.study import StudySettings

    uri = str(tmp_path / "store")
    store = open_store(uri)
    layout = Layout(
        "digits", "digits-8px", 10, ("1", "2"), "", (), (Variant("p", "reference", "all", 2),),
        ("faces",),
    )  # fmt: skip
    settings = StudySettings(regimes=("knn",), device="cpu")
    store.put_json(result_key("aaa"), {"status": "ok"})
    store.put_json(result_key("bbb"), {"status": "failed", "reason": "diverged"})
    with pytest.raises(PretrainError, match="none of its 2 pretraining trials finished"):
        plan_transfer(["bbb", "ccc"], "st", layout, settings, 8, uri)
    transfer = plan_transfer(["aaa", "bbb", "ccc"], "st", layout, settings, 8, uri)
    assert transfer.startswith("st-transfer-")
    record = store.get_json(plan_key(transfer))
    assert [m["model"] for m in record["models"]] == ["trial:aaa"]
    assert [r["name"] for r in record["refs"]] == ["faces"]
    assert "2 of 3 pretraining trials did not finish and are left out (bbb, ccc)" in (
        capsys.readouterr().err
    )
    # The same trials, targets and settings: the same transfer study, its chunks reused.
    assert plan_transfer(["aaa", "bbb"], "st", layout, settings, 8, uri) == transfer


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["pool_class_counts=[7]"], "error: class counts [7] do not fit the pool's 7 classes"),
        (["images_per_class=[400]"], "error: [400] images per class exceed the"),
        (["source=nowhere"], "error: unknown or missing dataset(s) nowhere"),
        (["targets=[nowhere]"], "error: unknown or missing dataset(s) nowhere"),
        (["regimes=[logme]"], "error: regimes must be distinct ones of knn, linear, finetune"),
        (["regimes=[finetune]"], "error: the induction test on the held-out classes needs"),
        (["n_seeds=2"], "error: config key 'n_seeds' must be in [3, 1000]"),
        (["architecture=nope_net"], "error: unknown timm model 'nope_net'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(sets, expected, tmp_path, capsys):
    overrides = [item for s in sets for item in ("--set", s)]
    store = ["--set", f"store_uri={tmp_path / 'store'}"]
    assert (
        main(["run", "pretrain-factors", "--config", str(TOY), *store, *overrides, "--dry-run"])
        == 1
    )
    assert expected in capsys.readouterr().err


def test_dry_run_names_the_variants_and_the_trials(tmp_path, capsys):
    store = ["--set", f"store_uri={tmp_path / 'store'}"]
    assert main(["run", "pretrain-factors", "--config", str(TOY), *store, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pool: digits-16px-p7 (7 classes); 3 classes held out (digits-16px-h3)" in out
    assert "digits-16px-p7-n10 (10 / class)" in out and "digits-16px-p7-b240-c2 (2 x 120)" in out
    assert "21 trials in 2 chunks" in out
    assert re.search(r"backend \(.*\): \d+ pods", out)
    assert "then 21 pretrained models x 2 targets (shapes, digits-16px-h3) x 3 regimes" in out


def _header(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))


@pytest.mark.parametrize("path", [TOY, PAPER], ids=["toy", "paper"])
def test_each_parameter_file_cites_the_paper_and_says_how_to_run_it(path):
    from pipelines.config import load_config
    from pipelines.registry import PIPELINES
    from pipelines.submit import preflight

    header = " ".join(_header(path).replace("#", " ").split())
    for part in CITATION:
        assert part in header, (path.name, part)
    assert f"aprflow run pretrain-factors --config pipelines/configs/{path.name}" in header or (
        "aprflow submit pretrain-factors --host" in header
    )
    preflight("pretrain-factors", load_config(PIPELINES["pretrain-factors"], path, {}))


def test_the_paper_file_states_the_planners_gpu_hours():
    """The header's GPU-hours are what the calibrated planner estimates for the file's
    pretraining on ImageNet-1k (1,281 training images per class)."""
    from components.pretrain.variants import check_design, plan_layout
    from pipelines.config import load_config
    from pipelines.pretrain_preflight import planned_trials, train_images
    from pipelines.registry import PIPELINES
    from pipelines.sweep import estimate_lines

    arguments = load_config(PIPELINES["pretrain-factors"], PAPER, {})
    classes = sorted(arguments["coarse_map"]) or [f"n{i:08d}" for i in range(1000)]
    layout = plan_layout(
        "imagenet",
        classes,
        check_design(arguments),
        arguments["data_seed"],
        arguments["resolution"],
    )
    trials, _ = planned_trials(
        arguments, layout, train_images(layout, dict.fromkeys(classes, 1281))
    )
    hours = float(re.search(r"estimated ([\d.]+) device-hours", estimate_lines(trials)[0])[1])
    stated = re.search(r"([\d,]+) GPU-hours", _header(PAPER))
    assert stated, "the paper file states its GPU-hours"
    assert float(stated[1].replace(",", "")) == pytest.approx(hours, rel=0.01)
    assert len(trials) == len(layout.variants) * arguments["n_seeds"]


def test_documentation_page_lists_every_parameter_and_both_files():
    from pipelines.pretrain_factors import pretrain_factors

    page = (ROOT / "docs" / "studies" / "pretrain-factors.md").read_text()
    listed = re.search(r"`(study_name, source, [^`]+)`", page).group(1)
    assert [name.strip() for name in listed.split(",")] == list(
        pretrain_factors.component_spec.inputs
    )
    assert "pretrain_factors.toy.yaml" in page and "pretrain_factors.paper.yaml" in page
    assert "studies/pretrain-factors.md" in (ROOT / "mkdocs.yml").read_text()


@pytest.mark.slow
@pytest.mark.extended
def test_toy_pretrain_factors_end_to_end_and_its_rerun(tmp_path):
    """The toy file at a smaller size (2 factors, 3 seeds, 1 epoch: 12 trials) through
    kfp.local: finite answers, the figure, one MLflow parent over the trial and transfer runs;
    a re-run builds, trains and evaluates nothing again."""
    from mlflow.tracking import MlflowClient

    args = [
        *("run", "pretrain-factors", "--config", str(TOY)),
        *("--set", "pool_class_counts=[]", "--set", "budget_images=0"),
        *("--set", "budget_class_counts=[]", "--set", "images_per_class=[10]"),
        *("--set", "epochs=1", "--set", "regimes=[knn, linear]"),
    ]
    done = run_aprflow(args, tmp_path, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = Path(done.stdout.strip())
    assert report.name == "report.html" and report.parent.name.startswith("pretrain-factors-toy-")
    n_trials = 3 * 3  # reference, 10 / class, coarse: 3 seeds each
    trained = re.findall(rf"^  trial +\d+/{n_trials} ok  ", done.stderr, re.MULTILINE)
    assert len(trained) == n_trials, done.stderr

    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["n_seeds"] == 3 and summary["factors"] == ["images_per_class", "labels"]
    assert {(m["dataset"], m["regime"]) for m in summary["measures"]} == {
        (d, r) for d in ("shapes", "digits-16px-h3") for r in ("knn", "linear")
    }
    for row in summary["levels"] + summary["contrasts"]:
        values = [row[key] for key in ("value", "ci_low", "ci_high")]
        assert all(v is not None and math.isfinite(v) for v in values), row
    assert all(math.isfinite(v) for v in summary["metrics"].values())
    assert (report.parent / "figures" / "factors.png").stat().st_size > 1000
    html = report.read_text()
    assert html.split('<p class="answer">')[1].startswith("On shapes, linear probe")
    assert "Induction on 3 held-out classes" in html

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pretrain-factors-toy")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["pretrain.factors"] == "images_per_class,labels"
    assert client.list_artifacts(parent.info.run_id, "report")
    # A transfer evaluation's run carries its regime; a pretraining trial's does not.
    evaluations = [r for r in runs if "aprflow.regime" in r.data.tags]
    trials = [r for r in runs if "aprflow.trial_id" in r.data.tags and r not in evaluations]
    assert len(trials) == n_trials
    assert len(evaluations) == n_trials * 2 * 2  # x 2 targets x 2 regimes
    for run in trials + evaluations:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, run.info.run_name

    again = run_aprflow(args, tmp_path, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == done.stdout  # the same study
    reused = re.findall(r"^  trial +\d+/\d+ ok \(reused\) ", again.stderr, re.MULTILINE)
    assert len(reused) == n_trials, again.stderr
    assert "results found in the store, reused" in again.stderr
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == len(runs)
