"""``compile_model``: torch.compile'd trials, their identity, the kernel cache, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from components.common.storage import open_store
from components.data.datasets import materialize
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    from components.train.trial import Trial

# Compiled and eager training of the same trial: inductor fuses and reorders float work, so
# the losses agree in the leading digits only (measured here: epoch-1 train loss 0.9357821
# compiled vs 0.9357815 eager, test loss equal); a compile that changed the model would miss
# by far more (the losses are ~0.5-1.0).
LOSS_TOLERANCE = 1e-3


def _spec() -> dict:
    return sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()


def _trial(store) -> Trial:
    from components.train.trial import Trial

    dataset = materialize(store, "faces", resolution=8)
    recipe = resolve_recipe("apr_tiny", {"epochs": 1})
    return Trial(spec=_spec(), dataset=dataset, recipe=recipe, seed=0)


def test_compile_is_part_of_the_trial_id_and_round_trips(tmp_path):
    from components.train.trial import Trial

    trial = _trial(open_store(str(tmp_path / "store")))
    compiled = replace(trial, compile_model=True)
    assert compiled.trial_id != trial.trial_id
    assert Trial.from_dict(compiled.to_dict()) == compiled
    # Records written before the field existed read back as eager, with their old id.
    old = {k: v for k, v in trial.to_dict().items() if k != "compile_model"}
    assert Trial.from_dict(old).trial_id == trial.trial_id


def test_an_engine_that_cannot_compile_is_refused_before_anything_starts(tmp_path):
    from components.train.definition import check_compile
    from components.train.engines import create_engine
    from components.train.plan import plan_trials
    from pipelines.sweep import SweepError, check_sweep

    with pytest.raises(ValueError, match="compile_model needs engine torch"):
        check_compile("deepspeed", True)
    check_compile("deepspeed", False)
    check_compile("torch", True)
    trial = _trial(open_store(str(tmp_path / "store")))
    with pytest.raises(ValueError, match="compile_model needs engine torch"):
        plan_trials(
            [trial.spec], [trial.dataset], trial.recipe, [0], "deepspeed", None, "cpu", 1, True
        )
    arguments = {
        "chunk_size": 0,
        "gpus_per_trial": 1,
        "task_cpu": "8",
        "trials_per_gpu": 1,
        "max_attempts": 2,
        "engine": "deepspeed",
        "device": "cpu",
        "compile_model": True,
    }
    with pytest.raises(SweepError, match="compile_model needs engine torch"):
        check_sweep(arguments)
    check_sweep(arguments | {"engine": "torch"})
    with pytest.raises(ValueError, match="does not take compile_model"):
        create_engine("deepspeed", compile_model=True)


def test_train_cli_refuses_compile_with_deepspeed_in_one_line(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec()))
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "components.train", "--spec", str(spec), "--dataset", "faces"]
        + ["--resolution", "8", "--engine", "deepspeed", "--compile", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: compile_model needs engine torch: engine 'deepspeed' trains eager models only "
        "(set compile_model=false or engine=torch)"
    ]
    assert not store.exists(), "nothing was written"


def _train_cli(tmp_path: Path, cache: Path, *extra: str) -> dict:
    """``aprflow train`` in a fresh process (as a chunk's trial child is): its result JSON."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec()))
    args = ["--spec", str(spec), "--dataset", "faces", "--resolution", "8", "--epochs", "1"]
    args += ["--store", str(tmp_path / "store"), *extra]
    env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-m", "components.train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # the result alone on stdout


@pytest.mark.slow
@pytest.mark.extended
def test_compiled_trial_matches_eager_and_a_second_one_reuses_the_kernel_cache(tmp_path):
    cache = tmp_path / "inductor"
    first = _train_cli(tmp_path, cache, "--compile")
    assert first["status"] == "ok" and first["compiled"] is True
    assert first["compile_model"] is True
    assert first["compile_cache"]["misses"] > 0 and first["compile_cache"]["dir"] == str(cache)
    assert any((cache / "fxgraph").iterdir()), "the compiled graphs were cached"

    eager = _train_cli(tmp_path, cache)
    assert eager["status"] == "ok" and eager["compiled"] is False
    assert "compile_cache" not in eager and eager["trial_id"] != first["trial_id"]
    for key in ("train_loss", "test_loss"):
        assert first["history"][key][0] == pytest.approx(
            eager["history"][key][0], abs=LOSS_TOLERANCE
        )

    # Another trial of the same architecture shape (another seed): every graph from the cache.
    second = _train_cli(tmp_path, cache, "--compile", "--seed", "1")
    assert second["status"] == "ok" and second["trial_id"] != first["trial_id"]
    assert second["compile_cache"]["hits"] == first["compile_cache"]["misses"]
    assert second["compile_cache"]["misses"] == 0
    assert second["wall_time_s"] < first["wall_time_s"]


def test_aprflow_run_takes_compile_model_and_refuses_it_with_deepspeed(local_env, capsys):
    from pipelines.cli import main
    from pipelines.config import ConfigError, load_config, parse_overrides
    from pipelines.registry import PIPELINES

    study = PIPELINES["apr-study"]
    assert load_config(study, None, parse_overrides(["compile_model=true"]))["compile_model"]
    with pytest.raises(ConfigError, match="'compile_model' must be a bool, got 1"):
        load_config(study, None, parse_overrides(["compile_model=1"]))
    argv = ["run", "apr-study", "--dry-run", "--set", "compile_model=true"]
    assert main([*argv, "--set", "engine=deepspeed"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: compile_model needs engine torch: engine 'deepspeed' trains eager models only "
        "(set compile_model=false or engine=torch)"
    )
    assert not (local_env / "store").exists(), "nothing was written"
    assert main(argv) == 0
    assert "\ncompile_model: true\n" in capsys.readouterr().out
