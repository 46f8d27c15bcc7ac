"""Design-space samplers: constraints, FLOP band, determinism and errors."""

import time

import pytest

from components.sample.samplers import SPACES, resolve_space, sample_specs
from components.sample.space import complexity

BAND = (360e6, 400e6)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_specs_are_unique_in_band_and_inside_the_space(space):
    result = sample_specs(space, 30, seed=3)
    specs = result.specs
    assert len(specs) == 30
    assert len({spec.spec_hash() for spec in specs}) == 30
    definition = SPACES[space]
    for spec in specs:
        spec.validate()
        assert BAND[0] <= complexity(spec).flops <= BAND[1]
        for name in definition.shared:
            assert len(set(getattr(spec, name))) == 1, (name, spec)
        for name in definition.non_decreasing:
            values = getattr(spec, name)
            assert list(values) == sorted(values), (name, spec)


def test_anynetx_a_leaves_stages_independent():
    specs = sample_specs("anynetx_a", 50).specs
    assert any(len(set(spec.bottleneck_ratios)) > 1 for spec in specs)
    assert any(list(spec.widths) != sorted(spec.widths) for spec in specs)


def test_stats_account_for_every_candidate():
    stats = sample_specs("regnet", 20, seed=1).stats
    rejected = stats.rejected_by_flops + stats.rejected_by_constraints + stats.rejected_duplicate
    assert stats.accepted == 20 and stats.tried == stats.accepted + rejected
    assert stats.acceptance_rate == pytest.approx(20 / stats.tried)
    assert set(stats.to_dict()) >= {"tried", "accepted", "acceptance_rate", "seconds"}


def test_deterministic_from_seed():
    first = [s.spec_hash() for s in sample_specs("anynetx_c", 40, seed=7).specs]
    again = [s.spec_hash() for s in sample_specs("anynetx_c", 40, seed=7, max_tries=10**7).specs]
    other = [s.spec_hash() for s in sample_specs("anynetx_c", 40, seed=8).specs]
    assert first == again and first != other
    # A longer run starts with the same specs.
    assert [s.spec_hash() for s in sample_specs("anynetx_c", 60, seed=7).specs][:40] == first


def test_band_uses_num_classes_and_resolution():
    for spec in sample_specs("anynetx_e", 10, flops_range=(20e6, 40e6), num_classes=10).specs:
        assert spec.num_classes == 10 and 20e6 <= complexity(spec).flops <= 40e6
    for spec in sample_specs("anynetx_e", 10, resolution=112).specs:
        assert BAND[0] <= complexity(spec, 112, small_input=False).flops <= BAND[1]


def test_impossible_band_reports_the_band_and_the_tries():
    with pytest.raises(ValueError, match=r"\[1, 2\].*after 20000 tries.*widen the FLOP band"):
        sample_specs("anynetx_a", 5, flops_range=(1, 2), max_tries=20_000)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"unknown design space 'anynetx_z'.*anynetx_a"):
        sample_specs("anynetx_z", 5)
    with pytest.raises(ValueError, match="n must be"):
        sample_specs("anynetx_a", 0)
    with pytest.raises(ValueError, match="flops_range"):
        sample_specs("anynetx_a", 5, flops_range=(400e6, 360e6))


def test_space_names_ignore_dashes_and_case():
    assert resolve_space("AnyNetX-B") is SPACES["anynetx_b"]


def test_500_specs_take_seconds():
    start = time.perf_counter()
    result = sample_specs("anynetx_a", 500)
    assert len(result.specs) == 500
    assert time.perf_counter() - start < 10
