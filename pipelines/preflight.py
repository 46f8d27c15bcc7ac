"""Checks a study's arguments before anything runs, so that bad input ends in one clear line.

Each check raises an :class:`~components.common.errors.AprflowError` naming the key, the value
and the fix; nothing has been written when one fails (the argument checks come first, then the
store, which is checked without writing, then the tracking URI). Absurd sizes are refused up
front instead of sampling or allocating for minutes. ``aprflow run`` runs every check;
``aprflow submit`` (a cluster run) only those that need nothing of this machine
(``local=False``): the datasets built in the store, the store, MLflow and the GPU are the
cluster's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from components.common.errors import AprflowError
from components.common.limits import check_count, check_limit, check_safe_name
from components.common.storage import open_store
from components.common.tracking import check_tracking, resolve_tracking_uri
from components.common.uris import carries_credentials, redact_uri
from components.common.validation import short_repr
from components.data.datasets import DatasetError, check_datasets, check_settings
from components.train.engines import ENGINES
from components.train.plan import dataset_recipe, engine_options, study_overrides
from components.train.recipes import check_crop_padding, recipe_input, resolve_recipe
from pipelines.sweep import check_sweep

_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


class PreflightError(AprflowError):
    """A study argument that cannot work."""


def _limited(arguments: dict[str, Any], key: str) -> Any:
    """``arguments[key]`` within its bound of the limits table."""
    try:
        return check_limit(key, arguments[key])
    except ValueError as e:
        raise PreflightError(str(e)) from None


def gpus_per_trial(value: Any) -> int:
    """``gpus_per_trial`` as an int: an int, or a whole number as a string (``"2"``).

    The pipeline parameter may be a string (Kubeflow takes a task's GPU limit from a string
    parameter), while a config file or ``--set`` gives an int; both mean the same count.
    """
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PreflightError(
        f'gpus_per_trial must be a whole number of GPUs, e.g. 1 or "2", got {short_repr(value)}'
    )


def check_study_name(name: Any) -> str:
    """Raises unless ``name`` is a safe study name (no path, no control characters)."""
    try:
        return check_safe_name("study_name", name)
    except ValueError as e:
        raise PreflightError(str(e)) from None


def check_uri_has_no_credentials(key: str, uri: str) -> None:
    """Credentials come from the environment or a Kubernetes secret, never from a URI (it is
    logged, tagged in MLflow and compiled into pipelines)."""
    if uri and carries_credentials(uri):
        raise PreflightError(
            f"{key} carries credentials ({redact_uri(uri)}): remove 'user:password@' or the "
            "token and give credentials in the "
            "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, MLFLOW_TRACKING_USERNAME/"
            "MLFLOW_TRACKING_PASSWORD) or the chart's secret"
        )


def check_runs_dir(path: str | Path) -> None:
    """Raises unless ``path`` is a writable folder or can be created as one."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise PreflightError(f"--runs-dir {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"--runs-dir {path}: {existing} is not writable")


def check_architectures(architectures: Any) -> list[dict[str, Any]]:
    """The specs of a study's named architectures (timm model names, or AnyNet specs as
    JSON), checked: a list of distinct known ones within the limits table's count."""
    from components.sample.models import study_specs

    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise PreflightError(
            "architectures must be a list of timm model names, e.g. [resnet18, "
            f"deit_tiny_patch16_224], got {short_repr(architectures)}"
        )
    try:
        check_count("architectures", architectures)
        return study_specs([], architectures) if architectures else []
    except ValueError as e:
        raise PreflightError(f"architectures: {e}") from None


