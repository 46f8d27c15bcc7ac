"""Per-image augmentations as the recipe says (RandAugment, RandomResizedCrop ranges, colour
jitter, random erasing): timm's transform on the stream input, refused by the memory input,
validated with one clear line, part of the trial id."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from imagesets import CLASSES, picture

from components.common.storage import open_store
from components.data.build import build_dataset
from components.data.descriptor import DatasetDescriptor, DatasetError
from components.train.recipes import RECIPES, Recipe, resolve_recipe


@pytest.fixture
def built(tmp_path):
    """3 classes x 8 images of 12 px, built and read back as a stream at 12 px."""
    folder = tmp_path / "folder"
    for kind in CLASSES:
        (folder / kind).mkdir(parents=True)
        for i in range(8):
            picture(kind, i, size=12).save(folder / kind / f"{i}.png")
    store = open_store(str(tmp_path / "store"))
    ref = build_dataset(store, DatasetDescriptor(name="pets", source=str(folder)), print)
    return store, replace(ref, resolution=12, input="stream")


def _epoch(store, ref, recipe, epoch: int, workers: int = 0):
    import torch

    from components.data.loader import open_split

    data = open_split(store, ref, "train", torch.device("cpu"), seed=3, workers=workers)
    batches = list(data.train(recipe, torch.Generator().manual_seed(0), epoch))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_rand_augment_changes_the_stream_deterministically(built):
    import torch

    store, ref = built
    plain = resolve_recipe("apr_tiny", {"batch_size": 4})
    augmented = resolve_recipe("apr_tiny", {"batch_size": 4, "auto_augment": "rand-m9-mstd0.5"})
    x_plain, y_plain = _epoch(store, ref, plain, 0)
    x_aug, y_aug = _epoch(store, ref, augmented, 0)
    assert torch.equal(y_plain, y_aug), "the same images in the same order"
    changed = (x_plain - x_aug).abs().flatten(1).amax(1) > 1e-3
    # Two ops, each applied with probability 0.5, leave about a quarter of the images as they
    # were, and some ops (equalize, posterize ...) barely change these flat pictures: over the
    # random dataset keys of the test's temporary folders, 50-83% of the 12 images changed.
    assert changed.float().mean() > 0.25, "RandAugment changed many images"
    # Deterministic per (seed, epoch): again in this process (NumPy's global state, which
    # RandAugment draws its ops from, has moved on meanwhile) and in worker processes.
    again, _ = _epoch(store, ref, augmented, 0)
    in_workers, _ = _epoch(store, ref, augmented, 0, workers=2)
    assert torch.equal(x_aug, again) and torch.equal(x_aug, in_workers)
    next_epoch, _ = _epoch(store, ref, augmented, 1)
    assert not torch.equal(x_aug, next_epoch)
    # Random erasing and the crop's scale reach the transform too.
    erased, _ = _epoch(store, ref, replace(plain, re_prob=1.0), 0)
    assert not torch.equal(erased, x_plain)
    whole, _ = _epoch(store, ref, replace(plain, scale=(1.0, 1.0), ratio=(1.0, 1.0)), 0)
    assert not torch.equal(whole, x_plain)


def test_memory_input_refuses_stream_augmentations(built):
    import torch

    from components.data.loader import open_split

    store, ref = built
    data = open_split(store, replace(ref, input="memory"), "train", torch.device("cpu"), seed=3)
    recipe = RECIPES["apr_short_randaug"]
    with pytest.raises(DatasetError, match="sets auto_augment, which only the stream input"):
        next(iter(data.train(recipe, torch.Generator(), 0)))
    # Crop padding and flips are what the memory input does itself.
    assert next(iter(data.train(resolve_recipe("apr_tiny", {"hflip": True}), torch.Generator())))


def test_plan_streams_a_randaugment_dataset_unless_memory_is_asked_for(built):
    from components.train.run import _dataset_recipes

    _, ref = built
    ref = replace(ref, input="memory", recipe="apr_short_randaug")  # the size's choice
    (planned,), recipes = _dataset_recipes([ref], "apr_tiny", {})
    assert planned.input == "stream" and recipes["pets"].auto_augment
    (plain,), _ = _dataset_recipes([replace(ref, recipe="apr_tiny")], "apr_tiny", {})
    assert plain.input == "memory"  # a recipe without per-image augmentation keeps it
    with pytest.raises(DatasetError, match="dataset_settings.pets.input: stream"):
        _dataset_recipes([ref], "apr_tiny", {}, {"pets": {"input": "memory"}})


def test_train_cli_refuses_randaugment_in_memory(tmp_path, capsys):
    from components.sample.samplers import sample_specs
    from components.train.cli import main as train_main

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict())
    )
    args = ["--spec", str(spec), "--dataset", "faces", "--resolution", "8"]
    # Without --input the recipe's RandAugment chooses the stream input; asked for memory, the
    # trial is refused before anything is written.
    args += ["--input", "memory", "--store", str(tmp_path / "s")]
    code = train_main([*args, "--recipe", "apr_short_randaug"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: recipe 'apr_short_randaug' sets auto_augment") and (
        "input: stream" in err
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auto_augment": "rand-x7"}, "'rand-x7' is not a timm augmentation string"),
        ({"auto_augment": "rand-mfoo"}, "'rand-mfoo' is not a timm augmentation string"),
        ({"auto_augment": "trivial"}, "e.g. 'rand-m7-mstd0.5'"),
        ({"scale": [0.5, 0.2]}, "'scale' must be \\[min, max\\] with 0 < min <= max <= 1"),
        ({"scale": [0.5]}, "'scale' must be \\[number, number\\], got \\[0.5\\]"),
        ({"ratio": [0, 1]}, "'ratio' must be \\[min, max\\] with 0 < min <= max"),
        ({"re_prob": 1.5}, "'re_prob' must be in \\[0, 1\\]"),
        ({"color_jitter": -0.1}, "'color_jitter' must be >= 0"),
    ],
)
def test_bad_augmentations_are_one_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message) as caught:
        resolve_recipe("apr_tiny", overrides)
    assert "\n" not in str(caught.value)


def test_augmentations_are_part_of_the_trial_id():
    from components.train.trial import Trial

    plain = resolve_recipe("apr_tiny")
    # Every field is in the recipe's identity, neutral values too (TRAINER_VERSION 2).
    assert plain.to_dict()["auto_augment"] == "" and plain.to_dict()["scale"] == (0.08, 1.0)
    ref_fields = dict(name="d", manifest_key="k", content_hash="h", num_classes=2)
    dataset = dict(ref_fields, resolution=8, n_train=10, n_test=4, input="stream")
    from components.data.descriptor import DatasetRef

    trial = Trial(spec={"a": 1}, dataset=DatasetRef(**dataset), recipe=plain, seed=0)
    ids = {
        replace(trial, recipe=resolve_recipe("apr_tiny", overrides)).trial_id
        for overrides in (
            {},
            {"auto_augment": "rand-m7-mstd0.5"},
            {"auto_augment": "rand-m9-mstd0.5"},
            {"scale": [0.5, 1.0]},
            {"ratio": [1.0, 1.0]},
            {"re_prob": 0.25},
            {"color_jitter": 0.4},
        )
    }
    assert len(ids) == 7
    # A stored trial (JSON lists) reads back to the same recipe and id.
    ranged = replace(trial, recipe=resolve_recipe("apr_tiny", {"scale": [0.5, 1.0]}))
    back = Trial.from_dict(json.loads(json.dumps(ranged.to_dict())))
    assert back.recipe == ranged.recipe and back.trial_id == ranged.trial_id
    assert isinstance(Recipe(**back.recipe.to_dict()).scale, tuple)


def test_a_planned_randaugment_trial_streams_its_dataset(local_env):
    from components.data.datasets import prepare_all
    from components.sample.samplers import sample_specs
    from components.train.plan import load_trial
    from components.train.run import plan_study

    # As the pipeline's prepare and plan steps see it: the dataset's settings in both.
    settings = {"faces": {"recipe": "apr_short_randaug"}}
    refs = [r.to_dict() for r in prepare_all(["faces", "digits"], 8, 0, None, settings)]
    assert {r["input"] for r in refs} == {"memory"}  # small: the size alone picks memory
    specs = [s.to_dict() for s in sample_specs("anynetx_a", 1, (150e6, 250e6), 0).specs]
    ids, _, _ = plan_study(
        specs, refs, "aug", "apr_tiny", {}, [0], "torch", None, None, dataset_settings=settings
    )
    planned = {t.dataset.name: t for t in (load_trial(open_store(), i) for i in ids)}
    assert planned["faces"].dataset.input == "stream" and planned["faces"].recipe.auto_augment
    assert planned["digits"].dataset.input == "memory"  # apr_tiny: no per-image augmentation


def test_preflight_refuses_randaugment_only_with_an_explicit_memory_input(local_env):
    from pipelines.apr_study import apr_study
    from pipelines.config import load_config
    from pipelines.preflight import PreflightError, check_study

    # No input named: the plan streams the dataset (test_plan_streams_...), nothing to refuse.
    settings = {"faces": {"recipe": "apr_short_randaug"}}
    arguments = load_config(apr_study, None, {"datasets": ["faces"], "dataset_settings": settings})
    check_study(arguments)
    check_study(arguments | {"dataset_settings": {}, "recipe": "apr_short_randaug"})
    settings["faces"]["input"] = "memory"
    with pytest.raises(PreflightError, match="sets auto_augment.*dataset_settings.faces.input"):
        check_study(arguments | {"dataset_settings": settings})
    memory = {"faces": {"input": "memory"}}  # the study's own recipe, the same
    with pytest.raises(PreflightError, match="sets auto_augment"):
        check_study(arguments | {"dataset_settings": memory, "recipe": "apr_short_randaug"})
