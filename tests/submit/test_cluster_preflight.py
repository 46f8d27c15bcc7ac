"""The study preflight for a cluster run (``check_study(..., local=False)``, what ``aprflow
submit`` runs): the argument and sweep checks of ``aprflow run`` without the local ones."""

import pytest

from components.common.errors import AprflowError
from pipelines.config import load_config


@pytest.mark.parametrize(("value", "expected"), [(2, 2), ("2", 2), (" 3 ", 3), ("0", 0)])
def test_gpus_per_trial_is_an_int_or_a_whole_number_string(value, expected):
    from pipelines.preflight import gpus_per_trial

    assert gpus_per_trial(value) == expected


@pytest.mark.parametrize("value", ["two", "2.5", "", 2.0, True, None, [2]])
def test_gpus_per_trial_refuses_anything_else(value):
    from pipelines.preflight import PreflightError, gpus_per_trial

    with pytest.raises(PreflightError, match=r"gpus_per_trial must be a whole number of GPUs"):
        gpus_per_trial(value)


def _arguments(**changes) -> dict:
    from pipelines.apr_study import apr_study

    return load_config(apr_study, None, {"datasets": ["digits"]}) | changes


def test_a_string_gpu_count_is_checked_as_the_number():
    from pipelines.preflight import check_study

    check_study(_arguments(gpus_per_trial="2", engine="deepspeed"), local=False)
    for changes, message in (
        ({"gpus_per_trial": "2", "engine": "torch"}, "gpus_per_trial=2 needs engine=deepspeed"),
        ({"gpus_per_trial": "0"}, "gpus_per_trial must be an integer >= 1, got 0"),
        ({"gpus_per_trial": "many"}, "gpus_per_trial must be a whole number of GPUs"),
    ):
        with pytest.raises(AprflowError, match=message):
            check_study(_arguments(**changes), local=False)


def test_a_cluster_run_skips_what_only_this_machine_could_check(tmp_path, local_env):
    """The runs dir, the store, datasets built in it, MLflow and the GPU are this machine's or
    the cluster's: none is checked for a cluster run, each is for a local one."""
    from pipelines.preflight import check_study

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for changes, runs_dir, message in (
        ({}, not_a_folder / "runs", "is a file, not a folder"),
        ({"tracking_uri": "http://127.0.0.1:9"}, None, "MLflow tracking server .* unreachable"),
        ({"datasets": ["built-on-the-cluster"]}, None, "unknown or missing dataset"),
        ({"dataset_settings": {"shapes": {"epochs": 1}}}, None, "shapes.*not in the study's"),
    ):
        arguments = _arguments(**changes)
        check_study(arguments, runs_dir=runs_dir, local=False)
        with pytest.raises(AprflowError, match=message):
            check_study(arguments, runs_dir=runs_dir)
    check_study(_arguments(device="cuda"), local=False)
