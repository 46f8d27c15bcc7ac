"""Derived datasets: subsets of a named build, described by their parent and rule.

A subset's descriptor has ``source: derived:PARENT`` and a :class:`SubsetRule`; it is built
like any dataset (content-addressed by the rule and the parent's content hash, so it is cached
and traceable) from the parent's shards, keeping the parent's train/val/test assignment.

* **Class subsets** (Tuggener's ImageNet-X: 100/10/5/2 random classes): ``classes=K``, drawn
  from a seeded permutation of the parent's classes; ``nested`` subsets of one (seed, draw)
  are prefixes of the same permutation (2 within 5 within 10), independent ones are separate
  permutations per size; ``draw`` numbers several draws.
* **Per-class image budget** (Huh et al.: 500 vs 1000 images per class): ``per_class=N``
  training images per class, a seeded sample; val and test stay whole.
* **Coarse labels** from a user's child -> parent map (Huh et al.'s coarse vs fine labels).
  WordNet parents are not offered: no installed package ships the hierarchy (timm ships the
  ImageNet synsets but no parent relations) and nothing is downloaded at run time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from components.common.storage import ArtifactStore
from components.data.build import label_problem, load_manifest, named_dataset, shard_keys
from components.data.descriptor import (
    SPLITS,
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    ImagePolicy,
    SplitRule,
    SubsetRule,
    mix_seed,
)
from components.data.shards import image_part, iter_samples
from components.data.sources import Scan, SourceItem


def subset_descriptor(name: str, parent: str, rule: SubsetRule) -> DatasetDescriptor:
    """The descriptor of subset ``name`` of the named build ``parent``."""
    return DatasetDescriptor(
        name=name,
        source=f"derived:{parent}",
        split=SplitRule(mode="given", val_fraction=0.0),
        image=ImagePolicy(),
        subset=rule,
    )


def choose_classes(n_classes: int, rule: SubsetRule) -> list[int]:
    """Indices of the classes a rule keeps, in the parent's label order (with ``held_out``,
    those the draw of ``classes`` leaves out)."""
    if not rule.classes:
        return list(range(n_classes))
    if rule.classes > n_classes or (rule.held_out and rule.classes >= n_classes):
        raise DatasetError(
            f"--n-classes {rule.classes} exceeds the parent's {n_classes} classes"
            + (" (held_out needs at least one class left out)" if rule.held_out else "")
        )
    seed = (
        mix_seed(rule.seed, rule.draw)
        if rule.nested
        else mix_seed(rule.seed, rule.draw, rule.classes)
    )
    permutation = np.random.default_rng(seed).permutation(n_classes)
    kept = permutation[rule.classes :] if rule.held_out else permutation[: rule.classes]
    return sorted(int(i) for i in kept)


def read_coarse_map(path: str) -> tuple[tuple[str, str], ...]:
    """Reads a child -> parent map: JSON/YAML mapping, or a CSV with columns child,parent."""
    text = Path(path).read_text()
    if path.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"child", "parent"} <= set(rows[0]):
            raise DatasetError(f"coarse map {path} needs columns child,parent")
        pairs = {row["child"]: row["parent"] for row in rows}
    else:
        from components.common.yamlsafe import load_yaml

        pairs = (
            load_yaml(text, f"coarse map {path}")
            if not path.endswith(".json")
            else json.loads(text)
        )
        if not isinstance(pairs, dict):
            raise DatasetError(f"coarse map {path} must map child class -> parent class")
    return tuple(sorted((str(k), str(v)) for k, v in pairs.items()))


def _parent(store: ArtifactStore, name: str) -> tuple[DatasetRef, dict]:
    record = named_dataset(store, name)
    if record is None:
        raise DatasetError(
            f"no dataset {name!r} in {store.uri} to derive from: build it first "
            "(aprflow data build NAME --from URI)"
        )
    ref = DatasetRef(**record["ref"])
    return ref, load_manifest(store, ref)


def _samples(store: ArtifactStore, keys: list[str]) -> Iterator[tuple[str, bytes, int]]:
    for key in keys:
        for name, parts in iter_samples(store.get_bytes(key), key):
            found = image_part(parts)
            if found is not None and "cls" in parts:
                yield f"{key.rsplit('/', 1)[-1]}:{name}", found[1], int(parts["cls"])


def _budget(store, keys, keep: set[int], rule: SubsetRule, classes) -> set[int] | None:
    """Positions (in the train split) of the per-class budget's images, or None for all."""
    if not rule.per_class:
        return None
    labels = np.asarray([label for _, _, label in _samples(store, keys)])
    rng = np.random.default_rng(mix_seed(rule.seed, rule.draw, "per_class"))
    chosen: set[int] = set()
    for label in sorted(keep):
        positions = np.flatnonzero(labels == label)
        if len(positions) < rule.per_class:
            raise DatasetError(
                f"class {classes[label]!r} has {len(positions)} training images: "
                f"--per-class {rule.per_class} needs that many in every kept class"
            )
        chosen |= {int(p) for p in rng.choice(positions, rule.per_class, replace=False)}
    return chosen


def scan_subset(store: ArtifactStore, descriptor: DatasetDescriptor) -> Scan:
    """The listing of a derived dataset: the parent's images that the rule keeps, relabelled."""
    rule = descriptor.subset
    parent_name = descriptor.source.removeprefix("derived:")
    ref, manifest = _parent(store, parent_name)
    classes = manifest["class_names"]
    keep = set(choose_classes(len(classes), rule))
    mapping = dict(rule.coarse)
    if mapping:
        unmapped = [classes[i] for i in sorted(keep) if classes[i] not in mapping]
        if unmapped:
            raise DatasetError(
                f"coarse map leaves class(es) {', '.join(unmapped[:10])} of {parent_name!r} "
                "without a parent: map every kept class"
            )
    label_name = {i: mapping.get(classes[i], classes[i]) for i in keep}
    order = tuple(dict.fromkeys(label_name[i] for i in sorted(keep)))
    for label in order:
        if (problem := label_problem(label)) is not None:
            raise DatasetError(f"coarse map of {parent_name!r}: {problem}")
    if len(order) < 2:
        raise DatasetError(
            f"the subset of {parent_name!r} keeps {len(order)} class: a classification dataset "
            "needs at least 2"
        )
    budget = _budget(store, shard_keys(manifest, "train"), keep, rule, classes)

    def items() -> Iterator[SourceItem]:
        for split in SPLITS:
            samples = _samples(store, shard_keys(manifest, split))
            for position, (name, data, label) in enumerate(samples):
                if label not in keep or (split == "train" and budget and position not in budget):
                    continue
                yield SourceItem(
                    f"{parent_name}/{name}", label_name[label], split, lambda d=data: d
                )

    fingerprint = {"parent": parent_name, "content_hash": ref.content_hash}
    return Scan("derived", items(), fingerprint, class_order=order)
