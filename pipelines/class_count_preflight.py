"""Checks of a ``class-count`` run's arguments before anything runs, and its dry-run plan.

The class-count study is an apr-study whose datasets are made by its own data step: every
apr-study check holds for it (:func:`pipelines.preflight.check_study`, on the source and the
other datasets, which exist before the run), and the design is checked on top: subset sizes
and draws within the limits table, every size below the source's number of classes (``aprflow
run`` reads the source's classes from the store or the built-in set), valid subset names, and
the chunk count of all the trials. ``aprflow submit`` checks what needs nothing of this
machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.class_count import Layout
from components.common.storage import open_store
from components.common.validation import short_repr
from components.data.descriptor import DatasetError
from pipelines.preflight import PreflightError, check_study

PIPELINE = "class-count"


def _design(arguments: dict[str, Any]) -> tuple[list[int], int]:
    from components.classcount.subsets import check_design, check_subset_epochs

    source = arguments["source"]
    if not isinstance(source, str) or not source:
        raise PreflightError(
            f"source must name a dataset (built in, e.g. digits, or built), got "
            f"{short_repr(source)}"
        )
    try:
        sizes, draws = check_design(
            arguments["class_counts"], arguments["draws"], arguments["other_datasets"]
        )
        check_subset_epochs(arguments["subset_epochs"], sizes)
    except ValueError as e:
        raise PreflightError(str(e)) from None
    return sizes, draws


def study_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The apr-study arguments the class-count arguments amount to before the data step: the
    source and the other datasets (the subsets do not exist yet), no reference comparison."""
    others = list(arguments["other_datasets"])
    return arguments | {
        "datasets": [arguments["source"], *others],
        "dataset_settings": {},
        "reference": "",
        "top_k": 0,
        "best_models": 0,
        "chunk_size": 0,  # checked against every trial below (check_study counts too few)
    }


def layout_of(arguments: dict[str, Any]) -> Layout:
    """The study's datasets, planned from the source's classes in the store (read only).

    Raises:
        PreflightError: an unknown source, or a design the source cannot satisfy.
    """
    from components.classcount.subsets import plan_layout, source_classes

    store = open_store(arguments["store_uri"] or None)
    try:
        return plan_layout(
            arguments["source"],
            source_classes(store, arguments["source"]),
            arguments["class_counts"],
            arguments["draws"],
            arguments["data_seed"],
            arguments["resolution"],
            arguments["other_datasets"],
        )
    except (DatasetError, ValueError) as e:
        raise PreflightError(str(e)) from None


def check_class_count(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates a ``class_count`` argument set and, for a local run, the source, the other
    datasets, the store and MLflow.

    Raises:
        AprflowError: naming the argument and the fix.
    """
    from components.train.chunk import ChunkError, check_chunk_count

    sizes, draws = _design(arguments)
    check_study(study_arguments(arguments), runs_dir, local)
    n_architectures = arguments["n_models"] + len(arguments["architectures"])
    n_trials = (
        n_architectures
        * (1 + len(sizes) * draws + len(arguments["other_datasets"]))
        * len(arguments["train_seeds"])
    )
    if arguments["chunk_size"]:
        try:
            check_chunk_count(math.ceil(n_trials / arguments["chunk_size"]))
        except ChunkError as e:
            raise PreflightError(str(e)) from None
    if local:
        layout_of(arguments)


def train_images(
    layout: Layout, per_class: Mapping[str, int], others: Mapping[str, int]
) -> dict[str, int]:
    """Training images of every dataset of the study: the full set's and each subset's from
    the source's training images per class, the other datasets' as given."""
    sizes = {layout.full: sum(per_class.values())}
    sizes |= {s.name: sum(per_class[c] for c in s.class_names) for s in layout.subsets}
    return sizes | dict(others)


def planned_trials(
    arguments: dict[str, Any], layout: Layout, n_train: Mapping[str, int], profile=None
) -> tuple[list, int]:
    """(the planned trials, the chunk count) of checked arguments, as the plan task will plan
    them (the estimates need each dataset's training images, ``n_train``)."""
    from dataclasses import replace

    from components.classcount.subsets import check_subset_epochs
    from components.data.descriptor import DatasetRef
    from components.train.chunk import check_chunk_count, chunk_trials
    from components.train.plan import dataset_recipe, plan_trials, study_overrides
    from components.train.recipes import resolve_recipe
    from pipelines.cluster import load_profile
    from pipelines.sweep import planned_specs

    profile = profile or load_profile()
    refs = [
        DatasetRef(name, "", name, 1, arguments["resolution"], n_train[name], 0)
        for name in layout.datasets
    ]
    overrides = study_overrides(arguments.get("recipe_overrides"), arguments["epochs"])
    epochs = check_subset_epochs(arguments["subset_epochs"], layout.sizes)
    recipes = {
        s.name: dataset_recipe(arguments["recipe"], overrides, {"epochs": epochs[s.classes]})
        for s in layout.subsets
        if s.classes in epochs
    }
    trials = plan_trials(
        planned_specs(arguments),
        refs,
        resolve_recipe(arguments["recipe"], overrides),
        arguments["train_seeds"],
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


def source_train_per_class(arguments: dict[str, Any]) -> dict[str, int]:
    """The source's training images per class, as its build splits them (a built-in set's
    stratified 75 %, a named build's manifest)."""
    from components.data.build import load_manifest, named_dataset
    from components.data.builtin import BUILTIN_DATASETS
    from components.data.datasets import DatasetRef, builtin_split_counts

    source = arguments["source"]
    if source in BUILTIN_DATASETS:
        return builtin_split_counts(source)["train"]["per_class"]
    store = open_store(arguments["store_uri"] or None)
    manifest = load_manifest(store, DatasetRef(**named_dataset(store, source)["ref"]))
    return manifest["splits"]["train"]["per_class"]


def dry_run_summary(arguments: dict[str, Any]) -> str:
    """What a checked run would do: its datasets, ``N trials in C chunks``, what the backend
    runs, and the estimated device time with the measurements it rests on."""
    from components.train.chunk import summary_line
    from pipelines.backend import study_backend_line
    from pipelines.sweep import _train_images, estimate_lines

    layout = layout_of(arguments)
    store = open_store(arguments["store_uri"] or None)
    others = {name: _train_images(name, arguments["data_seed"], store) for name in layout.others}
    n_train = train_images(layout, source_train_per_class(arguments), others)
    trials, n_chunks = planned_trials(arguments, layout, n_train)
    subsets = [s.name for s in layout.subsets]
    shown = ", ".join(subsets[:6]) + (f", … (+{len(subsets) - 6})" if len(subsets) > 6 else "")
    lines = [
        f"datasets: {layout.full} ({layout.n_classes} classes, {n_train[layout.full]:,} "
        f"training images); {len(subsets)} subsets ({', '.join(map(str, layout.sizes))} "
        f"classes x {layout.draws} draws): {shown}"
        + (f"; others: {', '.join(layout.others)}" if layout.others else ""),
        summary_line(len(trials), n_chunks),
        study_backend_line(arguments, len(trials), n_chunks, PIPELINE),
        *estimate_lines(trials),
    ]
    return "\n".join(lines)
