"""The train component's tasks: plan a study, then train and log one trial.

Both the KFP components (``component.py``) and the CLI (``aprflow train``) call these.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import fields, replace
from typing import Any

from components.common import tracking
from components.common.progress import TrialDone, report, trial_done_line
from components.common.storage import ArtifactStore, MissingObjectError, open_store
from components.data.datasets import DatasetRef
from components.sample.models import model_id, timm_name
from components.sample.space import AnyNetSpec
from components.train.chunk import (
    DEFAULT_MAX_PARALLEL_TASKS,
    check_chunking,
    check_trial_timeout,
    save_chunks,
)
from components.train.definition import Trial, attempts_key, checkpoint_key, result_key
from components.train.plan import (
    dataset_recipe,
    load_trial,
    load_trial_ids,
    plan_trials,
    save_plan,
    study_id,
)
from components.train.recipes import STREAM_AUGMENTATIONS, Recipe, recipe_input, resolve_recipe

# The study params and the config keys that hold the same quantity.
CONFIG_KEYS = {
    "n_models": "n_models",
    "datasets": "datasets",
    "recipe": "recipe",
    "seeds": "train_seeds",
    "engine": "engine",
}


def study_key(study: str) -> str:
    return f"studies/{study}/study.json"


def _dataset_recipes(
    refs: list[DatasetRef],
    recipe: str,
    overrides: dict[str, Any],
    settings: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[DatasetRef], dict[str, Recipe]]:
    """Each dataset's recipe (:func:`~components.train.plan.dataset_recipe`): its own
    ``recipe``/``epochs`` (carried by its reference) and ``recipe_overrides`` settings on top
    of the study's; and the references, a dataset whose recipe sets per-image augmentations
    (RandAugment, ...) switched to the stream input unless its settings name an ``input``
    (as ``aprflow train`` does).

    Raises DatasetError before anything is planned when a recipe asks for augmentations the
    input its dataset's settings name does not do (RandAugment with ``input: memory``)."""
    recipes, planned = {}, []
    for ref in refs:
        own = (settings or {}).get(ref.name, {})
        recipes[ref.name] = dataset_recipe(
            recipe, overrides, own | {"recipe": ref.recipe, "epochs": ref.epochs}
        )
        chosen = recipe_input(recipes[ref.name], own.get("input"), ref.name)
        planned.append(replace(ref, input=chosen) if chosen else ref)
    return planned, recipes


def _test_sets(
    refs: list[DatasetRef],
    settings: dict[str, dict[str, Any]],
    seed: int,
    store_uri: str | None,
) -> dict[str, list[DatasetRef]]:
    """Each dataset's extra test sets (``dataset_settings.<name>.test_sets``), materialised or
    looked up at that dataset's resolution like the study's own datasets."""
    from components.data.datasets import prepare_all

    test_sets = {}
    for ref in refs:
        names = settings.get(ref.name, {}).get("test_sets") or []
        if names:
            test_sets[ref.name] = prepare_all(names, ref.resolution, seed, store_uri)
    return test_sets


