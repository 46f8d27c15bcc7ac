"""Checks and the dry-run plan of a study's sweep settings (chunks, GPUs, packing, attempts).

``aprflow run`` calls :func:`check_sweep` after the study's own preflight, so a GPU asked for
on a machine without one, a chunk size or parallelism below 1, or more GPUs per trial than a
node of the cluster profile has, is one ``error: ...`` line before anything starts;
``--dry-run`` prints :func:`dry_run_summary` (``1500 trials in 30 chunks: 30 training tasks``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from components.common.errors import AprflowError
from components.common.limits import LIMITS, MAX_TASK_CPU
from components.common.validation import short_repr
from components.train.chunk import (
    ChunkError,
    check_chunk_count,
    check_chunking,
    chunk_trials,
    summary_line,
)
from components.train.definition import DEVICES, check_compile
from components.train.engines import DeviceError, check_precision, resolve_device
from pipelines.cluster import ClusterProfile, load_profile


class SweepError(AprflowError):
    """A sweep setting that cannot work."""


def _positive(arguments: dict[str, Any], key: str) -> int:
    value = arguments[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def check_sweep(
    arguments: dict[str, Any], profile: ClusterProfile | None = None, local: bool = True
) -> None:
    """Raises :class:`SweepError` (or the chunk/device error) for a sweep setting that cannot
    work; ``local``: the study trains on this machine, so ``device: cuda`` needs a GPU here."""
    profile = profile or load_profile()
    try:
        check_chunking(arguments["chunk_size"], profile.max_parallel_tasks)
    except ChunkError as e:
        raise SweepError(str(e)) from None
    gpus = _positive(arguments, "gpus_per_trial")
    scaled_task_cpu(arguments, profile)
    if arguments["chunk_size"] > 0:
        try:
            check_chunk_count(math.ceil(planned_trials(arguments) / arguments["chunk_size"]))
        except ChunkError as e:
            raise SweepError(str(e)) from None
    _positive(arguments, "trials_per_gpu")
    _positive(arguments, "max_attempts")
    if gpus > profile.gpus_per_node:
        raise SweepError(
            f"gpus_per_trial={gpus} is more than a node of the cluster profile has "
            f"(gpus_per_node={profile.gpus_per_node}); multi-node trials use the TrainJob "
            "launcher (components/trainjob)"
        )
    if gpus > 1 and arguments["engine"] != "deepspeed":
        raise SweepError(f"gpus_per_trial={gpus} needs engine=deepspeed (torch trains on one)")
    if gpus > 1 and arguments["trials_per_gpu"] > 1:
        raise SweepError("trials_per_gpu > 1 (packing) is for gpus_per_trial=1 only")
    try:
        check_compile(arguments["engine"], arguments.get("compile_model", False))
    except ValueError as e:
        raise SweepError(str(e)) from None
    device = arguments["device"]
    if device not in DEVICES:
        raise SweepError(f"device {device!r}: choose from {', '.join(DEVICES)}")
    if local:
        try:
            on_gpu = resolve_device(device).type == "cuda"
            # fp16 scales the loss on CUDA only: refused here rather than in every trial.
            check_precision(arguments.get("precision", "auto"), on_gpu)
        except (DeviceError, ValueError) as e:
            raise SweepError(str(e)) from None


def scaled_task_cpu(arguments: dict[str, Any], profile: ClusterProfile | None = None) -> str:
    """The training task's CPU request as a run will ask for it: ``task_cpu`` as given, or,
    left at the compiled default (the profile's ``train_cpu``), ``train_cpu x gpus_per_trial``
    (the compiled pipeline cannot multiply two parameters: ``aprflow run`` and ``submit`` do).

    Raises:
        SweepError: a ``task_cpu`` that is not a whole number of cores in [1, 1024].
    """
    profile = profile or load_profile()
    text = str(arguments["task_cpu"]).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_TASK_CPU:
        raise SweepError(
            f'task_cpu must be a whole number of cores in [1, {MAX_TASK_CPU}], e.g. "16", '
            f"got {short_repr(arguments['task_cpu'])}: {LIMITS['task_cpu'].reason}"
        )
    if int(text) != profile.train_cpu:
        return text
    return str(profile.train_cpu * int(arguments["gpus_per_trial"]))


def _train_images(name: str, seed: int, store) -> int:
    """Training images of a dataset, without writing anything: a named build's count, or 3/4
    of a built-in set (its stratified 25% test split)."""
    from components.data.build import named_dataset
    from components.data.builtin import BUILTIN_DATASETS, load_raw

    if name in BUILTIN_DATASETS:
        return int(len(load_raw(name, seed).labels) * 0.75)
    return int(named_dataset(store, name)["ref"]["n_train"])


def dry_run_summary(
    arguments: dict[str, Any], profile: ClusterProfile | None = None, pipeline: str = "apr-study"
) -> str:
    """``N trials in C chunks: C training tasks`` and what the backend will run: pods (drivers
    included) and the largest executor input, for a checked study's arguments (of
    ``pipeline``, whose compiled graph the backend line measures)."""
    from pipelines.backend import study_backend_line

    trials, n_chunks = planned_study(arguments, profile)
    return "\n".join(
        [
            summary_line(len(trials), n_chunks),
            study_backend_line(arguments, len(trials), n_chunks, pipeline),
            *estimate_lines(trials),
        ]
    )


def estimate_lines(trials: list) -> list[str]:
    """The plan's estimated device time and the measurements it rests on."""
    from components.train.chunk import estimate

    estimates = [estimate(t) for t in trials]
    hours = sum(e.seconds for e in estimates) / 3600
    bases = sorted({e.basis.describe() for e in estimates})
    return [
        f"estimated {hours:.1f} device-hours, one trial at a time ({3600 * hours / len(trials):.0f}"
        " s per trial), from the measured throughput of:",
        *(f"  {basis}" for basis in bases),
    ]


