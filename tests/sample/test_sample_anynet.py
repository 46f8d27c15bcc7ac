"""The torch AnyNet: agreement with the analytic counts and the timm model API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from components.sample.space import (
    BLOCK_TYPES,
    REFERENCE_SPECS,
    STEM_LAYOUTS,
    AnyNetSpec,
    adjust_compatibility,
    complexity,
)

if TYPE_CHECKING:
    import torch

TINY = AnyNetSpec(
    depths=(1, 2, 1, 1),
    widths=(16, 24, 32, 48),
    bottleneck_ratios=(1, 2, 1, 2),
    group_widths=(8, 4, 16, 8),
    stem_width=8,
    num_classes=7,
)


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    # The models here are tiny: one thread avoids oversubscribing a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _measured_macs(model: torch.nn.Module, resolution: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC


def _random_spec(rng: np.random.Generator) -> AnyNetSpec:
    block_type = str(rng.choice(BLOCK_TYPES))
    bottleneck = block_type == "res_bottleneck"
    spec = AnyNetSpec(
        depths=rng.integers(1, 3, 4).tolist(),
        widths=(rng.integers(1, 9, 4) * 8).tolist(),
        strides=rng.integers(1, 3, 4).tolist(),
        bottleneck_ratios=rng.choice([1.0, 2.0, 4.0], 4).tolist() if bottleneck else (1,) * 4,
        group_widths=rng.choice([1, 2, 4, 8, 16, 32], 4).tolist() if bottleneck else (1,) * 4,
        block_type=block_type,
        stem_type=str(rng.choice(list(STEM_LAYOUTS))),
        stem_width=int(rng.integers(1, 5)) * 8,
        se_ratio=float(rng.choice([0.25, 0.5])) if bottleneck and rng.random() < 0.3 else None,
        num_classes=int(rng.integers(0, 20)),
    )
    return adjust_compatibility(spec)


def _check_counts_agree(seed: int, count: int) -> None:
    from components.sample.anynet import AnyNet

    rng = np.random.default_rng(seed)
    for _ in range(count):
        spec = _random_spec(rng)
        resolution = int(rng.integers(8, 41))
        small_input = bool(rng.random() < 0.3)
        model = AnyNet(spec, small_input=small_input).eval()
        expected = complexity(spec, resolution, small_input=small_input)
        assert _params(model) == expected.params, spec
        assert _measured_macs(model, resolution) == expected.weight_macs, (spec, resolution)


def test_params_and_macs_match_analytic_counts_for_random_specs():
    _check_counts_agree(seed=0, count=200)


@pytest.mark.slow
@pytest.mark.extended
def test_params_and_macs_match_analytic_counts_large_sweep():
    _check_counts_agree(seed=1, count=2000)


@pytest.mark.parametrize("name", sorted(REFERENCE_SPECS))
def test_reference_models_match_analytic_counts(name):
    import timm

    import components.sample.anynet  # noqa: F401 - registers the anynet_* models with timm

    model = timm.create_model(f"anynet_{name}").eval()
    expected = complexity(REFERENCE_SPECS[name])
    assert _params(model) == expected.params
    assert _measured_macs(model, 64) == complexity(REFERENCE_SPECS[name], 64, False).weight_macs


@pytest.mark.parametrize(
    ("ours", "timm_name"),
    [
        ("regnetx_200mf", "regnetx_002"),
        ("regnetx_400mf", "regnetx_004"),
        ("regnetx_600mf", "regnetx_006"),
        ("regnetx_800mf", "regnetx_008"),
        ("regnety_400mf", "regnety_004"),
        ("resnet18", "resnet18"),
        ("resnet50", "resnet50"),
        ("resnext50_32x4d", "resnext50_32x4d"),
    ],
)
def test_reference_specs_match_timm_models(ours, timm_name):
    import timm

    expected = complexity(REFERENCE_SPECS[ours], 64, small_input=False)
    model = timm.create_model(timm_name).eval()
    assert _params(model) == expected.params
    assert _measured_macs(model, 64) == expected.weight_macs


def test_create_model_accepts_spec_forms_and_overrides_num_classes():
    import timm
    import torch

    import components.sample.anynet  # noqa: F401 - registers the anynet model with timm

    for spec in (TINY, TINY.to_dict(), TINY.to_json()):
        model = timm.create_model("anynet", spec=spec, num_classes=10)
        assert model.num_classes == 10 and model.pretrained_cfg["num_classes"] == 10
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model = timm.create_model("anynet", spec=TINY)
    assert model.num_classes == TINY.num_classes
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_create_model_errors():
    import timm

    from components.sample.anynet import build_model

    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("anynet", spec=TINY, pretrained=True)
    with pytest.raises(ValueError, match="unknown AnyNetSpec field"):
        timm.create_model("anynet", spec={**TINY.to_dict(), "depht": 1})
    with pytest.raises(ValueError, match="adjust_compatibility"):
        build_model(AnyNetSpec.from_dict({**TINY.to_dict(), "widths": [16, 24, 32, 40]}))


def test_features_only():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY, features_only=True)
    features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [8, 16, 24, 32, 48]
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    last_two = build_model(TINY, features_only=True, out_indices=(3, 4))
    assert [f.shape[1] for f in last_two(torch.randn(1, 3, 64, 64))] == [32, 48]


def test_small_input_keeps_four_stages_meaningful():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY, small_input=True).eval()
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 48, 2, 2)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert _measured_macs(model, 32) == complexity(TINY, 32, small_input=True).weight_macs


def test_head_api():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert model.forward_head(features, pre_logits=True).shape == (2, 48)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 48)


def test_channels_last_matches_contiguous():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        actual = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_zero_init_last_makes_blocks_start_as_shortcut():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY)
    block = model.stages[1][1]  # identity shortcut
    assert torch.count_nonzero(block.transform[-1].bn.weight) == 0
    plain = build_model(TINY, zero_init_last=False)
    assert torch.count_nonzero(plain.stages[1][1].transform[-1].bn.weight) > 0


def test_torch_export():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.slow
def test_torch_compile():
    import torch

    from components.sample.anynet import build_model

    model = build_model(TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)
