"""Training recipes as files: ``recipes/<name>.yaml`` resolves to every hyper-parameter a trial
uses.

Each file sets the fields of :class:`Recipe` it needs (the rest keep the defaults below) under a
header comment whose first line is the recipe's one-line description (``aprflow recipes``), then
what it reproduces, for which data scale, and the command that runs it. Every field is checked
against the same schema wherever it comes from (a file, ``--set recipe.lr=0.05``,
``recipe_overrides`` in a study config or the Kubeflow UI): an unknown field lists the valid
ones, a wrong type names the expected one, and a value out of :data:`BOUNDS` names the range.
timm's ``train.py`` spellings of a field (``smoothing`` for ``label_smoothing``, ``aa``,
``reprob``, ``--mixup-prob``) are read as the field (:data:`TIMM_NAMES`).

A trial's identity includes its fully resolved recipe, so changing any value (in a file or with
an override) makes new trials instead of reusing old results.
"""

from __future__ import annotations

import argparse
import re
import typing
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from typing import Any

import yaml

from components.common.cli import did_you_mean
from components.common.limits import LIMITS, check_count
from components.common.validation import Bound, check_type, parse_assignments, short_repr
from components.common.yamlsafe import load_yaml
from components.data.descriptor import DatasetError

# Per-image augmentations of timm's create_transform, which only the stream input applies,
# with their neutral values.
STREAM_AUGMENTATIONS: dict[str, Any] = {
    "auto_augment": "",
    "scale": (0.08, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "color_jitter": 0.0,
    "re_prob": 0.0,
}
# timm's augmentation strings: a policy name, then '-'-separated sections (key + number, or
# RandAugment's t<choice>); timm ignores a section without a number, so it is refused here.
_AUTO_AUGMENT = re.compile(r"(rand|augmix|original|originalr|v0|v0r|3a)(-[a-z]+\d[\d.]*|-t\w+)*")
# Names of timm.optim.create_optimizer_v2 the trainer supports (all in timm's
# list_optimizers(), tests/train/test_recipes.py checks): Nesterov SGD, plain momentum, AdamW
# and LAMB; and schedules of timm.scheduler.create_scheduler_v2 that need no settings beyond
# the recipe's (step/multistep need milestones, plateau a metric).
OPTIMIZERS = ("sgd", "momentum", "adamw", "lamb")
SCHEDULES = ("cosine", "tanh", "poly")
# How a fine-tune recipe counts its optimizer steps (FinetuneRecipe.steps_policy).
STEPS_POLICIES = ("scaled", "fixed")
# The folder of the recipe files: the top-level `recipes/`, installed as a data package.
RECIPE_PACKAGE = "recipes"


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (names follow timm's ``train.py`` arguments; the
    few that differ are read under timm's name too, see :data:`TIMM_NAMES`).

    A Recipe is valid once built: every field is checked against its type and :data:`BOUNDS`.

    Attributes:
        name: registry name the recipe came from (its file's name).
        epochs: passes over the training split.
        batch_size: images per optimizer step (the effective batch: after an out-of-memory
            the trainer halves the micro-batch and accumulates gradients to keep it).
        lr: peak learning rate (after warm-up) for ``batch_size``.
        opt: optimizer name for ``timm.optim.create_optimizer_v2`` (:data:`OPTIMIZERS`):
            ``sgd`` (Nesterov), ``momentum`` (plain momentum), ``adamw``, ``lamb``.
        momentum: SGD momentum.
        weight_decay: weight decay, not applied to norm and bias parameters.
        opt_eps: optimizer epsilon (adamw, lamb; None = the optimizer's default).
        sched: schedule name for ``timm.scheduler.create_scheduler_v2`` (:data:`SCHEDULES`),
            stepped per optimizer update.
        warmup_epochs: linear warm-up length before the schedule (fractions allowed).
        warmup_lr: learning rate at the start of the warm-up.
        min_lr: learning rate at the end of the schedule.
        label_smoothing: label smoothing of the (soft-target or binary) cross-entropy.
        bce_loss: binary cross-entropy instead of softmax cross-entropy (RSB).
        bce_target_thresh: BCE targets above this become 1 (RSB: 0.2; None = soft targets).
        mixup: Mixup alpha (0 = off; RSB 0.2).
        cutmix: CutMix alpha (0 = off; RSB 1.0).
        mixup_prob: probability of applying Mixup or CutMix to a batch.
        mixup_switch_prob: probability of CutMix instead of Mixup when both are on.
        drop_path: stochastic depth rate (timm ``DropPath`` in every AnyNet block, linearly
            increasing with depth).
        model_ema: keep an exponential moving average of the weights (``ModelEmaV3``) and
            evaluate it.
        model_ema_decay: EMA decay per update.
        aug_repeats: repeated augmentation (``RepeatAugSampler``): each image this many times
            per epoch, differently augmented (0 = off; RSB uses 3).
        train_resolution_ratio: training image side as a fraction of the dataset's (test)
            resolution (RSB A3 trains at 160 and tests at 224: 0.714).
        crop_padding: pixels of reflection padding for random-crop augmentation (0: off;
            memory input).
        hflip: random horizontal flips (off for data where left and right differ, like digits).
        eval_batch_size: images per evaluation batch.
        auto_augment: timm augmentation string (``rand-m7-mstd0.5`` RandAugment,
            ``augmix-m5``, ``v0`` AutoAugment; '' = none). Stream input only.
        scale: area range of RandomResizedCrop (stream input; the memory input pads and crops
            by ``crop_padding`` instead).
        ratio: aspect-ratio range of RandomResizedCrop (stream input).
        color_jitter: colour jitter strength (stream input; 0 = off).
        re_prob: random-erasing probability (stream input).
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    opt: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    opt_eps: float | None = None
    sched: str = "cosine"
    warmup_epochs: float = 0.5
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    label_smoothing: float = 0.1
    bce_loss: bool = False
    bce_target_thresh: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    drop_path: float = 0.0
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    aug_repeats: int = 0
    train_resolution_ratio: float = 1.0
    crop_padding: int = 2
    hflip: bool = False
    eval_batch_size: int = 512
    auto_augment: str = STREAM_AUGMENTATIONS["auto_augment"]
    scale: tuple[float, float] = STREAM_AUGMENTATIONS["scale"]
    ratio: tuple[float, float] = STREAM_AUGMENTATIONS["ratio"]
    color_jitter: float = STREAM_AUGMENTATIONS["color_jitter"]
    re_prob: float = STREAM_AUGMENTATIONS["re_prob"]

    def __post_init__(self) -> None:
        # Types as annotated (JSON and YAML hand tuples over as lists, KFP ints as floats),
        # then ranges: a Recipe that exists is valid, whoever built it.
        for key, value in self.to_dict().items():
            if key != "name":
                object.__setattr__(self, key, check_field(key, value))

    def stream_augmentations(self) -> list[str]:
        """The per-image augmentations this recipe sets, which only the stream input does."""
        return [k for k, neutral in STREAM_AUGMENTATIONS.items() if getattr(self, k) != neutral]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """Every field as YAML, in declaration order (what ``aprflow recipes NAME`` prints)."""
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in self.to_dict().items()}
        return yaml.safe_dump(plain, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The recipe of a stored record: a fine-tune recipe when it holds the fine-tune
        search's fields with values, else a trainer's. A trainer's recipe stored before the
        two were split holds those fields at their neutral values (0 and empty), which are
        dropped: such a record still loads."""
        grid = {k: data[k] for k in GRID_FIELDS if k in data}
        if any(grid.values()):
            return FinetuneRecipe(**data)
        return Recipe(**{k: v for k, v in data.items() if k not in GRID_FIELDS})


@dataclass(frozen=True)
class FinetuneRecipe(Recipe):
    """A fine-tune or scratch recipe (components/transfer/finetune.py): the optimizer settings
    of :class:`Recipe` and the search over them. A trainer's trial never holds one.

    Attributes:
        reference_steps: optimizer steps at ``reference_images`` training images, scaled down
            for fewer (Kornblith et al.: 20,000).
        reference_images: the training-set size at which ``reference_steps`` apply.
        lr_grid: learning rates the fine-tune search tries, each chosen on validation.
        weight_decay_grid: weight decays the fine-tune search tries.
        steps_policy: ``scaled`` (``reference_steps`` scaled down by the training set's size,
            :func:`components.transfer.finetune.scaled_steps`) or ``fixed`` (exactly
            ``reference_steps`` on every dataset, as Kornblith et al. trained).
    """

    reference_steps: int = 0
    reference_images: int = 0
    lr_grid: tuple[float, ...] = ()
    weight_decay_grid: tuple[float, ...] = ()
    steps_policy: str = "scaled"


#: The fields of the fine-tune search (:class:`FinetuneRecipe` only).
GRID_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(FinetuneRecipe) if f.name not in {g.name for g in fields(Recipe)}
)


_POSITIVE = Bound(low=0, low_open=True)
_NON_NEGATIVE = Bound(low=0)
_PROBABILITY = Bound(low=0, high=1)
_FRACTION = Bound(low=0, high=1, high_open=True)
# The valid range of every numeric or named field; counts and sizes are the limits table's
# (components.common.limits), the ranges of the RandomResizedCrop fields scale/ratio and the
# auto_augment string are checked by check_augmentations.
BOUNDS: dict[str, Bound] = {
    "epochs": LIMITS["epochs"],
    "batch_size": LIMITS["batch_size"],
    "lr": _POSITIVE,
    "opt": Bound(choices=OPTIMIZERS),
    "momentum": _FRACTION,
    "weight_decay": _NON_NEGATIVE,
    "opt_eps": _POSITIVE,
    "sched": Bound(choices=SCHEDULES),
    "warmup_epochs": _NON_NEGATIVE,
    "warmup_lr": _NON_NEGATIVE,
    "min_lr": _NON_NEGATIVE,
    "label_smoothing": _FRACTION,
    "bce_target_thresh": _PROBABILITY,
    # Beta-distribution alphas; above 1 the mixes cluster around half and half.
    "mixup": _PROBABILITY,
    "cutmix": _PROBABILITY,
    "mixup_prob": _PROBABILITY,
    "mixup_switch_prob": _PROBABILITY,
    "drop_path": _FRACTION,
    "model_ema_decay": _FRACTION,
    "aug_repeats": LIMITS["aug_repeats"],
    "train_resolution_ratio": Bound(low=0, high=1, low_open=True),
    "crop_padding": LIMITS["crop_padding"],
    "eval_batch_size": LIMITS["batch_size"],
    "color_jitter": _NON_NEGATIVE,
    "re_prob": _PROBABILITY,
    "reference_steps": LIMITS["steps"],
    "reference_images": LIMITS["images"],
    "lr_grid": _POSITIVE,
    "weight_decay_grid": _NON_NEGATIVE,
    "steps_policy": Bound(choices=STEPS_POLICIES),
}
# List fields and the limits table's bound on their number of values.
_LENGTHS = {"lr_grid": "grid_points", "weight_decay_grid": "grid_points"}
_TYPES: dict[str, Any] = typing.get_type_hints(FinetuneRecipe)
#: Fields a recipe file or an override may set (``name`` is the file's; :data:`GRID_FIELDS`
#: only for fine-tune recipes).
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FinetuneRecipe) if f.name != "name")
#: timm ``train.py`` argument names (argparse destinations, as in its ``--config`` YAML) that
#: are not field names, and the field each sets; None: an argument this trainer does not
#: implement (random erasing always fills with constant values in one region, images are
#: resized bilinearly, Mixup/CutMix mix whole batches, gradients are not clipped).
#: The other fields carry timm's name where timm has the setting.
TIMM_NAMES: dict[str, str | None] = {
    "smoothing": "label_smoothing",
    "aa": "auto_augment",
    "reprob": "re_prob",
    "validation_batch_size": "eval_batch_size",
    "remode": None,
    "recount": None,
    "train_interpolation": None,
    "mixup_mode": None,
    "clip_grad": None,
}


def field_name(key: str) -> str:
    """The recipe field ``key`` sets: ``key`` itself, or the field of a timm ``train.py``
    name (``smoothing`` -> ``label_smoothing``); hyphens read as underscores, as timm's
    command line spells them (``mixup-prob``).

    Raises:
        ValueError: for a timm argument this trainer does not implement.
    """
    name = key.replace("-", "_") if isinstance(key, str) else key
    if name not in TIMM_NAMES:
        return name
    field = TIMM_NAMES[name]
    if field is None:
        raise ValueError(
            f"recipe field {key!r} is timm train.py's --{name.replace('_', '-')}, which this "
            "trainer does not implement"
        )
    return field


def check_field(key: str, value: Any) -> Any:
    """Returns ``value`` for recipe field ``key`` (typed as the field is), or raises one
    ValueError line: an unknown field suggests a close name and lists the valid ones, a wrong
    type names the expected one, a value out of range names the range."""
    if key not in FIELDS:
        names = [*FIELDS, *(k for k, v in TIMM_NAMES.items() if v)]
        hint = did_you_mean(key, names)
        raise ValueError(
            f"unknown recipe field {short_repr(key)}: {hint + ' ' if hint else ''}"
            f"valid fields are {', '.join(FIELDS)}"
        )
    label = f"recipe field {key!r}"
    if key in _LENGTHS and isinstance(value, list | tuple):
        check_count(_LENGTHS[key], value, label)  # before a 10k-element list is converted
    value = check_type(label, value, _TYPES[key])
    if key in BOUNDS:
        BOUNDS[key].check(label, value)
    return value


def check_overrides(overrides: Any, where: str = "recipe_overrides") -> dict[str, Any]:
    """Returns ``overrides`` (field -> value) with timm's names read as fields
    (:func:`field_name`) and every field checked by :func:`check_field`.

    Raises:
        ValueError: for something that is no mapping, a field given twice (under its name and
            timm's), or any bad field (``where`` says which setting held it).
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"{where} must map recipe fields to values, e.g. {{lr: 0.05}}")
    checked: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in overrides.items():
        field = field_name(key)
        if field in checked:
            raise ValueError(
                f"{where} sets recipe field {field!r} twice, as {given[field]!r} and as "
                f"{key!r}: keep one"
            )
        checked[field], given[field] = check_field(field, value), key
    return checked


def add_recipe_set_option(parser: argparse.ArgumentParser) -> None:
    """Adds the repeatable ``--set recipe.FIELD=VALUE`` option (parsed by :func:`recipe_sets`)."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="recipe.FIELD=VALUE",
        help="override one recipe field, e.g. --set recipe.lr=0.05 --set recipe.epochs=1 "
        "(repeatable, as in aprflow train and aprflow run; 'aprflow recipes NAME' shows every "
        "field; timm train.py's names work too: recipe.smoothing, recipe.aa, recipe.reprob)",
    )


def recipe_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set recipe.FIELD=VALUE`` strings (values in YAML) as checked recipe overrides."""
    overrides = {}
    for key, value in parse_assignments(pairs, "recipe.lr=0.05").items():
        field = key.removeprefix("recipe.")
        if field == key:
            raise ValueError(
                f"--set {key}=...: recipe fields are set as recipe.FIELD=VALUE, e.g. "
                "--set recipe.lr=0.05"
            )
        overrides[field] = value
    return check_overrides(overrides, "--set")


def with_overrides(recipe: Recipe, overrides: dict[str, Any] | None) -> Recipe:
    """``recipe`` with ``overrides`` applied, every value checked.

    Raises:
        ValueError: also for a fine-tune search field on a trainer's recipe.
    """
    checked = check_overrides(overrides or {})
    grid = [k for k in checked if k in GRID_FIELDS]
    if grid and not isinstance(recipe, FinetuneRecipe):
        tuning = sorted(n for n, r in RECIPES.items() if isinstance(r, FinetuneRecipe))
        raise ValueError(
            f"{', '.join(grid)}: a field of the fine-tune recipes ({', '.join(tuning)}), not of "
            f"recipe {recipe.name!r}, which trains architectures"
        )
    return replace(recipe, **checked)


def check_augmentations(recipe: Recipe) -> None:
    """Raises ValueError unless the stream augmentations are in range and ``auto_augment`` is
    a string timm accepts (checked by building the transform: timm is imported only then)."""
    for key in ("scale", "ratio"):
        values = getattr(recipe, key)
        if not (0 < values[0] <= values[1] and (key == "ratio" or values[1] <= 1)):
            bound = "0 < min <= max <= 1" if key == "scale" else "0 < min <= max"
            raise ValueError(
                f"recipe field {key!r} must be [min, max] with {bound}, got {list(values)}"
            )
    if not recipe.auto_augment:
        return
    example = "e.g. 'rand-m7-mstd0.5' (RandAugment), 'augmix-m5', 'v0' (AutoAugment)"
    if not _AUTO_AUGMENT.fullmatch(recipe.auto_augment):
        raise ValueError(
            f"recipe field 'auto_augment' {short_repr(recipe.auto_augment)} is not a timm "
            f"augmentation string: {example}"
        )
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=recipe.auto_augment)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(
            f"recipe field 'auto_augment' {short_repr(recipe.auto_augment)} is not a timm "
            f"augmentation string ({e or 'unknown section'}): {example}"
        ) from None


def check_crop_padding(
    recipe: Recipe, data_input: str | None, resolution: int, dataset: str
) -> None:
    """Raises ValueError unless the memory input's crop padding is below the dataset's image
    side: the memory loader pads and crops at the stored resolution (components.data.loader
    augmentation_draws refuses it there, in every trial); the stream input does not pad."""
    if data_input != "stream" and recipe.crop_padding >= resolution:
        raise ValueError(
            f"dataset {dataset}: recipe field 'crop_padding' {recipe.crop_padding} must be "
            f"below its image side ({resolution} px)"
        )


def parse_recipe_file(name: str, text: str, where: str) -> tuple[Recipe, str]:
    """The recipe of one file's text and its description (the header's first line).

    Raises:
        ValueError: naming ``where`` (the file) for YAML that is no mapping, a missing
            required field or any bad field.
    """
    try:
        data = load_yaml(text, where)
    except yaml.YAMLError as e:
        raise ValueError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of recipe field: value")
    try:
        checked = check_overrides(data, where)
        kind = FinetuneRecipe if any(k in GRID_FIELDS for k in checked) else Recipe
        recipe = kind(name=name, **checked)
    except TypeError:  # a required field missing: check_overrides has refused unknown ones
        required = ("epochs", "batch_size", "lr")
        missing = [k for k in required if k not in data]
        fields_word = "fields" if len(missing) > 1 else "field"
        raise ValueError(f"{where}: missing recipe {fields_word} {', '.join(missing)}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return recipe, header[0] if header else ""


def _load_registry() -> tuple[dict[str, Recipe], dict[str, str]]:
    """Every ``recipes/*.yaml`` of the installed package, by file name."""
    recipes, descriptions = {}, {}
    folder = resources.files(RECIPE_PACKAGE)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            where = f"{RECIPE_PACKAGE}/{entry.name}"
            recipes[name], descriptions[name] = parse_recipe_file(name, entry.read_text(), where)
    return recipes, descriptions


RECIPES, DESCRIPTIONS = _load_registry()


def resolve_recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Returns the registered recipe ``name`` with ``overrides`` applied.

    Raises:
        ValueError: for an unknown recipe, an unknown override field, a value of the wrong type
            or out of range.
    """
    if name not in RECIPES:
        hint = did_you_mean(str(name), sorted(RECIPES))
        raise ValueError(
            f"unknown recipe {short_repr(name)}: {hint + ' ' if hint else ''}"
            f"choose from {', '.join(sorted(RECIPES))}"
        )
    resolved = with_overrides(RECIPES[name], overrides)
    check_augmentations(resolved)
    return resolved


def check_input(recipe, input_mode: str, dataset: str = "") -> None:
    """Raises :class:`DatasetError` when ``recipe`` sets per-image augmentations (RandAugment,
    RandomResizedCrop ranges, colour jitter, random erasing) that ``input_mode`` does not do:
    the memory input does per-image crops of the padded image and flips only."""
    wanted = recipe.stream_augmentations()
    if input_mode == "memory" and wanted:
        where = f"dataset_settings.{dataset}.input: stream" if dataset else "input: stream"
        raise DatasetError(
            f"recipe {recipe.name!r} sets {', '.join(wanted)}, which only the stream input "
            f"applies (timm's per-image transforms): train {dataset or 'the dataset'} with "
            f"{where} (aprflow train --input stream)"
        )


def recipe_input(recipe, asked: str | None, dataset: str = "") -> str | None:
    """The input a dataset trains ``recipe`` on: ``asked`` (its ``input`` setting), refused by
    :func:`check_input` when the recipe's augmentations need another; without one, the stream
    when the recipe sets per-image augmentations only the stream does, else None (the
    dataset's size chooses). ``aprflow train``, the study's preflight and its plan decide so."""
    if not asked:
        return "stream" if recipe.stream_augmentations() else None
    check_input(recipe, asked, dataset)
    return asked