def planned_seeds(arguments: dict[str, Any]) -> list[int]:
    """A study's training seeds: the seed study's 0 ... n_seeds - 1, else ``train_seeds``."""
    if "n_seeds" in arguments:
        return list(range(arguments["n_seeds"]))
    return arguments["train_seeds"]


def planned_specs(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """A checked study's architectures as its plan task will have them: the seed study's one
    ``architecture``, else the sampled AnyNets (``n_models``) and the named ``architectures``."""
    from components.sample.models import parse_architecture, study_specs
    from components.sample.samplers import sample_specs

    if "architecture" in arguments:
        return [parse_architecture(arguments["architecture"])]
    sampled = []
    if arguments["n_models"]:
        band = (arguments["flops_min"], arguments["flops_max"])
        found = sample_specs(arguments["space"], arguments["n_models"], band, arguments["seed"])
        sampled = [spec.to_dict() for spec in found.specs]
    return study_specs(sampled, arguments.get("architectures") or [])


def planned_trials(arguments: dict[str, Any]) -> int:
    """Trials of a study: architectures x datasets x training seeds."""
    if "architecture" in arguments:
        n_architectures = 1
    else:
        n_architectures = arguments["n_models"] + len(arguments.get("architectures") or [])
    return n_architectures * len(arguments["datasets"]) * len(planned_seeds(arguments))


def planned_chunks(
    arguments: dict[str, Any], profile: ClusterProfile | None = None
) -> tuple[int, int]:
    """(trials, chunks) of a checked study's arguments (the chunk count from estimated sizes
    when ``chunk_size`` is 0, as the plan task computes it)."""
    if arguments["chunk_size"]:
        n_trials = planned_trials(arguments)
        n_chunks = math.ceil(n_trials / arguments["chunk_size"])
        check_chunk_count(n_chunks)
        return n_trials, n_chunks
    trials, n_chunks = planned_study(arguments, profile)
    return len(trials), n_chunks


def planned_study(arguments: dict[str, Any], profile: ClusterProfile | None = None) -> tuple:
    """(the planned trials, the chunk count) of a checked study's arguments."""
    from components.common.storage import open_store
    from components.data.descriptor import DatasetRef
    from components.train.plan import dataset_recipe, plan_trials, study_overrides
    from components.train.recipes import resolve_recipe

    profile = profile or load_profile()
    datasets = arguments["datasets"]
    store = open_store(arguments["store_uri"] or None)
    settings = arguments.get("dataset_settings") or {}
    overrides = study_overrides(arguments.get("recipe_overrides"), arguments["epochs"])
    refs, recipes = [], {}
    for name in datasets:
        own = settings.get(name, {})
        resolution = own.get("resolution", arguments["resolution"])
        n_train = _train_images(name, arguments["data_seed"], store)
        refs.append(DatasetRef(name, "", name, 1, resolution, n_train, 0))
        recipes[name] = dataset_recipe(arguments["recipe"], overrides, own)
    trials = plan_trials(
        planned_specs(arguments),
        refs,
        resolve_recipe(arguments["recipe"], overrides),
        planned_seeds(arguments),
        arguments["engine"],
        recipes,
    )
    # Where the trials train decides which measured throughput their estimates rest on.
    trials = [replace(t, device=arguments.get("device", "auto")) for t in trials]
    if arguments["chunk_size"]:
        n_chunks = math.ceil(len(trials) / arguments["chunk_size"])
        check_chunk_count(n_chunks)
        return trials, n_chunks
    return trials, len(chunk_trials(trials, 0, profile.max_parallel_tasks))
