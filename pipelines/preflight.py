"""Checks a study's arguments before anything runs, so that bad input ends in one clear line.

Each check raises an :class:`~components.common.errors.AprflowError` naming the problem and the
fix; nothing has been written when one fails.
"""

from __future__ import annotations

from typing import Any

from components.common.errors import AprflowError
from components.common.storage import open_store
from components.common.tracking import check_tracking, resolve_tracking_uri
from components.data.datasets import DatasetError, check_datasets
from components.train.engines import ENGINES
from components.train.recipes import resolve_recipe


class PreflightError(AprflowError):
    """A study argument that cannot work."""


def check_study(arguments: dict[str, Any]) -> None:
    """Validates an ``apr_study`` argument set and the services it needs.

    Samples the architectures once (milliseconds with the analytic FLOP count) so that a FLOP
    band no architecture satisfies is reported before the pipeline starts.
    """
    from components.sample.samplers import sample_specs

    if arguments["n_models"] < 1:
        raise PreflightError("n_models must be at least 1")
    if not 0 < arguments["flops_min"] < arguments["flops_max"]:
        raise PreflightError(
            f"FLOP band [{arguments['flops_min']:g}, {arguments['flops_max']:g}] is empty: "
            "set 0 < flops_min < flops_max"
        )
    datasets = arguments["datasets"]
    settings = arguments.get("dataset_settings") or {}
    try:
        # Built-in names, or names built in the study's store (read only, nothing written).
        check_datasets(datasets, open_store(arguments["store_uri"] or None), settings)
        for values in settings.values():
            if "recipe" in values:
                resolve_recipe(values["recipe"])
    except (DatasetError, ValueError) as e:
        raise PreflightError(str(e)) from None
    reference = arguments["reference"]
    if reference and reference not in datasets:
        raise PreflightError(f"reference {reference!r} is not one of the datasets {datasets}")
    if arguments["epochs"] < 0:
        raise PreflightError("epochs must be 0 (the recipe's own) or more")
    if arguments["engine"] not in ENGINES:
        raise PreflightError(
            f"unknown engine {arguments['engine']!r}: choose from {', '.join(sorted(ENGINES))}"
        )
    if not arguments["train_seeds"]:
        raise PreflightError("train_seeds must name at least one seed, e.g. [0]")
    try:
        resolve_recipe(arguments["recipe"])
        sample_specs(
            arguments["space"],
            arguments["n_models"],
            (arguments["flops_min"], arguments["flops_max"]),
            arguments["seed"],
        )
    except ValueError as e:
        raise PreflightError(str(e)) from None
    open_store(arguments["store_uri"] or None).check()
    check_tracking(resolve_tracking_uri(arguments["tracking_uri"] or None))
