"""Checks of a ``transfer-study`` run's arguments before anything runs, and its dry-run plan.

``aprflow run transfer-study`` (``local``) reads the model list (a path, ``s3://bucket/key`` or
the list's text), expands its ``trials:all`` and ``hub:`` rows, and checks every timm name and
trial, the targets (built-in or built in the store), the regimes and settings (the
:class:`~components.transfer.study.StudySettings` the plan task builds), the bounds of the
limits table, the store and MLflow: a bad value is one ``error: ...`` line before any task
starts. ``aprflow submit`` checks what needs nothing of this machine: the settings, and the
list itself when it is given as text (a path on this machine would not exist in the cluster's
pods). A parameter file's unfilled slots, values written ``<like this>``, are one error that
names each.
"""

from __future__ import annotations

import csv
import inspect
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.common.cli import did_you_mean
from components.common.limits import check_count, check_limit
from components.common.storage import ArtifactStore, open_store
from components.common.tracking import check_tracking, resolve_tracking_uri
from components.common.validation import short_repr
from components.data.datasets import check_datasets
from components.transfer.errors import TransferError
from pipelines.preflight import (
    PreflightError,
    check_runs_dir,
    check_study_name,
    check_uri_has_no_credentials,
)

if TYPE_CHECKING:
    from components.transfer.study import StudySettings

#: A value a parameter file leaves for the user to fill: ``<food101>``, ``<s3://...>``.
SLOT = re.compile(r"<[^<>\n]*>")
#: The study's bounded integer arguments and the row of the limits table bounding each.
BOUNDED = {"resolution": "resolution", "seed": "seed", "n_bootstrap": "bootstrap"}


def _checked(check, *args) -> Any:
    """``check(*args)`` with its ValueError or TransferError as a PreflightError."""
    try:
        return check(*args)
    except (ValueError, TransferError) as e:
        raise PreflightError(str(e)) from None


