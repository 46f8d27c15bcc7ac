"""AnyNet network specs, their analytic complexity and reference architectures (no torch).

An :class:`AnyNetSpec` fully describes an AnyNet network (Radosavovic et al., "Designing
Network Design Spaces", CVPR 2020): a stem, four stages of identical blocks and a classifier
head. Stage ``i`` has ``depths[i]`` blocks of output width ``widths[i]``; its first block applies
``strides[i]``. For the residual bottleneck block the inner (bottleneck) width is
``round(widths[i] / bottleneck_ratios[i])`` and its 3x3 conv is grouped with
``group_widths[i]`` channels per group. ``bottleneck_ratios`` is the paper's ``b`` (pycls stores
its inverse, ``bot_mul = 1 / b``).

Complexity follows the pycls convention exactly (``pycls.core.net.complexity``): ``flops`` counts
multiply-adds of convolutions and the classifier (bias additions included, BN/ReLU/pooling
excluded), ``params`` counts weights, biases and the two affine BN parameters per channel, and
``acts`` counts the output elements of convs, pools and linears. The counting functions take
numpy arrays so the samplers can score thousands of candidate specs in one call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from components.common.hashing import canonical_json, content_hash
from components.common.limits import check_limit
from components.common.validation import short_repr

BLOCK_TYPES = ("res_bottleneck", "res_basic", "vanilla")

# AnyNetX design-space bounds (paper Sec. 3.1): what the samplers may produce.
NUM_STAGES = 4
MAX_DEPTH = 16
MAX_WIDTH = 1024
WIDTH_QUANTUM = 8
BOTTLENECK_RATIOS = (1.0, 2.0, 4.0)
GROUP_WIDTHS = (1, 2, 4, 8, 16, 32)

# complexity(small_input=None) switches to the small-image stem at or below this resolution.
SMALL_INPUT_MAX_RESOLUTION = 64


@dataclass(frozen=True)
class StemLayout:
    """Layout of a stem: ``k x k`` conv (stride ``stride``) + BN + ReLU, optionally a max pool.

    Attributes:
        kernel_size: Conv kernel size.
        stride: Conv stride.
        max_pool: Whether a 3x3 stride-2 max pool follows (ResNet ImageNet stem).
    """

    kernel_size: int
    stride: int
    max_pool: bool

    @property
    def reduction(self) -> int:
        """Total spatial reduction of the stem."""
        return self.stride * (2 if self.max_pool else 1)


# Shared by the complexity count and the torch model so both always describe the same stem.
STEM_LAYOUTS: dict[str, StemLayout] = {
    "simple_stem_in": StemLayout(kernel_size=3, stride=2, max_pool=False),  # RegNet/AnyNet stem
    "res_stem_in": StemLayout(kernel_size=7, stride=2, max_pool=True),  # ResNet ImageNet stem
    "small_stem": StemLayout(kernel_size=3, stride=1, max_pool=False),  # CIFAR-size inputs
}


def _as_int(value: Any, name: str) -> int:
    # bool is an int subclass, but True as a depth is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {short_repr(value)} ({type(value).__name__})")
    return int(value)


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        got = f"{short_repr(value)} ({type(value).__name__})"
        raise ValueError(f"{name} must be a number, got {got}")
    return float(value)


def _as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {short_repr(value)} ({type(value).__name__})")
    return value


def _as_tuple(value: Any, name: str, convert: Callable[[Any, str], Any]) -> tuple:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list with one value per stage, got {short_repr(value)}")
    return tuple(convert(item, f"{name}[{i}]") for i, item in enumerate(value))


@dataclass(frozen=True, kw_only=True)
class AnyNetSpec:
    """Complete description of one AnyNet network.

    Construction normalises types (lists become tuples, ints in float fields become floats) and
    raises ValueError for wrong types; the architectural rules are checked by :meth:`validate`.

    Attributes:
        depths: Blocks per stage (``d_i``).
        widths: Output channels per stage (``w_i``).
        strides: Stride of the first block of each stage.
        bottleneck_ratios: ``b_i``; the bottleneck width is ``round(w_i / b_i)``. Only used by
            ``res_bottleneck`` blocks (must be 1 for the other block types).
        group_widths: ``g_i``, channels per group of the bottleneck 3x3 conv (groups =
            bottleneck width // g_i). Only used by ``res_bottleneck`` (must be 1 otherwise).
        block_type: One of :data:`BLOCK_TYPES`: ``res_bottleneck`` (1x1, grouped 3x3, 1x1 with a
            residual), ``res_basic`` (two 3x3 with a residual) or ``vanilla`` (two 3x3).
        stem_type: One of :data:`STEM_LAYOUTS`.
        stem_width: Output channels of the stem.
        se_ratio: Squeeze-excitation ratio (SE width = round(block input width * se_ratio),
            as in pycls/RegNetY); None disables SE. Only for ``res_bottleneck``.
        num_classes: Classifier outputs; 0 means no classifier (pooled features).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...] = (2, 2, 2, 2)
    bottleneck_ratios: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    group_widths: tuple[int, ...] = (1, 1, 1, 1)
    block_type: str = "res_bottleneck"
    stem_type: str = "simple_stem_in"
    stem_width: int = 32
    se_ratio: float | None = None
    num_classes: int = 1000

    def __post_init__(self) -> None:
        # object.__setattr__ is the documented way to normalise fields of a frozen dataclass.
        for name in ("depths", "widths", "strides", "group_widths"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name, _as_int))
        ratios = _as_tuple(self.bottleneck_ratios, "bottleneck_ratios", _as_float)
        object.__setattr__(self, "bottleneck_ratios", ratios)
        for name in ("stem_width", "num_classes"):
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        for name in ("block_type", "stem_type"):
            _as_str(getattr(self, name), name)
        if self.se_ratio is not None:
            object.__setattr__(self, "se_ratio", _as_float(self.se_ratio, "se_ratio"))

    # ----------------------------------------------------------------------------- derived
    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.depths)

    @property
    def cumulative_depth(self) -> int:
        """Total number of blocks, ``sum(d_i)``."""
        return sum(self.depths)

    @property
    def cumulative_width(self) -> int:
        """Sum of the stage widths, ``sum(w_i)``."""
        return sum(self.widths)

    @property
    def mean_bottleneck_ratio(self) -> float:
        """Mean of the stage bottleneck ratios, ``mean(b_i)`` (unweighted by depth)."""
        return sum(self.bottleneck_ratios) / self.num_stages

    @property
    def mean_group_width(self) -> float:
        """Mean of the stage group widths, ``mean(g_i)`` (unweighted by depth)."""
        return sum(self.group_widths) / self.num_stages

    def derived_quantities(self, resolution: int = 224) -> dict[str, float]:
        """The scalars that summarise the architecture in one place (MLflow params, tables).

        Total depth and width, mean bottleneck ratio and group width, and the exact
        ``flops``/``params`` at ``resolution`` px with the spec's own stem (the FLOP-band
        quantity of the samplers at 224).

        Raises:
            ValueError: If the spec is structurally invalid (no complexity then).
        """
        counts = complexity(self, resolution=resolution, small_input=False)
        return {
            "total_depth": self.cumulative_depth,
            "total_width": self.cumulative_width,
            "mean_bottleneck_ratio": self.mean_bottleneck_ratio,
            "mean_group_width": self.mean_group_width,
            "flops": counts.flops,
            "params": counts.params,
        }

    @property
    def bottleneck_widths(self) -> tuple[int, ...]:
        """Inner width of each stage's blocks, ``round(w_i / b_i)``."""
        return tuple(round(w / b) for w, b in zip(self.widths, self.bottleneck_ratios, strict=True))

    def stage_table(self) -> list[dict[str, Any]]:
        """One row per stage with the per-stage fields and derived widths and groups.

        Returns:
            List of dicts with keys stage, depth, width, stride, bottleneck_ratio,
            bottleneck_width, group_width, groups.
        """
        return [
            {
                "stage": i + 1,
                "depth": d,
                "width": w,
                "stride": s,
                "bottleneck_ratio": b,
                "bottleneck_width": wb,
                "group_width": g,
                "groups": wb // g,
            }
            for i, (d, w, s, b, wb, g) in enumerate(
                zip(
                    self.depths,
                    self.widths,
                    self.strides,
                    self.bottleneck_ratios,
                    self.bottleneck_widths,
                    self.group_widths,
                    strict=True,
                )
            )
        ]

    # -------------------------------------------------------------------------- validation
    def validate(self, *, design_space: bool = True) -> None:
        """Checks the spec and raises ValueError naming the first broken rule.

        Structural rules (always): per-stage fields have one entry per stage; depths, widths,
        group widths >= 1; strides in {1, 2}; bottleneck ratios >= 1; known block and stem
        types; SE only with ``res_bottleneck``; b = g = 1 for the other block types; and for
        ``res_bottleneck`` the bottleneck width ``round(w / b)`` is divisible by ``g`` (fix with
        :func:`adjust_compatibility`). Sizes within the limits table
        (components.common.limits): stages, depth per stage and in total, widths, classes and
        the parameter count, so an absurd spec is refused before a model is built.

        Design-space rules (``design_space=True``; the AnyNetX bounds of the paper): 4 stages,
        ``1 <= d_i <= 16``, ``w_i <= 1024`` and a multiple of 8, ``b_i in {1, 2, 4}``,
        ``g_i in {1, 2, 4, 8, 16, 32}``. Reference networks (ResNet-50 has widths up to 2048)
        lie outside these bounds and are checked with ``design_space=False``.

        Args:
            design_space: Also enforce the AnyNetX design-space bounds.

        Raises:
            ValueError: If a rule is broken.
        """
        self._validate_structure()
        self._validate_size()
        if design_space:
            self._validate_design_space()  # bounds the parameters far below the limit
        else:
            # Counted only now that the sizes keep it within int64.
            params = _counts(self, resolution=224, small_input=False)["params"][0]
            check_limit("params", int(params), "the parameter count")

    def _validate_structure(self) -> None:
        n = self.num_stages
        for name in ("widths", "strides", "bottleneck_ratios", "group_widths"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries but depths has {n}: "
                    "give one value per stage"
                )
        if n == 0:
            raise ValueError("depths is empty: a network needs at least one stage")
        for name in ("depths", "widths", "group_widths"):
            _check_each(self, name, lambda v: v >= 1, "must be >= 1")
        _check_each(self, "strides", lambda v: v in (1, 2), "must be 1 or 2")
        _check_each(self, "bottleneck_ratios", lambda v: v >= 1, "must be >= 1")
        if self.block_type not in BLOCK_TYPES:
            raise ValueError(
                f"block_type {short_repr(self.block_type)} is unknown; use one of {BLOCK_TYPES}"
            )
        if self.stem_type not in STEM_LAYOUTS:
            raise ValueError(
                f"stem_type {short_repr(self.stem_type)} is unknown; use one of "
                f"{tuple(STEM_LAYOUTS)}"
            )
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be >= 1, got {self.stem_width}")
        if self.num_classes < 0:
            raise ValueError(
                f"num_classes must be >= 0 (0 = no classifier), got {self.num_classes}"
            )
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {self.se_ratio}")
        if self.block_type != "res_bottleneck":
            # b, g and SE do not exist in these blocks; forcing the neutral value keeps one
            # network from having several specs (and spec hashes).
            unused = {
                "bottleneck_ratios": any(b != 1 for b in self.bottleneck_ratios),
                "group_widths": any(g != 1 for g in self.group_widths),
                "se_ratio": self.se_ratio is not None,
            }
            for name, is_set in unused.items():
                if is_set:
                    raise ValueError(
                        f"{name} is not used by block_type {self.block_type!r}: leave it at its "
                        "default (1 per stage, se_ratio None)"
                    )
            return
        for i, (w, b, wb, g) in enumerate(
            zip(
                self.widths,
                self.bottleneck_ratios,
                self.bottleneck_widths,
                self.group_widths,
                strict=True,
            )
        ):
            if wb % g:
                raise ValueError(
                    f"stage {i + 1}: bottleneck width {wb} (= round(width {w} / bottleneck ratio "
                    f"{b:g})) is not a multiple of group width {g}; call "
                    "adjust_compatibility(spec) to round the widths to compatible values"
                )

    def _validate_size(self) -> None:
        check_limit("stages", self.num_stages, "the number of stages (entries of depths)")
        check_limit("stage_depth", self.depths, "depths")
        check_limit("total_depth", self.cumulative_depth, "the total depth (sum of depths)")
        for name in ("widths", "group_widths", "stem_width"):
            check_limit("width", getattr(self, name), name)
        check_limit("num_classes", self.num_classes, "num_classes")

    def _validate_design_space(self) -> None:
        if self.num_stages != NUM_STAGES:
            raise ValueError(
                f"the AnyNetX design space has {NUM_STAGES} stages, got {self.num_stages}; "
                "use validate(design_space=False) for other networks"
            )
        _check_each(self, "depths", lambda v: v <= MAX_DEPTH, f"must be <= {MAX_DEPTH}")
        _check_each(
            self,
            "widths",
            lambda v: v <= MAX_WIDTH and v % WIDTH_QUANTUM == 0,
            f"must be a multiple of {WIDTH_QUANTUM} and <= {MAX_WIDTH}",
        )
        _check_each(
            self, "bottleneck_ratios", lambda v: v in BOTTLENECK_RATIOS, "must be 1, 2 or 4"
        )
        _check_each(self, "group_widths", lambda v: v in GROUP_WIDTHS, f"must be in {GROUP_WIDTHS}")

    # ------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Returns the spec as plain JSON types (tuples become lists)."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnyNetSpec:
        """Builds a spec from :meth:`to_dict` output (missing optional fields take defaults).

        Raises:
            ValueError: For a non-mapping, an unknown or missing field, or a wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an AnyNetSpec must be a JSON object, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown AnyNetSpec field(s) {unknown}; valid fields are {valid}")
        missing = [name for name in ("depths", "widths") if name not in data]
        if missing:
            raise ValueError(f"AnyNetSpec field(s) {missing} are required")
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace (the input of :meth:`spec_hash`)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> AnyNetSpec:
        """Parses :meth:`to_json` output (see :meth:`from_dict` for the errors)."""
        return cls.from_dict(json.loads(text))

    def spec_hash(self) -> str:
        """First 16 hex characters of the sha256 of the canonical JSON."""
        return content_hash(self.to_dict())


def _check_each(spec: AnyNetSpec, name: str, ok: Callable[[Any], bool], rule: str) -> None:
    for i, value in enumerate(getattr(spec, name)):
        if not ok(value):
            raise ValueError(f"{name}[{i}] = {value:g} {rule}")


# ------------------------------------------------------------------------- compatibility
def compatible_widths(
    widths: np.ndarray, bottleneck_ratios: np.ndarray, group_widths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Array form of :func:`adjust_compatibility` (any matching shapes).

    Returns:
        The adjusted (widths, group_widths) as int64 arrays.
    """
    inner = np.maximum(1.0, np.floor(widths / bottleneck_ratios))
    groups = np.minimum(group_widths, inner)
    # np.round rounds halves to even, exactly like the Python round() pycls uses.
    inner = np.maximum(groups, np.round(inner / groups) * groups)
    return (inner * bottleneck_ratios).astype(np.int64), groups.astype(np.int64)


