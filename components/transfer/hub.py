"""Model-hub rows of a model list: one row that stands for every timm model within a budget.

A transfer study that ranks a model hub (every pretrained model that fits a memory budget,
scored by cosine kNN and LogME on one target) lists the hub in one row of the model list::

    model
    hub:*?max_params=30M&pretrained=true
    hub:convnext*?max_params=50M&tags=all&limit=200
    hub:test_*?pretrained=false&max_params=500K
    hub:*?max_params=30M&sample=20&seed=0

``hub:PATTERN[?KEY=VALUE&...]``: ``PATTERN`` is a shell-style pattern over timm's model names
(``timm.list_models``; ``*`` = all), and the keys are:

=============  ================================================================================
key            meaning
=============  ================================================================================
max_params     the most parameters a model may have (a number, or with K, M or G: ``30M`` =
               30,000,000), counted as the study loads the model, its source classifier
               included (a tag trained on ImageNet-21k carries 21,843 outputs); the weights'
               memory is 4 bytes per parameter in fp32. Absent: no budget.
pretrained     ``true`` (default): the models timm has weights for, each loaded with weights
               ``hub``, which timm downloads only when the study sets ``allow_download``;
               ``false``: every architecture with seeded random weights, nothing downloaded
               (a dry rehearsal of a ranking, or a baseline).
tags           ``default`` (one model per architecture, with timm's default weights, e.g.
               ``resnet50.a1_in1k``) or ``all`` (every pretrained tag: ``resnet50.a1_in1k``,
               ``resnet50.tv_in1k``, ...); pretrained only.
limit          the most models the row may expand to (default :data:`DEFAULT_LIMIT`, at most
               the limits table's ``hub_models``): more is an error that names the count,
               never a silent cut.
sample         a seeded random sample of this many of the models within the budget (after
               ``limit``): the few a study fine-tunes to check a cheap ranking of them all;
               their features are the ranking's, cached in the store.
seed           the sample's seed (default 0): the same seed draws the same models.
=============  ================================================================================

The expansion is deterministic: models in name order, the same list for the same timm version,
pattern and keys (aprflow's own ``anynet*`` registrations are left out: they exist only in
processes that imported them). Counting parameters builds each model on the meta device with
``pretrained=False`` (no memory, no download); the counts are cached per timm version in
:data:`PARAMS_CACHE`, since counting all of timm's 1,371 architectures took 160 s on a 2-core
machine (timm 1.0.31). A model timm cannot build there is left out and named on stderr; a model
that fails later (no weights, out of memory, an input size it rejects) is recorded failed in the
results table and the study goes on.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from components.common.files import atomic_write_text
from components.common.limits import check_limit
from components.common.progress import report
from components.common.validation import short_repr
from components.transfer.errors import TransferError

HUB_PREFIX = "hub:"
KEYS = ("max_params", "pretrained", "tags", "limit", "sample", "seed")
TAGS = ("default", "all")
#: Models a hub row may expand to unless its ``limit`` says otherwise.
DEFAULT_LIMIT = 1_000
#: Where the parameter counts of timm's models are kept, one JSON file per timm version.
PARAMS_CACHE = Path(tempfile.gettempdir()) / "aprflow-timm-params"
# aprflow registers its AnyNets with timm under this prefix (components.sample.anynet).
_OWN_PREFIX = "anynet"
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[KMG]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class HubQuery:
    """One ``hub:`` row, parsed (see the module docstring).

    Attributes:
        text: the row as written.
        pattern: shell-style pattern over timm's model names.
        max_params: the parameter budget, or None.
        pretrained: list pretrained models with ``hub`` weights (else random weights).
        tags: ``default`` or ``all``.
        limit: the most models the row may expand to.
        sample: the size of a seeded random sample of them, or None for all.
        seed: the sample's seed.
    """

    text: str
    pattern: str
    max_params: int | None = None
    pretrained: bool = True
    tags: str = "default"
    limit: int = DEFAULT_LIMIT
    sample: int | None = None
    seed: int = 0

    @property
    def weights(self) -> str:
        """The ``weights`` of every model the row expands to."""
        return "hub" if self.pretrained else "random"


def is_hub(model: str) -> bool:
    return model.startswith(HUB_PREFIX)


def _size(text: str, where: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise TransferError(
            f"{where}: max_params {short_repr(text)} is not a count: write e.g. 30M, 500K or "
            "25000000"
        )
    value = float(match["number"]) * _UNITS[match["unit"].upper()]
    try:
        return check_limit("params", math.floor(value), f"{where}: max_params")
    except ValueError as e:
        raise TransferError(str(e)) from None


def parse_hub(model: str, where: str = "model list") -> HubQuery:
    """Parses a ``hub:PATTERN?KEY=VALUE&...`` row.

    Raises:
        TransferError: one line naming the row and the fix, for an empty pattern, an unknown
            or repeated key, or a value out of its range.
    """
    where = f"{where}: {model}"
    pattern, _, query = model.removeprefix(HUB_PREFIX).partition("?")
    if not pattern.strip():
        raise TransferError(f"{where}: no pattern: write e.g. hub:*?max_params=30M")
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise TransferError(
            f"{where}: unknown key(s) {', '.join(unknown)}: choose from {', '.join(KEYS)}"
        )
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise TransferError(f"{where}: {', '.join(repeated)} given more than once")
    values = dict(pairs)
    fields: dict = {"text": model, "pattern": pattern.strip()}
    if "max_params" in values:
        fields["max_params"] = _size(values["max_params"], where)
    if "pretrained" in values:
        flag = values["pretrained"].strip().lower()
        if flag not in _BOOLEANS:
            raise TransferError(f"{where}: pretrained must be true or false")
        fields["pretrained"] = _BOOLEANS[flag]
    if "tags" in values:
        if values["tags"] not in TAGS:
            raise TransferError(f"{where}: tags must be {' or '.join(TAGS)}")
        if not fields.get("pretrained", True):
            raise TransferError(f"{where}: tags chooses among pretrained weights: drop it")
        fields["tags"] = values["tags"]
    for key, limit in (("limit", "hub_models"), ("sample", "hub_models"), ("seed", "seed")):
        if key in values:
            try:
                fields[key] = check_limit(limit, values[key], f"{where}: {key}")
            except ValueError as e:
                raise TransferError(str(e)) from None
    if "seed" in values and "sample" not in values:
        raise TransferError(f"{where}: seed draws a sample: give sample=N too")
    return HubQuery(**fields)


def candidate_names(query: HubQuery) -> list[str]:
    """The timm models the row's pattern and ``pretrained``/``tags`` select, by name, before
    the parameter budget."""
    import timm

    if not query.pretrained:
        names = timm.list_models(query.pattern)
    elif query.tags == "all":
        names = timm.list_models(query.pattern, pretrained=True, include_tags=True)
    else:
        archs = timm.list_models(query.pattern, pretrained=True, include_tags=False)
        # get_arch_pretrained_cfgs lists an architecture's tags default first (timm 1.0.31:
        # timm/models/_registry.py, _model_with_tags in the order of its default_cfgs).
        names = [next(iter(timm.models.get_arch_pretrained_cfgs(arch))) for arch in archs]
    return sorted(name for name in names if not name.startswith(_OWN_PREFIX))


def _cache_path() -> Path:
    import timm

    return PARAMS_CACHE / f"timm-{timm.__version__}.json"


def _count(name: str) -> int | None:
    """Parameters of ``name`` as the study loads it (its pretrained_cfg's classifier), built
    on the meta device; None when timm cannot build it there."""
    import timm
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # deprecation notes of old model names
            model = timm.create_model(name, pretrained=False)
    except Exception:  # noqa: BLE001 - any failure means the count is unknown
        return None
    return sum(p.numel() for p in model.parameters())


def parameter_counts(names: list[str]) -> dict[str, int | None]:
    """Each model's parameter count (None: timm could not build it), from the cache of this
    timm version where it has them; the missing ones are counted and added to it."""
    path = _cache_path()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    missing = [name for name in names if name not in cached]
    for i, name in enumerate(missing, 1):
        count = _count(name)
        if count is not None:
            cached[name] = count
        if i % 100 == 0 or i == len(missing):
            report("hub", f"counted the parameters of {i}/{len(missing)} models")
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, sort_keys=True))
    return {name: cached.get(name) for name in names}


def expand_query(query: HubQuery) -> list[str]:
    """The row's models within its budget, by name.

    Raises:
        TransferError: when none fits, or more than its ``limit``.
    """
    names = candidate_names(query)
    if query.max_params is None:
        fitting = names
    else:
        counts = parameter_counts(names)
        unknown = [name for name, count in counts.items() if count is None]
        if unknown:
            report(
                "hub",
                f"{query.text}: left out {len(unknown)} model(s) timm could not build to count "
                f"their parameters: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}",
            )
        fitting = [
            n for n, count in counts.items() if count is not None and count <= query.max_params
        ]
    budget = "" if query.max_params is None else f" with at most {query.max_params:,} parameters"
    if not fitting:
        raise TransferError(
            f"{query.text}: no timm model matches{budget} (of {len(names)} the pattern selects)"
        )
    if len(fitting) > query.limit:
        raise TransferError(
            f"{query.text}: {len(fitting):,} timm models match{budget}, more than limit="
            f"{query.limit:,}: lower max_params, narrow the pattern or raise limit"
        )
    if query.sample is None or query.sample >= len(fitting):
        return fitting
    # numpy's generator draws the same sample for the same seed on every platform.
    chosen = np.random.default_rng(query.seed).choice(len(fitting), query.sample, replace=False)
    return [fitting[i] for i in sorted(chosen)]


def expand_hub(entries: list, where: str = "model list") -> list:
    """Replaces every ``hub:`` row of a parsed model list with one entry per model it selects
    (weights ``hub`` or ``random``); a model already listed by another row keeps that row.

    Raises:
        TransferError: for a bad row, a row with other columns set, or a row that selects no
            model or more than its limit.
    """
    listed = {entry.name for entry in entries if not is_hub(entry.model)}
    out = []
    for entry in entries:
        if not is_hub(entry.model):
            out.append(entry)
            continue
        query = parse_hub(entry.model, where)
        if entry.weights or entry.source_dataset or entry.source_top1 is not None:
            raise TransferError(
                f"{where}: {entry.model}: a hub row takes no weights or source columns: "
                "pretrained=true loads timm's weights, pretrained=false random ones"
            )
        names = expand_query(query)
        kept = [name for name in names if name not in listed]
        if len(kept) < len(names):
            report("hub", f"{entry.model}: {len(names) - len(kept)} model(s) listed by other rows")
        listed.update(kept)
        out += [replace(entry, model=name, weights=query.weights) for name in kept]
        report("hub", f"{entry.model}: {len(kept)} models")
    return out
