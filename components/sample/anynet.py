"""PyTorch AnyNet built from an :class:`~components.sample.space.AnyNetSpec`, registered with timm.

Importing this module registers with timm's model registry:

* ``anynet``: takes the architecture as ``spec=`` (an AnyNetSpec, its dict or its JSON), e.g.
  ``timm.create_model("anynet", spec=spec, num_classes=10)``;
* ``anynet_<name>`` for every entry of :data:`~components.sample.space.REFERENCE_SPECS`, e.g.
  ``timm.create_model("anynet_regnetx_400mf")``.

The registration happens on import, so ``import components.sample.anynet`` must run before
``timm.create_model("anynet...")``. The module mirrors the counting functions of
``components.sample.space``: the tests check that parameter and MAC counts agree exactly.
"""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, ConvNormAct, DropPath, SEModule
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from components.sample.space import REFERENCE_SPECS, STEM_LAYOUTS, AnyNetSpec

__all__ = ["AnyNet", "build_model"]


class Stem(nn.Module):
    """Conv + BN + ReLU, optionally followed by a 3x3 stride-2 max pool (see STEM_LAYOUTS).

    A plain module rather than nn.Sequential so timm's feature extraction sees one ``stem``.
    """

    def __init__(self, in_chans: int, width: int, stem_type: str) -> None:
        super().__init__()
        layout = STEM_LAYOUTS[stem_type]
        self.conv = ConvNormAct(in_chans, width, layout.kernel_size, stride=layout.stride)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1) if layout.max_pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class ResidualBlock(nn.Module):
    """``relu(shortcut(x) + drop_path(transform(x)))``; the shortcut projects (1x1 conv + BN) on
    shape change.

    The last layer of ``transform`` must be a ConvNormAct without activation. ``drop_path``
    (stochastic depth, timm's ``DropPath``) drops the residual branch per sample with that
    probability while training (the identity in eval mode); it has no parameters and no MACs.
    """

    def __init__(
        self,
        transform: nn.Sequential,
        in_chs: int,
        out_chs: int,
        stride: int,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        needs_proj = in_chs != out_chs or stride != 1
        self.shortcut = (
            ConvNormAct(in_chs, out_chs, 1, stride=stride, apply_act=False)
            if needs_proj
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        """Zeroes the last BN scale so the block starts as the identity (Goyal et al. 2017)."""
        nn.init.zeros_(self.transform[-1].bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.transform(x)))


def _bottleneck_transform(
    in_chs: int, out_chs: int, stride: int, ratio: float, group_width: int, se_ratio: float | None
) -> nn.Sequential:
    mid = round(out_chs / ratio)
    layers = [
        ConvNormAct(in_chs, mid, 1),
        ConvNormAct(mid, mid, 3, stride=stride, groups=mid // group_width),
    ]
    if se_ratio:
        # SE width follows the block input width, as in pycls and timm's RegNetY.
        layers.append(SEModule(mid, rd_channels=round(in_chs * se_ratio)))
    layers.append(ConvNormAct(mid, out_chs, 1, apply_act=False))
    return nn.Sequential(*layers)


def _two_conv_transform(in_chs: int, out_chs: int, stride: int, last_act: bool) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(in_chs, out_chs, 3, stride=stride),
        ConvNormAct(out_chs, out_chs, 3, apply_act=last_act),
    )


def _make_block(
    spec: AnyNetSpec, stage: int, in_chs: int, stride: int, drop_path: float
) -> nn.Module:
    out_chs = spec.widths[stage]
    if spec.block_type == "vanilla":
        # No residual branch to drop: stochastic depth does not apply to vanilla blocks.
        return _two_conv_transform(in_chs, out_chs, stride, last_act=True)
    if spec.block_type == "res_basic":
        transform = _two_conv_transform(in_chs, out_chs, stride, last_act=False)
    else:
        transform = _bottleneck_transform(
            in_chs,
            out_chs,
            stride,
            spec.bottleneck_ratios[stage],
            spec.group_widths[stage],
            spec.se_ratio,
        )
    return ResidualBlock(transform, in_chs, out_chs, stride, drop_path)


def _init_weights(module: nn.Module) -> None:
    # Same scheme as pycls and timm's RegNet: He-normal (fan-out) convs, small-normal linears.
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / (fan_out // module.groups)))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.01)
        nn.init.zeros_(module.bias)


class AnyNet(nn.Module):
    """AnyNet: stem, stages of blocks and a pooled linear classifier (timm model API).

    Modules are ``stem``, ``stages`` (``stages[i][j]`` is block j of stage i) and ``head``.
    """

    def __init__(
        self,
        spec: AnyNetSpec,
        num_classes: int | None = None,
        in_chans: int = 3,
        small_input: bool = False,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        """Builds the network.

        Args:
            spec: Architecture; must pass ``spec.validate(design_space=False)``.
            num_classes: Classifier outputs, default ``spec.num_classes``; 0 drops the classifier.
            in_chans: Input channels.
            small_input: Use the ``small_stem`` (3x3 stride-1 conv) instead of the spec's stem,
                for CIFAR-size inputs.
            global_pool: timm pooling type of the head.
            drop_rate: Dropout before the classifier.
            drop_path_rate: Stochastic depth of the last residual block; block ``b`` of ``B``
                (counted over all stages) drops its branch with ``drop_path_rate * b / (B - 1)``,
                as timm's ResNet. Changes training only: parameters and MACs are unchanged.
            zero_init_last: Zero the last BN of each residual block.

        Raises:
            ValueError: If the spec is invalid.
        """
        super().__init__()
        spec.validate(design_space=False)
        self.spec = spec
        self.num_classes = spec.num_classes if num_classes is None else num_classes
        self.drop_rate = drop_rate
        stem_type = "small_stem" if small_input else spec.stem_type
        self.stem = Stem(in_chans, spec.stem_width, stem_type)
        reduction = STEM_LAYOUTS[stem_type].reduction
        self.feature_info = [dict(num_chs=spec.stem_width, reduction=reduction, module="stem")]
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        stages = []
        in_chs = spec.stem_width
        n_blocks, block = sum(spec.depths), 0
        for i, (depth, stride) in enumerate(zip(spec.depths, spec.strides, strict=True)):
            # Only the first block of a stage changes the width and applies the stride.
            blocks = []
            for j in range(depth):
                rate = drop_path_rate * block / max(1, n_blocks - 1)
                blocks.append(
                    _make_block(
                        spec, i, in_chs if j == 0 else spec.widths[i], stride if j == 0 else 1, rate
                    )
                )
                block += 1
            stages.append(nn.Sequential(*blocks))
            in_chs = spec.widths[i]
            reduction *= stride
            self.feature_info.append(
                dict(num_chs=in_chs, reduction=reduction, module=f"stages.{i}")
            )
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(
            in_chs, self.num_classes, pool_type=global_pool, drop_rate=drop_rate
        )
        self.apply(_init_weights)
        if zero_init_last:
            for module in self.modules():
                if isinstance(module, ResidualBlock):
                    module.zero_init_last()

    def get_classifier(self) -> nn.Module:
        """Returns the final linear layer (Identity when num_classes is 0)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the classifier (and optionally the pooling) with a freshly initialised one."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: unpooled features of shape (N, widths[-1], H/32, W/32)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling (+ dropout) and the classifier; ``pre_logits`` stops before the classifier."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv.conv",
        "classifier": "head.fc",
        **kwargs,
    }


def _reference_model_name(name: str) -> str:
    return f"anynet_{name}"


# register_model looks these up by entrypoint name, so they must exist before registration.
default_cfgs = generate_default_cfgs(
    {"anynet": _cfg(), **{_reference_model_name(name): _cfg() for name in REFERENCE_SPECS}}
)


def _as_spec(spec: AnyNetSpec | dict[str, Any] | str) -> AnyNetSpec:
    if isinstance(spec, AnyNetSpec):
        return spec
    if isinstance(spec, dict):
        return AnyNetSpec.from_dict(spec)
    if isinstance(spec, str):
        return AnyNetSpec.from_json(spec)
    raise ValueError(
        f"spec must be an AnyNetSpec, a dict or a JSON string, got {type(spec).__name__}"
    )


def _create_anynet(variant: str, spec: Any, pretrained: bool, **kwargs: Any) -> AnyNet:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist; use pretrained=False")
    spec = _as_spec(spec)
    num_classes = kwargs.setdefault("num_classes", spec.num_classes)
    small_input = kwargs.get("small_input", False)
    stem_type = "small_stem" if small_input else spec.stem_type
    # Resolution the network is meant for: CIFAR-size with the small stem, else ImageNet-size.
    side = 32 if small_input else 224
    reduction = STEM_LAYOUTS[stem_type].reduction * math.prod(spec.strides)
    overlay = {
        "num_classes": num_classes,
        "input_size": (kwargs.get("in_chans", 3), side, side),
        "pool_size": (max(1, side // reduction),) * 2,
        **(kwargs.pop("pretrained_cfg_overlay", None) or {}),
    }
    return build_model_with_cfg(
        AnyNet,
        variant,
        pretrained,
        spec=spec,
        pretrained_cfg_overlay=overlay,
        feature_cfg={"flatten_sequential": True},
        **kwargs,
    )


@register_model
def anynet(pretrained: bool = False, *, spec: Any, **kwargs: Any) -> AnyNet:
    """AnyNet of any spec: ``timm.create_model("anynet", spec=..., num_classes=...)``.

    Args:
        pretrained: Must be False (there are no weights).
        spec: An AnyNetSpec, its ``to_dict()`` or its ``to_json()``.
        **kwargs: AnyNet arguments (``num_classes`` overrides the spec's) and timm's
            ``features_only``/``out_indices``.
    """
    return _create_anynet("anynet", spec, pretrained, **kwargs)


def _register_reference(name: str, spec: AnyNetSpec) -> None:
    model_name = _reference_model_name(name)

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> AnyNet:
        return _create_anynet(model_name, spec, pretrained, **kwargs)

    # timm registers an entrypoint under its __name__; the loop avoids one def per reference.
    entrypoint.__name__ = entrypoint.__qualname__ = model_name
    entrypoint.__doc__ = f"AnyNet with the {name!r} reference spec (see REFERENCE_SPECS)."
    globals()[model_name] = register_model(entrypoint)


for _name, _spec in REFERENCE_SPECS.items():
    _register_reference(_name, _spec)


def build_model(
    spec: AnyNetSpec | dict[str, Any] | str,
    num_classes: int | None = None,
    small_input: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Builds an AnyNet through timm (so ``features_only=True`` etc. work).

    Args:
        spec: An AnyNetSpec, its dict or its JSON.
        num_classes: Classifier outputs; None keeps ``spec.num_classes``.
        small_input: Swap the stem for ``small_stem`` (3x3 stride-1 conv + BN + ReLU) so
            CIFAR-size inputs (16-32 px) still leave spatial extent for all four stages. The
            spec's FLOP band stays defined at 224 px with its own stem; count the small-input
            network with ``complexity(spec, resolution, small_input=True)``.
        **kwargs: Passed to ``timm.create_model`` / :class:`AnyNet`.

    Returns:
        The model (an AnyNet, or timm's feature wrapper with ``features_only=True``).
    """
    return timm.create_model(
        "anynet", spec=spec, num_classes=num_classes, small_input=small_input, **kwargs
    )
