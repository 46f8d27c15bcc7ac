"""User datasets in a study: names, per-dataset settings in the config, preflight, and a tiny
study end to end on a user ImageFolder through `aprflow run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import default_env, run_aprflow
from imagesets import make_image_folder

from components.common.errors import AprflowError
from components.common.storage import open_store
from components.data.build import build_dataset
from components.data.datasets import prepare_all
from components.data.descriptor import DatasetDescriptor
from pipelines.config import ConfigError, load_config, parse_overrides


def test_dataset_settings_in_config_and_dotted_overrides():
    from pipelines.apr_study import apr_study

    overrides = parse_overrides(
        [
            "datasets=[pets, digits]",
            "dataset_settings={pets: {resolution: 24, input: stream}}",
            "dataset_settings.pets.epochs=2",
            "dataset_settings.digits.recipe=apr_short",
        ]
    )
    arguments = load_config(apr_study, None, overrides)
    assert arguments["dataset_settings"] == {
        "pets": {"resolution": 24, "input": "stream", "epochs": 2},
        "digits": {"recipe": "apr_short"},
    }
    assert load_config(apr_study, None, {})["dataset_settings"] == {}, "default not mutated"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset_settings.pets.size=3", "dataset_settings.pets: unknown key.*size.*valid keys"),
        ("dataset_settings.pets.resolution=big", "resolution must be an int, got 'big'"),
        ("dataset_settings.pets.input=disk", "input 'disk': choose from memory, stream"),
        ("dataset_settings=[1]", "'dataset_settings' must be a dict"),
    ],
)
def test_bad_dataset_settings_are_one_config_error(override, message):
    from pipelines.apr_study import apr_study

    with pytest.raises(ConfigError, match=message):
        load_config(apr_study, None, parse_overrides([override]))


def _pets(store_uri: str, tmp_path: Path):
    folder = make_image_folder(tmp_path / "pets-src", per_class=12)
    store = open_store(store_uri)
    return build_dataset(store, DatasetDescriptor(name="pets", source=str(folder)), print)


def test_named_build_in_a_study_with_its_own_settings(tmp_path, local_env):
    from pipelines.apr_study import apr_study
    from pipelines.preflight import check_study

    store_uri = str(local_env / "store")
    built = _pets(store_uri, tmp_path)
    settings = {"pets": {"resolution": 12, "input": "stream", "epochs": 2}}
    pets, digits = prepare_all(["pets", "digits"], 16, 0, store_uri, settings)
    assert (pets.resolution, pets.input, pets.epochs) == (12, "stream", 2)
    assert pets.content_hash == built.content_hash and pets.manifest_key == built.manifest_key
    assert (digits.resolution, digits.input, digits.epochs) == (16, "memory", 0)

    arguments = load_config(
        apr_study, None, {"datasets": ["pets", "digits"], "dataset_settings": settings}
    )
    check_study(arguments)  # the named build passes preflight
    for override, message in (
        ({"datasets": ["pets", "cats"]}, "unknown or missing dataset.*cats.*aprflow data build"),
        ({"dataset_settings": {"shapes": {"epochs": 1}}}, "shapes.*not in the study's datasets"),
        ({"dataset_settings": {"pets": {"recipe": "a9"}}}, "unknown recipe 'a9'"),
    ):
        with pytest.raises(AprflowError, match=message):
            check_study(arguments | override)


@pytest.mark.slow
@pytest.mark.extended
def test_tiny_study_on_a_user_image_folder(tmp_path):
    """`aprflow data build` then `aprflow run` with the built name beside a built-in set; the
    user set streams at its own resolution and epochs, the built-in stays in memory."""
    env = default_env(APRFLOW_DATA_WORKERS="1")
    folder = make_image_folder(tmp_path / "src", per_class=12)

    def run(*args: str) -> subprocess.CompletedProcess:
        done = run_aprflow(list(args), tmp_path, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run("data", "build", "pets", "--from", str(folder))
    overrides = [
        "study_name=user-data",
        "n_models=2",
        "epochs=1",
        "resolution=8",
        "datasets=[pets, faces]",
        "reference=faces",
        "dataset_settings={pets: {resolution: 12, input: stream, epochs: 2}}",
    ]
    done = run("run", "apr-study", *(a for o in overrides for a in ("--set", o)))
    assert "trial 4/4" in done.stdout + done.stderr
    store = open_store(str(tmp_path / "runs" / "store"))
    results = [store.get_json(k) for k in store.list("trials/") if k.endswith("result.json")]
    assert len(results) == 4 and all(r["status"] == "ok" for r in results)
    by_dataset = {r["dataset"]["name"]: r for r in results}
    pets, faces = by_dataset["pets"], by_dataset["faces"]
    assert (pets["dataset"]["resolution"], pets["dataset"]["input"]) == (12, "stream")
    assert len(pets["history"]["test_error"]) == 2 and pets["recipe"]["epochs"] == 2
    assert (faces["dataset"]["resolution"], faces["dataset"]["input"]) == (8, "memory")
    assert len(faces["history"]["test_error"]) == 1
    reports = list((tmp_path / "runs").glob("user-data-*/report.html"))
    assert len(reports) == 1 and "pets" in reports[0].read_text()
    summary = json.loads((reports[0].parent / "summary.json").read_text())
    assert "mean_error/pets" in summary["metrics"]
