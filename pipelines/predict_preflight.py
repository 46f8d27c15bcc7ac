"""Checks of an ``apr-predict`` run's arguments before anything runs, and its dry-run plan.

``aprflow run apr-predict`` (``local``) also reads the population from the store, so an
unknown study, a source dataset without trials or a ``k`` above the population's architectures
is one ``error: ...`` line before any task starts; ``aprflow submit`` checks only what needs
nothing of this machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from components.common.storage import open_store
from components.common.tracking import check_tracking, resolve_tracking_uri
from components.predict.settings import PredictError, PredictSettings, check_k
from pipelines.preflight import (
    PreflightError,
    check_runs_dir,
    check_uri_has_no_credentials,
    gpus_per_trial,
)
from pipelines.sweep import scaled_task_cpu

#: The pipeline arguments that are a :class:`PredictSettings` field.
SETTINGS = (
    "study_name",
    "population",
    "source_datasets",
    "target",
    "k",
    "scores",
    "seed",
    "target_resolution",
    "device",
    "n_bootstrap",
    "random_draws",
    "feature_chunk_size",
)


def predict_settings(arguments: dict[str, Any]) -> PredictSettings:
    """The settings in ``arguments``, checked (a required one not given is named)."""
    import inspect

    for key in ("population", "target"):
        if arguments[key] is inspect.Parameter.empty:
            raise PreflightError(f"{key} is required: set it in the config or with --set {key}=")
    return PredictSettings(**{key: arguments[key] for key in SETTINGS})


def check_predict(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates an ``apr_predict`` argument set and, for a local run, the population, the
    target, the store and MLflow.

    Raises:
        AprflowError: naming the argument and the fix.
    """
    from components.train.chunk import ChunkError, check_chunking, check_trial_timeout
    from pipelines.cluster import load_profile

    settings = predict_settings(arguments)
    for key in ("store_uri", "tracking_uri"):
        check_uri_has_no_credentials(key, arguments[key])
    gpus = gpus_per_trial(arguments["gpus_per_trial"])
    scaled_task_cpu(arguments)
    try:
        check_chunking(arguments["chunk_size"], load_profile().max_parallel_tasks)
        check_trial_timeout(arguments["trial_timeout_s"])
    except ChunkError as e:
        raise PreflightError(str(e)) from None
    if not local:
        return
    if runs_dir is not None:
        check_runs_dir(runs_dir)
    population_setup(settings, arguments["store_uri"]).check_gpus(gpus)
    check_tracking(resolve_tracking_uri(arguments["tracking_uri"] or None))


def population_setup(settings: PredictSettings, store_uri: str):
    """The population's training setup, after checking the target and ``k`` against it."""
    from components.data.datasets import DatasetError, check_datasets
    from components.predict.population import load_population, training_setup

    store = open_store(store_uri or None)
    try:
        check_datasets([settings.target], store)
    except DatasetError as e:
        raise PredictError(f"target: {e}") from None
    store.check()
    models, trials, _ = load_population(
        store, settings.population, settings.source_datasets, settings.target
    )
    setup = training_setup(models, trials)
    check_k(settings.k, len(setup.specs))
    return setup


def dry_run_summary(arguments: dict[str, Any]) -> str:
    """What a checked run would do: the population, the scores' tasks, the trials to train."""
    from components.predict.population import load_population, training_setup
    from components.predict.predictors import score_keys
    from components.transfer.steps import DEFAULT_CHUNK_MODELS

    settings = predict_settings(arguments)
    store = open_store(arguments["store_uri"] or None)
    models, trials, left_out = load_population(
        store, settings.population, settings.source_datasets, settings.target
    )
    setup = training_setup(models, trials)
    sources = sorted({m.source for m in models})
    size = settings.feature_chunk_size or DEFAULT_CHUNK_MODELS
    recipe = setup.recipe
    lines = [
        f"population {settings.population}: {len(models)} trained models of "
        f"{len(setup.specs)} architectures on {', '.join(sources)}"
        + (f" ({sum(left_out.values())} trials left out)" if left_out else ""),
        f"scores on {settings.target}: {', '.join(score_keys(settings.scores))} of "
        f"{len(models)} models in {math.ceil(len(models) / size)} feature tasks",
        f"training: k = {settings.k} of {len(setup.specs)} architectures x "
        f"{len(setup.seeds)} seed(s) = {settings.k * len(setup.seeds)} trials on "
        f"{settings.target} (recipe {recipe['name']}, {recipe['epochs']} epochs, "
        f"{settings.target_resolution or setup.resolution} px)",
    ]
    return "\n".join(lines)
