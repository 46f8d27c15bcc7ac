"""Specs, validation, compatibility and the analytic complexity (pycls convention)."""

import json

import numpy as np
import pytest

from components.sample.space import (
    REFERENCE_SPECS,
    AnyNetSpec,
    Complexity,
    adjust_compatibility,
    complexity,
    regnet_spec,
)

REGNETX_400MF = AnyNetSpec(
    depths=(1, 2, 7, 12),
    widths=(32, 64, 160, 384),
    bottleneck_ratios=(1, 1, 1, 1),
    group_widths=(16, 16, 16, 16),
)
REGNETX_200MF = AnyNetSpec(
    depths=(1, 1, 4, 7),
    widths=(24, 56, 152, 368),
    bottleneck_ratios=(1, 1, 1, 1),
    group_widths=(8, 8, 8, 8),
)


def test_regnetx_400mf_matches_pycls_exactly():
    cx = complexity(REGNETX_400MF)
    assert (cx.flops, cx.params) == (397_678_568, 5_157_512)


def test_regnetx_200mf_matches_pycls_exactly():
    cx = complexity(REGNETX_200MF)
    assert (cx.flops, cx.params) == (199_040_872, 2_684_792)


def test_resnet50_matches_published_counts():
    cx = complexity(REFERENCE_SPECS["resnet50"])
    assert cx.params == 25_557_032
    # The well-known 4,089,184,256 counts weight MACs only; pycls flops add the 1000 bias adds
    # of the classifier (as in the RegNet figures above).
    assert cx.weight_macs == 4_089_184_256
    assert cx.flops == cx.weight_macs + 1000


@pytest.mark.parametrize(
    ("name", "depths", "widths", "group_width"),
    [
        ("regnetx_200mf", (1, 1, 4, 7), (24, 56, 152, 368), 8),
        ("regnetx_400mf", (1, 2, 7, 12), (32, 64, 160, 384), 16),
        ("regnetx_600mf", (1, 3, 5, 7), (48, 96, 240, 528), 24),
        ("regnetx_800mf", (1, 3, 7, 5), (64, 128, 288, 672), 16),
    ],
)
def test_regnet_references_have_pycls_stages(name, depths, widths, group_width):
    spec = REFERENCE_SPECS[name]
    assert (spec.depths, spec.widths) == (depths, widths)
    assert spec.group_widths == (group_width,) * 4


def test_reference_specs_are_valid_networks():
    for spec in REFERENCE_SPECS.values():
        spec.validate(design_space=False)
    REFERENCE_SPECS["regnetx_400mf"].validate()
    with pytest.raises(ValueError, match="widths"):
        REFERENCE_SPECS["resnet50"].validate()


def test_regnet_spec_rejects_parameters_without_four_stages():
    with pytest.raises(ValueError, match="4 distinct stages"):
        regnet_spec(w0=24, wa=24.48, wm=2.54, depth=3, group_width=16)


def test_small_input_changes_only_the_stem():
    spec = REGNETX_400MF
    assert complexity(spec, 32, small_input=True) == complexity(spec, 32)  # auto at 32 px
    assert complexity(spec, 224, small_input=False) == complexity(spec)
    # Stride 1 stem at 32 px gives the same feature map sizes as the stride 2 stem at 64 px.
    small, large = complexity(spec, 32, small_input=True), complexity(spec, 64, small_input=False)
    stem_difference = 3 * 3 * 3 * 32 * (32 * 32 - 32 * 32)
    assert small.weight_macs - large.weight_macs == stem_difference


def test_complexity_is_a_frozen_dataclass():
    cx = complexity(REGNETX_200MF)
    assert isinstance(cx, Complexity)
    with pytest.raises(AttributeError):
        cx.flops = 0


def test_json_round_trip_and_canonical_hash():
    spec = REFERENCE_SPECS["regnety_400mf"]
    assert AnyNetSpec.from_json(spec.to_json()) == spec
    assert AnyNetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert len(spec.spec_hash()) == 16 and int(spec.spec_hash(), 16) >= 0
    # Lists vs tuples and ints vs floats normalise to one spec and one hash.
    as_lists = AnyNetSpec(
        depths=[1, 2, 7, 12],
        widths=[32, 64, 160, 384],
        bottleneck_ratios=[1.0, 1.0, 1.0, 1.0],
        group_widths=[16, 16, 16, 16],
    )
    assert as_lists == REGNETX_400MF and as_lists.spec_hash() == REGNETX_400MF.spec_hash()
    assert REGNETX_400MF.spec_hash() != REGNETX_200MF.spec_hash()


