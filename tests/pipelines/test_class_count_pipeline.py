"""The class-count pipeline: its data step (subsets built in the store, nested, reused), its
checks and dry-run plan through `aprflow run`, its two parameter files and documentation page,
and the toy file end to end through kfp.local (``extended``: minutes)."""

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
TOY, PAPER = CONFIGS / "class_count.toy.yaml", CONFIGS / "class_count.paper.yaml"
CITATION = (
    "Tuggener, Schmidhuber, Stadelmann 2021",
    "Is it enough to optimize CNN architectures on ImageNet?",
    "arXiv 2103.09108",
)


def _keys(store) -> set[str]:
    return set(store.list("datasets/"))


def test_subsets_are_built_nested_keep_the_test_images_and_are_reused(tmp_path):
    from components.classcount.subsets import build_class_subsets
    from components.data.build import load_manifest

    uri = str(tmp_path / "store")
    refs, layout = build_class_subsets("digits", [2, 5], 2, seed=0, resolution=8, store_uri=uri)
    names = [ref.name for ref in refs]
    assert (
        names
        == layout.datasets
        == [
            "digits-8px",
            "digits-8px-c5-d0",
            "digits-8px-c5-d1",
            "digits-8px-c2-d0",
            "digits-8px-c2-d1",
        ]
    )
    store = open_store(uri)
    by_name = {ref.name: ref for ref in refs}
    full = load_manifest(store, by_name["digits-8px"])
    test_per_class = full["splits"]["test"]["per_class"]
    for subset in layout.subsets:
        manifest = load_manifest(store, by_name[subset.name])
        assert tuple(manifest["class_names"]) == subset.class_names
        assert by_name[subset.name].num_classes == subset.classes
        # Every test image of the kept classes, and no other: the full set's test split.
        assert by_name[subset.name].n_test == sum(test_per_class[c] for c in subset.class_names)
    for draw in range(2):
        small, large = (set(s.class_names) for s in (layout.of_size(k)[draw] for k in (2, 5)))
        assert small < large
    assert layout.of_size(5)[0].class_names != layout.of_size(5)[1].class_names

    before = _keys(store)
    again, same = build_class_subsets("digits", [5, 2], 2, seed=0, resolution=8, store_uri=uri)
    assert same == layout and [r.content_hash for r in again] == [r.content_hash for r in refs]
    assert _keys(store) == before, "a re-run builds nothing new"


def test_a_subset_name_bound_to_other_content_is_refused(tmp_path):
    from components.classcount.subsets import build_class_subsets
    from components.data.build import build_dataset
    from components.data.descriptor import DatasetDescriptor, DatasetError, ImagePolicy

    uri = str(tmp_path / "store")
    mine = DatasetDescriptor("digits-8px-c2-d0", "builtin:faces", image=ImagePolicy(8))
    build_dataset(open_store(uri), mine, print)
    with pytest.raises(DatasetError, match="'digits-8px-c2-d0' .* is bound to"):
        build_class_subsets("digits", [2], 1, seed=0, resolution=8, store_uri=uri)


def test_names_carry_the_seed_and_the_resolution():
    from components.classcount.subsets import full_name, subset_name

    assert full_name("digits", 16, 0) == "digits-16px"
    assert full_name("digits", 32, 3) == "digits-32px-s3"
    assert full_name("imagenet", 64, 3) == "imagenet"
    assert subset_name("digits", "digits-32px-s3", 3, 5, 1) == "digits-32px-s3-c5-d1"
    assert subset_name("imagenet", "imagenet", 0, 100, 0) == "imagenet-c100-d0"
    assert subset_name("imagenet", "imagenet", 3, 100, 0) == "imagenet-s3-c100-d0"


