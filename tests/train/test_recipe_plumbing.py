"""Every recipe field reachable (``aprflow train``/``run`` ``--set recipe.x=``, a study config's
``recipe_overrides``, per dataset), engine options and extra test sets in the plan, and bad
values refused in one line before anything is written."""

import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import default_env, run_aprflow

from components.data.datasets import DatasetRef
from components.sample.space import REFERENCE_SPECS
from pipelines.cli import main as aprflow
from pipelines.config import ConfigError, load_config, parse_overrides

SPEC = REFERENCE_SPECS["regnetx_200mf"].to_dict()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--recipe", "rsb_a9"],
            "unknown recipe 'rsb_a9': did you mean rsb_a3 or rsb_a2 or rsb_a1?",
        ),
        (
            ["--set", "recipe.mixupp=0.1"],
            "unknown recipe field 'mixupp': did you mean mixup or mixup_prob? valid fields",
        ),
        (["--set", "recipe.lr=-0.1"], "recipe field 'lr' must be > 0, got -0.1"),
        (["--set", "recipe.mixup=1.5"], "recipe field 'mixup' must be in [0, 1], got 1.5"),
        (["--set", "recipe.drop_path=1"], "recipe field 'drop_path' must be in [0, 1), got 1.0"),
        (["--set", "recipe.epochs=two"], "recipe field 'epochs' must be an int, got 'two'"),
        (["--zero-stage", "2"], "zero_stage=2 needs engine=deepspeed"),
        (["--recipe", "rsb_a3", "--input", "memory"], "recipe 'rsb_a3' sets auto_augment"),
    ],
)
def test_train_refuses_bad_recipe_input_in_one_line(tmp_path, capsys, spec_file, args, message):
    store = tmp_path / "store"
    argv = ["train", "--spec", spec_file, "--dataset", "digits", "--store", str(store), *args]
    assert aprflow(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not store.exists(), "nothing is written"


def test_study_config_recipe_overrides_and_the_recipe_alias(tmp_path):
    from pipelines.apr_study import apr_study

    config = tmp_path / "study.yaml"
    config.write_text(
        "recipe_overrides: {lr: 0.05, weight_decay: 0}\n"
        "datasets: [digits, shapes]\n"
        "dataset_settings:\n"
        "  digits: {recipe_overrides: {mixup: 0.2}, test_sets: [faces]}\n"
    )
    sets = ["recipe.lr=0.1", "dataset_settings.shapes.recipe_overrides.epochs=2", "precision=bf16"]
    arguments = load_config(apr_study, config, parse_overrides(sets))
    assert arguments["recipe_overrides"] == {"lr": 0.1, "weight_decay": 0}
    assert arguments["dataset_settings"] == {
        "digits": {"recipe_overrides": {"mixup": 0.2}, "test_sets": ["faces"]},
        "shapes": {"recipe_overrides": {"epochs": 2}},
    }
    assert (arguments["zero_stage"], arguments["precision"]) == (0, "bf16")
    assert load_config(apr_study, None, {})["recipe_overrides"] == {}, "default not mutated"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("recipe.lrr=1", "recipe_overrides: unknown recipe field 'lrr': did you mean lr or"),
        ("recipe.lr=-1", r"recipe_overrides: recipe field 'lr' must be > 0, got -1.0"),
        ("recipe.hflip=yes please", r"recipe field 'hflip' must be a bool, got 'yes please'"),
        ("recipe.opt_eps=null", r"recipe_overrides.opt_eps: null cannot pass"),
        ("recipe_overrides=[1]", r"'recipe_overrides' must be a dict"),
        (
            "dataset_settings.digits.recipe_overrides.mixup=2",
            r"dataset_settings.digits.recipe_overrides: recipe field 'mixup' must be in \[0, 1\]",
        ),
        ("dataset_settings.digits.test_sets=[digits]", r"digits.test_sets must be a list of"),
    ],
)
def test_bad_recipe_overrides_are_one_config_error(override, message):
    from pipelines.apr_study import apr_study

    with pytest.raises(ConfigError, match=message):
        load_config(apr_study, None, parse_overrides([override]))