def _names(key: str, value: Any, example: str) -> list[str]:
    """``value`` if it is a non-empty list of distinct non-empty names, else one error."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PreflightError(
            f"{key} must be a list of names, e.g. {example}, got {short_repr(value)}"
        )
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise PreflightError(f"{key} name {', '.join(repeated)} more than once")
    return value


def _line_ranges(lines: list[int]) -> str:
    """``5-17, 20`` for lines 5 to 17 and 20."""
    ranges: list[list[int]] = []
    for line in sorted(lines):
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def list_slots(text: str) -> dict[str, list[int]]:
    """The unfilled slots of a model list's text: per column, the lines holding one."""
    header: list[str] | None = None
    found: dict[str, list[int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        cells = next(csv.reader([line]))
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        for column, cell in zip(header, cells, strict=False):
            if SLOT.search(cell):
                found.setdefault(column, []).append(number)
    return found


def check_slots(datasets: list[str], text: str | None) -> None:
    """Raises one error naming every unfilled slot of the datasets and the model list."""
    parts = []
    unfilled = [name for name in datasets if SLOT.search(name)]
    if unfilled:
        parts.append(
            f"{len(unfilled)} dataset slot(s) {', '.join(unfilled)}: replace each with a "
            "dataset you built (aprflow data build NAME --from URI)"
        )
    columns = list_slots(text) if text is not None else {}
    if columns:
        where = "; ".join(f"{c} on line(s) {_line_ranges(lines)}" for c, lines in columns.items())
        count = sum(len(lines) for lines in columns.values())
        parts.append(f"{count} model-list slot(s): {where}")
    if parts:
        raise PreflightError(
            "unfilled slots (<...>) of the parameter file: " + "; and ".join(parts)
        )


def study_settings(arguments: dict[str, Any]) -> StudySettings:
    """The :class:`StudySettings` the plan task builds from these arguments (its checks:
    regimes, k, input size, overlap, LogME variant, curve points, step cap, recipes)."""
    from components.transfer.study import StudySettings

    regimes = _names("regimes", arguments["regimes"], "[knn, linear, finetune]")
    return _checked(
        lambda: StudySettings(
            regimes=tuple(regimes),
            input_size=arguments["input_size"] or None,
            k=arguments["k"],
            allow_download=arguments["allow_download"],
            finetune_max_steps=arguments["finetune_max_steps"] or None,
            recipe_overrides=dict(arguments["recipe_overrides"]),
            seed=arguments["seed"],
            device=arguments["device"],
            max_overlap=arguments["max_overlap"],
            logme_variant=arguments["logme_variant"],
            curve_points=arguments["curve_points"],
        )
    )


def model_list_text(arguments: dict[str, Any], local: bool) -> tuple[str | None, str]:
    """The model list's text (None: in the cluster's store, not read from here) and its name.

    Raises:
        PreflightError: for a missing list, an unreadable one, or (cluster) a local path.
    """
    from components.transfer.hub import HUB_PREFIX
    from components.transfer.steps import model_list_text as read

    model_list = arguments["model_list"]
    if model_list is inspect.Parameter.empty or not str(model_list).strip():
        raise PreflightError(
            "model_list is required: a CSV path, s3://bucket/key, or the list's text (see "
            "pipelines/configs/transfer_study.toy.yaml)"
        )
    if not isinstance(model_list, str):
        raise PreflightError(f"model_list must be text, got {short_repr(model_list)}")
    if "\n" in model_list or model_list.startswith(HUB_PREFIX) or local:
        return _checked(read, model_list)
    if model_list.startswith("s3://"):
        return None, model_list
    raise PreflightError(
        f"model_list {short_repr(model_list)} is a path on this machine, which the cluster's "
        "pods cannot read: give s3://BUCKET/KEY or the list's text (model_list: |)"
    )


def check_entries(entries: list, name: str, allow_download: bool) -> None:
    """Every timm name is known, every ``hub:`` row parses and can get its weights."""
    import timm

    import components.sample.anynet  # noqa: F401 - the anynet_* names, as the study loads them
    from components.transfer.features import TRIAL_PREFIX
    from components.transfer.hub import is_hub, parse_hub
    from components.transfer.sources import ALL_TRIALS

    for entry in entries:
        if is_hub(entry.model):
            query = _checked(parse_hub, entry.model, name)
            if query.pretrained and not allow_download:
                raise PreflightError(
                    f"{name}: {entry.model} loads timm's pretrained weights, which needs "
                    "allow_download: true (or pretrained=false for random weights)"
                )
            continue
        own = entry.model == ALL_TRIALS or entry.model.startswith(TRIAL_PREFIX)
        if not own and not timm.is_model(entry.name):
            hint = did_you_mean(entry.name, timm.list_models()) or "see timm.list_models()"
            raise PreflightError(f"{name}: unknown timm model {entry.name!r}: {hint}")


def check_trials(models: list, store: ArtifactStore) -> None:
    """Every ``trial:<id>`` is a finished trial of the store."""
    from components.train.definition import result_key
    from components.transfer.features import TRIAL_PREFIX

    for entry in models:
        if entry.model.startswith(TRIAL_PREFIX):
            key = result_key(entry.model.removeprefix(TRIAL_PREFIX))
            if not store.exists(key) or store.get_json(key).get("status") != "ok":
                raise PreflightError(
                    f"model list: {entry.model} is not a finished trial in {store.uri}"
                )


def load_models(arguments: dict[str, Any], store: ArtifactStore) -> list:
    """The run's models as the plan task will list them (``trials:all`` and ``hub:`` rows
    expanded)."""
    from components.transfer.steps import load_models as load

    return _checked(load, arguments["model_list"], store)


def check_transfer(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates a ``transfer_study`` argument set and, for a local run, its models, targets,
    the store and MLflow.

    Args:
        arguments: the pipeline's arguments (pipelines.config.load_config).
        runs_dir: where a local run writes its reports (checked writable when given).
        local: the study runs on this machine (``aprflow run``); False for a cluster run
            (``aprflow submit``), whose store, MLflow and devices are out of reach.

    Raises:
        AprflowError: one line naming the argument and the fix.
    """
    from components.train.engines import DEVICES, DeviceError, resolve_device
    from components.transfer.sources import parse_model_list
    from components.transfer.steps import DEFAULT_CHUNK_MODELS

    check_study_name(arguments["study_name"])
    for key in ("store_uri", "tracking_uri"):  # before anything opens them
        check_uri_has_no_credentials(key, arguments[key])
    datasets = _names("datasets", arguments["datasets"], "[digits, faces]")
    _checked(check_count, "datasets", datasets)
    text, name = model_list_text(arguments, local)
    check_slots(datasets, text)
    for key, limit in BOUNDED.items():
        _checked(check_limit, limit, arguments[key], key)
    if arguments["input_size"]:
        _checked(check_limit, "resolution", arguments["input_size"], "input_size")
    chunk_size = arguments["chunk_size"]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise PreflightError(
            f"chunk_size must be a whole number of models >= 0 (0: {DEFAULT_CHUNK_MODELS}), "
            f"got {chunk_size!r}"
        )
    if arguments["device"] not in DEVICES:
        raise PreflightError(f"device {arguments['device']!r}: choose from {', '.join(DEVICES)}")
    study_settings(arguments)
    if text is not None:
        check_entries(_checked(parse_model_list, text, name), name, arguments["allow_download"])
    if not local:
        return
    try:
        resolve_device(arguments["device"])
    except DeviceError as e:
        raise PreflightError(str(e)) from None
    if runs_dir is not None:
        check_runs_dir(runs_dir)
    store = open_store(arguments["store_uri"] or None)
    check_datasets(datasets, store)  # built-in, or built in the store (read only)
    store.check()
    models = load_models(arguments, store)
    check_trials(models, store)
    size = chunk_size or DEFAULT_CHUNK_MODELS
    label = f"chunk tasks ({len(models)} models in chunks of {size}: raise chunk_size)"
    _checked(check_limit, "chunks", math.ceil(len(models) / size), label)
    check_tracking(resolve_tracking_uri(arguments["tracking_uri"] or None))


def target_sizes(name: str, store: ArtifactStore) -> dict[str, int]:
    """A target's images per split as the study uses them (``train`` without the validation
    images carved from it when the dataset has no ``val`` split) and its classes."""
    from components.data.build import named_dataset
    from components.data.datasets import BUILTIN_DATASETS, builtin_split_counts
    from components.transfer.study import VAL_FRACTION

    if name in BUILTIN_DATASETS:
        counts = builtin_split_counts(name)
        n_train, n_val, n_test = (counts[split]["n"] for split in ("train", "val", "test"))
        classes = len(BUILTIN_DATASETS[name].class_names)
    else:
        ref = named_dataset(store, name)["ref"]
        n_train, n_val, n_test, classes = (
            ref[key] for key in ("n_train", "n_val", "n_test", "num_classes")
        )
    if not n_val:  # the study carves a stratified share of train (components.transfer.study)
        n_val = round(n_train * VAL_FRACTION)
        n_train -= n_val
    return {"train": n_train, "val": n_val, "test": n_test, "classes": classes}


def tuned_images(
    regime: str, overrides: dict, sizes: dict[str, int], max_steps: int | None
) -> tuple[int, int, int, Any, int]:
    """``(configurations, steps, refit steps, recipe, images trained)`` of one fine-tune or
    scratch run on a target (:func:`components.transfer.finetune.finetune`: every lr x weight
    decay configuration trains on train, the best is refit on train + validation)."""
    from components.train.recipes import resolve_recipe
    from components.transfer.finetune import scaled_steps

    recipe = resolve_recipe(regime, overrides)
    grid = len(recipe.lr_grid) * len(recipe.weight_decay_grid)
    fit, both = sizes["train"], sizes["train"] + sizes["val"]
    steps, refit = scaled_steps(recipe, fit, max_steps), scaled_steps(recipe, both, max_steps)
    images = grid * steps * min(recipe.batch_size, fit) + refit * min(recipe.batch_size, both)
    return grid, steps, refit, recipe, images


def _kinds(models: list) -> str:
    """``3 with random weights, 1 with aprflow trials``: the models by where their weights
    come from."""
    from components.transfer.features import TRIAL_PREFIX

    kinds: dict[str, int] = {}
    for entry in models:
        if entry.model.startswith(TRIAL_PREFIX):
            kind = "aprflow trials"
        elif entry.weights in ("random", "hub"):
            kind = {"random": "random weights", "hub": "timm's weights (downloaded)"}[entry.weights]
        else:
            kind = "weights from s3://" if entry.weights.startswith("s3://") else "weights files"
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} with {kind}" for kind, n in kinds.items())


def model_macs(entry, input_size: int, store: ArtifactStore) -> float:
    """Multiply-adds per image of a study's model as the study feeds it: a trial's as trained
    (its resolution and classes), scaled by area to ``input_size``; a timm model's with its
    1,000-class head at ``input_size`` (224 px when 0, the usual pretrained size)."""
    from components.sample.models import complexity
    from components.train.definition import Trial, result_key
    from components.transfer.features import TIMM_PREFIX, TRIAL_PREFIX

    if entry.model.startswith(TRIAL_PREFIX):
        result = store.get_json(result_key(entry.model[len(TRIAL_PREFIX) :]))
        trial = Trial.from_dict(result)
        side = trial.dataset.resolution
        trained = (
            result.get("flops_trained")
            or complexity(trial.spec, side, trial.dataset.num_classes).flops
        )
        return trained * ((input_size or side) / side) ** 2
    return complexity({"timm": entry.model.removeprefix(TIMM_PREFIX)}, input_size or 224).flops


# Models whose multiply-adds the dry run counts (on the meta device, ~0.1-1 s each); a longer
# list is estimated from an even sample of it.
COUNTED_MODELS = 24


def time_lines(
    macs: list[float], n_models: int, extracted: int, trained: list[int], kind: str
) -> list[str]:
    """The estimated device time of a transfer study of ``n_models`` models, from the
    multiply-adds of ``macs`` (all of them, or an even sample): every model's features of
    ``extracted`` images (a forward pass each) and the ``trained`` images of each fine-tune
    and scratch run per model, at the trainer's measured throughput."""
    from components.common.progress import format_seconds
    from components.train.throughput import work_estimate

    extraction = [work_estimate(m, extracted, kind, forward_only=True) for m in macs]
    training = [work_estimate(m, sum(trained), kind) for m in macs] if sum(trained) else []
    scale = n_models / len(macs)
    seconds = [scale * sum(e.seconds for e in part) for part in (extraction, training)]
    bases = sorted({e.basis.describe() for e in extraction + training})
    sample = f" (from {len(macs)} of the models' multiply-adds)" if len(macs) < n_models else ""
    device = "CPU" if kind == "cpu" else "GPU"
    return [
        f"time: about {format_seconds(sum(seconds))} (h:mm:ss) of {device}, one model at a "
        f"time{sample}: features {format_seconds(seconds[0])} (a forward pass counted as a "
        f"third of a training step), fine-tune and scratch {format_seconds(seconds[1])}; from "
        "the trainer's measured throughput (its AnyNets' images/s per multiply-add; a timm "
        "model's may differ) of:",
        *(f"  {basis}" for basis in bases),
    ]


def dry_run_summary(arguments: dict[str, Any]) -> str:
    """What a checked run would do: models x targets x regimes, chunk tasks, the work of
    feature extraction and fine-tuning counted in images, and its estimated device time."""
    from components.train.throughput import device_kind
    from components.transfer.steps import DEFAULT_CHUNK_MODELS

    store = open_store(arguments["store_uri"] or None)
    models = load_models(arguments, store)
    regimes = list(arguments["regimes"])
    sizes = {name: target_sizes(name, store) for name in arguments["datasets"]}
    size = arguments["chunk_size"] or DEFAULT_CHUNK_MODELS
    chunks = math.ceil(len(models) / size)
    results = len(models) * len(sizes) * len(regimes)
    lines = [
        f"models: {len(models)} ({_kinds(models)})",
        *(
            f"target {name}: {s['classes']} classes, {s['train']:,} train / {s['val']:,} val / "
            f"{s['test']:,} test images"
            for name, s in sizes.items()
        ),
        f"{len(models)} models x {len(sizes)} target(s) x {len(regimes)} regimes "
        f"({', '.join(regimes)}) = {results:,} results in {chunks} chunk task(s) of up to "
        f"{size} models",
    ]
    images = sum(s["train"] + s["val"] + s["test"] for s in sizes.values())
    lines.append(
        f"features: {len(models)} models x {images:,} target images = "
        f"{len(models) * images:,} forward passes (cached in the store: a re-run reuses them)"
    )
    trained: list[int] = []  # images trained per model, per run of fine-tune or scratch
    max_steps = arguments["finetune_max_steps"] or None
    for regime in (r for r in ("finetune", "scratch") if r in regimes):
        for name, s in sizes.items():
            grid, steps, refit, recipe, per_model = tuned_images(
                regime, arguments["recipe_overrides"], s, max_steps
            )
            trained.append(per_model)
            lines.append(
                f"{regime} on {name}: {grid} lr x weight-decay configuration(s) x {steps:,} "
                f"steps + a refit of {refit:,} steps at batch {recipe.batch_size} "
                f"(steps_policy {recipe.steps_policy}"
                + (f", capped at {max_steps:,}" if max_steps else "")
                + f") = {per_model:,} images trained per model"
            )
    if trained:
        lines.append(f"fine-tune and scratch: {sum(trained) * len(models):,} images trained in all")
    step = max(1, math.ceil(len(models) / COUNTED_MODELS))
    macs = [model_macs(entry, arguments["input_size"], store) for entry in models[::step]]
    lines += time_lines(macs, len(models), images, trained, device_kind(arguments["device"]))
    return "\n".join(lines)