def adjust_compatibility(spec: AnyNetSpec) -> AnyNetSpec:
    """Makes widths, bottleneck ratios and group widths compatible, as pycls does.

    Mirrors ``pycls.models.anynet.adjust_block_compatibility`` for each stage: the bottleneck
    width ``v = max(1, floor(w / b))`` caps the group width (``g = min(g, v)``), ``v`` is rounded
    to the nearest multiple of ``g`` (halves to even, at least ``g``) and the width becomes
    ``w = int(v * b)``. Bottleneck ratios never change. Only ``res_bottleneck`` uses b and g, so
    other specs are returned unchanged. The result may leave the AnyNetX bounds (a capped group
    width such as 6 is not in ``GROUP_WIDTHS``); the samplers reject such draws.

    Args:
        spec: Any spec whose stage fields have one entry per stage.

    Returns:
        A spec with adjusted ``widths`` and ``group_widths``; every other field is unchanged.
    """
    if spec.block_type != "res_bottleneck":
        return spec
    widths, groups = compatible_widths(
        np.asarray(spec.widths, dtype=np.float64),
        np.asarray(spec.bottleneck_ratios, dtype=np.float64),
        np.asarray(spec.group_widths, dtype=np.float64),
    )
    return replace(spec, widths=tuple(widths.tolist()), group_widths=tuple(groups.tolist()))


