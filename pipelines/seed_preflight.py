"""Checks of a ``seed-study`` run's arguments before anything runs, and its dry-run plan.

The seed study trains as the apr-study does (:func:`pipelines.preflight.check_training`,
:func:`pipelines.sweep.check_sweep`); what is its own: one architecture, K seeds, and a second
test set for every trained dataset (without one there is no correlation between test sets to
report). ``aprflow run seed-study`` (``local``) also checks the datasets, the store and MLflow;
``aprflow submit`` only what needs nothing of this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.common.limits import check_limit
from pipelines.preflight import (
    PreflightError,
    check_services,
    check_study_name,
    check_training,
    check_uri_has_no_credentials,
    gpus_per_trial,
)
from pipelines.sweep import check_sweep
from pipelines.sweep import dry_run_summary as sweep_summary


def check_seed_study(
    arguments: dict[str, Any], runs_dir: str | Path | None = None, local: bool = True
) -> None:
    """Validates a ``seed_study`` argument set and, for a local run, the services it needs.

    Raises:
        AprflowError: naming the argument and the fix.
    """
    from components.sample.models import parse_architecture

    check_study_name(arguments["study_name"])
    for key in ("store_uri", "tracking_uri"):  # before anything opens them
        check_uri_has_no_credentials(key, arguments[key])
    try:
        parse_architecture(arguments["architecture"])
        for key in ("n_seeds", "best_models"):
            check_limit(key, arguments[key])
        check_limit("seed", arguments["data_seed"], "data_seed")
        check_limit("bootstrap", arguments["n_bootstrap"], "n_bootstrap")
    except ValueError as e:
        raise PreflightError(str(e)) from None
    datasets, settings = check_training(arguments)
    alone = [name for name in datasets if not settings.get(name, {}).get("test_sets")]
    if alone:
        first = alone[0]
        raise PreflightError(
            f"dataset(s) {', '.join(alone)} have no second test set: a seed study compares the "
            "errors of the same checkpoints on two test sets; name one with the same classes, "
            f"e.g. --set dataset_settings.{first}.test_sets=[{first}_v2] (built in: shapes_v2 "
            "for shapes)"
        )
    sweep = arguments | {"gpus_per_trial": gpus_per_trial(arguments["gpus_per_trial"])}
    check_sweep(sweep, local=local)
    if local:
        check_services(arguments, datasets, settings, runs_dir)


def dry_run_summary(arguments: dict[str, Any]) -> str:
    """The trials, chunks, backend pods and estimated device-hours of a checked seed study."""
    return sweep_summary(arguments, pipeline="seed-study")
