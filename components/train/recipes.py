"""Training recipes as plain data: a name resolves to every hyper-parameter a trial uses.

A trial's identity includes its fully resolved recipe, so changing any value here (or with an
override) makes new trials instead of reusing old results.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

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


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (names follow timm's ``train.py`` arguments).

    Attributes:
        name: registry name the recipe came from.
        epochs: passes over the training split.
        batch_size: images per optimizer step (the effective batch: after an out-of-memory
            the trainer halves the micro-batch and accumulates gradients to keep it).
        lr: peak learning rate (after warm-up) for ``batch_size``.
        opt: optimizer name for ``timm.optim.create_optimizer_v2``: ``sgd`` (Nesterov),
            ``momentum`` (plain momentum), ``adamw``, ``lamb``.
        momentum: SGD momentum.
        weight_decay: weight decay, not applied to norm and bias parameters.
        opt_eps: optimizer epsilon (adamw, lamb; None = the optimizer's default).
        sched: schedule name for ``timm.scheduler.create_scheduler_v2`` (``cosine``), stepped
            per optimizer update.
        warmup_epochs: linear warm-up length before the schedule (fractions allowed).
        warmup_lr: learning rate at the start of the warm-up.
        min_lr: learning rate at the end of the schedule.
        label_smoothing: label smoothing of the (soft-target) cross-entropy.
        bce_loss: binary cross-entropy instead of softmax cross-entropy (RSB).
        bce_target_thresh: BCE targets above this become 1 (RSB: 0.2; None = soft targets).
        mixup: Mixup alpha (0 = off).
        cutmix: CutMix alpha (0 = off).
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
        # JSON (trial.json, KFP) hands ranges over as lists.
        for key in ("scale", "ratio"):
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))

    def stream_augmentations(self) -> list[str]:
        """The per-image augmentations this recipe sets, which only the stream input does."""
        return [k for k, neutral in STREAM_AUGMENTATIONS.items() if getattr(self, k) != neutral]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # Seconds per trial on a laptop CPU: the demo and the end-to-end test.
    "apr_tiny": Recipe(name="apr_tiny", epochs=3, batch_size=32, lr=0.1),
    # A short from-scratch schedule in the spirit of Tuggener et al. (train until roughly
    # converged on small data sets).
    "apr_short": Recipe(name="apr_short", epochs=30, batch_size=128, lr=0.2, warmup_epochs=2),
    # Transfer regimes 2 and 3 of Kornblith et al. (SEEDS 003): SGD Nesterov, cosine, batch
    # 256, no label smoothing or warm-up. The transfer component searches lr x weight decay
    # on validation and counts steps (20k scaled by dataset size): `epochs` is unused there.
    "finetune": Recipe(
        name="finetune",
        epochs=1,
        batch_size=256,
        lr=0.01,
        weight_decay=1e-4,
        label_smoothing=0.0,
        warmup_epochs=0.0,
        crop_padding=0,
        hflip=True,
    ),
    "scratch": Recipe(
        name="scratch",
        epochs=1,
        batch_size=256,
        lr=0.1,
        weight_decay=1e-4,
        label_smoothing=0.0,
        warmup_epochs=0.0,
        crop_padding=0,
        hflip=True,
    ),
}
# apr_short with RandAugment for real images on the stream input (timm's per-image transforms;
# `dataset_settings: {mine: {recipe: apr_short_randaug, input: stream}}`).
RECIPES["apr_short_randaug"] = replace(
    RECIPES["apr_short"],
    name="apr_short_randaug",
    crop_padding=0,
    hflip=True,
    auto_augment="rand-m7-mstd0.5",
)


def check_augmentations(recipe: Recipe) -> None:
    """Raises ValueError unless the stream augmentations are in range and ``auto_augment`` is
    a string timm accepts (checked by building the transform: timm is imported only then)."""
    for key in ("scale", "ratio"):
        values = getattr(recipe, key)
        if not (
            len(values) == 2 and 0 < values[0] <= values[1] and (key == "ratio" or values[1] <= 1)
        ):
            bound = "0 < min <= max <= 1" if key == "scale" else "0 < min <= max"
            raise ValueError(
                f"recipe field {key!r} must be [min, max] with {bound}, got {list(values)}"
            )
    if recipe.color_jitter < 0:
        raise ValueError(f"recipe field 'color_jitter' must be >= 0, got {recipe.color_jitter}")
    if not 0 <= recipe.re_prob <= 1:
        raise ValueError(f"recipe field 're_prob' must be in [0, 1], got {recipe.re_prob}")
    if not recipe.auto_augment:
        return
    example = "e.g. 'rand-m7-mstd0.5' (RandAugment), 'augmix-m5', 'v0' (AutoAugment)"
    if not _AUTO_AUGMENT.fullmatch(recipe.auto_augment):
        raise ValueError(
            f"recipe field 'auto_augment' {recipe.auto_augment!r} is not a timm augmentation "
            f"string: {example}"
        )
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=recipe.auto_augment)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(
            f"recipe field 'auto_augment' {recipe.auto_augment!r} is not a timm augmentation "
            f"string ({e or 'unknown section'}): {example}"
        ) from None


def resolve_recipe(name: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Returns the registered recipe ``name`` with ``overrides`` applied.

    Raises:
        ValueError: for an unknown recipe or override key, or a value of the wrong type.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[name]
    overrides = dict(overrides or {})
    valid = {f.name: f for f in fields(Recipe) if f.name != "name"}
    for key, value in overrides.items():
        if key not in valid:
            raise ValueError(
                f"unknown recipe field {key!r}: valid fields are {', '.join(sorted(valid))}"
            )
        expected = type(getattr(recipe, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            overrides[key] = float(value)
        elif expected is tuple and isinstance(value, list | tuple):
            if len(value) != 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"recipe field {key!r} must be [min, max], got {value!r}")
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ValueError(f"recipe field {key!r} must be {expected.__name__}, got {value!r}")
    if overrides.get("epochs", recipe.epochs) < 1:
        raise ValueError("recipe field 'epochs' must be at least 1")
    resolved = replace(recipe, **overrides)
    check_augmentations(resolved)
    return resolved