def test_aprflow_run_refuses_a_bad_override_before_anything_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["run", "apr-study", "--runs-dir", str(runs), "--set", "recipe.drop_path=1.0"]
    assert aprflow(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: recipe_overrides: recipe field 'drop_path' must be in [0, 1)")
    assert err.count("\n") == 1 and not runs.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"zero_stage": 2}, "zero_stage=2 needs engine=deepspeed"),
        (
            {"recipe": "rsb_a3", "dataset_settings": {"digits": {"input": "memory"}}},
            "sets auto_augment, which only the stream input",
        ),
        ({"dataset_settings": {"digits": {"test_sets": ["nope"]}}}, "unknown test set.*nope"),
        (
            {"dataset_settings": {"digits": {"test_sets": ["faces"]}}},
            "digits.test_sets: faces has 2 classes, digits 10",
        ),
        ({"precision": "fp8"}, "precision 'fp8': choose from auto, fp32, bf16, fp16"),
    ],
)
def test_preflight_refuses_what_trials_could_not_train(tmp_path, change, message):
    from pipelines.apr_study import apr_study
    from pipelines.preflight import PreflightError, check_study

    arguments = load_config(apr_study, None, {"datasets": ["digits"]})
    arguments |= {"store_uri": str(tmp_path / "store")} | change
    with pytest.raises(PreflightError, match=message):
        check_study(arguments)
    assert not (tmp_path / "store").exists()


def _ref(name: str, classes: int, content: str) -> DatasetRef:
    return DatasetRef(name, f"datasets/{name}/manifest.json", content, classes, 16, 100, 30)


def test_plan_carries_recipes_engine_options_and_test_sets():
    from components.train.plan import dataset_recipe, engine_options, plan_trials, study_overrides
    from components.train.trial import Trial

    digits, digits_v2, shapes = _ref("digits", 10, "h1"), _ref("v2", 10, "h2"), _ref("s", 6, "h3")
    overrides = study_overrides({"mixup": 0.2, "lr": 0.3}, epochs=3)
    assert overrides == {"mixup": 0.2, "lr": 0.3, "epochs": 3}
    own = dataset_recipe("apr_tiny", overrides, {"recipe_overrides": {"lr": 0.05}, "epochs": 2})
    assert (own.lr, own.mixup, own.epochs, own.batch_size) == (0.05, 0.2, 2, 16)
    study = dataset_recipe("apr_tiny", overrides, {})
    assert (study.lr, study.epochs) == (0.3, 3)
    with pytest.raises(ValueError, match="'mixup' must be in"):
        dataset_recipe("apr_tiny", overrides, {"recipe_overrides": {"mixup": 3}})

    options = engine_options("deepspeed", 2, "fp32")
    assert options == {"zero_stage": 2, "precision": "fp32"}
    assert engine_options("torch", 0, "auto") == {}, "defaults leave trial ids as they are"
    for args, message in ((("torch", 1), "needs engine=deepspeed"), (("deepspeed", 3), "0, 1")):
        with pytest.raises(ValueError, match=message):
            engine_options(*args)

    def plan(**kwargs):
        recipes = {"digits": own, "s": study}
        return plan_trials([SPEC], [digits, shapes], study, [0], "deepspeed", recipes, **kwargs)

    trials = plan(engine_options=options, test_sets={"digits": [digits_v2]})
    assert [t.recipe for t in trials] == [own, study]
    assert trials[0].engine_options == options and trials[0].test_sets == (digits_v2,)
    assert trials[1].test_sets == ()
    assert Trial.from_dict(json.loads(json.dumps(trials[0].to_dict()))) == trials[0]
    plain = plan()
    assert {t.trial_id for t in trials}.isdisjoint(t.trial_id for t in plain)
    assert plain[1].trial_id == plan(test_sets={"digits": [digits_v2]})[1].trial_id
    with pytest.raises(ValueError, match="classes"):
        plan(test_sets={"digits": [shapes]})


