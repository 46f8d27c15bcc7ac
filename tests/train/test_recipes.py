"""Training recipes as files (recipes/*.yaml), their schema and `aprflow recipes`."""

import tomllib
from pathlib import Path

import pytest
import setuptools

from components.train.recipes import (
    BOUNDS,
    DESCRIPTIONS,
    FIELDS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TIMM_NAMES,
    parse_recipe_file,
    recipe_sets,
    resolve_recipe,
)
from pipelines.cli import main as aprflow

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_and_validation():
    recipe = resolve_recipe("apr_tiny", {"epochs": 5, "lr": 1})
    assert recipe.epochs == 5 and recipe.lr == 1.0 and isinstance(recipe.lr, float)
    assert RECIPES["apr_tiny"].epochs == 3, "the registry is not modified"
    with pytest.raises(
        ValueError, match="unknown recipe field 'epoch': did you mean epochs.*valid fields are"
    ):
        resolve_recipe("apr_tiny", {"epoch": 5})
    with pytest.raises(ValueError, match="'hflip' must be a bool, got 1"):
        resolve_recipe("apr_tiny", {"hflip": 1})
    with pytest.raises(ValueError, match="'epochs' must be an int, got 2.5"):
        resolve_recipe("apr_tiny", {"epochs": 2.5})
    with pytest.raises(ValueError, match=r"'epochs' must be in \[1, 10000\], got 0"):
        resolve_recipe("apr_tiny", {"epochs": 0})
    with pytest.raises(ValueError, match="'opt_eps' must be a number or null, got 'x'"):
        resolve_recipe("rsb_a3", {"opt_eps": "x"})
    # Optional fields take None or a number; KFP's integral floats are ints again.
    assert resolve_recipe("rsb_a3", {"bce_target_thresh": None}).bce_target_thresh is None
    assert resolve_recipe("rsb_a3", {"opt_eps": 1e-8, "epochs": 2.0}).epochs == 2
    with pytest.raises(ValueError, match="unknown recipe 'a9': choose from .*rsb_a1"):
        resolve_recipe("a9")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", -0.1, r"'lr' must be > 0, got -0.1"),
        ("mixup", 1.5, r"'mixup' must be in \[0, 1\], got 1.5"),
        ("drop_path", 1.0, r"'drop_path' must be in \[0, 1\), got 1.0"),
        ("label_smoothing", 1.0, r"'label_smoothing' must be in \[0, 1\), got 1.0"),
        ("train_resolution_ratio", 0, r"'train_resolution_ratio' must be in \(0, 1\], got 0.0"),
        ("batch_size", 0, r"'batch_size' must be in \[1, 65536\], got 0"),
        ("aug_repeats", -1, r"'aug_repeats' must be in \[0, 16\], got -1"),
        ("opt", "adam", r"'opt' must be one of sgd, momentum, adamw, lamb, got 'adam'"),
        ("lr_grid", [0.1, 0], r"'lr_grid' \(each value\) must be > 0"),
        ("lr", float("nan"), r"'lr' must be a finite number"),
    ],
)
def test_values_out_of_range_name_field_value_and_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        resolve_recipe("rsb_a3", {field: value})


def test_every_bounded_field_exists_and_names_are_timms():
    import timm.optim
    import torch
    from timm.scheduler import create_scheduler_v2

    assert set(BOUNDS) <= set(FIELDS)
    assert set(OPTIMIZERS) <= set(timm.optim.list_optimizers())
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for sched in SCHEDULES:
        scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=3)
        assert scheduler is not None, sched


# Argument names of timm's train.py (argparse destinations) with their line. The pinned timm
# wheel (1.0.31) ships no train.py; these are from huggingface/pytorch-image-models at commit
# aa4b5850c1543fa488abf260f18390eda46cf85d (version 1.0.29.dev0), train.py, whose argument
# list matches release 1.0.28 apart from added variable-resolution options.
TIMM_TRAIN_ARGUMENTS = {
    "batch_size": 142,  # -b, --batch-size
    "validation_batch_size": 144,  # -vb, --validation-batch-size
    "opt": 191,
    "opt_eps": 193,
    "momentum": 197,
    "weight_decay": 199,
    "clip_grad": 201,
    "sched": 215,
    "lr": 219,
    "warmup_lr": 241,
    "min_lr": 243,
    "epochs": 245,
    "warmup_epochs": 255,
    "scale": 272,
    "ratio": 274,
    "hflip": 276,
    "color_jitter": 280,
    "aa": 288,
    "aug_repeats": 290,
    "bce_loss": 296,
    "bce_target_thresh": 300,
    "reprob": 304,
    "remode": 306,
    "recount": 308,
    "mixup": 312,
    "cutmix": 314,
    "mixup_prob": 318,
    "mixup_switch_prob": 320,
    "mixup_mode": 322,
    "smoothing": 326,
    "train_interpolation": 328,
    "drop_path": 334,
    "model_ema": 354,
    "model_ema_decay": 358,
}


