"""The apr-study's parameter files: the paper-scale one passes the checks once its nine dataset
slots are built, and its header states what the calibrated planner estimates for it."""

import re
from pathlib import Path

CONFIGS = Path(__file__).parents[2] / "pipelines" / "configs"
PAPER = CONFIGS / "apr_study.paper.yaml"
# The paper's datasets by size (training images: 80 % of a set without a given split).
TRAIN_IMAGES = {
    "imagenet": 1_281_167,
    "concrete": 32_000,
    "mlc2008": 34_400,
    "ham10000": 8_000,
    "powerline": 6_400,
    "insects": 5_040,
    "natural": 2_000,
    "cifar10": 50_000,
    "cifar100": 50_000,
}
CLASSES = {
    "imagenet": 1000,
    "concrete": 2,
    "mlc2008": 9,
    "ham10000": 7,
    "powerline": 2,
    "insects": 291,
    "natural": 6,
    "cifar10": 10,
    "cifar100": 100,
}


def test_the_paper_file_is_the_papers_design_and_states_the_planners_gpu_hours(
    tmp_path, monkeypatch
):
    from components.common.storage import open_store
    from components.data.build import name_key
    from components.data.descriptor import DatasetRef
    from components.train.chunk import LOCAL_SLOTS_ENV
    from pipelines.config import load_config
    from pipelines.preflight import check_study
    from pipelines.registry import PIPELINES
    from pipelines.sweep import planned_study

    store = open_store(str(tmp_path / "store"))
    for name, n_train in TRAIN_IMAGES.items():
        ref = DatasetRef(name, "", name, CLASSES[name], 224, n_train, n_train // 4)
        store.put_json(name_key(name), {"ref": ref.to_dict()})
    monkeypatch.setenv("APRFLOW_STORE_URI", store.uri)
    monkeypatch.delenv(LOCAL_SLOTS_ENV, raising=False)  # planned for the cluster's GPUs
    arguments = load_config(PIPELINES["apr-study"], PAPER, {})
    assert arguments["n_models"] == 500 and arguments["space"] == "anynetx_a"
    assert (arguments["flops_min"], arguments["flops_max"]) == (360e6, 400e6)
    assert sorted(arguments["datasets"]) == sorted(TRAIN_IMAGES)
    assert arguments["reference"] == "imagenet"
    check_study(arguments, local=False)

    from components.train.chunk import estimate

    trials, _ = planned_study(arguments)
    assert len(trials) == 500 * 9
    hours = {name: 0.0 for name in TRAIN_IMAGES}
    for trial in trials:
        hours[trial.dataset.name] += estimate(trial).seconds / 3600
    header = " ".join(PAPER.read_text().split())
    stated = re.search(r"4,500 trials, ([\d,]+) GPU-hours .*?ImageNet is ([\d,]+)", header)
    assert stated, "the header states the trials, the GPU-hours and ImageNet's share"
    assert float(stated[1].replace(",", "")) == round(sum(hours.values()))
    assert float(stated[2].replace(",", "")) == round(hours["imagenet"])