@pytest.mark.parametrize(
    ("class_counts", "draws", "others", "message"),
    [
        ([], 3, [], "class_counts must be a list of subset sizes"),
        ([5, 1], 3, [], r"class_counts \(each value\) must be in \[2, 100000\]"),
        ([5, 5], 3, [], "names a size twice"),
        (list(range(2, 23)), 1, [], r"number of class_counts must be in \[1, 20\]"),
        ([5], 0, [], r"draws must be in \[1, 100\]"),
        ([5], 101, [], "each draw builds and stores one more dataset"),
        ([5, 2], 50, [], r"number of datasets .* must be in \[1, 100\]"),
        ([5], 2, ["shapes", "shapes"], "names a dataset twice"),
    ],
)
def test_the_design_is_bounded(class_counts, draws, others, message):
    from components.classcount.subsets import check_design

    with pytest.raises(ValueError, match=message):
        check_design(class_counts, draws, others)


def test_plan_layout_refuses_what_the_source_cannot_give():
    from components.classcount.subsets import plan_layout

    digits = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="class_counts \\[10\\] must be below the 10 classes"):
        plan_layout("digits", digits, [10, 5], 2, 0, 16)
    with pytest.raises(ValueError, match="names the source or a subset"):
        plan_layout("digits", digits, [5], 2, 0, 16, ["digits-16px-c5-d1"])
    with pytest.raises(ValueError, match="is not valid"):
        plan_layout("x" * 60, digits, [5], 2, 0, 16)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["class_counts=[10]"], "error: class_counts [10] must be below the 10 classes of"),
        (["class_counts=[5, 1]"], "error: class_counts (each value) must be in [2, 100000]"),
        (["draws=1000"], "error: config key 'draws' must be in [1, 100]"),
        (["source=nowhere"], "error: unknown or missing dataset(s) nowhere"),
        (["other_datasets=[shapes, shapes]"], "error: other_datasets ['shapes', 'shapes'] names"),
        (["n_bootstrap=2000000"], "error: config key 'n_bootstrap' must be in [0, 1000000]"),
    ],
)
def test_run_refuses_a_bad_design_in_one_line(sets, expected, local_env, capsys):
    overrides = [part for s in sets for part in ("--set", s)]
    assert main(["run", "class-count", "--config", str(TOY), *overrides, "--dry-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err


def test_dry_run_plans_every_subset_without_building_it(local_env, capsys):
    assert main(["run", "class-count", "--config", str(TOY), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: class-count\n")
    assert "datasets: digits-16px (10 classes, 1,347 training images); 6 subsets" in out
    assert "digits-16px-c5-d0" in out and "digits-16px-c2-d2" in out
    assert re.search(r"\n\d+ trials in \d+ chunks", out)
    assert "device-hours, one trial at a time" in out
    assert not (local_env / "store" / "datasets").exists(), "a dry run builds nothing"


def _header(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text().splitlines() if line.startswith("#")
    ).replace("\n# ", " ")


@pytest.mark.parametrize("path", [TOY, PAPER], ids=["toy", "paper"])
def test_parameter_files_cite_the_paper_and_pass_the_cluster_checks(path):
    from pipelines.config import load_config
    from pipelines.registry import PIPELINES
    from pipelines.submit import preflight

    header = " ".join(_header(path).split())
    for part in CITATION:
        assert part in header, (path.name, part)
    assert "Table 3" in header and "Fig. 8" in header
    assert f"aprflow run class-count --config pipelines/configs/{path.name}" in header or (
        "aprflow submit class-count --host" in header
    )
    preflight("class-count", load_config(PIPELINES["class-count"], path, {}))


def test_submit_checks_the_paper_file_without_a_cluster(capsys):
    host = ["--host", "http://127.0.0.1:9"]  # never contacted with --dry-run
    assert main(["submit", "class-count", *host, "--config", str(PAPER), "--dry-run"]) == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["source"] == "imagenet" and arguments["class_counts"] == [100, 10, 5, 2]
    bad = ["--set", "class_counts=[100, 1000, 1]"]
    assert main(["submit", "class-count", *host, "--config", str(PAPER), *bad, "--dry-run"]) == 1
    assert "class_counts (each value) must be in [2, 100000]" in capsys.readouterr().err


def test_the_paper_file_states_the_planners_gpu_hours():
    """The header's GPU-hours are what the calibrated planner estimates for the file's
    arguments on ImageNet-1k (1,281 training images per class)."""
    from components.classcount.subsets import plan_layout
    from pipelines.class_count_preflight import planned_trials, train_images
    from pipelines.config import load_config
    from pipelines.registry import PIPELINES
    from pipelines.sweep import estimate_lines

    arguments = load_config(PIPELINES["class-count"], PAPER, {})
    assert arguments["class_counts"] == [100, 10, 5, 2] and arguments["n_models"] == 500
    assert (arguments["flops_min"], arguments["flops_max"]) == (360e6, 400e6)

    classes = [f"n{i:08d}" for i in range(1000)]
    layout = plan_layout(
        "imagenet",
        classes,
        arguments["class_counts"],
        arguments["draws"],
        arguments["data_seed"],
        arguments["resolution"],
    )
    trials, _ = planned_trials(
        arguments, layout, train_images(layout, dict.fromkeys(classes, 1281), {})
    )
    hours = float(re.search(r"estimated ([\d.]+) device-hours", estimate_lines(trials)[0])[1])
    stated = re.search(r"([\d,]+) GPU-hours", _header(PAPER))
    assert stated, "the paper file states its GPU-hours"
    assert float(stated[1].replace(",", "")) == pytest.approx(hours, rel=0.01)
    assert len(trials) == 500 * (1 + 4 * arguments["draws"])


def test_documentation_page_lists_every_parameter_and_both_files():
    from pipelines.class_count import class_count

    page = (ROOT / "docs" / "studies" / "class-count.md").read_text()
    listed = re.search(r"`(study_name, source, [^`]+)`", page).group(1)
    assert [name.strip() for name in listed.split(",")] == list(class_count.component_spec.inputs)
    assert "class_count.toy.yaml" in page and "class_count.paper.yaml" in page
    assert "studies/class-count.md" in (ROOT / "mkdocs.yml").read_text()


@pytest.mark.slow
@pytest.mark.extended
def test_toy_class_count_end_to_end_and_its_rerun(tmp_path):
    """The toy file at a smaller size (4 architectures, 2 draws, 1 epoch: 20 trials) through
    kfp.local: a finite answer, the figures, one MLflow parent over the trial runs; a re-run
    builds and trains nothing again."""
    from mlflow.tracking import MlflowClient

    args = [
        *("run", "class-count", "--config", str(TOY)),
        *("--set", "n_models=4", "--set", "draws=2", "--set", "epochs=1"),
        *("--set", "n_bootstrap=2000"),
    ]
    done = run_aprflow(args, tmp_path, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = Path(done.stdout.strip())
    assert report.name == "report.html" and report.parent.name.startswith("class-count-toy-")
    n_trials = 4 * (1 + 2 * 2)
    trained = re.findall(rf"^  trial +\d+/{n_trials} ok  ", done.stderr, re.MULTILINE)
    assert len(trained) == n_trials, done.stderr

    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["n_models"] == 4 and summary["class_counts"] == [5, 2]
    for entry in summary["apr"]:
        for kind in ("spearman", "kendall"):
            values = [entry[kind][key] for key in ("value", "ci_low", "ci_high")]
            assert all(v is not None and math.isfinite(v) for v in values), (entry, kind)
    assert all(math.isfinite(v) for v in summary["metrics"].values())
    for name in ("class_count", "apr_scatter", "matrix"):
        assert (report.parent / "figures" / f"{name}.png").stat().st_size > 1000
    html = report.read_text()
    assert html.split('<p class="answer">')[1].startswith("On digits (10 classes), Spearman")
    assert "n = 4 architectures" in html

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("class-count-toy")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_models"] == 4 and "spearman_mean/c5" in parent.data.metrics
    assert parent.data.params["class_count.class_counts"] == "5,2"
    assert client.list_artifacts(parent.info.run_id, "report")
    trials = [r for r in runs if "aprflow.trial_id" in r.data.tags]
    assert len(trials) == n_trials
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)

    again = run_aprflow(args, tmp_path, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == done.stdout  # the same study
    reused = re.findall(r"^  trial +\d+/\d+ ok \(reused\) ", again.stderr, re.MULTILINE)
    assert len(reused) == n_trials, again.stderr
    assert again.stderr.count("already built") >= 5  # the full set and the 4 subsets
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == len(runs)