def test_from_dict_names_unknown_field_and_lists_valid_ones():
    data = {**REGNETX_400MF.to_dict(), "depth": [1, 1, 1, 1]}
    with pytest.raises(ValueError, match=r"'depth'.*valid fields are.*'depths'"):
        AnyNetSpec.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depths", [1, 2, "7", 12], r"depths\[2\] must be an int"),
        ("depths", 4, "depths must be a list"),
        ("widths", [32, 64, 160.0, 384], r"widths\[2\] must be an int"),
        ("depths", [True, 2, 7, 12], r"depths\[0\] must be an int"),
        ("bottleneck_ratios", [1, "1", 1, 1], r"bottleneck_ratios\[1\] must be a number"),
        ("block_type", 3, "block_type must be a str"),
        ("se_ratio", "0.25", "se_ratio must be a number"),
    ],
)
def test_from_dict_rejects_wrong_types(field, value, message):
    with pytest.raises(ValueError, match=message):
        AnyNetSpec.from_dict({**REGNETX_400MF.to_dict(), field: value})


def test_from_dict_requires_depths_and_widths():
    with pytest.raises(ValueError, match="required"):
        AnyNetSpec.from_dict({"depths": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match="JSON object"):
        AnyNetSpec.from_dict([1, 2])


def _with(**changes):
    return AnyNetSpec.from_dict({**REGNETX_400MF.to_dict(), **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depths": [1, 2, 7]}, "depths has 3"),
        ({"depths": [1, 2, 7, 17]}, r"depths\[3\] = 17 must be <= 16"),
        ({"depths": [0, 2, 7, 12]}, r"depths\[0\] = 0 must be >= 1"),
        ({"widths": [32, 64, 160, 1040]}, r"widths\[3\] = 1040 must be a multiple of 8"),
        (
            {"widths": [32, 64, 164, 384], "group_widths": [4, 4, 4, 4]},
            r"widths\[2\] = 164 must be a multiple of 8",
        ),
        ({"bottleneck_ratios": [1, 3, 1, 1], "group_widths": [1, 1, 1, 1]}, "must be 1, 2 or 4"),
        ({"group_widths": [16, 16, 16, 64], "widths": [32, 64, 160, 448]}, "must be in"),
        ({"strides": [2, 2, 3, 2]}, "must be 1 or 2"),
        ({"block_type": "dense"}, "block_type 'dense' is unknown"),
        ({"stem_type": "patchify"}, "stem_type 'patchify' is unknown"),
        ({"se_ratio": 1.5}, "se_ratio must be in"),
        ({"widths": [32, 64, 168, 384]}, "call adjust_compatibility"),
    ],
)
def test_validate_names_the_broken_rule(changes, message):
    with pytest.raises(ValueError, match=message):
        _with(**changes).validate()


def test_design_space_bounds_are_optional_but_structure_is_not():
    deep = _with(depths=[1, 2, 7, 20], widths=[32, 64, 160, 2048])
    deep.validate(design_space=False)
    with pytest.raises(ValueError, match="adjust_compatibility"):
        _with(widths=[32, 64, 168, 384]).validate(design_space=False)
    with pytest.raises(ValueError, match="not used by block_type 'res_basic'"):
        _with(block_type="res_basic").validate(design_space=False)


@pytest.mark.parametrize(
    ("width", "ratio", "group", "expected_width", "expected_group"),
    [
        (168, 1, 16, 160, 16),  # 168 / 16 = 10.5 rounds half to even -> 10 groups
        (40, 1, 16, 32, 16),  # 2.5 -> 2
        (72, 4, 32, 72, 18),  # g capped at the bottleneck width 18
        (56, 2, 16, 64, 16),  # bottleneck 28 -> 32
        (64, 4, 8, 64, 8),  # already compatible
    ],
)
def test_adjust_compatibility_follows_pycls(width, ratio, group, expected_width, expected_group):
    spec = AnyNetSpec(
        depths=(1,) * 4,
        widths=(width,) * 4,
        bottleneck_ratios=(ratio,) * 4,
        group_widths=(group,) * 4,
    )
    adjusted = adjust_compatibility(spec)
    assert adjusted.widths == (expected_width,) * 4
    assert adjusted.group_widths == (expected_group,) * 4
    assert adjusted.bottleneck_ratios == spec.bottleneck_ratios


def test_adjust_compatibility_makes_any_spec_buildable_and_is_idempotent():
    rng = np.random.default_rng(0)
    for _ in range(300):
        spec = AnyNetSpec(
            depths=(1,) * 4,
            widths=(rng.integers(1, 129, 4) * 8).tolist(),
            bottleneck_ratios=rng.choice([1.0, 2.0, 4.0], 4).tolist(),
            group_widths=rng.choice([1, 2, 4, 8, 16, 32], 4).tolist(),
        )
        adjusted = adjust_compatibility(spec)
        adjusted.validate(design_space=False)
        assert adjust_compatibility(adjusted) == adjusted


def test_adjust_compatibility_leaves_other_block_types_alone():
    spec = REFERENCE_SPECS["resnet18"]
    assert adjust_compatibility(spec) is spec


def test_derived_properties():
    spec = REFERENCE_SPECS["resnext50_32x4d"]
    assert spec.cumulative_depth == 16
    assert spec.cumulative_width == 256 + 512 + 1024 + 2048
    table = spec.stage_table()
    assert [row["groups"] for row in table] == [32, 32, 32, 32]
    assert [row["bottleneck_width"] for row in table] == [128, 256, 512, 1024]