def plan_study(
    specs: list[dict[str, Any]],
    datasets: list[dict[str, Any]],
    study_name: str,
    recipe: str,
    recipe_overrides: dict[str, Any],
    seeds: list[int],
    engine: str,
    store_uri: str | None,
    tracking_uri: str | None,
    kfp_run_id: str = "",
    config: dict[str, Any] | None = None,
    device: str = "auto",
    gpus: int = 1,
    chunk_size: int = 0,
    max_parallel_tasks: int = DEFAULT_MAX_PARALLEL_TASKS,
    compile_model: bool = False,
    dataset_settings: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    engine_options: dict[str, Any] | None = None,
    trial_timeout_s: int = 0,
) -> tuple[list[str], str, str]:
    """Plans every trial, opens the study's MLflow parent run and records the study.

    Args:
        config: the study's full resolved config (pipeline arguments), logged to the parent
            run as ``config.<key>`` params and ``config.json``.
        device, gpus: where each trial trains (see :class:`~components.train.definition.Trial`).
        chunk_size, max_parallel_tasks: how trials are grouped into training tasks
            (``studies/<study_id>/chunks.json``, see :mod:`components.train.chunk`).
        compile_model: train ``torch.compile``-d models (engine torch only).
        dataset_settings: per-dataset settings (``recipe_overrides``, ``test_sets``; the
            recipe, epochs and input also reach the plan through the dataset references).
        seed: the study's data seed (extra test sets are materialised with it).
        engine_options: options of the engine for every trial
            (:func:`~components.train.plan.engine_options`).
        trial_timeout_s: each trial's wall-clock limit in seconds (0 = derived from its
            estimated time; see :func:`~components.train.chunk.trial_time_limit`); a trial
            past it is killed and recorded failed.

    Returns:
        ``(trial_ids, study_id, parent_run_id)``.
    """
    store = open_store(store_uri)
    store.check()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri, tracking.wait_budget())
    settings = dataset_settings or {}
    resolved = resolve_recipe(recipe, recipe_overrides)
    refs, recipes = _dataset_recipes(
        [DatasetRef(**d) for d in datasets], recipe, recipe_overrides, settings
    )
    check_chunking(chunk_size, max_parallel_tasks)
    check_trial_timeout(trial_timeout_s)
    trials = plan_trials(
        specs,
        refs,
        resolved,
        seeds,
        engine,
        recipes,
        device,
        gpus,
        bool(compile_model),
        engine_options,
        _test_sets(refs, settings, seed, store_uri),
    )
    study = study_id(study_name, trials)
    ids = save_plan(store, study, trials)
    chunks = save_chunks(store, study, trials, chunk_size, max_parallel_tasks, trial_timeout_s)
    params = {
        "n_models": len(specs),
        "datasets": ",".join(r.name for r in refs),
        "recipe": resolved.name,
        "seeds": ",".join(map(str, seeds)),
        "engine": engine,
    }
    # One param per quantity: what the config holds is its ``config.<key>`` param.
    params = {k: v for k, v in params.items() if CONFIG_KEYS[k] not in (config or {})}
    params |= {"store_uri": store.uri}
    params |= {f"recipe.{k}": v for k, v in resolved.to_dict().items() if k != "name"}
    params |= {f"engine.{k}": v for k, v in (engine_options or {}).items()}
    params |= _population_params(specs)
    for ref in refs:
        # Recipes may differ by dataset (dataset_settings: {NAME: {recipe, epochs}}).
        params[f"dataset.{ref.name}.recipe"] = recipes[ref.name].name
        params[f"dataset.{ref.name}.epochs"] = recipes[ref.name].epochs
        params[f"dataset.{ref.name}.version"] = tracking.dataset_version(ref.to_dict())
        # The fields a dataset's recipe sets apart from the study's (its recipe_overrides).
        own = recipes[ref.name].to_dict()
        params |= {
            f"dataset.{ref.name}.recipe.{k}": v
            for k, v in own.items()
            if k not in ("name", "epochs") and v != getattr(resolved, k)
        }
        names = settings.get(ref.name, {}).get("test_sets")
        if names:
            params[f"dataset.{ref.name}.test_sets"] = ",".join(names)
    config = _plain_config(config) if config else None
    parent = tracking.start_study_run(uri, study_name, study, params, kfp_run_id, config)
    record = {"study_id": study, "name": study_name, "parent_run_id": parent, "trials": len(ids)}
    if not store.exists(study_key(study)):
        store.put_json(study_key(study), record | {"started_at": time.time()})
    report(
        "plan",
        f"study {study}: {len(specs)} architectures x {len(refs)} datasets x "
        f"{len(seeds)} seeds = {len(ids)} trials; MLflow parent run {parent}",
    )
    report("plan", chunks["summary"])
    return ids, study, parent


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the user wrote it: KFP hands pipeline arguments inside a dict over as
    floats or text (``2`` arrives as ``2.0`` or ``"2.0"``), so integral numbers become ints."""
    plain = {}
    for key, value in config.items():
        if isinstance(value, str) and re.fullmatch(r"-?\d+\.0", value):
            value = float(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        plain[key] = value
    return plain


def _population_params(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The population's size, the sampled AnyNets' FLOP band (at 224 px, as the sampler
    counts) and the named timm models."""
    flops, named = [], []
    for spec in specs:
        if (name := timm_name(spec)) is not None:
            named.append(name)
            continue
        try:
            flops.append(AnyNetSpec.from_dict(spec).derived_quantities()["flops"])
        except ValueError:
            continue  # a broken spec is recorded as its trials' failure
    band = {"population.flops_min": min(flops), "population.flops_max": max(flops)} if flops else {}
    return (
        {"population.size": len(specs)}
        | band
        | ({"population.named": ",".join(named)} if named else {})
    )


