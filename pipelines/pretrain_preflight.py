"""Checks of a ``pretrain-factors`` run's arguments before anything runs, and its dry-run plan.

The pretraining trains as the seed study does (one ``architecture``, ``n_seeds`` seeds:
:func:`pipelines.preflight.check_training`, :func:`pipelines.sweep.check_sweep`) on datasets
its own data step makes; the design is checked on top (levels within the limits table, every
level satisfiable by the source's classes and training images: ``aprflow run`` reads them
from the store or the built-in set), and the transfer settings (regimes, the fine-tune
recipe). ``aprflow submit`` checks what needs nothing of this machine.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from analysis.pretrain_factors import Layout
from components.common.limits import check_limit
from components.common.storage import open_store
from components.common.validation import short_repr
from components.data.descriptor import DatasetError
from pipelines.preflight import (
    PreflightError,
    check_services,
    check_study_name,
    check_training,
    check_uri_has_no_credentials,
    gpus_per_trial,
)
from pipelines.sweep import check_sweep

PIPELINE = "pretrain-factors"


def _design(arguments: dict[str, Any]):
    from components.pretrain.variants import check_design

    source = arguments["source"]
    if not isinstance(source, str) or not source:
        raise PreflightError(
            f"source must name a dataset (built in, e.g. digits, or built), got "
            f"{short_repr(source)}"
        )
    try:
        return check_design(arguments)
    except ValueError as e:
        raise PreflightError(str(e)) from None


def layout_of(arguments: dict[str, Any]) -> Layout:
    """The study's datasets, planned from the source's classes and training images in the
    store or the built-in set (read only).

    Raises:
        PreflightError: an unknown source, or a design the source cannot satisfy.
    """
    from components.classcount.subsets import source_classes
    from components.pretrain.variants import plan_layout
    from pipelines.class_count_preflight import source_train_per_class

    store = open_store(arguments["store_uri"] or None)
    design = _design(arguments)
    where = (arguments["source"], arguments["data_seed"], arguments["resolution"])
    try:
        classes = source_classes(store, arguments["source"])
        per_class = source_train_per_class(arguments)
        pool = plan_layout(where[0], classes, design, where[1], where[2]).pool_classes
        # Again with the pool's smallest class: every per-class level must fit it.
        smallest = min(per_class[c] for c in pool)
        return plan_layout(where[0], classes, design, where[1], where[2], smallest)
    except (DatasetError, ValueError) as e:
        raise PreflightError(str(e)) from None


def check_transfer_settings(arguments: dict[str, Any]) -> None:
    """The regimes and the fine-tune recipe, as the transfer plan will check them."""
    from components.pretrain.variants import check_regimes
    from components.transfer.errors import TransferError
    from components.transfer.study import StudySettings

    try:
        regimes = check_regimes(arguments["regimes"], bool(arguments["held_out_classes"]))
    except ValueError as e:
        raise PreflightError(str(e)) from None
    try:
        StudySettings(
            regimes=regimes,
            k=arguments["k"],
            finetune_max_steps=arguments["finetune_max_steps"] or None,
            recipe_overrides=arguments["finetune_overrides"],
        )
    except TransferError as e:
        raise PreflightError(str(e)) from None


def check_pretrain_factors(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates a ``pretrain_factors`` argument set and, for a local run, the source, the
    targets, the store and MLflow.

    Raises:
        AprflowError: naming the argument and the fix.
    """
    from components.sample.models import parse_architecture

    check_study_name(arguments["study_name"])
    for key in ("store_uri", "tracking_uri"):  # before anything opens them
        check_uri_has_no_credentials(key, arguments[key])
    design = _design(arguments)
    try:
        parse_architecture(arguments["architecture"])
        check_limit("n_seeds", arguments["n_seeds"])
        check_limit("seed", arguments["data_seed"], "data_seed")
    except ValueError as e:
        raise PreflightError(str(e)) from None
    check_transfer_settings(arguments)
    training = arguments | {"datasets": [arguments["source"]], "dataset_settings": {}}
    check_training(training)
    sweep = arguments | {"gpus_per_trial": gpus_per_trial(arguments["gpus_per_trial"])}
    check_sweep(sweep, local=local)
    if local:
        datasets = [arguments["source"], *design.targets]
        check_services(arguments, datasets, {}, runs_dir)
        layout_of(arguments)


