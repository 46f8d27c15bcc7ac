"""Backbones and their penultimate-layer features.

A backbone comes from one of two sources:

* ``trial:<trial_id>``: a model trained by the train component. It is rebuilt from the trial's
  spec and dataset (classes, and an AnyNet's small stem at or below 64 px, as in training; a
  named timm model as ``components.sample.models.build_model`` builds it), its weights
  are read from the trial's checkpoint in the artifact store, and its inputs are normalised
  with the training set's channel mean/std at the training resolution.
* ``timm:<name>``: any timm architecture (including our ``anynet_*`` references), randomly
  initialised unless ``pretrained=True`` is asked for; inputs are normalised with the model's
  pretrained config (ImageNet mean/std) at its default input size.

Features are ``model.forward_head(model.forward_features(x), pre_logits=True)``: the pooled
penultimate layer, the fixed features of Kornblith, Shlens, Le 2019, arXiv 1805.08974.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.common.cli import did_you_mean
from components.common.storage import ArtifactStore, CorruptObjectError, StoreError, open_store
from components.train.definition import TRIAL_PREFIX
from components.transfer.errors import TransferError

TIMM_PREFIX = "timm:"


@dataclass
class Backbone:
    """A feature extractor and how to feed it.

    Attributes:
        source: what it was loaded from (``trial:<id>`` or ``timm:<name>``).
        model: the network, in eval mode on the CPU.
        mean: per-channel input mean, in [0, 1] pixel units.
        std: per-channel input standard deviation, in [0, 1] pixel units.
        input_size: image side the network expects (images are resized to it); None keeps the
            dataset's own size.
        num_features: width of the feature vectors.
        info: provenance for logs and tables (architecture, trial, training data, weights).
    """

    source: str
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int | None
    num_features: int
    info: dict[str, Any] = field(default_factory=dict)


def _to_nchw_float(
    images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, input_size: int | None
) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - mean) / std
    if input_size is not None and tuple(x.shape[-2:]) != (input_size, input_size):
        shrinking = input_size < max(x.shape[-2:])
        x = F.interpolate(
            x,
            size=(input_size, input_size),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        )
    return x


def _penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        out = model.forward_head(model.forward_features(x), pre_logits=True)
    else:  # a plain module: assume its classifier was removed
        out = model(x)
    return out.flatten(1)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images_uint8_nhwc: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    input_size: int | None = None,
) -> np.ndarray:
    """Embeds images with a model's penultimate layer.

    The model is put in eval mode; no gradients are kept. Pixels are scaled to [0, 1],
    normalised per channel and, when ``input_size`` differs from the images' size, resized
    bilinearly (antialiased when shrinking) to ``input_size``².

    Args:
        model: a timm-style model (``forward_features`` + ``forward_head(pre_logits=True)``),
            or any module that returns (N, D) features.
        images_uint8_nhwc: uint8 images of shape (N, H, W, 3).
        mean: per-channel mean in [0, 1] pixel units.
        std: per-channel standard deviation in [0, 1] pixel units.
        batch_size: images per forward pass.
        input_size: side the network expects; None keeps the images' own size.

    Returns:
        float32 features of shape (N, D).

    Raises:
        ValueError: for images that are not uint8 (N, H, W, 3), or a bad batch size.
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be NHWC with 3 channels, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
    mean_t = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
    std_t = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1).clamp_min(1e-3)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = _to_nchw_float(images[start : start + batch_size], mean_t, std_t, input_size)
        chunks.append(_penultimate(model, x.to(device)).float().cpu().numpy())
    if not chunks:
        width = _penultimate(model, torch.zeros(1, 3, input_size or 32, input_size or 32)).shape[1]
        return np.zeros((0, width), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _load_trial_backbone(
    trial_id: str, store: ArtifactStore, input_size: int | None, keep_head: bool = False
) -> Backbone:
    from components.data.datasets import load_manifest
    from components.sample.models import build_model, small_input
    from components.train.trial import (
        Trial,
        checkpoint_fault,
        checkpoint_key,
        load_checkpoint_bytes,
        result_key,
    )

    if not trial_id:
        raise TransferError("backbone 'trial:' names no trial: use trial:<trial_id>")
    if not store.exists(result_key(trial_id)):
        raise TransferError(
            f"no trial {trial_id!r} in store {store.uri}: train it first (aprflow train) or "
            "point --store / APRFLOW_STORE_URI at the store that holds it"
        )
    result = store.get_json(result_key(trial_id))
    if result.get("status") != "ok":
        raise TransferError(
            f"trial {trial_id} ended {result.get('status')!r} ({result.get('reason', '')}): "
            "it has no usable weights"
        )
    if not store.exists(checkpoint_key(trial_id)):
        raise TransferError(f"trial {trial_id} has no checkpoint {checkpoint_key(trial_id)!r}")
    trial = Trial.from_dict(result)
    resolution = trial.dataset.resolution
    model = build_model(trial.spec, trial.dataset.num_classes, resolution)
    key = checkpoint_key(trial_id)
    try:
        weights = load_checkpoint_bytes(store.get_bytes(key))["engine"]["model"]
    except CorruptObjectError:
        raise TransferError(
            f"checkpoint {key} is corrupt (its bytes do not match the checksum recorded when it "
            "was written)"
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as e:
        raise TransferError(f"checkpoint {key} is corrupt ({checkpoint_fault(e)})") from None
    model.load_state_dict(weights)
    if not keep_head:  # the transfer study keeps it: LEEP needs the source-class probabilities
        model.reset_classifier(0)
    try:
        manifest = load_manifest(store, trial.dataset)
    except StoreError as e:
        raise TransferError(
            f"trial {trial_id}'s training data {trial.dataset.name!r} is gone from the store "
            f"({e}); its normalisation is unknown"
        ) from None
    return Backbone(
        source=f"{TRIAL_PREFIX}{trial_id}",
        model=model.eval(),
        mean=tuple(manifest["mean"]),
        std=tuple(manifest["std"]),
        input_size=input_size or resolution,
        num_features=model.num_features,
        info={
            "kind": "trial",
            "trial_id": trial_id,
            "trained_on": trial.dataset.name,
            "trained_on_version": trial.dataset.content_hash,
            "trained_resolution": resolution,
            "small_input": small_input(trial.spec, resolution),
            "epochs": trial.recipe.epochs,
            "top1_error": result.get("top1_error"),
        },
    )


def _load_timm_backbone(name: str, pretrained: bool, input_size: int | None, seed: int) -> Backbone:
    import timm
    from timm.data import resolve_model_data_config

    import components.sample.anynet  # noqa: F401 - registers the anynet_* models with timm

    if not name:
        raise TransferError("backbone 'timm:' names no model: use timm:<model name>")
    if not timm.is_model(name):
        close = did_you_mean(name, timm.list_models())
        hint = f"; {close}" if close else " (see timm.list_models())"
        raise TransferError(f"unknown timm model {name!r}{hint}")
    if pretrained and not timm.list_pretrained(f"{name}*"):
        raise TransferError(f"timm model {name!r} has no pretrained weights; drop --pretrained")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random weights, but the same ones every run
            model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as e:  # noqa: BLE001 - timm raises many kinds; all mean "unusable"
        if pretrained:
            raise TransferError(
                f"cannot fetch pretrained weights for timm model {name!r} "
                f"({type(e).__name__}: {e}); without network access, put them in the "
                "Hugging Face cache (HF_HOME) first, or drop --pretrained for random weights"
            ) from None
        raise TransferError(f"cannot build timm model {name!r}: {type(e).__name__}: {e}") from None
    config = resolve_model_data_config(model)
    return Backbone(
        source=f"{TIMM_PREFIX}{name}",
        model=model.eval(),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        input_size=input_size or int(config["input_size"][-1]),
        num_features=int(model.num_features),
        info={"kind": "timm", "model": name, "pretrained": pretrained, "seed": seed},
    )


def load_backbone(
    source: str,
    store: ArtifactStore | None = None,
    *,
    pretrained: bool = False,
    input_size: int | None = None,
    seed: int = 0,
) -> Backbone:
    """Loads a backbone (classifier removed, eval mode, CPU) from a trial or from timm.

    Args:
        source: ``trial:<trial_id>`` or ``timm:<model name>``.
        store: the artifact store holding the trial (default: :func:`open_store`'s); unused
            for timm models.
        pretrained: timm only: load timm's pretrained weights (a download unless they are in
            the local Hugging Face cache). Default: random initialisation.
        input_size: image side to feed the network; None: its own (the trial's training
            resolution, or the timm model's default input size, 224 for most).
        seed: timm only: torch seed of the random initialisation (weights not overwritten by
            pretrained ones), so that a random-init baseline is reproducible.

    Returns:
        The backbone with its normalisation and input size.

    Raises:
        TransferError: for a malformed source, an unknown trial or timm model, a trial that did
            not finish ``ok``, or pretrained weights that cannot be fetched.
    """
    if input_size is not None and input_size < 1:
        raise TransferError(f"input size must be a positive number of pixels, got {input_size}")
    if source.startswith(TRIAL_PREFIX):
        if pretrained:
            raise TransferError("--pretrained applies to timm backbones only, not to trials")
        return _load_trial_backbone(
            source[len(TRIAL_PREFIX) :].strip(), store or open_store(), input_size
        )
    if source.startswith(TIMM_PREFIX):
        name = source[len(TIMM_PREFIX) :].strip()
        return _load_timm_backbone(name, pretrained, input_size, seed)
    raise TransferError(
        f"unknown backbone {source!r}: use trial:<trial_id> (a trained trial) or "
        "timm:<model name> (e.g. timm:resnet18)"
    )
