"""``aprflow run transfer-study`` / ``aprflow submit transfer-study``: the preflight's one-line
errors, the dry-run plan, and the three parameter files (toy, paper, hub ranking)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "pipelines" / "configs"
TOY = str(CONFIGS / "transfer_study.toy.yaml")
PAPER = CONFIGS / "transfer_study.paper.yaml"
HUB = str(CONFIGS / "hub_ranking.yaml")
# A one-model list with random weights: the preflight reads it, nothing is downloaded.
ONE = "model_list=hub:test_resnet?pretrained=false"


@pytest.fixture(autouse=True)
def params_cache(tmp_path, monkeypatch):
    from components.transfer import hub

    monkeypatch.setattr(hub, "PARAMS_CACHE", tmp_path / "params")


def _error(argv: list[str], capsys) -> str:
    """The one error line of an ``aprflow`` command that fails (exit 1)."""
    from pipelines.cli import main

    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], captured.err
    assert captured.out == ""
    return errors[0]


def _sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


# A model list's text in --set: a YAML double-quoted string, its \n escapes are newlines.
BAD_RUNS = [
    ((), "model_list is required: a CSV path, s3://bucket/key, or the list's text"),
    (("model_list=/nowhere/models.csv",), "cannot read model list /nowhere/models.csv"),
    (
        ("model_list=hub:resnt50?pretrained=false",),
        "no timm model matches (of 0 the pattern selects)",
    ),
    (
        ('model_list="model,weights\\nresnt50,random\\n"',),
        "unknown timm model 'resnt50': did you mean",
    ),
    (('model_list="model\\nresnet18,random\\n"',), "line 2: more cells than the header's"),
    ((ONE, "regimes=[knn, vibes]"), "unknown or no regime(s) vibes: choose from knn"),
    ((ONE, "regimes=[knn, knn]"), "regimes name knn more than once"),
    ((ONE, "datasets=[digits, digits]"), "datasets name digits more than once"),
    ((ONE, "datasets=[digitz]"), "unknown or missing dataset(s) digitz: did you mean digits?"),
    ((ONE, "resolution=4"), "config key 'resolution' must be in [8, 1024], got 4"),
    ((ONE, "input_size=4"), "input_size must be in [8, 1024], got 4"),
    ((ONE, "chunk_size=-1"), "chunk_size must be a whole number of models >= 0"),
    ((ONE, "k=0"), "k and batch_size must be >= 1, got 0"),
    ((ONE, "device=tpu"), "device 'tpu': choose from auto, cuda, cpu"),
    ((ONE, "logme_variant=mine"), "unknown logme_variant 'mine': choose from"),
    ((ONE, "recipe.lr_grid=[-1]"), "recipe field 'lr_grid' (each value) must be > 0"),
    ((ONE, "study_name=../x"), "study_name '../x' is not a valid name"),
    (
        ("model_list=hub:test_*?max_params=500K",),
        "loads timm's pretrained weights, which needs allow_download: true",
    ),
    (("model_list=hub:test_*?tags=some",), "tags must be default or all"),
    (('model_list="model\\ntrial:0123abcd\\n"',), "trial:0123abcd is not a finished trial in"),
    (('model_list="model\\ntrials:all\\n"',), "no model to evaluate (trials:all found no finished"),
    (
        ("model_list=hub:test_*?pretrained=false&limit=2",),
        "18 timm models match, more than limit=2: lower max_params",
    ),
]


@pytest.mark.parametrize(("sets", "needle"), BAD_RUNS)
def test_a_bad_run_is_one_error_line_before_anything_runs(sets, needle, local_env, capsys):
    runs = local_env / "runs"
    argv = ["run", "transfer-study", "--runs-dir", str(runs), "--dry-run", *_sets(*sets)]
    error = _error(argv, capsys)
    assert needle in error, error
    assert not (local_env / "store").exists() or not any((local_env / "store").rglob("*.json"))
    assert not runs.exists()


def test_a_cluster_run_refuses_a_path_of_this_machine(capsys):
    error = _error(["submit", "transfer-study", "--dry-run", "--set", "model_list=x.csv"], capsys)
    assert "is a path on this machine, which the cluster's pods cannot read" in error


def test_cuda_on_a_machine_without_a_gpu(local_env, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda is valid here")
    argv = ["run", "transfer-study", "--dry-run", *_sets(ONE, "device=cuda")]
    assert "device 'cuda' was asked for but this machine has no usable GPU" in _error(argv, capsys)


def test_the_dry_run_plans_the_toy_file(local_env, capsys):
    from pipelines.cli import main

    assert main(["run", "transfer-study", "--config", TOY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: transfer-study\n")
    # The inline model list is one line of YAML, its text intact.
    line = next(x for x in out.splitlines() if x.startswith("model_list: "))
    assert json.loads(line.removeprefix("model_list: ")).startswith("model,weights\ntest_byobnet")
    plan = out.split("s3_secret: aprflow-s3\n")[1].splitlines()
    assert plan[0] == "models: 10 (10 with random weights)"
    assert plan[1] == "target digits: 10 classes, 1,078 train / 269 val / 450 test images"
    assert plan[2] == (
        "10 models x 1 target(s) x 5 regimes (knn, linear, logme, leep, finetune) = 50 results "
        "in 2 chunk task(s) of up to 5 models"
    )
    assert plan[3].startswith("features: 10 models x 1,797 target images = 17,970 forward")
    # 2 learning rates x 50 steps on 1,078 images, then the refit's 50, at batch 256.
    assert plan[4] == (
        "finetune on digits: 2 lr x weight-decay configuration(s) x 50 steps + a refit of 50 "
        "steps at batch 256 (steps_policy scaled, capped at 50) = 38,400 images trained per model"
    )
    assert plan[5] == "fine-tune and scratch: 384,000 images trained in all"
    # The 10 models' multiply-adds at 32 px, each no faster than the CPU row of the planner's
    # table: 384,000 fine-tuning images, and the 17,970 forward passes at a third of a step.
    from components.train.throughput import load_table

    [cpu] = [row for row in load_table() if row.kind == "cpu"]
    fine_tune = 384_000 / cpu.images_per_s  # every test_* model is below the row's MACs
    assert plan[6].startswith("time: about ") and "of CPU, one model at a time:" in plan[6]
    stated = re.search(r"fine-tune and scratch (\d+):(\d\d):(\d\d)", plan[6])
    h, m, sec = (int(x) for x in stated.groups())
    assert 3600 * h + 60 * m + sec == pytest.approx(fine_tune, abs=1)
    assert plan[7].startswith("  cpu, ")
    assert not (local_env / "store").exists() or not list((local_env / "store").rglob("studies"))


def _filled_paper(datasets: list[str]) -> dict:
    """The paper file's arguments with every slot filled as a user would: built datasets,
    weights (random here) and top-1 values."""
    import yaml

    config = yaml.safe_load(PAPER.read_text())
    text = re.sub(r"<weights of [^>]+>", "random", config["model_list"])
    config["model_list"] = re.sub(r"<[^>]+ top-1>", "75.0", text)
    config["datasets"] = datasets
    return config


def test_the_paper_file_fails_only_on_its_slots(local_env, tmp_path, capsys):
    import yaml

    from pipelines.cli import main

    error = _error(["submit", "transfer-study", "--config", str(PAPER), "--dry-run"], capsys)
    assert error.startswith("error: unfilled slots (<...>) of the parameter file: 12 dataset")
    for name in ("<food101>", "<cifar10>", "<voc2007>", "<oxford_flowers102>"):
        assert name in error
    assert "26 model-list slot(s): weights on line(s) 5-7, 9-14, 16-18, 20; source_top1" in error

    config = tmp_path / "paper.yaml"
    config.write_text(yaml.safe_dump(_filled_paper(["digits", "faces", "shapes"])))
    assert main(["submit", "transfer-study", "--config", str(config), "--dry-run"]) == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["recipe_overrides"] == {"steps_policy": "fixed"}
    assert arguments["regimes"] == ["knn", "linear", "finetune", "scratch"]
    models = [line.split(",")[0] for line in arguments["model_list"].splitlines()[2:]]
    models = [m for m in models if not m.startswith("#")]
    assert len(models) == 13 and "resnet50" in models and "nasnetalarge" in models
    # On this machine (device cpu) the same file passes the local checks too and plans the
    # fixed protocol: 6 configurations x 20,000 steps and a 20,000-step refit per target.
    argv = ["run", "transfer-study", "--config", str(config), "--set", "device=cpu"]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "13 models x 3 target(s) x 4 regimes" in out
    assert "6 lr x weight-decay configuration(s) x 20,000 steps + a refit of 20,000" in out


def test_the_hub_file_fails_on_its_target_slot_and_its_row_needs_downloads(local_env, capsys):
    from pipelines.cli import main

    error = _error(["submit", "transfer-study", "--config", HUB, "--dry-run"], capsys)
    assert "1 dataset slot(s) <target>: replace each with a dataset you built" in error
    argv = ["submit", "transfer-study", "--config", HUB, "--dry-run", "--set", "datasets=[digits]"]
    assert main(argv) == 0
    arguments = json.loads(capsys.readouterr().out)
    assert arguments["model_list"] == "hub:*?max_params=30M&pretrained=true"
    assert arguments["regimes"] == ["knn", "logme"] and arguments["allow_download"] is True
    no_download = [*argv, "--set", "allow_download=false"]
    assert "needs allow_download: true" in _error(no_download, capsys)


def test_the_hub_rehearsal_of_its_header_plans_the_tiny_models(local_env, capsys):
    from pipelines.cli import main

    rehearsal = _sets(
        "model_list=hub:test_*?pretrained=false&max_params=1.2M",
        "allow_download=false",
        "datasets=[digits]",
        "input_size=32",
        "device=cpu",
    )
    assert main(["run", "transfer-study", "--config", HUB, *rehearsal, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "models: 18 (18 with random weights)" in out
    assert "18 models x 1 target(s) x 2 regimes (knn, logme) = 36 results in 2 chunk" in out


def test_submit_sends_the_toy_list_as_text(capsys):
    """`aprflow submit transfer-study` uploads the compiled pipeline and starts a run whose
    model_list is the list's text (a cluster pod reads no file of this machine)."""
    from pipelines.cli import main
    from tests.submit.kfp_api import API, FakeKfpApi

    with FakeKfpApi() as api:
        code = main(["submit", "transfer-study", "--host", api.url, "--config", TOY])
        assert code == 0, capsys.readouterr().err
        (create,) = api.calls("POST", f"{API}/pipelines/create")
        (run,) = api.calls("POST", f"{API}/runs")
    assert create["json"]["pipeline"]["display_name"] == "aprflow-transfer-study"
    parameters = run["json"]["runtime_config"]["parameters"]
    assert parameters["model_list"].startswith("model,weights\ntest_byobnet,random\n")
    assert parameters["datasets"] == ["digits"] and parameters["finetune_max_steps"] == 50
    assert "started in experiment aprflow" in capsys.readouterr().out
