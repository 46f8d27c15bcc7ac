"""Backbones and their features: AnyNet, a random-init timm model, a trained trial."""

from __future__ import annotations

import io

import numpy as np
import pytest

from components.common.storage import open_store
from components.transfer.errors import TransferError


def images(n, side, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def anynet():
    import torch

    from components.sample.anynet import build_model
    from components.sample.samplers import sample_specs

    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=0).specs[0]
    torch.manual_seed(0)
    return spec, build_model(spec, num_classes=3, small_input=True)


def test_anynet_features(anynet):
    from components.transfer.features import extract_features

    spec, model = anynet
    x = images(10, 12)
    features = extract_features(model, x, (0.5,) * 3, (0.25,) * 3, batch_size=4)
    assert features.shape == (10, spec.widths[-1])
    assert features.dtype == np.float32
    assert np.isfinite(features).all()
    assert not model.training
    # Batching does not change the features (eval mode: batch norm uses running stats).
    np.testing.assert_allclose(
        extract_features(model, x, (0.5,) * 3, (0.25,) * 3), features, rtol=1e-4, atol=1e-5
    )
    # Resizing to another input size still gives one vector per image.
    resized = extract_features(model, x, (0.5,) * 3, (0.25,) * 3, input_size=16)
    assert resized.shape == features.shape
    assert not np.allclose(resized, features)
    assert extract_features(model, x[:0], (0.5,) * 3, (0.25,) * 3).shape == (0, spec.widths[-1])


def test_timm_resnet18_random_init_at_32px():
    from components.transfer.features import extract_features, load_backbone

    backbone = load_backbone("timm:resnet18", input_size=32)
    assert (backbone.input_size, backbone.num_features) == (32, 512)
    assert backbone.info == {"kind": "timm", "model": "resnet18", "pretrained": False, "seed": 0}
    x = images(6, 16)
    features = extract_features(backbone.model, x, backbone.mean, backbone.std, input_size=32)
    assert features.shape == (6, 512)
    # The random initialisation is seeded: a second load gives the same features.
    again = load_backbone("timm:resnet18", input_size=32)
    np.testing.assert_allclose(
        extract_features(again.model, x, again.mean, again.std, input_size=32), features
    )


def test_timm_default_input_size_comes_from_the_model():
    from components.transfer.features import load_backbone

    backbone = load_backbone("timm:anynet_regnetx_200mf")  # our own registry entries work too
    assert backbone.input_size == 224
    assert backbone.num_features == 368


def test_trial_backbone(trained_trial):
    import torch

    from components.train.trial import checkpoint_key
    from components.transfer.features import extract_features, load_backbone

    uri, trial_id = trained_trial
    store = open_store(uri)
    backbone = load_backbone(f"trial:{trial_id}", store)
    assert backbone.source == f"trial:{trial_id}"
    assert backbone.input_size == 12
    assert backbone.info["trained_on"] == "faces"
    assert backbone.info["small_input"] is True
    state = torch.load(io.BytesIO(store.get_bytes(checkpoint_key(trial_id))), weights_only=True)
    loaded = backbone.model.state_dict()
    for name, value in state["engine"]["model"].items():
        if not name.startswith("head.fc"):
            torch.testing.assert_close(loaded[name], value)
    features = extract_features(backbone.model, images(5, 16), backbone.mean, backbone.std, 8, 12)
    assert features.shape == (5, backbone.num_features)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("resnet18", "use trial:<trial_id>"),
        ("timm:", "names no model"),
        ("trial:", "names no trial"),
        ("timm:resnet1", "did you mean resnet18"),
        ("timm:no_such_net_xyz", "unknown timm model"),
    ],
)
def test_bad_sources(source, message, tmp_path):
    from components.transfer.features import load_backbone

    with pytest.raises(TransferError, match=message):
        load_backbone(source, open_store(str(tmp_path)))


def test_unknown_trial(tmp_path):
    from components.transfer.features import load_backbone

    with pytest.raises(TransferError, match="no trial 'deadbeef' in store"):
        load_backbone("trial:deadbeef", open_store(str(tmp_path)))


def test_failed_trial_has_no_weights(tmp_path):
    from components.transfer.features import load_backbone

    store = open_store(str(tmp_path))
    store.put_json("trials/bad/result.json", {"status": "diverged", "reason": "loss nan"})
    with pytest.raises(TransferError, match="ended 'diverged'"):
        load_backbone("trial:bad", store)


def test_pretrained_weights_that_cannot_be_fetched(monkeypatch):
    import timm

    from components.transfer.features import load_backbone

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(TransferError, match="cannot fetch pretrained weights.*HF_HOME"):
        load_backbone("timm:resnet18", pretrained=True)
    with pytest.raises(TransferError, match="timm backbones only"):
        load_backbone("trial:abc", pretrained=True)


def test_extract_features_rejects_bad_images(anynet):
    from components.transfer.features import extract_features

    _, model = anynet
    with pytest.raises(ValueError, match="uint8"):
        extract_features(model, images(2, 12).astype(np.float32), (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="3 channels"):
        extract_features(model, images(2, 12)[..., :1], (0,) * 3, (1,) * 3)