def test_timm_names_are_timm_arguments_and_name_real_fields():
    assert set(TIMM_NAMES) <= set(TIMM_TRAIN_ARGUMENTS)
    assert not set(TIMM_NAMES) & set(FIELDS), "an alias must not shadow a field"
    for alias, field in TIMM_NAMES.items():
        assert field is None or field in FIELDS, alias
    # Every timm argument above is a field, an alias, or refused by name.
    assert set(TIMM_TRAIN_ARGUMENTS) <= set(FIELDS) | set(TIMM_NAMES)


def test_timm_names_set_the_field_in_files_and_overrides():
    text = "# x\nepochs: 1\nbatch_size: 8\nlr: 0.1\nsmoothing: 0.2\naa: rand-m9-mstd0.5\n"
    recipe, _ = parse_recipe_file("t", text, "recipes/t.yaml")
    assert (recipe.label_smoothing, recipe.auto_augment) == (0.2, "rand-m9-mstd0.5")
    assert recipe_sets(["recipe.reprob=0.25", "recipe.mixup-prob=0.5"]) == {
        "re_prob": 0.25,
        "mixup_prob": 0.5,
    }
    same = resolve_recipe("apr_tiny", {"validation_batch_size": 64, "smoothing": 0.0})
    assert same == resolve_recipe("apr_tiny", {"eval_batch_size": 64, "label_smoothing": 0.0})
    # Messages name the field the alias set.
    with pytest.raises(ValueError, match=r"'label_smoothing' must be in \[0, 1\), got 1.0"):
        resolve_recipe("apr_tiny", {"smoothing": 1.0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "smoothing: 0.1\nlabel_smoothing: 0.2\n",
            "sets recipe field 'label_smoothing' twice, as 'smoothing' and as 'label_smoothing'",
        ),
        ("mixup_prob: 0.5\nmixup-prob: 0.5\n", "sets recipe field 'mixup_prob' twice"),
        ("remode: pixel\n", "'remode' is timm train.py's --remode, which this trainer does not"),
        ("smothing: 0.1\n", "unknown recipe field 'smothing': did you mean smoothing or label"),
    ],
)
def test_timm_names_refused_twice_unimplemented_or_mistyped(text, message):
    text = "# x\nepochs: 1\nbatch_size: 8\nlr: 0.1\n" + text
    with pytest.raises(ValueError, match=f"recipes/t.yaml: .*{message}"):
        parse_recipe_file("t", text, "recipes/t.yaml")
    with pytest.raises(ValueError, match="twice"):
        recipe_sets(["recipe.aa=rand-m9-mstd0.5", "recipe.auto_augment=v0"])


def test_recipe_files_reproduce_the_papers():
    assert set(RECIPES) == {
        "apr_tiny",
        "apr_short",
        "apr_short_randaug",
        "rsb_a1",
        "rsb_a2",
        "rsb_a3",
        "finetune",
        "finetune_kornblith",
        "scratch",
    }
    for name in RECIPES:
        text = (ROOT / "recipes" / f"{name}.yaml").read_text()
        header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        assert DESCRIPTIONS[name] and text.startswith(f"# {DESCRIPTIONS[name]}")
        for part in ("Reproduces:", "Data scale:", "Run: aprflow"):
            assert part in header, f"{name}: no {part!r} in its header"
    rsb = {n: RECIPES[n] for n in ("rsb_a1", "rsb_a2", "rsb_a3")}
    # ResNet strikes back, Table 1.
    assert [r.epochs for r in rsb.values()] == [600, 300, 100]
    assert [r.lr for r in rsb.values()] == [5e-3, 5e-3, 8e-3]
    assert [r.weight_decay for r in rsb.values()] == [0.01, 0.02, 0.02]
    assert [r.aug_repeats for r in rsb.values()] == [3, 3, 0]
    assert [r.drop_path for r in rsb.values()] == [0.05, 0.05, 0.0]
    assert [r.label_smoothing for r in rsb.values()] == [0.1, 0.0, 0.0]
    assert [r.mixup for r in rsb.values()] == [0.2, 0.1, 0.1]
    assert [r.auto_augment.split("-")[1] for r in rsb.values()] == ["m7", "m7", "m6"]
    assert rsb["rsb_a3"].train_resolution_ratio == pytest.approx(160 / 224)
    for recipe in rsb.values():
        assert (recipe.opt, recipe.sched, recipe.batch_size, recipe.warmup_epochs) == (
            "lamb",
            "cosine",
            2048,
            5.0,
        )
        assert (recipe.bce_loss, recipe.bce_target_thresh) == (True, 0.2)
        assert (recipe.cutmix, recipe.model_ema) == (1.0, False)
        assert recipe.stream_augmentations() == ["auto_augment"]
    # Kornblith et al.: SGD Nesterov, batch 256, 20k steps at 50k images, lr x wd grid.
    for name in ("finetune", "scratch"):
        recipe = RECIPES[name]
        assert (recipe.opt, recipe.batch_size, recipe.label_smoothing) == ("sgd", 256, 0.0)
        assert (recipe.reference_steps, recipe.reference_images) == (20_000, 50_000)
        assert recipe.lr_grid == (0.001, 0.01, 0.1)
        assert recipe.weight_decay_grid == (0.0, 1e-4)
    # The APR schedules: apr_tiny at batch 16 (enough updates on faces' 150 images), apr_short
    # as it was.
    assert (RECIPES["apr_tiny"].epochs, RECIPES["apr_tiny"].batch_size) == (3, 16)
    short = RECIPES["apr_short"]
    assert (short.epochs, short.batch_size, short.lr, short.warmup_epochs) == (30, 128, 0.2, 2.0)
    assert RECIPES["apr_short_randaug"].auto_augment == "rand-m7-mstd0.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# x\nepochs: 1\nbatch_size: 8\nlr: 0.1\nmomentun: 0.9\n", "unknown recipe field"),
        ("# x\nepochs: 1\nbatch_size: 8\n", "missing recipe field.*lr"),
        ("# x\nepochs: 1\nbatch_size: 8\nlr: -1\n", "'lr' must be > 0"),
        ("- 1\n", "must be a mapping"),
        ("epochs: [\n", "not valid YAML"),
    ],
)
def test_a_bad_recipe_file_names_the_file(text, message):
    with pytest.raises(ValueError, match=f"recipes/bad.yaml.*{message}"):
        parse_recipe_file("bad", text, "recipes/bad.yaml")


