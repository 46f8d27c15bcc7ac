"""Named timm architectures beside the sampled AnyNets: the spec and its id, the build, the
FLOP count, the planner's estimate, the results row and the analysis.

timm behaviour relied on, read in timm 1.0.31 (.venv site-packages):

* ``timm/models/_factory.py``, ``create_model`` (line 162): ``pretrained`` (line 164) and
  ``**kwargs`` (line 172) that reach the model class through its entrypoint (lines 228-236;
  the docstring names ``drop_rate``, ``drop_path_rate`` and ``global_pool``, lines 193-196);
  keyword arguments that are None are dropped first (line 224), so ``drop_path_rate=None``
  builds a model that has no stochastic depth, where ``drop_path_rate=0.0`` fails.
* ``timm/models/_registry.py``, ``get_pretrained_cfg_value`` (line 434) and
  ``timm/models/_pretrained.py`` line 32 (``fixed_input_size``, default False; True for the
  ViTs, e.g. ``timm/models/deit.py`` line 151): such a model asserts its input size, and
  takes ``img_size``.
* ``timm/models/resnet.py`` lines 431-438: block ``b`` of a ResNet drops its branch with
  ``drop_path_rate * b / (blocks - 1)`` (a ``DropPath`` only where that is above 0).
"""

from __future__ import annotations

import pytest

from components.sample.models import (
    check_timm_name,
    complexity,
    model_id,
    named_spec,
    parse_architecture,
    small_input,
    study_specs,
    timm_name,
)

TINY = "resnet10t"  # timm's smallest ResNet: 4.9 M parameters, 1.1 GMACs at 224 px


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def test_a_named_spec_is_the_timm_name_and_its_id():
    spec = named_spec(TINY)
    assert spec == {"timm": TINY} and timm_name(spec) == TINY and model_id(spec) == TINY
    assert parse_architecture(f" {TINY} ") == spec
    with pytest.raises(ValueError, match="alone"):
        timm_name({"timm": TINY, "depths": [1]})


def test_the_spec_is_part_of_the_trial_id(store):
    from dataclasses import replace

    from components.data.datasets import materialize
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial

    faces = materialize(store, "faces", resolution=16)
    trial = Trial(named_spec(TINY), faces, resolve_recipe("apr_tiny"), seed=0)
    other = replace(trial, spec=named_spec("test_resnet"))
    assert trial.trial_id != other.trial_id
    assert Trial.from_dict(trial.to_dict()).trial_id == trial.trial_id


def test_unknown_names_are_refused_with_the_closest():
    with pytest.raises(ValueError, match="unknown timm model 'resnet5O': did you mean resnet50"):
        check_timm_name("resnet5O")
    with pytest.raises(ValueError, match="pretrained tag.*'resnet50'"):
        check_timm_name("resnet50.a1_in1k")
    with pytest.raises(ValueError, match="is an AnyNet"):
        check_timm_name("anynet_regnetx_400mf")
    with pytest.raises(ValueError, match="more than once"):
        study_specs([], [TINY, TINY])
    with pytest.raises(ValueError, match="at least one architecture"):
        study_specs([], [])


def test_build_follows_timm_create_model():
    import torch
    from timm.layers import DropPath

    from components.sample.models import build_model

    model = build_model(named_spec(TINY), num_classes=6, resolution=16, drop_path_rate=0.1)
    assert model.num_classes == 6
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 6)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1)  # the last block's, timm's linear rule
    plain = build_model(named_spec(TINY), num_classes=6, resolution=16)
    assert not any(isinstance(m, DropPath) for m in plain.modules())
    # None is dropped by create_model (_factory.py line 224): VGG has no stochastic depth.
    assert build_model(named_spec("vgg11"), 6, 32).num_classes == 6
    with pytest.raises(ValueError, match="no stochastic depth"):
        build_model(named_spec("vgg11"), 6, 32, drop_path_rate=0.1)


def test_a_fixed_size_vit_is_built_for_the_training_resolution():
    import torch

    from components.sample.models import build_model

    model = build_model(named_spec("deit_tiny_patch16_224"), num_classes=3, resolution=32)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_timm_keeps_its_stem_where_an_anynet_takes_the_small_one():
    from components.sample.space import REFERENCE_SPECS

    anynet = REFERENCE_SPECS["resnet50"].to_dict()
    assert small_input(anynet, 16) and not small_input(anynet, 224)
    assert not small_input(named_spec("resnet50"), 16)


