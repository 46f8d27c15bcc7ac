"""The limits table (components.common.limits) holds on every path that sets a count or size.

Each bypass of a bound refuses the value with one short ``error: ...`` line (exit status 2)
before anything is sampled, built or stored: ``aprflow run --set``, a config file's
``recipe_overrides`` and ``dataset_settings``, ``aprflow train`` and its spec files, and
``aprflow data subset --draws``. A message quotes at most about 200 characters of a value.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from components.common.limits import LIMITS, PARAMETER_LIMITS, check_limit
from components.common.validation import short_repr
from components.sample.space import AnyNetSpec
from components.sample.spec_io import read_specs_jsonl
from components.train.recipes import parse_recipe_file, recipe_sets
from pipelines.cli import main
from pipelines.config import ConfigError, load_config, parse_overrides, pipeline_parameters

# The longest one-line message a refusal may print.
MAX_LINE = 300
SPEC = {"depths": [1, 1, 1, 1], "widths": [32, 64, 128, 256], "num_classes": 10}


def _refused(argv: list[str], capsys, max_line: int = MAX_LINE) -> str:
    """Runs ``aprflow argv`` and returns its one error line, asserting at most ``max_line``
    characters and the exit status: 2 for a usage error (argparse's ``PROG: error: ...``, an
    unknown ``--set`` key), 1 for a refused value."""
    tic = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - tic
    err = capsys.readouterr().err.strip().splitlines()
    assert err and (err[-1].startswith("error: ") or ": error: " in err[-1]), err
    usage = ": error: " in err[-1] or err[-1].startswith("error: unknown config key")
    assert code == (2 if usage else 1), f"exit {code}, stderr {err}"
    assert "internal error" not in err[-1] and "Traceback" not in "\n".join(err), err
    assert len(err[-1]) <= max_line, f"{len(err[-1])} characters: {err[-1][:400]}"
    assert seconds < 30, f"took {seconds:.0f} s: absurd values must be refused up front"
    return err[-1]


def _run(*sets: str, config: Path | None = None) -> list[str]:
    extra = ["--config", str(config)] if config else []
    return ["run", "apr-study", *extra, *(f"--set={s}" for s in sets), "--dry-run"]


def _stages(n: int, depth: int = 1) -> dict[str, list]:
    """Spec fields of an ``n``-stage network of ``depth`` blocks per stage."""
    fields = ("widths", "strides", "bottleneck_ratios", "group_widths")
    return {"depths": [depth] * n} | {name: [8 if name == "widths" else 1] * n for name in fields}


def _write_spec(path: Path, **changes) -> Path:
    spec = SPEC | changes
    if path.suffix == ".jsonl":
        path.write_text(json.dumps({"spec": spec}) + "\n")
    else:
        path.write_text(json.dumps(spec))
    return path


def test_every_limit_has_a_reason_and_a_range():
    from pipelines.registry import PIPELINES

    for name, bound in LIMITS.items():
        assert bound.reason.strip(), f"{name} has no reason"
        assert isinstance(bound.low, int) and isinstance(bound.high, int), name
        assert bound.low <= bound.high, name
        check_limit(name, bound.low)
        check_limit(name, bound.high)
        with pytest.raises(ValueError, match=f"must be in \\[{bound.low}, {bound.high}\\]"):
            check_limit(name, bound.high + 1)
    parameters = {key for pipeline in PIPELINES.values() for key in pipeline_parameters(pipeline)}
    assert set(PARAMETER_LIMITS) <= parameters
    assert set(PARAMETER_LIMITS.values()) <= set(LIMITS)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["recipe.epochs=1000000000000"], "recipe field 'epochs' must be in [1, 10000]"),
        (["recipe_overrides={epochs: 1e8}"], "recipe field 'epochs' must be in [1, 10000]"),
        (["recipe.aug_repeats=1e9"], "recipe field 'aug_repeats' must be in [0, 16]"),
        (["recipe.crop_padding=1000000"], "recipe field 'crop_padding' must be in [0, 1023]"),
        (["recipe.batch_size=1e12"], "recipe field 'batch_size' must be in [1, 65536]"),
        (["dataset_settings.digits.epochs=1000000"], "dataset_settings.digits.epochs must be in"),
        (
            ["dataset_settings.digits.recipe_overrides.epochs=1e8"],
            "recipe field 'epochs' must be in [1, 10000]",
        ),
        # The memory input pads and crops at the stored 16 px: 20 px of padding cannot work,
        # and would otherwise fail every trial for good.
        (["recipe.crop_padding=20", "resolution=16"], "'crop_padding' 20 must be below"),
        (["trials_per_gpu=1000000"], "trials_per_gpu' must be in [1, 64]"),
        (["max_attempts=1e9"], "max_attempts' must be in [1, 100]"),
        (["epochs=1e12"], "epochs must be in [1, 10000]"),
    ],
)
def test_run_refuses_each_bypass(sets, expected, local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    line = _refused(_run(*sets), capsys)
    assert expected in line, line
    assert not (local_env / "store").exists(), "a refused study wrote to the store"


def test_config_file_recipe_overrides_are_bounded(local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    config = local_env / "study.yaml"
    config.write_text("recipe_overrides: {epochs: 1e8}\ndataset_settings: {}\n")
    assert "'epochs' must be in [1, 10000]" in _refused(_run(config=config), capsys)
    config.write_text("dataset_settings: {digits: {epochs: 100000000}}\n")
    assert "dataset_settings.digits.epochs must be in" in _refused(_run(config=config), capsys)


def test_recipe_file_is_bounded():
    text = "# t\nepochs: 1e8\nbatch_size: 8\nlr: 0.1\n"
    with pytest.raises(ValueError, match=r"t.yaml: recipe field 'epochs' must be in \[1, 10000\]"):
        parse_recipe_file("t", text, "t.yaml")


def test_transfer_study_parameters_are_bounded():
    from pipelines.registry import PIPELINES

    transfer = PIPELINES["transfer-study"]
    with pytest.raises(ConfigError, match=r"'n_bootstrap' must be in \[0, 1000000\]"):
        load_config(transfer, None, {"model_list": "m", "n_bootstrap": 10**9})
    with pytest.raises(ConfigError, match=r"'finetune_max_steps' must be in \[0, 10000000\]"):
        load_config(transfer, None, {"model_list": "m", "finetune_max_steps": "1e12"})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"widths": [2**20] * 4}, "widths (each value) must be in [1, 8192]"),
        ({"depths": [10**6, 1, 1, 1]}, "depths (each value) must be in [1, 256]"),
        (_stages(8, depth=200), "the total depth (sum of depths) must be in [1, 1024]"),
        (_stages(9), "the number of stages (entries of depths) must be in [1, 8]"),
        (
            {"depths": [16] * 4, "widths": [8192] * 4, "group_widths": [8192] * 4},
            "the parameter count must be in [1, 2000000000]",
        ),
        ({"num_classes": 10**9}, "num_classes must be in [0, 100000]"),
    ],
)
def test_spec_files_are_bounded_before_a_model_is_built(
    tmp_path, changes, expected, local_env, monkeypatch, capsys
):
    monkeypatch.chdir(local_env)
    jsonl = _write_spec(tmp_path / "specs.jsonl", **changes)
    tic = time.monotonic()
    with pytest.raises(ValueError, match="specs.jsonl:1: ") as refused:
        read_specs_jsonl(jsonl)
    assert time.monotonic() - tic < 5
    assert expected in str(refused.value)
    assert len(str(refused.value)) <= MAX_LINE
    # `aprflow train --spec` with a JSON spec: refused before the data or a model is made.
    spec = _write_spec(tmp_path / "spec.json", **changes)
    argv = ["train", "--spec", str(spec), "--dataset", "digits", "--resolution", "8"]
    assert expected in _refused(argv, capsys)


def test_a_valid_reference_spec_passes():
    from components.sample.space import REFERENCE_SPECS

    for spec in REFERENCE_SPECS.values():
        spec.validate(design_space=False)
    AnyNetSpec(**SPEC).validate(design_space=False)


def test_train_refuses_recipe_sets_out_of_bounds(tmp_path, local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    spec = _write_spec(tmp_path / "spec.json")
    argv = ["train", "--spec", str(spec), "--dataset", "digits", "--resolution", "8"]
    line = _refused([*argv, "--set", "recipe.epochs=1e12"], capsys)
    assert "recipe field 'epochs' must be in [1, 10000]" in line
    line = _refused([*argv, "--set", "recipe.aug_repeats=1000000000"], capsys)
    assert "recipe field 'aug_repeats' must be in [0, 16]" in line
    assert "[0, 10000]" in _refused([*argv, "--epochs", "1000000"], capsys)


def test_data_subset_draws_are_bounded(local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    argv = ["data", "subset", "digits", "--name", "few", "--n-classes", "2", "--draws", "1000000"]
    line = _refused(argv, capsys)
    assert "expected an integer in [1, 100] (each draw" in line, line
    assert "in [1, 100]" in _refused([*argv[:-1], "0"], capsys)
    assert not (local_env / "store").exists()


@pytest.mark.parametrize(
    "assignment",
    [
        "train_seeds=[" + ",".join(str(i) for i in range(10_000)) + "]",
        "train_seeds=[" + ",".join(f"s{i}" for i in range(10_000)) + "]",
        "n_models=[" + ",".join(str(i) for i in range(10_000)) + "]",
        "recipe.lr_grid=[" + ",".join("0.1" for _ in range(10_000)) + "]",
        "recipe.momentum=[" + ",".join("0.1" for _ in range(10_000)) + "]",
    ],
)
def test_a_long_list_gives_a_short_line(assignment, local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    _refused(_run(assignment), capsys)


@pytest.mark.parametrize(
    "assignment",
    ["recipe.opt=" + "x" * 10_000, "study_name=" + "x" * 10_000, "x" * 10_000 + "=1"],
)
def test_a_long_text_is_quoted_short(assignment, local_env, monkeypatch, capsys):
    monkeypatch.chdir(local_env)
    line = _refused(_run(assignment), capsys, max_line=len(assignment))
    assert line.count("x") <= 200, line


def test_short_repr_cuts_without_building_the_whole_repr():
    nested: list = [list(range(10_000))] * 10_000  # 10^8 items by reference
    text = short_repr(nested)
    assert len(text) <= 200 and text.startswith("[[0, 1, 2")
    assert short_repr("x" * 10_000).count("x") < 200
    assert short_repr(10**5000) == "<int too long to print>"
    assert short_repr([1, 2]) == "[1, 2]"


def test_yaml_exponent_numbers_are_numbers():
    """PyYAML reads ``1e-3`` (no dot) as text: a number field still takes it."""
    from pipelines.registry import PIPELINES

    assert recipe_sets(["recipe.lr=1e-3"]) == {"lr": 0.001}
    arguments = load_config(PIPELINES["apr-study"], None, parse_overrides(["recipe.lr=1e-3"]))
    assert arguments["recipe_overrides"] == {"lr": 0.001}
    arguments = load_config(PIPELINES["apr-study"], None, parse_overrides(["n_models=1e2"]))
    assert arguments["n_models"] == 100
    with pytest.raises(ConfigError, match="'n_models' must be an int, got 1.5"):
        load_config(PIPELINES["apr-study"], None, parse_overrides(["n_models=1.5e0"]))
    with pytest.raises(ValueError, match="'lr' must be a number, got 'fast'"):
        recipe_sets(["recipe.lr=fast"])


def test_transfer_study_bounds_its_steps_and_resamples_on_every_path(capsys):
    from components.transfer.cli import build_study_parser
    from components.transfer.steps import analyze
    from components.transfer.study import StudySettings, TransferError

    with pytest.raises(TransferError, match=r"finetune_max_steps must be in \[0, 10000000\]"):
        StudySettings(regimes=["knn"], finetune_max_steps=10**12)
    with pytest.raises(ValueError, match=r"n_bootstrap must be in \[0, 1000000\]"):
        analyze("no-study", None, "unused", n_bootstrap=10**9)
    for option in ("--bootstrap", "--finetune-max-steps"):
        with pytest.raises(SystemExit):
            build_study_parser().parse_args(["--models", "m.csv", option, "1000000000000"])
        assert "expected an integer in [0, " in capsys.readouterr().err


def test_the_resample_bound_is_the_analysis_one():
    from analysis.stats import MAX_RESAMPLES
    from components.common.limits import LIMITS

    assert LIMITS["bootstrap"].high == MAX_RESAMPLES
