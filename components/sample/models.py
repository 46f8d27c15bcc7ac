"""The architectures a study trains, one interface for both kinds.

* An **AnyNet** (sampled, or given): its :class:`~components.sample.space.AnyNetSpec` as a
  dict (``AnyNetSpec.to_dict()``).
* A **named timm model**: ``{"timm": "<name>"}`` (``resnet50``, ``deit_small_patch16_224``),
  built the way timm builds one: ``timm.create_model(name, pretrained=False,
  num_classes=..., drop_path_rate=...)``, randomly initialised.

The dict is a trial's ``spec`` and part of its id, so the trainer, the planner's estimate, the
export of the best models, ``transfer``'s ``trial:<id>`` and the results table all go through
the functions here: :func:`model_id`, :func:`build_model`, :func:`complexity`,
:func:`small_input`. Nothing here imports torch or timm until a function needs them.

Small inputs: an AnyNet swaps its stem for a 3x3 stride-1 one at or below 64 px
(:func:`~components.sample.space.uses_small_stem`); a timm model keeps timm's stem at every
resolution (ResNet-50's stride-4 stem leaves a 4x4 map at 16 px), and its result records
``small_input: false``. A model whose timm config has ``fixed_input_size`` (ViTs: position
embeddings of a fixed patch grid) is built with ``img_size`` = the training resolution.

FLOPs: an AnyNet's are the analytic pycls count (multiply-adds, bias additions included); a
timm model's are the multiply-adds that ``torch.utils.flop_counter.FlopCounterMode`` counts
(convolutions, linear layers, matrix products, attention; no bias additions) in one forward
pass of the network built on the meta device: no memory, no weights, well under a second for
ResNet-50.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from components.common.cli import did_you_mean
from components.common.validation import short_repr
from components.sample.space import AnyNetSpec, Complexity, uses_small_stem
from components.sample.space import complexity as anynet_complexity

if TYPE_CHECKING:
    from torch import nn

TIMM_KEY = "timm"
# timm registers our own AnyNets as ``anynet`` and ``anynet_<reference>`` once
# components.sample.anynet is imported: those are specs (sampled, or given as JSON), and a name
# that resolves only in processes that imported that module would make a plan depend on it.
ANYNET_PREFIX = "anynet"
# Classes of the head whose FLOPs the 224-px count includes when none is given: ImageNet's,
# as the sampled AnyNets' FLOP band (AnyNetSpec.num_classes defaults to 1000) and timm's
# default head.
IMAGENET_CLASSES = 1000


def timm_name(spec: Mapping[str, Any]) -> str | None:
    """The timm model name of a named architecture's spec; None for an AnyNet spec.

    Raises:
        ValueError: for a spec with a ``timm`` key and other keys, or a name that is no string.
    """
    if TIMM_KEY not in spec:
        return None
    name = spec[TIMM_KEY]
    if set(spec) != {TIMM_KEY} or not isinstance(name, str):
        raise ValueError(
            f'a named architecture is {{"timm": "<model name>"}} alone, got {short_repr(spec)}'
        )
    return name


def check_timm_name(name: Any) -> str:
    """Returns ``name`` if timm builds a model of that name, else raises with the closest.

    Raises:
        ValueError: for a name timm does not know (the message lists the close matches of
            ``timm.list_models()``), a pretrained tag (``resnet50.a1_in1k``: the weights are
            never loaded, so the tag would only split one architecture's trials), or an AnyNet.
    """
    import timm

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a named architecture is a timm model name, got {short_repr(name)}")
    if name.startswith(ANYNET_PREFIX):
        raise ValueError(
            f"{name!r} is an AnyNet: sample AnyNets with n_models, or give the spec itself as "
            'JSON ({"depths": [...], "widths": [...], ...})'
        )
    if "." in name:
        raise ValueError(
            f"timm model {name!r} carries a pretrained tag: a study trains from scratch, name "
            f"the architecture ({name.partition('.')[0]!r})"
        )
    known = [n for n in timm.list_models() if not n.startswith(ANYNET_PREFIX)]
    if name not in known:
        hint = did_you_mean(name, known) or "see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}: {hint}")
    return name


def named_spec(name: str) -> dict[str, str]:
    """The spec of timm model ``name`` (checked: :func:`check_timm_name`)."""
    return {TIMM_KEY: check_timm_name(name)}


def parse_architecture(text: str) -> dict[str, Any]:
    """A spec from its text: a timm model name, or an AnyNet spec as a JSON object.

    Raises:
        ValueError: for an unknown name, invalid JSON, or a structurally invalid spec.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"an architecture is a timm model name or an AnyNet spec as JSON, got "
            f"{short_repr(text)}"
        )
    if not text.lstrip().startswith("{"):
        return named_spec(text.strip())
    try:
        spec = AnyNetSpec.from_dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"architecture {short_repr(text)} is not valid JSON: {e}") from None
    spec.validate(design_space=False)
    return spec.to_dict()


