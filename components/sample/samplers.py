"""Samplers of the AnyNetX design spaces and of RegNet (no torch).

The spaces follow Radosavovic et al., "Designing Network Design Spaces" (CVPR 2020) and the
distributions of pycls' sweep samplers (``pycls/sweep/random.py``). They are plain data
(:data:`SPACES`); :func:`sample_specs` draws candidates in vectorized batches, makes them
compatible (:func:`~components.sample.space.compatible_widths`), scores their FLOPs analytically
and keeps the unique ones inside the FLOP band that satisfy the space's rules.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from components.common.cli import did_you_mean
from components.sample.space import (
    BOTTLENECK_RATIOS,
    GROUP_WIDTHS,
    MAX_DEPTH,
    MAX_WIDTH,
    NUM_STAGES,
    WIDTH_QUANTUM,
    AnyNetSpec,
    batch_complexity,
    compatible_widths,
    regnet_stages,
)

# Candidates drawn per vectorized step. Part of the sampling procedure: changing it changes
# which specs a seed yields.
BATCH_SIZE = 4096
# Refused above this many specs; and after PROBE_TRIES candidates, sampling stops early when the
# acceptance rate so far cannot yield n within max_tries (a band no design reaches fails in
# seconds).
MAX_SPECS = 100_000
PROBE_TRIES = 500_000

_SHARED_BG = ("bottleneck_ratios", "group_widths")


@dataclass(frozen=True)
class AnyNetXSpace:
    """An AnyNetX design space: independent per-stage draws plus cross-stage constraints.

    Attributes:
        name: Space name.
        shared: Per-stage fields drawn once and used by every stage.
        non_decreasing: Per-stage fields that must not decrease from stage to stage; the draws
            are sorted (the order statistics of i.i.d. draws), and specs whose widths lose the
            order in :func:`adjust_compatibility` are rejected.
        depth_range: Inclusive range of the uniform integer depth ``d``.
        width_range: Inclusive range of the log-uniform width ``w``.
        width_quantum: ``w`` is a multiple of this.
        bottleneck_ratios: Values of ``b``, drawn uniformly.
        group_widths: Values of ``g``, drawn uniformly.
    """

    name: str
    shared: tuple[str, ...] = ()
    non_decreasing: tuple[str, ...] = ()
    depth_range: tuple[int, int] = (1, MAX_DEPTH)
    width_range: tuple[int, int] = (WIDTH_QUANTUM, MAX_WIDTH)
    width_quantum: int = WIDTH_QUANTUM
    bottleneck_ratios: tuple[float, ...] = BOTTLENECK_RATIOS
    group_widths: tuple[int, ...] = GROUP_WIDTHS

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draws n raw candidates (before compatibility adjustment).

        Returns:
            Dict with (n, 4) arrays "depths", "widths", "bottleneck_ratios", "group_widths"
            and an all-True (n,) array "valid".
        """
        samplers = {
            "depths": lambda size: rng.integers(self.depth_range[0], self.depth_range[1] + 1, size),
            "widths": lambda size: _log_uniform(rng, *self.width_range, self.width_quantum, size),
            "bottleneck_ratios": lambda size: rng.choice(self.bottleneck_ratios, size),
            "group_widths": lambda size: rng.choice(self.group_widths, size),
        }
        draws = {}
        for name, sample in samplers.items():
            columns = 1 if name in self.shared else NUM_STAGES
            draws[name] = np.broadcast_to(sample((n, columns)), (n, NUM_STAGES))
        for name in self.non_decreasing:
            draws[name] = np.sort(draws[name], axis=1)
        draws["valid"] = np.ones(n, dtype=bool)
        return draws


