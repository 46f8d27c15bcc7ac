"""Trials for tests, and a trained trial checked against its stored weights
(``from trial_checks import ...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from components.common.storage import ArtifactStore
from components.data.build import load_manifest, load_split
from components.data.datasets import materialize
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe

if TYPE_CHECKING:
    from components.train.trial import Trial


def faces_trial(store: ArtifactStore, recipe_overrides: dict) -> Trial:
    """A small AnyNetX (150-250 MFLOPs at 224 px) on the built-in faces set at 12 px, with
    ``apr_tiny`` and ``recipe_overrides``, seed 0."""
    from components.train.trial import Trial

    spec = sample_specs("anynetx_a", 1, (150e6, 250e6), seed=3).specs[0].to_dict()
    dataset = materialize(store, "faces", resolution=12)
    recipe = resolve_recipe("apr_tiny", recipe_overrides)
    return Trial(spec=spec, dataset=dataset, recipe=recipe, seed=0)


def checkpoint_test_error(store: ArtifactStore, trial_id: str) -> float:
    """Top-1 error in percent of the trial's last checkpoint on its test split, recomputed
    here: weights from ``checkpoint.pt``, the test images decoded by ``load_split`` and
    normalised with the manifest's mean and std, one forward pass in eval mode."""
    import torch

    from components.sample.models import build_model
    from components.train.trial import Trial, checkpoint_key, load_checkpoint_bytes, result_key

    trial = Trial.from_dict(store.get_json(result_key(trial_id)))
    # An AnyNet (with the small stem at <= 64 px, as trained) or a named timm model.
    model = build_model(trial.spec, trial.dataset.num_classes, trial.dataset.resolution)
    state = load_checkpoint_bytes(store.get_bytes(checkpoint_key(trial_id)), trial.engine)
    model.load_state_dict(state["engine"]["model"])
    x, y = load_split(store, trial.dataset, "test")
    manifest = load_manifest(store, trial.dataset)
    mean = np.asarray(manifest["mean"]) * 255
    std = np.clip(np.asarray(manifest["std"]), 1e-3, None) * 255
    images = torch.from_numpy(((x - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1).numpy()
    return 100.0 * int((predicted != y).sum()) / len(y)
