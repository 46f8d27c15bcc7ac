"""Training recipes as data."""

import pytest

from components.train.recipes import RECIPES, resolve_recipe
from components.train.trial import _lr_at


def test_overrides_and_validation():
    recipe = resolve_recipe("apr_tiny", {"epochs": 5, "lr": 1})
    assert recipe.epochs == 5 and recipe.lr == 1.0 and isinstance(recipe.lr, float)
    assert RECIPES["apr_tiny"].epochs == 3, "the registry is not modified"
    with pytest.raises(ValueError, match="unknown recipe field 'epoch'.*epochs"):
        resolve_recipe("apr_tiny", {"epoch": 5})
    with pytest.raises(ValueError, match="'hflip' must be bool"):
        resolve_recipe("apr_tiny", {"hflip": 1})
    with pytest.raises(ValueError, match="'epochs' must be int"):
        resolve_recipe("apr_tiny", {"epochs": 2.5})
    with pytest.raises(ValueError, match="at least 1"):
        resolve_recipe("apr_tiny", {"epochs": 0})


def test_schedule_warms_up_then_decays_to_zero():
    recipe = resolve_recipe("apr_tiny", {"epochs": 4, "warmup_epochs": 1.0, "lr": 0.4})
    lrs = [_lr_at(recipe, step, 10) for step in range(40)]
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[9] == pytest.approx(0.4)
    assert max(lrs) == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 0.01
