"""A named timm model trained as a trial: one epoch of timm's ``resnet10t`` at 16 px, its
result, its stored weights, and ``transfer``'s ``trial:<id>`` backbone rebuilt from them."""

from __future__ import annotations

import pytest
from trial_checks import checkpoint_test_error


@pytest.fixture(autouse=True)
def _single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_named_model_trains_one_epoch_at_16_px(store):
    import numpy as np

    from components.data.datasets import materialize
    from components.sample.models import complexity, named_spec
    from components.train.recipes import resolve_recipe
    from components.train.trial import Trial, run_trial
    from components.transfer.features import extract_features, load_backbone

    spec = named_spec("resnet10t")
    faces = materialize(store, "faces", resolution=16)
    trial = Trial(spec, faces, resolve_recipe("apr_tiny", {"epochs": 1}), seed=0)
    result = run_trial(store, trial, progress=lambda _: None)
    assert result["status"] == "ok", result["reason"]
    assert len(result["history"]["test_error"]) == 1 and result["small_input"] is False
    assert result["flops"] == complexity(spec, 224).flops  # the 224-px count, 1,000 classes
    assert result["flops_trained"] == complexity(spec, 16, num_classes=2).flops
    assert result["params_trained"] == complexity(spec, 16, num_classes=2).params
    # The stored weights, rebuilt by the same builder, give the reported test error.
    assert checkpoint_test_error(store, trial.trial_id) == pytest.approx(result["top1_error"])
    backbone = load_backbone(f"trial:{trial.trial_id}", store)
    assert backbone.info["small_input"] is False and backbone.input_size == 16
    images = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    features = extract_features(backbone.model, images, backbone.mean, backbone.std)
    assert features.shape == (3, backbone.num_features) == (3, 512)