def test_recipe_files_are_package_data():
    """A non-editable install (the images: pip install --no-deps .) carries recipes/*.yaml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = setuptools.find_packages(str(ROOT), include=config["packages"]["find"]["include"])
    assert "recipes" in packages
    assert "*.yaml" in config["package-data"]["*"]
    for image in ("cpu", "gpu", "upload"):
        dockerfile = (ROOT / "images" / image / "Dockerfile").read_text()
        assert "COPY recipes /tmp/aprflow-src/recipes" in dockerfile, image


def test_aprflow_recipes_lists_and_resolves(capsys):
    assert aprflow(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "EPOCHS", "BATCH", "OPT", "LR"]
    a3 = next(line for line in lines if line.startswith("rsb_a3 "))
    assert a3.split()[1:5] == ["100", "2048", "lamb", "0.008"]
    assert DESCRIPTIONS["rsb_a3"] in a3

    assert (
        aprflow(["recipes", "rsb_a3", "--set", "recipe.lr=0.05", "--set", "recipe.epochs=1"]) == 0
    )
    import yaml

    shown = yaml.safe_load(capsys.readouterr().out)
    expected = resolve_recipe("rsb_a3", {"lr": 0.05, "epochs": 1}).to_dict()
    assert shown == {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}

    for argv, message in (
        (["recipes", "rsb_a9"], "error: unknown recipe 'rsb_a9'"),
        (["recipes", "rsb_a3", "--set", "recipe.mixup=2"], "error: recipe field 'mixup'"),
        (["recipes", "rsb_a3", "--set", "lr=1"], "error: --set lr=...: recipe fields are set"),
    ):
        assert aprflow(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_finetune_steps_and_grid_come_from_the_recipe():
    from components.transfer.finetune import scaled_steps

    finetune = RECIPES["finetune"]
    assert scaled_steps(finetune, 5_000) == 2_000, "20k steps at 50k images, scaled"
    assert scaled_steps(finetune, 80_000) == 20_000 and scaled_steps(finetune, 80_000, 7) == 7
    fewer = resolve_recipe("finetune", {"reference_steps": 1_000})
    assert scaled_steps(fewer, 5_000) == 100
    with pytest.raises(ValueError, match="'apr_tiny' counts no fine-tune steps"):
        scaled_steps(RECIPES["apr_tiny"], 5_000)


def test_the_fine_tune_grid_belongs_to_fine_tune_recipes_only():
    """A trainer's recipe has no fine-tune search fields (so its trials log none, and their ids
    do not depend on them); the fine-tune recipes add them; a record stored before the split,
    holding them at their neutral values, still loads as a trainer's recipe."""
    from dataclasses import fields

    from components.train.recipes import GRID_FIELDS, FinetuneRecipe, Recipe

    assert GRID_FIELDS == (
        "reference_steps",
        "reference_images",
        "lr_grid",
        "weight_decay_grid",
        "steps_policy",
    )
    assert not set(GRID_FIELDS) & {f.name for f in fields(Recipe)}
    assert not isinstance(RECIPES["apr_short"], FinetuneRecipe)
    assert not set(GRID_FIELDS) & set(RECIPES["apr_short"].to_dict())
    assert all(isinstance(RECIPES[name], FinetuneRecipe) for name in ("finetune", "scratch"))
    with pytest.raises(ValueError, match="lr_grid: a field of the fine-tune recipes"):
        resolve_recipe("apr_short", {"lr_grid": [0.1]})
    assert resolve_recipe("finetune", {"lr_grid": [0.1]}).lr_grid == (0.1,)

    stored = RECIPES["apr_short"].to_dict() | {
        "reference_steps": 0,
        "reference_images": 0,
        "lr_grid": [],
        "weight_decay_grid": [],
    }
    assert Recipe.from_dict(stored) == RECIPES["apr_short"]
    assert Recipe.from_dict(RECIPES["finetune"].to_dict()) == RECIPES["finetune"]