@dataclass(frozen=True)
class RegNetSpace:
    """RegNet: widths and depths from the quantized linear rule, shared b and g.

    Attributes:
        name: Space name.
        depth_range: Inclusive range of the uniform total depth ``d``.
        w0_range: Log-uniform range of the initial width ``w0`` (multiple of 8).
        wa_range: Log-uniform range of the slope ``wa`` (quantized to 0.1).
        wm_range: Log-uniform range of the multiplier ``wm`` (quantized to 0.001).
        bottleneck_ratios: Values of the shared ``b``.
        group_widths: Values of the shared ``g``.
        shared: Fields every stage shares (checked after compatibility adjustment).
        non_decreasing: Fields that must not decrease across stages (ditto).
    """

    name: str = "regnet"
    depth_range: tuple[int, int] = (NUM_STAGES, NUM_STAGES * MAX_DEPTH)
    w0_range: tuple[int, int] = (8, 256)
    wa_range: tuple[float, float] = (8.0, 256.0)
    wm_range: tuple[float, float] = (1.5, 3.0)
    bottleneck_ratios: tuple[float, ...] = BOTTLENECK_RATIOS
    group_widths: tuple[int, ...] = GROUP_WIDTHS
    shared: tuple[str, ...] = _SHARED_BG
    non_decreasing: tuple[str, ...] = ("widths",)

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draws n RegNets; "valid" is False where they do not have exactly 4 stages.

        Returns:
            Same layout as :meth:`AnyNetXSpace.draw`.
        """
        depth = rng.integers(self.depth_range[0], self.depth_range[1] + 1, n)
        w0 = _log_uniform(rng, *self.w0_range, WIDTH_QUANTUM, n)
        wa = _log_uniform(rng, *self.wa_range, 0.1, n)
        wm = _log_uniform(rng, *self.wm_range, 0.001, n)
        depths, widths, valid = regnet_stages(w0, wa, wm, depth)
        shape = (n, NUM_STAGES)
        return {
            # Invalid rows are never scored, but keep their depths positive anyway.
            "depths": np.where(valid[:, None], depths, 1),
            "widths": widths,
            "bottleneck_ratios": np.broadcast_to(rng.choice(self.bottleneck_ratios, (n, 1)), shape),
            "group_widths": np.broadcast_to(rng.choice(self.group_widths, (n, 1)), shape),
            "valid": valid,
        }


SPACES: dict[str, AnyNetXSpace | RegNetSpace] = {
    "anynetx_a": AnyNetXSpace("anynetx_a"),
    "anynetx_b": AnyNetXSpace("anynetx_b", shared=("bottleneck_ratios",)),
    "anynetx_c": AnyNetXSpace("anynetx_c", shared=_SHARED_BG),
    "anynetx_d": AnyNetXSpace("anynetx_d", shared=_SHARED_BG, non_decreasing=("widths",)),
    "anynetx_e": AnyNetXSpace("anynetx_e", shared=_SHARED_BG, non_decreasing=("widths", "depths")),
    "regnet": RegNetSpace(),
}


def _log_uniform(
    rng: np.random.Generator, low: float, high: float, quantum: float, size
) -> np.ndarray:
    # pycls' log_uniform: sample (low - min(q, low / 2), high] in log space, then ceil to q,
    # so every multiple of q in [low, high] is reachable with log-linear probability.
    f = np.exp(rng.uniform(np.log(low - min(quantum, low / 2)), np.log(high), size))
    # The round() removes float noise such as 24.500000000000004 from float quanta.
    return np.round(np.ceil(f / quantum) * quantum, 6)


def resolve_space(name: str) -> AnyNetXSpace | RegNetSpace:
    """Looks a space up by name; case and dashes are ignored ("AnyNetX-A" = "anynetx_a").

    Raises:
        ValueError: For an unknown name, listing the valid ones.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in SPACES:
        hint = did_you_mean(key, SPACES)
        raise ValueError(
            f"unknown design space {name!r}: {hint + ' ' if hint else ''}"
            f"valid spaces are {', '.join(SPACES)}"
        )
    return SPACES[key]


@dataclass
class SampleStats:
    """Bookkeeping of one :func:`sample_specs` call.

    Every tried candidate ends in exactly one of: accepted, rejected_by_flops (FLOPs outside
    the band), rejected_by_constraints (inside the band but breaking the space's rules after
    compatibility adjustment, or a RegNet without exactly 4 stages) or rejected_duplicate.
    """

    tried: int = 0
    accepted: int = 0
    rejected_by_flops: int = 0
    rejected_by_constraints: int = 0
    rejected_duplicate: int = 0
    seconds: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        """accepted / tried (0 before anything was tried)."""
        return self.accepted / self.tried if self.tried else 0.0

    def to_dict(self) -> dict[str, float]:
        """The counters plus acceptance_rate, as plain JSON types."""
        return {**asdict(self), "acceptance_rate": self.acceptance_rate}


@dataclass
class SampleResult:
    """Output of :func:`sample_specs`: the unique specs in draw order and the statistics."""

    space: str
    flops_range: tuple[float, float]
    seed: int
    specs: list[AnyNetSpec] = field(default_factory=list)
    stats: SampleStats = field(default_factory=SampleStats)