def study_specs(sampled: list[dict[str, Any]], architectures: list[str]) -> list[dict[str, Any]]:
    """A study's architectures: the sampled AnyNets, then each named one (in the given order).

    Raises:
        ValueError: for an unknown or repeated architecture, or none at all.
    """
    named = [parse_architecture(text) for text in architectures]
    texts = [json.dumps(spec, sort_keys=True) for spec in named]
    repeated = sorted({architectures[i] for i, t in enumerate(texts) if texts.count(t) > 1})
    if repeated:
        raise ValueError(f"architectures names {', '.join(repeated)} more than once")
    specs = [*sampled, *named]
    if not specs:
        raise ValueError(
            "a study needs at least one architecture: set n_models >= 1 or name timm models "
            "in architectures (e.g. [resnet18])"
        )
    return specs


def model_id(spec: Mapping[str, Any]) -> str:
    """The architecture's id in results and runs: the timm name, or the AnyNet spec's hash.

    Raises:
        ValueError: for an invalid spec.
    """
    name = timm_name(spec)
    return name if name is not None else AnyNetSpec.from_dict(spec).spec_hash()


def small_input(spec: Mapping[str, Any], resolution: int) -> bool:
    """Whether the network trained at ``resolution`` has the small-input stem: an AnyNet at
    or below 64 px; a timm model never (it keeps timm's stem)."""
    return timm_name(spec) is None and uses_small_stem(resolution, None)


def build_model(
    spec: Mapping[str, Any],
    num_classes: int,
    resolution: int,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """The network of ``spec`` for images of ``resolution`` px with ``num_classes`` outputs,
    randomly initialised (seed torch first for the same weights).

    Args:
        spec: an AnyNet spec dict or ``{"timm": name}``.
        num_classes: classifier outputs (0: none, pooled features).
        resolution: the input side: an AnyNet's stem (:func:`small_input`), a fixed-size timm
            model's ``img_size``.
        drop_path_rate: stochastic depth (the recipe's ``drop_path``).

    Raises:
        ValueError: for an invalid spec, an unknown timm name, or stochastic depth asked of a
            timm model that has none.
    """
    name = timm_name(spec)
    if name is None:
        from components.sample.anynet import build_model as build_anynet

        return build_anynet(
            AnyNetSpec.from_dict(spec),
            num_classes=num_classes,
            small_input=small_input(spec, resolution),
            drop_path_rate=drop_path_rate,
        )
    return _create_timm(check_timm_name(name), num_classes, resolution, drop_path_rate)


def _create_timm(name: str, num_classes: int, resolution: int, drop_path_rate: float) -> nn.Module:
    import timm
    from timm.models import get_pretrained_cfg_value

    # timm drops keyword arguments that are None before calling the model's entrypoint
    # (timm/models/_factory.py, create_model), so a model without stochastic depth still
    # builds when the recipe has none.
    kwargs: dict[str, Any] = {"drop_path_rate": drop_path_rate or None}
    if get_pretrained_cfg_value(name, "fixed_input_size"):
        kwargs["img_size"] = resolution
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if "drop_path_rate" in str(e):
            raise ValueError(
                f"timm model {name!r} has no stochastic depth (drop_path_rate): set the "
                "recipe's drop_path to 0 (recipe_overrides: {drop_path: 0})"
            ) from None
        raise


def complexity(
    spec: Mapping[str, Any], resolution: int, num_classes: int | None = None
) -> Complexity:
    """FLOPs (multiply-adds per image) and parameters of the network as :func:`build_model`
    builds it at ``resolution`` (with the small-input stem where :func:`small_input` says).

    Args:
        spec: an AnyNet spec dict or ``{"timm": name}``.
        resolution: the input side.
        num_classes: classifier outputs; None: the spec's own (an AnyNet's ``num_classes``,
            1,000 for a timm model), as the 224-px FLOP band counts them.

    Raises:
        ValueError: for an invalid spec or an unknown timm name.
    """
    name = timm_name(spec)
    if name is None:
        classes = {} if num_classes is None else {"num_classes": num_classes}
        anynet = AnyNetSpec.from_dict(dict(spec) | classes)
        return anynet_complexity(anynet, resolution, small_input(spec, resolution))
    classes = IMAGENET_CLASSES if num_classes is None else num_classes
    flops, params = _timm_counts(check_timm_name(name), resolution, classes)
    # acts are not counted for timm models; weight_macs equals flops (no bias additions).
    return Complexity(flops=flops, params=params, acts=0, weight_macs=flops)


@functools.lru_cache(maxsize=256)
def _timm_counts(name: str, resolution: int, num_classes: int) -> tuple[int, int]:
    """(multiply-adds, parameters) of timm model ``name``, measured on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = _create_timm(name, num_classes, resolution, 0.0).eval()
        images = torch.empty(1, 3, resolution, resolution)
    counter = FlopCounterMode(display=False)
    # Not under no_grad: FlopCounterMode's module tracking asserts a gradient function in
    # some models (timm's PiT and SigLIP ViTs); on the meta device that costs nothing.
    with counter:
        model(images)
    params = sum(p.numel() for p in model.parameters())
    return counter.get_total_flops() // 2, params  # FlopCounterMode counts 2 FLOPs per MAC