@pytest.mark.slow
def test_acceptance_rsb_a3_smoke_trial_on_digits(tmp_path):
    """The issue's acceptance command: a recipe made for ImageNet runs a smoke trial."""
    env = default_env(APRFLOW_STORE_URI=str(tmp_path / "store"), APRFLOW_TORCH_THREADS="2")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = run_aprflow(list(args), tmp_path, env, timeout=None)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    run("sample", "--space", "anynetx_a", "--n", "1", "--flops", "150e6:250e6", "--out", "S.jsonl")
    done = run(
        *("train", "--spec", "S.jsonl", "--index", "0", "--dataset", "digits"),
        *("--recipe", "rsb_a3", "--resolution", "16"),
        *("--set", "recipe.epochs=1", "--set", "recipe.batch_size=64"),
    )
    assert "stream input" in done.stderr, "the recipe's RandAugment chose the stream input"
    result = json.loads(done.stdout)  # the result alone on stdout, progress on stderr
    assert result["status"] == "ok", result.get("reason")
    stored = tmp_path / "store" / "trials" / result["trial_id"] / "result.json"
    assert json.loads(stored.read_text())["status"] == "ok"
    recipe = result["recipe"]
    assert (recipe["name"], recipe["epochs"], recipe["batch_size"]) == ("rsb_a3", 1, 64)
    assert (recipe["opt"], recipe["bce_loss"], recipe["lr"]) == ("lamb", True, 8e-3)
    assert result["dataset"]["input"] == "stream"
    assert len(result["history"]["test_error"]) == 1
    # One epoch of an ImageNet recipe trains (finite BCE loss) but is not expected to learn:
    # the error is a count of the 450 test images, nothing more is asserted of it.
    assert math.isfinite(result["history"]["train_loss"][0])
    assert round(result["top1_error"] * 450 / 100, 6).is_integer()
    print(f"acceptance: top-1 error {result['top1_error']:.1f} %")


def _image_folder(root: Path, seed: int) -> str:
    """Two classes of 10 small PNG images each (an ImageFolder)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("dark", "light"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 100, (12, 12, 3)) + (150 if label == "light" else 0)
            Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{i}.png")
    return str(root)


def test_plan_component_and_pipeline_carry_every_recipe_setting(tmp_path, local_env):
    """The plan task's own code (what Kubeflow runs) turns the pipeline parameters into the
    planned trials; the compiled pipeline binds them to the run's parameters."""
    from types import SimpleNamespace

    import yaml

    from components.common.storage import open_store
    from components.data.build import build_dataset
    from components.data.datasets import prepare_all
    from components.data.descriptor import DatasetDescriptor
    from components.train.component import plan_study
    from components.train.plan import load_trial, load_trial_ids

    store_uri = str(local_env / "store")
    store = open_store(store_uri)
    for name, seed in (("pics", 0), ("pics_v2", 1)):
        source = _image_folder(tmp_path / name, seed)
        build_dataset(store, DatasetDescriptor(name=name, source=source), lambda _: None)
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([r.to_dict() for r in prepare_all(["pics"], 12, 0, store_uri)]))
    specs = tmp_path / "specs.jsonl"
    specs.write_text(json.dumps({"spec": SPEC}) + "\n")
    # Kubeflow hands numbers inside a dict over as floats.
    settings = {"pics": {"recipe_overrides": {"epochs": 2.0}, "test_sets": ["pics_v2"]}}
    study, _ = plan_study.python_func(
        specs=SimpleNamespace(path=str(specs)),
        datasets=SimpleNamespace(path=str(refs)),
        study_name="plumbing",
        recipe="apr_tiny",
        epochs=0,
        seeds=[0.0],
        engine="deepspeed",
        store_uri="",
        tracking_uri="",
        kfp_run_id="",
        plan=SimpleNamespace(path=str(tmp_path / "plan.md")),
        recipe_overrides={"lr": 0.05, "mixup": 0.2},
        dataset_settings=settings,
        zero_stage=1.0,
        precision="fp32",
    )
    (trial_id,) = load_trial_ids(store, study)
    trial = load_trial(store, trial_id)
    assert (trial.recipe.name, trial.recipe.lr, trial.recipe.mixup) == ("apr_tiny", 0.05, 0.2)
    assert trial.recipe.epochs == 2
    assert trial.engine_options == {"zero_stage": 1, "precision": "fp32"}
    assert [t.name for t in trial.test_sets] == ["pics_v2"]

    path = Path(__file__).parents[2] / "pipelines" / "compiled" / "apr_study.yaml"
    compiled = next(yaml.safe_load_all(path.read_text()))
    inputs = compiled["root"]["dag"]["tasks"]["plan-study"]["inputs"]["parameters"]
    for name in ("recipe_overrides", "dataset_settings", "zero_stage", "precision"):
        assert inputs[name] == {"componentInputParameter": name}, name
    # The plan materialises extra test sets with the data seed (not the sampling seed).
    assert inputs["seed"] == {"componentInputParameter": "data_seed"}
