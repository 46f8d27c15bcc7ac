"""Fine-tuning and training from scratch on a target: Kornblith et al.'s regimes 2 and 3.

The recipe (``recipes/finetune.yaml`` / ``recipes/scratch.yaml``): SGD with Nesterov
momentum (timm ``create_optimizer_v2(opt="sgd")``), cosine decay per step
(``timm.scheduler.CosineLRScheduler``), batch 256, no label smoothing. Kornblith et al. trained
20,000 steps on every dataset; by default (the recipe's ``steps_policy: scaled``) the steps
are scaled by the training set's size,
``steps = max(1, round(reference_steps * min(1, n_train / reference_images)))`` (the recipe's
fields: 20k steps at CIFAR's 50,000 images, about 100 epochs; fewer on smaller sets);
``steps_policy: fixed`` trains exactly ``reference_steps`` on every dataset, the protocol as
published (``recipes/finetune_kornblith.yaml``, or ``--set recipe.steps_policy=fixed``). Either
way ``max_steps`` caps them (toy runs), and :class:`FinetuneResult` records the policy. With
``curve_points`` the run whose accuracy is reported also records its test accuracy at step 0
and at up to that many evenly spaced steps: the learning curves of Kornblith et al.'s
"ImageNet pretraining accelerates convergence" (fine-tune against scratch). These
evaluations leave the training as it was: the same batches, updates and final accuracy as
without them. The learning rate x weight decay grid (the recipe's
``lr_grid`` x ``weight_decay_grid``) is searched on the validation split (each configuration
trained on the training split); then, as Kornblith et al. did, the configuration best on
validation is **refit on train + validation** (steps scaled by that size) and its test
accuracy is the reported one (``refit=False`` reports the grid run's own test accuracy
instead). ``scratch`` is the same procedure from a random initialisation of the same
architecture.

The torch engine of the trainer (:class:`components.train.engines.TorchEngine`) owns the
device placement, bf16 autocast on a GPU and the optimizer step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Most evaluation points of a learning curve (``curve_points``): each is a pass over the
#: test split.
MAX_CURVE_POINTS = 100


def scaled_steps(recipe, n_train: int, max_steps: int | None = None) -> int:
    """Optimizer steps of ``recipe`` for a training set of ``n_train`` images: its
    ``reference_steps`` scaled by ``n_train / reference_images`` (``steps_policy: scaled``) or
    ``reference_steps`` itself (``fixed``), capped at ``max_steps`` (see the module docstring).

    Raises:
        ValueError: for a recipe without a step count (a trainer's recipe, or
            ``reference_steps`` 0), or a scaled one without ``reference_images``.
    """
    policy = getattr(recipe, "steps_policy", "scaled")
    if not getattr(recipe, "reference_steps", 0) or (
        policy == "scaled" and not getattr(recipe, "reference_images", 0)
    ):
        raise ValueError(
            f"recipe {recipe.name!r} counts no fine-tune steps: set reference_steps and "
            "reference_images (as recipes/finetune.yaml does)"
        )
    steps = recipe.reference_steps
    if policy == "scaled":
        steps = max(1, round(steps * min(1.0, n_train / recipe.reference_images)))
    return min(steps, max_steps) if max_steps else steps


def curve_steps(steps: int, points: int) -> list[int]:
    """The steps at which a learning curve is evaluated: 0, then up to ``points`` evenly
    spaced steps ending at ``steps`` (fewer when ``steps < points``); none for 0 points."""
    if points <= 0:
        return []
    return sorted({0, *(round(steps * k / points) for k in range(1, points + 1))})


@dataclass
class FinetuneResult:
    """Outcome of a fine-tune (or scratch) grid search.

    Attributes:
        accuracy: the reported test accuracy in [0, 1]: of the refit on train + validation
            with the configuration best on validation (``refit``), else of that
            configuration's grid run (trained on the training split only).
        lr: the configuration's learning rate.
        weight_decay: its weight decay.
        steps: optimizer steps per grid configuration.
        grid: validation accuracy per ``(lr, weight_decay)``.
        refit: whether ``accuracy`` comes from the refit on train + validation.
        refit_steps: optimizer steps of the refit (0 without).
        grid_accuracy: test accuracy of the chosen configuration's grid run (train only).
        initial_accuracy: test accuracy of the starting point (a fresh linear head on the
            pretrained features is random, so this is near chance; kept for the record).
        schedule_steps: steps of the reported run's schedule before ``max_steps`` capped it.
        batch_size: images per step.
        train_images: images of the reported run's training set (train + validation after
            a refit).
        steps_policy: the recipe's ``steps_policy`` (``scaled`` or ``fixed``).
        curve: ``(step, test accuracy)`` of the run whose accuracy is reported (the refit,
            else the chosen grid run) at :func:`curve_steps` (empty without
            ``curve_points``); its last accuracy is ``accuracy``.
    """

    accuracy: float
    lr: float
    weight_decay: float
    steps: int
    grid: dict[tuple[float, float], float] = field(default_factory=dict)
    initial_accuracy: float = 0.0
    refit: bool = False
    refit_steps: int = 0
    grid_accuracy: float = 0.0
    schedule_steps: int = 0
    batch_size: int = 0
    train_images: int = 0
    steps_policy: str = "scaled"
    curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Curve:
    """A learning curve to record during :func:`train_steps`: the accuracy on ``inputs`` after
    each step in ``at`` (0: before the first), appended to ``points``."""

    inputs: torch.Tensor
    labels: torch.Tensor
    eval_batch_size: int
    at: list[int]
    points: list[tuple[int, float]] = field(default_factory=list)

    def record(self, step: int, model: nn.Module, engine) -> None:
        """Appends ``(step, accuracy of model)``; leaves the model in eval mode."""
        self.points.append(
            (step, accuracy(model, engine, self.inputs, self.labels, self.eval_batch_size))
        )


@torch.no_grad()
def accuracy(model: nn.Module, engine, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Top-1 accuracy of ``model`` on prepared inputs, in eval mode."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch):
        with engine.autocast():
            logits = model(x[start : start + batch].to(engine.device))
        correct += int((logits.argmax(1).cpu() == y[start : start + batch]).sum())
    return correct / max(1, len(x))


def train_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    momentum: float,
    hflip: bool,
    seed: int,
    device: str = "auto",
    curve: Curve | None = None,
):
    """Trains ``model`` for ``steps`` SGD-Nesterov steps with a per-step cosine schedule.

    Args:
        curve: where and on what to record the accuracy over steps (None: nowhere).

    Returns:
        ``(model, engine)``: the trained module (on the engine's device) and its engine.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from components.train.engines import TorchEngine

    engine = TorchEngine(device=device)
    optimizer = create_optimizer_v2(
        model, opt="sgd", lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True
    )
    scheduler = CosineLRScheduler(optimizer, t_initial=steps, t_in_epochs=False)
    model = engine.setup(model, optimizer)
    generator = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(x))
    at = set(curve.at) if curve else set()
    if 0 in at:
        curve.record(0, model, engine)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(x), (batch,), generator=generator)
        inputs = x[index]
        if hflip:
            flip = torch.rand(batch, generator=generator) < 0.5
            inputs = torch.where(flip[:, None, None, None], inputs.flip(-1), inputs)
        with engine.autocast():
            loss = F.cross_entropy(model(inputs.to(engine.device)), y[index].to(engine.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        engine.step(loss)
        scheduler.step_update(step + 1)
        if step + 1 in at:
            curve.record(step + 1, model, engine)
            model.train()  # accuracy() leaves the model in eval mode
    return model, engine


def finetune(
    model: nn.Module,
    num_classes: int,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    recipe: str = "finetune",
    overrides: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    refit: bool = True,
    curve_points: int = 0,
) -> FinetuneResult:
    """Grid-searches LR x weight decay on validation, each run from the same start, then
    refits the best configuration on train + validation (Kornblith et al.'s protocol).

    Args:
        model: the starting network (pretrained for ``finetune``, freshly initialised for
            ``scratch``); its classifier is replaced by one for ``num_classes`` (seeded).
        num_classes: target classes.
        train, val, test: ``(inputs NCHW float, labels int64)`` prepared with the model's
            eval transform.
        recipe: recipe name in :mod:`components.train.recipes` (batch size, momentum, hflip,
            steps and the ``lr_grid`` x ``weight_decay_grid``).
        overrides: recipe fields over the recipe's values, e.g. ``{"lr_grid": [0.1]}``.
        max_steps: cap on the scaled step count (toy runs).
        seed: seed of the new head and of the batch order.
        device: ``auto``, ``cuda`` or ``cpu`` (the engine's choice).
        refit: refit the chosen configuration on train + validation and report its test
            accuracy (False: report the grid run's, trained on train only).
        curve_points: evenly spaced steps (and step 0) at which the reported run records its
            test accuracy (:attr:`FinetuneResult.curve`; 0: none, at most
            :data:`MAX_CURVE_POINTS`). Without ``refit`` every grid run records one, each
            test pass costing a forward pass over the test split.

    Returns:
        The reported test accuracy, the chosen configuration and the grid.

    Raises:
        ValueError: for a trainer's recipe, an empty grid or ``curve_points`` out of range.
    """
    from components.train.engines import TorchEngine
    from components.train.recipes import FinetuneRecipe, resolve_recipe

    settings = resolve_recipe(recipe, dict(overrides or {}))
    if not isinstance(settings, FinetuneRecipe):
        raise ValueError(
            f"recipe {recipe!r} trains architectures: fine-tuning needs a fine-tune recipe "
            "(lr_grid, weight_decay_grid, reference_steps), e.g. finetune or scratch"
        )
    if not settings.lr_grid or not settings.weight_decay_grid:
        raise ValueError("the recipe's lr_grid and weight_decay_grid must not be empty")
    if not 0 <= curve_points <= MAX_CURVE_POINTS:
        raise ValueError(f"curve_points must be in [0, {MAX_CURVE_POINTS}], got {curve_points}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = copy.deepcopy(model).cpu()
        start.reset_classifier(num_classes)
    steps = scaled_steps(settings, len(train[0]), max_steps)
    start_engine = TorchEngine(device=device)
    initial = accuracy(
        copy.deepcopy(start).to(start_engine.device), start_engine, *test, settings.eval_batch_size
    )
    grid: dict[tuple[float, float], float] = {}
    best: tuple[float, float, float] | None = None  # (val acc, lr, wd)
    best_test = 0.0
    best_curve: list[tuple[int, float]] = []
    train_options = dict(
        batch_size=settings.batch_size,
        momentum=settings.momentum,
        hflip=settings.hflip,
        seed=seed,
        device=device,
    )
    for lr in sorted(settings.lr_grid):
        for wd in sorted(settings.weight_decay_grid):
            # Without a refit a grid run may be the reported one: each records its curve.
            curve = None
            if curve_points and not refit:
                at = curve_steps(steps, curve_points)
                curve = Curve(*test, settings.eval_batch_size, at)
            try:
                trained, engine = train_steps(
                    copy.deepcopy(start),
                    *train,
                    steps=steps,
                    lr=lr,
                    weight_decay=wd,
                    curve=curve,
                    **train_options,
                )
            except FloatingPointError:
                grid[(lr, wd)] = math.nan  # a diverged configuration cannot be chosen
                continue
            score = accuracy(trained, engine, *val, settings.eval_batch_size)
            grid[(lr, wd)] = score
            if best is None or score > best[0]:
                best = (score, lr, wd)
                best_test = accuracy(trained, engine, *test, settings.eval_batch_size)
                best_curve = curve.points if curve else []
    if best is None:
        raise FloatingPointError("every learning rate x weight decay configuration diverged")
    reported, refit_steps, n_reported = best_test, 0, len(train[0])
    if refit:
        # The validation split has chosen; it now trains too (more data, same recipe).
        both = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
        n_reported = len(both[0])
        refit_steps = scaled_steps(settings, n_reported, max_steps)
        curve = None
        if curve_points:
            curve = Curve(*test, settings.eval_batch_size, curve_steps(refit_steps, curve_points))
        trained, engine = train_steps(
            copy.deepcopy(start),
            *both,
            steps=refit_steps,
            lr=best[1],
            weight_decay=best[2],
            curve=curve,
            **train_options,
        )
        best_curve = curve.points if curve else []
        reported = accuracy(trained, engine, *test, settings.eval_batch_size)
    return FinetuneResult(
        accuracy=reported,
        lr=best[1],
        weight_decay=best[2],
        steps=steps,
        grid=grid,
        initial_accuracy=initial,
        refit=refit,
        refit_steps=refit_steps,
        grid_accuracy=best_test,
        schedule_steps=scaled_steps(settings, n_reported),
        batch_size=min(settings.batch_size, n_reported),
        train_images=n_reported,
        steps_policy=settings.steps_policy,
        curve=best_curve,
    )