# Architecture quantities logged as metrics (numbers sort in MLflow), not params.
ARCHITECTURE_METRICS = ("flops", "params")


def trial_recipe_fields(trial: Trial) -> tuple[str, ...]:
    """The recipe fields that apply to a trainer's trial: not the per-image augmentations
    unless its dataset is streamed, not the name (param ``recipe``)."""
    skip = {"name"}
    if trial.dataset.input != "stream":
        skip |= set(STREAM_AUGMENTATIONS)
    return tuple(f.name for f in fields(Recipe) if f.name not in skip)


def trial_log(
    store: ArtifactStore, trial: Trial, parent_run_id: str, kfp_run_id: str = ""
) -> tracking.TrialLog:
    """What a trial logs before it has a result: its run's name, params, tags and dataset."""
    model = model_id(trial.spec)
    architecture = {
        k: v for k, v in _architecture_params(trial.spec).items() if k not in ARCHITECTURE_METRICS
    }
    params = architecture | {
        "model": model,
        "dataset": trial.dataset.name,
        "dataset_version": tracking.dataset_version(trial.dataset.to_dict()),
        "recipe": trial.recipe.name,
        "seed": trial.seed,
        "engine": trial.engine,
        "device": trial.device,
        "gpus": trial.gpus,
    }
    params |= tracking.recipe_params(trial.recipe.to_dict(), trial_recipe_fields(trial))
    params |= {f"engine.{k}": v for k, v in trial.engine_options.items()}
    dataset = trial.dataset.to_dict()
    source = store.key_uri(dataset["manifest_key"]) if "manifest_key" in dataset else store.uri
    return tracking.TrialLog(
        parent_run_id=parent_run_id,
        trial_id=trial.trial_id,
        run_name=tracking.trial_run_name(
            model, trial.dataset.name, trial.recipe.name, trial.seed, "ok"
        ),
        params=params,
        tags={
            tracking.KFP_RUN_TAG: kfp_run_id,
            tracking.CHECKPOINT_TAG: store.key_uri(checkpoint_key(trial.trial_id)),
            "aprflow.model": model,
            "aprflow.dataset": trial.dataset.name,
            "aprflow.recipe": trial.recipe.name,
            "aprflow.seed": str(trial.seed),
        },
        dataset=dataset,
        dataset_source=source,
        recipe=trial.recipe.to_dict(),
    )


def with_result(log: tracking.TrialLog, trial: Trial, result: dict[str, Any]) -> tracking.TrialLog:
    """``log`` completed from the trial's result: status, metrics under one name each
    (:func:`~components.common.tracking.trial.result_metrics`, ``result_series``), the epochs'
    times and the trial's start and end."""
    model = model_id(trial.spec)
    return replace(
        log,
        run_name=tracking.trial_run_name(
            model, trial.dataset.name, trial.recipe.name, trial.seed, result["status"]
        ),
        status=result["status"],
        killed=bool(result.get("killed")),
        metrics=tracking.result_metrics(result),
        history=tracking.result_series(result.get("history") or {}),
        epoch_times=list(result.get("epoch_times") or []),
        tags=log.tags
        | {
            tracking.REASON_TAG: result["reason"][:500],
            "aprflow.device_used": str(result.get("device_used", "")),
            "aprflow.precision": str(result.get("precision", "")),
            "aprflow.torch_version": str(result.get("torch_version", "")),
            "aprflow.compiled": str(result.get("compiled", False)).lower(),
        },
        started_at=result.get("started_at", log.started_at),
        ended_at=result.get("ended_at"),
    )