# --------------------------------------------------------------------------------- RegNet
def regnet_stages(
    w0: np.ndarray,
    wa: np.ndarray,
    wm: np.ndarray,
    depth: np.ndarray,
    *,
    num_stages: int = NUM_STAGES,
    quantum: int = WIDTH_QUANTUM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantized linear RegNet parameterization, vectorized over N parameter sets.

    Same arithmetic as ``pycls.models.regnet.generate_regnet``: block ``j`` gets the continuous
    width ``u_j = w0 + wa * j``, the exponent ``k_j = round(log(u_j / w0) / log(wm))`` and the
    width ``round(w0 * wm**k_j / quantum) * quantum``; blocks with equal width form a stage.

    Args:
        w0: Initial width, shape (N,), a positive multiple of ``quantum``.
        wa: Width slope, shape (N,), >= 0.
        wm: Width multiplier, shape (N,), > 1.
        depth: Total number of blocks, shape (N,), >= 1.
        num_stages: Required number of stages.
        quantum: Width quantum.

    Returns:
        (depths, widths, valid): int64 arrays of shape (N, num_stages) and a bool array of
        shape (N,) that is False where the parameters do not give exactly ``num_stages``
        distinct stages (pycls' ``num_stages == max_stages`` check); rows with valid False hold
        meaningless values.
    """
    w0, wa, wm = (np.asarray(x, dtype=np.float64) for x in (w0, wa, wm))
    depth = np.asarray(depth, dtype=np.int64)
    block = np.arange(depth.max(), dtype=np.float64)
    in_net = block[None, :] < depth[:, None]
    widths_cont = block[None, :] * wa[:, None] + w0[:, None]
    ks = np.round(np.log(widths_cont / w0[:, None]) / np.log(wm[:, None]))
    ks = np.where(in_net, ks, -1.0)
    stage_ids = np.arange(num_stages, dtype=np.float64)
    depths = (ks[:, :, None] == stage_ids).sum(axis=1)
    widths = np.round(w0[:, None] * np.power(wm[:, None], stage_ids) / quantum).astype(np.int64)
    widths *= quantum
    valid = (
        (ks.max(axis=1) == num_stages - 1)
        & (depths >= 1).all(axis=1)
        & (np.diff(widths, axis=1) > 0).all(axis=1)
    )
    return depths.astype(np.int64), widths, valid


def regnet_spec(
    w0: int,
    wa: float,
    wm: float,
    depth: int,
    group_width: int,
    bottleneck_ratio: float = 1.0,
    **spec_fields: Any,
) -> AnyNetSpec:
    """Builds the compatibility-adjusted AnyNet spec of a 4-stage RegNet.

    Args:
        w0, wa, wm, depth: RegNet parameters (see :func:`regnet_stages`).
        group_width: Group width ``g`` shared by all stages.
        bottleneck_ratio: Bottleneck ratio ``b`` shared by all stages.
        **spec_fields: Further AnyNetSpec fields (e.g. ``se_ratio``).

    Raises:
        ValueError: If the parameters do not give exactly 4 stages.
    """
    depths, widths, valid = regnet_stages([w0], [wa], [wm], [depth])
    if not valid[0]:
        raise ValueError(
            f"RegNet(w0={w0}, wa={wa}, wm={wm}, depth={depth}) does not have exactly "
            f"{NUM_STAGES} distinct stages; change wa or wm"
        )
    spec = AnyNetSpec(
        depths=tuple(depths[0].tolist()),
        widths=tuple(widths[0].tolist()),
        bottleneck_ratios=(bottleneck_ratio,) * NUM_STAGES,
        group_widths=(group_width,) * NUM_STAGES,
        **spec_fields,
    )
    return adjust_compatibility(spec)


# ----------------------------------------------------------------------------- complexity
@dataclass(frozen=True)
class Complexity:
    """Analytic complexity in the pycls convention.

    Attributes:
        flops: Multiply-adds of convs and linears, plus their bias additions.
        params: Parameters (weights, biases, BN scale and shift).
        acts: Activations (output elements of convs, pools and linears).
        weight_macs: ``flops`` without the bias additions; equals half the total of
            ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 per MAC and ignores
            biases, BN, activations and pooling).
    """

    flops: int
    params: int
    acts: int
    weight_macs: int


@dataclass
class _Tally:
    """Running complexity totals; each count is an int or an array with one entry per net.

    Every method takes ``times``: how often the layer occurs (repeated blocks, or a 0/1 mask
    for layers that exist only in some of the nets).
    """

    flops: Any = 0
    params: Any = 0
    acts: Any = 0
    bias_flops: Any = 0

    def conv(self, h, c_in, c_out, k, *, stride=1, groups=1, bias=False, times=1):
        """Counts a k x k conv with 'same' padding on an h x h input; returns the output size."""
        h = (h - 1) // stride + 1
        bias_flops = c_out * h * h if bias else 0
        self.flops += times * (k * k * c_in * c_out * h * h // groups + bias_flops)
        self.bias_flops += times * bias_flops
        self.params += times * (k * k * c_in * c_out // groups + (c_out if bias else 0))
        self.acts += times * c_out * h * h
        return h

    def norm(self, c, *, times=1):
        """Counts a BatchNorm over c channels (scale and shift)."""
        self.params += times * 2 * c

    def max_pool(self, h, c, *, stride):
        """Counts a pooling layer; returns the output size."""
        h = (h - 1) // stride + 1
        self.acts += c * h * h
        return h

    def linear(self, c_in, c_out):
        """Counts a linear layer with bias on a pooled (1 x 1) input."""
        self.flops += c_in * c_out + c_out
        self.bias_flops += c_out
        self.params += c_in * c_out + c_out
        self.acts += c_out


def _round_int(x):
    return np.rint(x).astype(np.int64)


def _bottleneck_cx(t, h, w_in, w_out, stride, ratio, group_width, se_ratio, times):
    # 1x1 -> grouped 3x3 (strided) -> [SE] -> 1x1, each conv followed by BN.
    w_b = _round_int(w_out / ratio)
    t.conv(h, w_in, w_b, 1, times=times)
    t.norm(w_b, times=times)
    h_out = t.conv(h, w_b, w_b, 3, stride=stride, groups=w_b // group_width, times=times)
    t.norm(w_b, times=times)
    if se_ratio:
        w_se = _round_int(w_in * se_ratio)
        t.conv(1, w_b, w_se, 1, bias=True, times=times)
        t.conv(1, w_se, w_b, 1, bias=True, times=times)
    t.conv(h_out, w_b, w_out, 1, times=times)
    t.norm(w_out, times=times)
    return h_out


def _two_conv_cx(t, h, w_in, w_out, stride, times):
    # res_basic and vanilla blocks: 3x3 (strided) -> 3x3, each conv followed by BN.
    h_out = t.conv(h, w_in, w_out, 3, stride=stride, times=times)
    t.norm(w_out, times=times)
    t.conv(h_out, w_out, w_out, 3, times=times)
    t.norm(w_out, times=times)
    return h_out


def _block_cx(t, block_type, h, w_in, w_out, stride, *, ratio, group_width, se_ratio, times):
    if block_type != "vanilla":
        # Residual blocks project the shortcut (1x1 conv + BN) when the shape changes.
        needs_proj = times * ((w_in != w_out) | (stride != 1))
        t.conv(h, w_in, w_out, 1, stride=stride, times=needs_proj)
        t.norm(w_out, times=needs_proj)
    if block_type == "res_bottleneck":
        return _bottleneck_cx(t, h, w_in, w_out, stride, ratio, group_width, se_ratio, times)
    return _two_conv_cx(t, h, w_in, w_out, stride, times)


def batch_complexity(
    depths: np.ndarray,
    widths: np.ndarray,
    bottleneck_ratios: np.ndarray,
    group_widths: np.ndarray,
    *,
    strides: Sequence[int] = (2, 2, 2, 2),
    block_type: str = "res_bottleneck",
    stem_type: str = "simple_stem_in",
    stem_width: int = 32,
    se_ratio: float | None = None,
    num_classes: int = 1000,
    resolution: int = 224,
) -> dict[str, np.ndarray]:
    """Complexity of N networks that differ only in their per-stage depths, widths, b and g.

    Inputs are not validated (see :meth:`AnyNetSpec.validate`); use :func:`complexity` for a
    single spec.

    Args:
        depths, widths, bottleneck_ratios, group_widths: Arrays of shape (N, S).
        strides: The S stage strides, shared by all N networks.
        block_type, stem_type, stem_width, se_ratio, num_classes: Shared spec fields.
        resolution: Side of the square input image.

    Returns:
        Dict with int64 arrays of shape (N,) under "flops", "params", "acts" and "weight_macs".
    """
    depths, widths, group_widths = (
        np.asarray(x, dtype=np.int64) for x in (depths, widths, group_widths)
    )
    ratios = np.asarray(bottleneck_ratios, dtype=np.float64)
    t = _Tally()
    stem = STEM_LAYOUTS[stem_type]
    h = t.conv(resolution, 3, stem_width, stem.kernel_size, stride=stem.stride)
    t.norm(stem_width)
    if stem.max_pool:
        h = t.max_pool(h, stem_width, stride=2)
    w_in = np.full(depths.shape[0], stem_width, dtype=np.int64)
    for i, stride in enumerate(strides):
        w_out = widths[:, i]
        shared = {"ratio": ratios[:, i], "group_width": group_widths[:, i], "se_ratio": se_ratio}
        # A stage is its first block (stride, new width) plus d - 1 identical blocks.
        h_out = _block_cx(t, block_type, h, w_in, w_out, stride, times=1, **shared)
        _block_cx(t, block_type, h_out, w_out, w_out, 1, times=depths[:, i] - 1, **shared)
        h, w_in = h_out, w_out
    t.linear(w_in, num_classes)
    n = depths.shape[0]
    return {
        "flops": np.broadcast_to(t.flops, n),
        "params": np.broadcast_to(t.params, n),
        "acts": np.broadcast_to(t.acts, n),
        "weight_macs": np.broadcast_to(t.flops - t.bias_flops, n),
    }


def uses_small_stem(resolution: int, small_input: bool | None) -> bool:
    """Whether the small-image stem replaces the spec's stem.

    Args:
        resolution: Input side in pixels.
        small_input: True/False force the choice; None picks the small stem at or below
            :data:`SMALL_INPUT_MAX_RESOLUTION` pixels.
    """
    return resolution <= SMALL_INPUT_MAX_RESOLUTION if small_input is None else small_input


def complexity(
    spec: AnyNetSpec, resolution: int = 224, small_input: bool | None = None
) -> Complexity:
    """Exact analytic complexity of a spec in the pycls convention.

    Args:
        spec: A structurally valid spec (design-space bounds are not required).
        resolution: Side of the square input image.
        small_input: Count the network with the small-image stem (``small_stem``) instead of
            the spec's stem, as ``build_model(small_input=True)`` builds it; None decides from
            the resolution (see :func:`uses_small_stem`). FLOP bands of the samplers are
            always at 224 px with the spec's own stem.

    Stochastic depth (``build_model(drop_path_rate=...)``, the recipe's ``drop_path``) is not
    an input: it drops residual branches while training only, adds no parameters and leaves
    the inference network (and so these counts) unchanged.

    Raises:
        ValueError: If the spec is structurally invalid.
    """
    spec.validate(design_space=False)
    counts = _counts(spec, resolution, small_input)
    return Complexity(**{name: int(value[0]) for name, value in counts.items()})


def _counts(spec: AnyNetSpec, resolution: int, small_input: bool | None) -> dict[str, np.ndarray]:
    """:func:`batch_complexity` of one structurally valid spec."""
    stem_type = "small_stem" if uses_small_stem(resolution, small_input) else spec.stem_type
    return batch_complexity(
        [spec.depths],
        [spec.widths],
        [spec.bottleneck_ratios],
        [spec.group_widths],
        strides=spec.strides,
        block_type=spec.block_type,
        stem_type=stem_type,
        stem_width=spec.stem_width,
        se_ratio=spec.se_ratio,
        num_classes=spec.num_classes,
        resolution=resolution,
    )


# ------------------------------------------------------------------------------ references
def _resnet(depths: tuple[int, ...], block_type: str, **spec_fields: Any) -> AnyNetSpec:
    return AnyNetSpec(
        depths=depths,
        strides=(1, 2, 2, 2),
        block_type=block_type,
        stem_type="res_stem_in",
        stem_width=64,
        **spec_fields,
    )


# Well-known networks expressed as AnyNet specs (validate with design_space=False). RegNet
# parameters are those of pycls' model zoo (and timm's regnetx_*/regnety_* configs).
REFERENCE_SPECS: dict[str, AnyNetSpec] = {
    "resnet18": _resnet((2, 2, 2, 2), "res_basic", widths=(64, 128, 256, 512)),
    "resnet50": _resnet(
        (3, 4, 6, 3),
        "res_bottleneck",
        widths=(256, 512, 1024, 2048),
        bottleneck_ratios=(4, 4, 4, 4),
        group_widths=(64, 128, 256, 512),  # one group: the whole bottleneck width
    ),
    "resnext50_32x4d": _resnet(
        (3, 4, 6, 3),
        "res_bottleneck",
        widths=(256, 512, 1024, 2048),
        bottleneck_ratios=(2, 2, 2, 2),
        group_widths=(4, 8, 16, 32),  # 32 groups
    ),
    "regnetx_200mf": regnet_spec(w0=24, wa=36.44, wm=2.49, depth=13, group_width=8),
    "regnetx_400mf": regnet_spec(w0=24, wa=24.48, wm=2.54, depth=22, group_width=16),
    "regnetx_600mf": regnet_spec(w0=48, wa=36.97, wm=2.24, depth=16, group_width=24),
    "regnetx_800mf": regnet_spec(w0=56, wa=35.73, wm=2.28, depth=16, group_width=16),
    "regnety_400mf": regnet_spec(w0=48, wa=27.89, wm=2.09, depth=16, group_width=8, se_ratio=0.25),
}