def check_study(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates an ``apr_study`` argument set and, for a local run, the services it needs.

    Samples the architectures once (about a second for thousands with the analytic FLOP count)
    so that a FLOP band no architecture satisfies is reported before the pipeline starts, and
    checks that timm knows every named architecture. The sweep settings (GPUs per trial
    against the cluster profile, packing, chunks, device) are
    :func:`pipelines.sweep.check_sweep`'s.

    Args:
        arguments: the pipeline's arguments (pipelines.config.load_config).
        runs_dir: where a local run writes its reports (checked writable when given).
        local: the study runs on this machine (``aprflow run``): also check that its datasets
            are built-in or built in the store, the store, MLflow, and the device. False for a
            cluster run (``aprflow submit``), whose store, MLflow and GPUs are out of reach.
    """
    from analysis.stats import TEST_NOISE
    from components.sample.samplers import sample_specs

    check_study_name(arguments["study_name"])
    for key in ("store_uri", "tracking_uri"):  # before anything opens them
        check_uri_has_no_credentials(key, arguments[key])
    n_sampled = _limited(arguments, "n_models")
    n_models = n_sampled + len(check_architectures(arguments["architectures"]))
    if n_models == 0:
        raise PreflightError(
            "a study needs at least one architecture: set n_models >= 1 or name timm models "
            "in architectures (e.g. [resnet18])"
        )
    flops_min, flops_max = arguments["flops_min"], arguments["flops_max"]
    if not 0 < flops_min < flops_max:
        raise PreflightError(
            f"FLOP band [{flops_min:g}, {flops_max:g}] is empty: set 0 < flops_min < flops_max"
        )
    datasets, settings = check_training(arguments)
    reference = arguments["reference"]
    if reference and reference not in datasets:
        raise PreflightError(
            f"reference {short_repr(reference)} is not one of the datasets {datasets}"
        )
    _limited(arguments, "best_models")
    top_k = _limited(arguments, "top_k")
    if top_k >= n_models:
        raise PreflightError(
            f"top_k={top_k} compares every one of the {n_models} models: choose fewer (0 "
            "chooses a quarter of the models, at most 15)"
        )
    if arguments["test_noise"] not in TEST_NOISE:
        raise PreflightError(
            f"test_noise {short_repr(arguments['test_noise'])} is not one of "
            f"{', '.join(TEST_NOISE)}"
        )
    _limited(arguments, "seed")
    seeds = arguments["train_seeds"]
    if not isinstance(seeds, list):
        raise PreflightError(
            f"train_seeds must be a list of seeds, e.g. [0, 1], got {short_repr(seeds)}"
        )
    try:
        check_count("train_seeds", seeds)
        seeds = check_limit("seed", seeds, "train_seeds")
    except ValueError as e:
        raise PreflightError(str(e)) from None
    if len(set(seeds)) != len(seeds):
        raise PreflightError(f"train_seeds {short_repr(seeds)} name a seed more than once")
    sweep = arguments | {"gpus_per_trial": gpus_per_trial(arguments["gpus_per_trial"])}
    check_sweep(sweep, local=local)
    try:
        if n_sampled:
            sample_specs(arguments["space"], n_sampled, (flops_min, flops_max), arguments["seed"])
    except ValueError as e:
        raise PreflightError(str(e)) from None
    if local:
        check_services(arguments, datasets, settings, runs_dir)


def check_training(arguments: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Checks how a study's trials train (the apr-study's and the seed study's parameters of
    the same names): its datasets and their settings, epochs, resolution, every dataset's
    recipe as its trials will have it, the engine and its options, packing and attempts.

    Returns:
        The datasets and their checked settings.
    """
    datasets = arguments["datasets"]
    if (
        not isinstance(datasets, list)
        or not datasets
        or not all(isinstance(d, str) and d for d in datasets)
    ):
        raise PreflightError(
            "datasets must be a list of dataset names, e.g. [digits, faces], got "
            f"{short_repr(datasets)}"
        )
    try:
        check_count("datasets", datasets)
    except ValueError as e:
        raise PreflightError(str(e)) from None
    repeated = sorted({d for d in datasets if datasets.count(d) > 1})
    if repeated:
        raise PreflightError(f"datasets name {short_repr(', '.join(repeated))} more than once")
    if arguments["epochs"] != 0:  # 0: the recipe's own
        _limited(arguments, "epochs")
    _limited(arguments, "resolution")  # the crop padding is checked against it
    overrides = study_overrides(arguments.get("recipe_overrides"), arguments["epochs"])
    try:
        settings = check_settings(arguments.get("dataset_settings") or {})
        # Every recipe as its trials will have it: a bad field or value (a negative lr, mixup
        # above 1) is refused here, before any task runs.
        resolve_recipe(arguments["recipe"], overrides)
        for name in datasets:
            own = settings.get(name, {})
            recipe = dataset_recipe(arguments["recipe"], overrides, own)
            # Per-image augmentations (RandAugment ...) run on the stream input only, which the
            # plan picks for such a recipe unless the dataset's settings name another input.
            data_input = recipe_input(recipe, own.get("input"), name)
            resolution = own.get("resolution", arguments["resolution"])
            check_crop_padding(recipe, data_input, resolution, name)
        engine_options(
            arguments["engine"], arguments.get("zero_stage", 0), arguments.get("precision", "auto")
        )
    except (DatasetError, ValueError) as e:
        raise PreflightError(str(e)) from None
    if arguments["engine"] not in ENGINES:
        raise PreflightError(
            f"unknown engine {short_repr(arguments['engine'])}: choose from "
            f"{', '.join(sorted(ENGINES))}"
        )
    _limited(arguments, "trials_per_gpu")
    _limited(arguments, "max_attempts")
    return datasets, settings


def check_services(
    arguments: dict[str, Any],
    datasets: list[str],
    settings: dict[str, dict[str, Any]],
    runs_dir: str | Path | None,
) -> None:
    """For a study run on this machine: the runs folder, its datasets (built in, or built in
    the store), the store and MLflow; nothing is written."""
    if runs_dir is not None:
        check_runs_dir(runs_dir)
    store = open_store(arguments["store_uri"] or None)
    try:
        # Built-in names, or names built in the study's store (read only, nothing written).
        check_datasets(datasets, store, settings)
    except DatasetError as e:
        raise PreflightError(str(e)) from None
    store.check()
    check_tracking(resolve_tracking_uri(arguments["tracking_uri"] or None))