def _architecture_params(spec: dict[str, Any]) -> dict[str, Any]:
    if (name := timm_name(spec)) is not None:
        return {"timm_model": name}  # its FLOPs and parameters are the result's metrics
    params = {"block_type": spec.get("block_type"), "stem_width": spec.get("stem_width")}
    for name, short in (
        ("depths", "d"),
        ("widths", "w"),
        ("bottleneck_ratios", "b"),
        ("group_widths", "g"),
        ("strides", "s"),
    ):
        for i, value in enumerate(spec.get(name, ()), 1):
            params[f"{short}{i}"] = value
    # A structurally broken spec has no complexity; its trial's status says why it failed.
    with contextlib.suppress(ValueError):
        params |= AnyNetSpec.from_dict(spec).derived_quantities()
    return params


def trained_in_this_run(store: ArtifactStore, trial_id: str, kfp_run_id: str) -> bool:
    """Whether an attempt before the latest (the calling task's own, recorded before it
    started the trial's process) was made by another chunk task of this run: its result is
    then that task's (a helper's), not one reused from an earlier run or from an earlier try
    of this same task (a retried pod keeps the run's id; its log is a new one, which reports
    the trial). Without a run id (a chunk run from the command line) nothing tells the runs
    apart: False."""
    if not kfp_run_id:
        return False
    try:
        attempts = store.get_json(attempts_key(trial_id)).get("attempts", [])
    except MissingObjectError:
        return False
    own = attempts[-1].get("chunk") if attempts else None
    return any(
        entry.get("kfp_run_id") == kfp_run_id and entry.get("chunk") != own
        for entry in attempts[:-1]
    )


def train_trial(
    trial_id: str,
    study: str,
    store_uri: str | None,
    tracking_uri: str | None,
    kfp_run_id: str = "",
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Trains one planned trial (or reuses its result) under a nested MLflow run of the study's
    parent run: RUNNING from the trial's start with its per-epoch metrics streamed
    (:class:`~components.common.tracking.live.TrialStream`), completed from the result.

    Args:
        result: a result decided outside the trial's own process (the chunk runner's record of
            a trial killed in every attempt): written to the store and logged, nothing trained.
    """
    store = open_store(store_uri)
    # No tracking check: MLflow logging is best-effort here (queued while MLflow is away).
    uri = tracking.resolve_tracking_uri(tracking_uri)
    record = store.get_json(study_key(study))
    ids = load_trial_ids(store, study)
    trial = load_trial(store, trial_id)
    started = record["started_at"]
    position = f"trial {ids.index(trial_id) + 1}/{len(ids)}"
    model = model_id(trial.spec)
    report("train", f"{position} {trial_id}: model {model} on {trial.dataset.name}", started)
    log = trial_log(store, trial, record["parent_run_id"], kfp_run_id)
    if result is None:
        stream = tracking.TrialStream(uri, log)
        from components.train.trial import TrainHooks, run_trial  # torch: the trainer's

        hooks = TrainHooks(start=stream.start, epoch=stream.epoch, step=stream.step)
        try:
            result = run_trial(
                store, trial, progress=lambda line: report("train", line, started), hooks=hooks
            )
        finally:
            stream.close()
    else:
        store.put_json(result_key(trial_id), result)
    if result.get("reused") and trained_in_this_run(store, trial_id, kfp_run_id):
        # Another task of this run trained it (a chunk that helped, components.train.chunk.
        # Helping) and logged and reported it: the console counts each trial once.
        report("train", f"{position} {trial_id}: trained by another task of this run", started)
        return result
    tracking.log_trial_or_queue(store, study, uri, with_result(log, trial, result))
    if result["status"] == "ok":
        outcome = f"top-1 error {result['top1_error']:.1f}%"
    else:
        outcome = result["reason"]
    done = TrialDone(
        index=ids.index(trial_id) + 1,
        total=len(ids),
        status=result["status"],
        reused=result.get("reused", False),
        detail=f"{outcome} (model {model} on {trial.dataset.name}, seed {trial.seed})",
    )
    report("train", trial_done_line(done), started)
    return result