def train_images(layout: Layout, per_class: dict[str, int]) -> dict[str, int]:
    """Training images of every variant, from the source's training images per class."""
    from components.data.descriptor import SubsetRule
    from components.data.subsets import choose_classes

    pool = sum(per_class[c] for c in layout.pool_classes)
    sizes = {}
    for variant in layout.variants:
        if variant.images_per_class:
            sizes[variant.name] = variant.images_per_class * variant.classes
        elif variant.factor == "classes":  # the seeded draw's own classes
            rule = SubsetRule(classes=variant.classes, seed=layout.seed)
            kept = choose_classes(len(layout.pool_classes), rule)
            sizes[variant.name] = sum(per_class[layout.pool_classes[i]] for i in kept)
        else:
            sizes[variant.name] = pool
    return sizes


def planned_trials(
    arguments: dict[str, Any], layout: Layout, n_train: dict[str, int], profile=None
) -> tuple[list, int]:
    """(the planned pretraining trials, the chunk count) of checked arguments, as the plan
    task will plan them."""
    from components.data.descriptor import DatasetRef
    from components.pretrain.variants import equal_step_epochs
    from components.train.chunk import check_chunk_count, chunk_trials
    from components.train.plan import dataset_recipe, plan_trials, study_overrides
    from components.train.recipes import resolve_recipe
    from pipelines.cluster import load_profile
    from pipelines.sweep import planned_seeds, planned_specs

    profile = profile or load_profile()
    refs = [
        DatasetRef(name, "", name, 1, arguments["resolution"], n_train[name], 0)
        for name in layout.datasets
    ]
    overrides = study_overrides(arguments.get("recipe_overrides"), arguments["epochs"])
    study_recipe = resolve_recipe(arguments["recipe"], overrides)
    recipes = {}
    if arguments["equal_steps"]:
        epochs = equal_step_epochs(study_recipe.epochs, [n_train[n] for n in layout.datasets])
        recipes = {
            name: dataset_recipe(arguments["recipe"], overrides, {"epochs": e})
            for name, e in zip(layout.datasets, epochs, strict=True)
        }
    trials = plan_trials(
        planned_specs(arguments),
        refs,
        study_recipe,
        planned_seeds(arguments),
        arguments["engine"],
        recipes,
    )
    # Where the trials train decides which measured throughput their estimates rest on.
    trials = [replace(t, device=arguments["device"]) for t in trials]
    if arguments["chunk_size"]:
        n_chunks = math.ceil(len(trials) / arguments["chunk_size"])
        check_chunk_count(n_chunks)
        return trials, n_chunks
    return trials, len(chunk_trials(trials, 0, profile.max_parallel_tasks))


def transfer_chunk_count(arguments: dict[str, Any], trials: list) -> int:
    """The transfer tasks of the study: its pretrained models in chunks, as the transfer plan
    groups them."""
    from components.transfer.steps import DEFAULT_CHUNK_MODELS

    return math.ceil(len(trials) / (arguments["transfer_chunk_size"] or DEFAULT_CHUNK_MODELS))


def dry_run_summary(arguments: dict[str, Any]) -> str:
    """What a checked run would do: its datasets, ``N trials in C chunks``, what the backend
    runs, the estimated device time of the pretraining with the measurements it rests on, and
    the transfer evaluations that follow."""
    from components.train.chunk import summary_line
    from pipelines.backend import study_backend_line
    from pipelines.class_count_preflight import source_train_per_class
    from pipelines.sweep import estimate_lines

    layout = layout_of(arguments)
    n_train = train_images(layout, source_train_per_class(arguments))
    trials, n_chunks = planned_trials(arguments, layout, n_train)
    variants = ", ".join(f"{v.name} ({v.level})" for v in layout.variants)
    held = (
        f"; {len(layout.held_out_classes)} classes held out ({layout.held_out})"
        if layout.held_out
        else ""
    )
    lines = [
        f"pool: {layout.reference.name} ({len(layout.pool_classes)} classes){held}",
        f"variants: {variants}",
        summary_line(len(trials), n_chunks),
        study_backend_line(
            arguments, len(trials), n_chunks, PIPELINE, transfer_chunk_count(arguments, trials)
        ),
        *estimate_lines(trials),
        f"then {len(trials)} pretrained models x {len(layout.transfer_datasets)} targets "
        f"({', '.join(layout.transfer_datasets)}) x {len(arguments['regimes'])} regimes "
        f"({', '.join(arguments['regimes'])}): the transfer tasks, not in the estimate",
    ]
    return "\n".join(lines)
