"""Training recipes as plain data: a name resolves to every hyper-parameter a trial uses.

A trial's identity includes its fully resolved recipe, so changing any value here (or with an
override) makes new trials instead of reusing old results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run.

    Attributes:
        name: registry name the recipe came from.
        epochs: passes over the training split.
        batch_size: images per optimizer step.
        lr: peak learning rate (after warm-up) for ``batch_size``.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay, not applied to norm and bias parameters.
        label_smoothing: cross-entropy label smoothing.
        warmup_epochs: linear warm-up length before the cosine decay.
        crop_padding: pixels of reflection padding for random-crop augmentation (0: off).
        hflip: random horizontal flips (off for data where left and right differ, like digits).
        eval_batch_size: images per evaluation batch.
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5
    crop_padding: int = 2
    hflip: bool = False
    eval_batch_size: int = 512

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
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ValueError(f"recipe field {key!r} must be {expected.__name__}, got {value!r}")
    if overrides.get("epochs", recipe.epochs) < 1:
        raise ValueError("recipe field 'epochs' must be at least 1")
    return replace(recipe, **overrides)