def _admits(space: AnyNetXSpace | RegNetSpace, spec: AnyNetSpec) -> bool:
    """Whether an adjusted spec satisfies the design-space bounds and the space's constraints."""
    try:
        spec.validate()
    except ValueError:
        return False
    shared_ok = all(len(set(getattr(spec, name))) == 1 for name in space.shared)
    ordered_ok = all(
        all(a <= b for a, b in zip(values, values[1:], strict=False))
        for values in (getattr(spec, name) for name in space.non_decreasing)
    )
    return shared_ok and ordered_ok


def sample_specs(
    space: str,
    n: int,
    flops_range: tuple[float, float] = (360e6, 400e6),
    seed: int = 0,
    max_tries: int | None = None,
    resolution: int = 224,
    num_classes: int = 1000,
) -> SampleResult:
    """Samples n unique specs of a design space whose FLOPs lie in a band.

    Candidates are drawn in batches of :data:`BATCH_SIZE` from ``np.random.default_rng(seed)``,
    made compatible, scored with :func:`~components.sample.space.batch_complexity` (spec's
    ``simple_stem_in`` stem, square ``resolution`` input) and checked in draw order, so the
    result depends only on the arguments.

    Args:
        space: A name of :data:`SPACES` (dashes and case ignored).
        n: Number of specs to return.
        flops_range: Inclusive (low, high) band of pycls FLOPs (multiply-adds).
        seed: Seed of the numpy Generator.
        max_tries: Candidates to try before giving up; default ``max(1_000_000, 2000 * n)``.
        resolution: Input side at which the band is evaluated.
        num_classes: Classifier outputs of the specs (part of their FLOPs).

    Returns:
        The specs (spec_hash-unique, in draw order) and the statistics.

    Raises:
        ValueError: For an unknown space, bad arguments, or fewer than n specs after max_tries.
    """
    definition = resolve_space(space)
    low, high = flops_range
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > MAX_SPECS:
        raise ValueError(f"n must be at most {MAX_SPECS} (a study samples hundreds), got {n}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0 < low <= high:
        raise ValueError(f"flops_range must satisfy 0 < low <= high, got {flops_range}")
    max_tries = max(1_000_000, 2000 * n) if max_tries is None else max_tries
    rng = np.random.default_rng(seed)
    result = SampleResult(space=definition.name, flops_range=(low, high), seed=seed)
    stats, seen = result.stats, set()
    start = time.perf_counter()
    while stats.accepted < n and stats.tried < max_tries:
        draws = definition.draw(rng, BATCH_SIZE)
        widths, groups = compatible_widths(
            draws["widths"], draws["bottleneck_ratios"], draws["group_widths"]
        )
        flops = batch_complexity(
            draws["depths"],
            widths,
            draws["bottleneck_ratios"],
            groups,
            num_classes=num_classes,
            resolution=resolution,
        )["flops"]
        in_band = (flops >= low) & (flops <= high)
        # Consume candidates in draw order; a batch is cut short when n or max_tries is hit.
        used = min(BATCH_SIZE, max_tries - stats.tried)
        for i in np.flatnonzero(draws["valid"][:used] & in_band[:used]):
            spec = AnyNetSpec(
                depths=draws["depths"][i].tolist(),
                widths=widths[i].tolist(),
                bottleneck_ratios=draws["bottleneck_ratios"][i].tolist(),
                group_widths=groups[i].tolist(),
                num_classes=num_classes,
            )
            if not _admits(definition, spec):
                stats.rejected_by_constraints += 1
                continue
            spec_hash = spec.spec_hash()
            if spec_hash in seen:
                stats.rejected_duplicate += 1
                continue
            seen.add(spec_hash)
            result.specs.append(spec)
            stats.accepted += 1
            if stats.accepted == n:
                used = int(i) + 1
                break
        stats.rejected_by_constraints += int((~draws["valid"][:used]).sum())
        stats.rejected_by_flops += int((draws["valid"][:used] & ~in_band[:used]).sum())
        stats.tried += used
        if stats.tried >= PROBE_TRIES and stats.accepted * max_tries < n * stats.tried:
            break  # at the rate seen so far, max_tries cannot reach n: say so now, not in hours
    stats.seconds = time.perf_counter() - start
    if stats.accepted < n:
        raise ValueError(
            f"found only {stats.accepted} of {n} {definition.name} specs with FLOPs in "
            f"[{low:.4g}, {high:.4g}] at {resolution}px after {stats.tried} tries "
            f"({stats.rejected_by_flops} outside the band); widen the FLOP band or raise "
            "max_tries"
        )
    return result
