"""The ``hub:`` row of a model list: its syntax, and an expansion that is bounded, in a fixed
order, within its parameter budget, cached, and that downloads nothing.

The expansions use timm's ``test_*`` models (18 architectures of 0.27M-1.1M parameters, 13 with
weights at the hub), which build on the meta device in milliseconds.
"""

from __future__ import annotations

import pytest

from components.transfer.errors import TransferError

TINY = "hub:test_*?pretrained=false&max_params=500K"


@pytest.fixture(autouse=True)
def params_cache(tmp_path, monkeypatch):
    """Each test counts into its own cache file."""
    from components.transfer import hub

    monkeypatch.setattr(hub, "PARAMS_CACHE", tmp_path / "params")
    return tmp_path / "params"


def _meta_params(name: str) -> int:
    """Parameters of ``name`` counted here, independently of the module under test."""
    import timm
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("hub:", "no pattern: write e.g. hub:*?max_params=30M"),
        ("hub:*?max=1", "unknown key(s) max: choose from max_params, pretrained"),
        ("hub:*?max_params=3X", "max_params '3X' is not a count: write e.g. 30M"),
        ("hub:*?max_params=3G", "max_params must be in [1, 2000000000], got 3000000000"),
        ("hub:*?pretrained=maybe", "pretrained must be true or false"),
        ("hub:*?pretrained=false&tags=all", "tags chooses among pretrained weights"),
        ("hub:*?limit=0", "limit must be in [1, 5000], got 0"),
        ("hub:*?limit=1&limit=2", "limit given more than once"),
        ("hub:*?seed=3", "seed draws a sample: give sample=N too"),
    ],
)
def test_a_bad_row_is_one_line_naming_it(row, needle):
    from components.transfer.hub import parse_hub

    with pytest.raises(TransferError) as error:
        parse_hub(row, "models.csv")
    message = str(error.value)
    assert message.startswith(f"models.csv: {row}: ") and needle in message, message
    assert "\n" not in message


def test_the_syntax_and_its_defaults():
    from components.transfer.hub import DEFAULT_LIMIT, parse_hub

    query = parse_hub("hub:convnext*?max_params=1.5M&tags=all&limit=20&sample=5&seed=2")
    assert (query.pattern, query.max_params, query.pretrained, query.tags) == (
        "convnext*",
        1_500_000,
        True,
        "all",
    )
    assert (query.limit, query.sample, query.seed, query.weights) == (20, 5, 2, "hub")
    plain = parse_hub("hub:*")
    assert (plain.max_params, plain.limit, plain.sample, plain.weights) == (
        None,
        DEFAULT_LIMIT,
        None,
        "hub",
    )
    assert parse_hub("hub:*?pretrained=false&max_params=25000000").weights == "random"


def test_expansion_is_ordered_within_budget_and_deterministic():
    import timm

    from components.transfer.hub import expand_query, parse_hub

    names = expand_query(parse_hub(TINY))
    assert names == sorted(names) and len(names) == len(set(names))
    assert all(name.startswith("test_") and "." not in name for name in names)
    # Every model within the budget, and every test_* model left out is above it.
    assert all(_meta_params(name) <= 500_000 for name in names)
    left_out = sorted(set(timm.list_models("test_*")) - set(names))
    assert left_out and all(_meta_params(name) > 500_000 for name in left_out)
    assert expand_query(parse_hub(TINY)) == names


def test_pretrained_rows_name_each_architecture_default_weights_or_every_tag():
    import timm

    from components.transfer.hub import expand_query, parse_hub

    default = expand_query(parse_hub("hub:test_*?max_params=500K"))
    tags = expand_query(parse_hub("hub:test_*?max_params=500K&tags=all"))
    # One name per architecture, with its default tag (timm's first for the architecture).
    archs = [name.split(".")[0] for name in default]
    assert len(archs) == len(set(archs))
    for name in default:
        assert name == next(iter(timm.models.get_arch_pretrained_cfgs(name)))
    assert set(default) <= set(tags)
    assert all(timm.models.is_model_pretrained(name.split(".")[0]) for name in default)


def test_the_count_is_bounded_by_limit_and_never_cut_silently():
    from components.transfer.hub import expand_query, parse_hub

    n = len(expand_query(parse_hub(TINY)))
    assert len(expand_query(parse_hub(f"{TINY}&limit={n}"))) == n
    with pytest.raises(TransferError, match=rf"{n} timm models match with at most 500,000 "):
        expand_query(parse_hub(f"{TINY}&limit={n - 1}"))
    with pytest.raises(TransferError, match="no timm model matches with at most 1 parameters"):
        expand_query(parse_hub("hub:test_*?pretrained=false&max_params=1"))


def test_a_sample_is_seeded_and_drawn_from_the_budget():
    from components.transfer.hub import expand_query, parse_hub

    everything = expand_query(parse_hub(TINY))
    first = expand_query(parse_hub(f"{TINY}&sample=4&seed=1"))
    assert len(first) == 4 and set(first) <= set(everything) and first == sorted(first)
    assert expand_query(parse_hub(f"{TINY}&sample=4&seed=1")) == first
    others = {tuple(expand_query(parse_hub(f"{TINY}&sample=4&seed={s}"))) for s in range(2, 8)}
    assert others - {tuple(first)}, "every seed drew the same sample"
    assert expand_query(parse_hub(f"{TINY}&sample=999")) == everything


def test_counts_are_cached_per_timm_version(params_cache, monkeypatch):
    import json

    import timm

    from components.transfer import hub

    names = hub.expand_query(hub.parse_hub(TINY))
    cached = json.loads((params_cache / f"timm-{timm.__version__}.json").read_text())
    assert {name: cached[name] for name in names} == {n: _meta_params(n) for n in names}

    def no_counting(name):
        raise AssertionError(f"counted {name} again")

    monkeypatch.setattr(hub, "_count", no_counting)
    assert hub.expand_query(hub.parse_hub(TINY)) == names


def test_expanding_downloads_nothing(monkeypatch):
    """Parameters are counted with pretrained=False: timm's loader of pretrained weights
    (timm 1.0.31: timm/models/_builder.py, build_model_with_cfg calls load_pretrained) is never
    reached, even for a pretrained row."""
    import timm.models._builder as builder

    from components.transfer.hub import expand_query, parse_hub

    def no_download(*args, **kwargs):
        raise AssertionError("a hub expansion loaded pretrained weights")

    monkeypatch.setattr(builder, "load_pretrained", no_download)
    assert expand_query(parse_hub("hub:test_*?max_params=500K&tags=all"))


def test_a_model_list_row_expands_and_explicit_rows_win(tmp_path):
    from components.common.storage import open_store
    from components.transfer.steps import load_models

    store = open_store(str(tmp_path / "store"))
    text = f"model,weights\ntest_resnet,/weights/mine.pth\n{TINY}\n"
    models = load_models(text, store)
    by_name = {m.name: m for m in models}
    assert len(by_name) == len(models)  # no model twice
    assert by_name["test_resnet"].weights == "/weights/mine.pth"  # the explicit row
    assert {m.weights for m in models if m.name != "test_resnet"} == {"random"}
    # A single hub: row is a whole model list.
    assert [m.name for m in load_models(TINY, store)] == sorted(by_name)
    with pytest.raises(TransferError, match="a hub row takes no weights or source columns"):
        load_models(f"model,weights\n{TINY},random\n", store)
