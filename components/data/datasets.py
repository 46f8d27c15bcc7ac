"""Datasets as studies use them: built-in sets and named builds, materialised in the store.

A study names datasets (``datasets: [mine, digits]``). A built-in name (``digits``, ``faces``,
``shapes``; :mod:`components.data.builtin`) is materialised at the study's resolution with a
stratified 75/25 train/test split on first use; any other name must have been built before with
``aprflow data build NAME --from URI`` or derived with ``aprflow data subset`` (see
:mod:`components.data.build`). Both are WebDataset-style tar shards plus a manifest, and a
:class:`DatasetRef` is what trials carry.

:func:`catalog` and :func:`describe_builtin` show both kinds side by side (``aprflow data list``
and ``describe``): a built-in set with its classes, split counts and every resolution it was
materialised at in the store.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from components.common.cli import did_you_mean
from components.common.limits import MAX_RESOLUTION, MIN_RESOLUTION, check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.data.build import (
    dataset_prefix,
    in_memory_fits,
    list_named,
    load_manifest,
    load_split,
    materialize_scan,
    named_dataset,
)
from components.data.builtin import (
    BUILTIN_DATASETS,
    SHAPES,
    RawImages,
    load_raw,
    to_rgb_uint8,
    unknown_builtin,
)
from components.data.descriptor import (
    INPUT_MODES,
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    ImagePolicy,
    SplitRule,
)
from components.data.sources import scan_builtin

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_TEST_FRACTION",
    "SHAPES",
    "DatasetError",
    "DatasetRef",
    "RawImages",
    "catalog",
    "describe_builtin",
    "load_manifest",
    "load_raw",
    "load_split",
    "materialize",
    "prepare_all",
    "stratified_split",
    "to_rgb_uint8",
]

# Per-dataset settings a study may give (``dataset_settings: {mine: {resolution: 32}}``):
# ``recipe_overrides`` (recipe fields, checked against the recipe schema by the config and the
# plan) and ``test_sets`` (datasets with the same classes whose test split the trials of this
# one are also evaluated on) are read by the plan step.
DATASET_SETTINGS = ("resolution", "input", "recipe", "epochs", "recipe_overrides", "test_sets")
# Share of each class of a built-in set held out for testing (no validation split).
BUILTIN_TEST_FRACTION = 0.25


def stratified_split(labels, test_fraction: float, seed: int):
    """Returns (train, test) indices with every class in both at ``test_fraction``."""
    from components.data.build import stratified_split as split3

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, _, test = split3(labels, 0.0, test_fraction, seed)
    return train, test


def builtin_descriptor(
    name: str, resolution: int, seed: int = 0, test_fraction: float = BUILTIN_TEST_FRACTION
) -> DatasetDescriptor:
    """The descriptor of a built-in set at ``resolution``: stratified train/test, no val."""
    if name not in BUILTIN_DATASETS:
        raise unknown_builtin(name)
    return DatasetDescriptor(
        name=name,
        source=f"builtin:{name}",
        split=SplitRule("stratified", val_fraction=0.0, test_fraction=test_fraction, seed=seed),
        image=ImagePolicy(resolution=resolution, encoding="png"),
    )


def materialize(
    store: ArtifactStore,
    name: str,
    resolution: int,
    seed: int = 0,
    test_fraction: float = BUILTIN_TEST_FRACTION,
) -> DatasetRef:
    """Writes a built-in dataset's shards to ``store`` unless they are there already.

    Args:
        store: the artifact store.
        name: a built-in dataset name.
        resolution: image side in pixels after resizing.
        seed: seed of the generator (``shapes``) and of the train/test split.
        test_fraction: share of each class held out for testing.
    """
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise DatasetError(
            f"resolution {resolution} is out of range: use {MIN_RESOLUTION}-{MAX_RESOLUTION} pixels"
        )
    descriptor = builtin_descriptor(name, resolution, seed, test_fraction)
    listing = scan_builtin(name, resolution, seed)
    quiet = lambda _: None  # noqa: E731 - prepare_all reports each dataset itself
    return materialize_scan(store, descriptor, listing, shuffle_train=False, progress=quiet)


def _check_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(DATASET_SETTINGS))
    if unknown:
        raise DatasetError(
            f"dataset_settings.{name}: unknown key(s) {', '.join(unknown)}: valid keys are "
            f"{', '.join(DATASET_SETTINGS)}"
        )
    settings = dict(settings)
    for key in ("resolution", "epochs"):
        value = settings.get(key)
        if isinstance(value, float) and value.is_integer():
            settings[key] = value = int(value)  # KFP hands JSON numbers over as floats
        if key in settings and (isinstance(value, bool) or not isinstance(value, int)):
            raise DatasetError(f"dataset_settings.{name}.{key} must be an int, got {value!r}")
    for key in ("resolution", "epochs"):
        if key in settings:
            try:
                check_limit(key, settings[key], f"dataset_settings.{name}.{key}")
            except ValueError as e:
                raise DatasetError(str(e)) from None
    if settings.get("input", "memory") not in INPUT_MODES:
        raise DatasetError(
            f"dataset_settings.{name}.input {settings['input']!r}: choose from "
            f"{', '.join(INPUT_MODES)}"
        )
    if "recipe" in settings and not isinstance(settings["recipe"], str):
        raise DatasetError(f"dataset_settings.{name}.recipe must be a recipe name")
    if not isinstance(settings.get("recipe_overrides", {}), dict):
        raise DatasetError(
            f"dataset_settings.{name}.recipe_overrides must map recipe fields to values, "
            "e.g. {lr: 0.05}"
        )
    test_sets = settings.get("test_sets", [])
    if (
        not isinstance(test_sets, list)
        or not all(isinstance(t, str) and t for t in test_sets)
        or len(set(test_sets)) != len(test_sets)
        or name in test_sets
    ):
        raise DatasetError(
            f"dataset_settings.{name}.test_sets must be a list of distinct dataset names other "
            f"than {name} (same classes, e.g. [imagenet_v2]), got {test_sets!r}"
        )
    return settings


def check_settings(settings: Any) -> dict[str, dict[str, Any]]:
    """Returns ``settings`` (numbers made ints) if it maps dataset names to mappings of
    :data:`DATASET_SETTINGS` keys with values of the right type; else raises
    :class:`DatasetError` (no store needed)."""
    if not isinstance(settings, dict):
        raise DatasetError("dataset_settings must map dataset names to settings")
    checked = {}
    for name, values in settings.items():
        if not isinstance(values, dict):
            raise DatasetError(
                f"dataset_settings.{name} must be a mapping, e.g. {{resolution: 32}}"
            )
        checked[name] = _check_settings(name, values)
    return checked


def check_datasets(
    names: list[str], store: ArtifactStore, settings: dict[str, dict] | None = None
) -> None:
    """Raises :class:`DatasetError` unless every name is a built-in or a named build in
    ``store``, no name repeats, and the per-dataset settings name only these datasets."""
    settings = check_settings(settings or {})
    if not names:
        raise DatasetError("unknown or missing dataset(s): a study needs at least one dataset")
    if len(set(names)) != len(names):
        raise DatasetError(f"dataset list {names} names a dataset twice")
    unknown = [n for n in names if n not in BUILTIN_DATASETS and named_dataset(store, n) is None]
    if unknown:
        raise DatasetError(
            f"unknown or missing dataset(s) {', '.join(unknown)}: {_suggestions(store, unknown)}"
            f"choose from {', '.join(sorted(BUILTIN_DATASETS))} (built in) or a dataset built in "
            f"{store.uri} (aprflow data build NAME --from URI; aprflow data list)"
        )
    stray = sorted(set(settings) - set(names))
    if stray:
        raise DatasetError(
            f"dataset_settings name(s) {', '.join(stray)} that are not in the study's datasets"
        )
    extra = sorted({t for own in settings.values() for t in own.get("test_sets", [])})
    missing = [n for n in extra if n not in BUILTIN_DATASETS and named_dataset(store, n) is None]
    if missing:
        raise DatasetError(
            f"unknown test set(s) {', '.join(missing)} in dataset_settings: a built-in dataset or "
            f"one built in {store.uri} (aprflow data build NAME --from URI)"
        )
    for name, own in settings.items():
        for extra in own.get("test_sets", []):
            if _class_count(store, extra) != _class_count(store, name):
                raise DatasetError(
                    f"dataset_settings.{name}.test_sets: {extra} has "
                    f"{_class_count(store, extra)} classes, {name} {_class_count(store, name)}: "
                    "a test set must share the dataset's classes"
                )


def _suggestions(store: ArtifactStore, unknown: list[str]) -> str:
    """``did you mean ...?`` for each unknown name close to a built-in or a built name."""
    names = [*BUILTIN_DATASETS, *(record["ref"]["name"] for record in list_named(store))]
    hints = [hint for name in unknown if (hint := did_you_mean(name, names))]
    return " ".join(hints) + " " if hints else ""


def _class_count(store: ArtifactStore, name: str) -> int:
    """Classes of a built-in dataset or of a named build in ``store`` (read only)."""
    if name in BUILTIN_DATASETS:
        return len(BUILTIN_DATASETS[name].class_names)
    return int(named_dataset(store, name)["ref"]["num_classes"])


def prepare(
    store: ArtifactStore, name: str, resolution: int, seed: int, settings: dict[str, Any]
) -> DatasetRef:
    """The reference of one study dataset: a built-in materialised at its resolution, or a
    named build trained at its resolution; ``settings`` override resolution and input."""
    resolution = settings.get("resolution", resolution)
    if name in BUILTIN_DATASETS:
        ref = materialize(store, name, resolution, seed=seed)
    else:
        record = named_dataset(store, name)
        if record is None:
            raise DatasetError(f"no dataset {name!r} in {store.uri}: build it first")
        ref = replace(DatasetRef(**record["ref"]), resolution=resolution)
    mode = settings.get("input") or ("memory" if in_memory_fits(ref) else "stream")
    return replace(
        ref, input=mode, recipe=settings.get("recipe", ""), epochs=settings.get("epochs", 0)
    )


def prepare_all(
    names: list[str],
    resolution: int,
    seed: int,
    store_uri: str | None = None,
    settings: dict[str, dict] | None = None,
) -> list[DatasetRef]:
    """Materialises or looks up every dataset in ``names`` in the store at ``store_uri``.

    Unknown names are all rejected before anything is written.

    Args:
        names: built-in names or names built with ``aprflow data build``/``subset``.
        resolution: training image side for datasets without their own setting.
        seed: generator and split seed of the built-in sets.
        store_uri: the artifact store.
        settings: per-dataset ``resolution``/``input`` (and ``recipe``/``epochs``, which the
            plan step reads).
    """
    settings = check_settings(settings or {})
    store = open_store(store_uri)
    check_datasets(list(names), store, settings)  # reads only: nothing is written on failure
    store.check()
    refs = []
    for name in names:
        ref = prepare(store, name, resolution, seed, settings.get(name, {}))
        report(
            "data",
            f"{name}: {ref.n_train} train / {ref.n_val} val / {ref.n_test} test images, "
            f"{ref.num_classes} classes, {ref.resolution}px, input {ref.input} "
            f"({ref.content_hash})",
        )
        refs.append(ref)
    return refs


# --- the catalog: built-in sets beside the store's named builds -----------------------------


def builtin_split_counts(
    name: str, test_fraction: float = BUILTIN_TEST_FRACTION
) -> dict[str, dict[str, Any]]:
    """Images per split and class of a built-in set as :func:`materialize` splits it (the
    counts do not depend on the seed or the resolution), without loading its images."""
    info = BUILTIN_DATASETS[name]
    labels = np.repeat(np.arange(len(info.class_counts)), [n for _, n in info.class_counts])
    train, test = stratified_split(labels, test_fraction, seed=0)
    splits = {}
    for split, indices in (("train", train), ("val", []), ("test", test)):
        per_class = np.bincount(labels[indices], minlength=len(info.class_counts))
        splits[split] = {
            "n": int(per_class.sum()),
            "per_class": {c: int(n) for c, n in zip(info.class_names, per_class, strict=True)},
        }
    return splits


def prepared_builtin(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    """Where built-in ``name`` was materialised in ``store``: one entry per resolution, seed
    and split (``resolution``, ``seed``, ``test_fraction``, ``content_hash``,
    ``manifest_key``), by resolution; named builds from ``builtin:NAME`` are not included."""
    folder = dataset_prefix(name, "")  # datasets/<name>-<key>/: the key holds no '-'
    prepared = []
    for key in store.list(folder):
        build_key, _, file = key.removeprefix(folder).partition("/")
        if file != "manifest.json" or "-" in build_key:
            continue
        manifest = store.get_json(key)
        descriptor = manifest["descriptor"]
        if manifest["name"] != name or descriptor["source"] != f"builtin:{name}":
            continue
        prepared.append(
            {
                "resolution": manifest["ref"]["resolution"],
                "seed": manifest["seed"],
                "test_fraction": descriptor["split"]["test_fraction"],
                "content_hash": manifest["ref"]["content_hash"],
                "manifest_key": key,
            }
        )
    return sorted(prepared, key=lambda p: (p["resolution"], p["seed"], p["test_fraction"]))


def describe_builtin(store: ArtifactStore, name: str) -> dict[str, Any]:
    """What ``aprflow data describe`` shows of a built-in set, whether or not it was
    materialised: origin, licence, classes, split counts, and where it is in ``store``."""
    if name not in BUILTIN_DATASETS:
        raise unknown_builtin(name)
    info = BUILTIN_DATASETS[name]
    return {
        "name": name,
        "builtin": True,
        "source": f"builtin:{name}",
        "description": info.description,
        "origin": info.origin,
        "licence": info.licence,
        "image_side": info.image_side,
        "colour": info.colour,
        "n_images": info.n_images,
        "class_names": list(info.class_names),
        "split": {
            "mode": "stratified",
            "val_fraction": 0.0,
            "test_fraction": BUILTIN_TEST_FRACTION,
        },
        "splits": builtin_split_counts(name),
        "prepared": prepared_builtin(store, name),
    }


def catalog(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every dataset a study in ``store`` can name: the named builds (by name), then the
    built-in sets, each ``{name, builtin, source, num_classes, n_train, n_val, n_test}``; a
    built-in set also has ``prepared`` (see :func:`prepared_builtin`), a named build the rest
    of its :class:`DatasetRef`."""
    entries = [
        record["ref"] | {"builtin": False, "source": record["descriptor"]["source"]}
        for record in sorted(list_named(store), key=lambda r: r["ref"]["name"])
    ]
    for name in sorted(BUILTIN_DATASETS):
        splits = builtin_split_counts(name)
        entries.append(
            {
                "name": name,
                "builtin": True,
                "source": f"builtin:{name}",
                "num_classes": len(BUILTIN_DATASETS[name].class_counts),
                "n_train": splits["train"]["n"],
                "n_val": splits["val"]["n"],
                "n_test": splits["test"]["n"],
                "prepared": prepared_builtin(store, name),
            }
        )
    return entries