def test_flops_on_the_meta_device_match_the_analytic_count():
    """timm's ResNet-50 and the AnyNet ResNet-50 reference are the same network: the count on
    the meta device equals the analytic multiply-adds of its weights (pycls' count adds the
    classifier's 1,000 bias additions)."""
    from components.sample.space import REFERENCE_SPECS
    from components.sample.space import complexity as analytic

    measured = complexity(named_spec("resnet50"), 224)
    reference = analytic(REFERENCE_SPECS["resnet50"], 224)
    assert measured.flops == reference.weight_macs == 4_089_184_256
    assert measured.params == reference.params == 25_557_032
    assert reference.flops - measured.flops == 1000


def test_flops_at_the_trained_resolution_match_a_real_forward_pass():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from components.sample.models import build_model

    spec = named_spec(TINY)
    model = build_model(spec, num_classes=10, resolution=16).eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, 16, 16))
    counted = complexity(spec, 16, num_classes=10)
    assert counted.flops == counter.get_total_flops() // 2 > 0
    assert counted.params == sum(p.numel() for p in model.parameters())
    assert counted.flops < complexity(spec, 224).flops / 100  # (16 / 224)^2 ~ 1/196


def test_the_planner_estimates_a_named_trial_by_its_flops(store):
    from dataclasses import replace

    from components.data.datasets import materialize
    from components.train.chunk import trial_macs
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial

    digits = materialize(store, "digits", resolution=16)
    trial = Trial(named_spec(TINY), digits, resolve_recipe("apr_tiny"), seed=0)
    assert trial_macs(trial) == complexity(named_spec(TINY), 16, 10).flops > 0
    assert trial_macs(replace(trial, spec={"timm": "no_such_model"})) == 0.0  # fails at once


def test_a_named_result_row_has_its_name_and_no_stage_columns():
    from components.analyze.run import result_row

    result = {
        "trial_id": "t1",
        "spec": named_spec(TINY),
        "dataset": {"name": "digits"},
        "recipe": {"name": "apr_tiny"},
        "seed": 0,
        "status": "ok",
        "reason": "",
        "top1_error": 9.5,
        "flops": 1.1e9,
        "params": 5e6,
        "flops_trained": 8e6,
        "small_input": False,
        "wall_time_s": 1.0,
    }
    row = result_row(result)
    assert row["model"] == TINY and row["small_input"] is False and row["flops"] == 1.1e9
    assert not {f"{p}{i}" for p in "dwbg" for i in range(1, 5)} & set(row)


def test_the_analysis_leaves_named_models_out_of_the_architecture_features(tmp_path):
    """AnyNet stage features vs error on a table with a named model: the named one is left
    out, with the reason, and the correlations are those of the AnyNets alone."""
    import numpy as np
    import pandas as pd

    from analysis import analyze, load_results

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        stages = {f"d{s}": 1 + (i + s) % 3 for s in range(1, 5)}
        stages |= {f"w{s}": 8 * (i + s) for s in range(1, 5)}
        for dataset in ("a", "b"):
            rows.append({"model": f"m{i}", "dataset": dataset, "error": 10 + i + rng.random()})
            rows[-1] |= stages
    rows += [{"model": TINY, "dataset": d, "error": 1.0} for d in ("a", "b")]
    table = load_results(pd.DataFrame(rows), scale="percent")
    summary = analyze(table, tmp_path / "out", n_bootstrap=0, top_k=2)
    arch = summary["architecture"]
    assert arch["left_out"]["models"] == [TINY] and "timm" in arch["left_out"]["reason"]
    depth = arch["spearman"]["a"]["cum_depth"]
    assert depth["n_models"] == 6  # the AnyNets only
    assert (
        "Left out of these correlations: resnet10t" in (tmp_path / "out" / "report.md").read_text()
    )


def test_the_dataset_note_says_which_stem_each_model_trained_with():
    import pandas as pd

    from components.analyze.run import trained_size_note

    rows = pd.DataFrame(
        {
            "model": ["0123456789abcdef", TINY],
            "flops": [2e8, 1.1e9],
            "flops_trained": [1e6, 8e6],
        }
    )
    note = trained_size_note(rows, 16)
    assert note.startswith("Trained at 16 px with the small-input stem (stride 1); resnet10t")
    assert "with timm's own" in note and "band sampled" not in note
    assert "timm" not in trained_size_note(rows.iloc[1:], 16)  # all named: their own stems
    assert trained_size_note(rows.iloc[1:], 16).startswith("Trained at 16 px with the stem:")
