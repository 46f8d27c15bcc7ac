"""The class-count study's datasets, made inside the pipeline: the full set as a named build,
``draws`` seeded draws of ``K`` of its classes for every size ``K``, and any other datasets,
materialised in the study's store; their :class:`~analysis.class_count.Layout` tells the
analysis which is which.

* **The full set.** A named build is used as it is (``aprflow data build imagenet --from
  ...``); a built-in set is built as a named dataset ``<name>-<R>px`` (``-s<seed>`` added for
  a data seed other than 0) at the study's resolution with the built-in split (stratified,
  25 % test, no validation), because subsets derive from named builds.
* **The subsets** ``<base>-c<K>-d<draw>`` (:func:`subset_name`; ``base`` is the full set's
  name, with ``-s<seed>`` for a named source and a seed other than 0) are
  ``aprflow data subset``'s class subsets (components/data/subsets.py): draw ``j`` of every
  size is a prefix of one class permutation seeded by (seed, j), so the sizes nest within a
  draw (2 classes inside 5 inside 10) and differ by the number of classes only; every subset
  keeps the full set's train/test assignment of the images it keeps.

Idempotent: every build is content-addressed and a name already bound to the same content is
reused, so a re-run writes nothing new. A name bound to other content (a dataset of your own
that happens to carry a subset's name) is refused with the build's message rather than
rebound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from analysis.class_count import Layout, Subset
from components.common.limits import check_count, check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore, open_store
from components.common.validation import short_repr
from components.data.build import build_dataset, load_manifest, named_dataset
from components.data.builtin import BUILTIN_DATASETS
from components.data.datasets import BUILTIN_TEST_FRACTION, prepare_all
from components.data.descriptor import (
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    ImagePolicy,
    SplitRule,
    SubsetRule,
    check_name,
)
from components.data.subsets import choose_classes, subset_descriptor


def full_name(source: str, resolution: int, seed: int) -> str:
    """The full set's dataset name: a named source's own, a built-in's build at the study's
    resolution and data seed (``digits-16px``, ``digits-16px-s3``)."""
    if source not in BUILTIN_DATASETS:
        return source
    return f"{source}-{resolution}px" + (f"-s{seed}" if seed else "")


def subset_name(source: str, full: str, seed: int, classes: int, draw: int) -> str:
    """A subset's dataset name, ``<base>-c<K>-d<draw>``: the seed of the draws is in the full
    set's name for a built-in source, and added to a named one's (``imagenet-s1-c10-d0``)."""
    base = full if source in BUILTIN_DATASETS or not seed else f"{source}-s{seed}"
    return f"{base}-c{classes}-d{draw}"


def check_design(class_counts: Any, draws: Any, others: Any = ()) -> tuple[list[int], int]:
    """The subset sizes (largest first) and draws, checked without a store.

    Raises:
        ValueError: ``class_counts`` is not a non-empty list of distinct whole numbers of at
            least 2 within the limits table, ``draws`` is out of range, ``others`` is not a
            list of distinct names, or the study would hold more datasets than a study may.
    """
    if not isinstance(class_counts, list | tuple) or not class_counts:
        raise ValueError(
            "class_counts must be a list of subset sizes, e.g. [100, 10, 5, 2], got "
            f"{short_repr(class_counts)}"
        )
    check_count("class_counts", class_counts)
    sizes = check_limit("subset_classes", list(class_counts), "class_counts")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"class_counts {short_repr(class_counts)} names a size twice")
    draws = check_limit("draws", draws)
    if not isinstance(others, list | tuple) or not all(isinstance(o, str) and o for o in others):
        raise ValueError(
            "other_datasets must be a list of dataset names, e.g. [shapes], got "
            f"{short_repr(others)}"
        )
    if len(set(others)) != len(others):
        raise ValueError(f"other_datasets {short_repr(others)} names a dataset twice")
    total = 1 + len(sizes) * draws + len(others)
    check_count("datasets", range(total), "datasets (the full set, every draw, the others)")
    return sorted(sizes, reverse=True), draws


def check_subset_epochs(subset_epochs: Any, sizes: Sequence[int]) -> dict[int, int]:
    """``{size: epochs}`` of the sizes trained for their own number of epochs (Tuggener et
    al. train ImageNet-10, -5 and -2 for 40), keys as ints (a Kubeflow dict has text keys).

    Raises:
        ValueError: not a mapping, a size not in ``sizes``, or epochs out of range.
    """
    if not isinstance(subset_epochs, dict):
        raise ValueError(
            "subset_epochs must map a subset size to its epochs, e.g. {10: 40, 2: 40}, got "
            f"{short_repr(subset_epochs)}"
        )
    epochs = {}
    for key, value in subset_epochs.items():
        size = int(key) if str(key).isdigit() else None
        if size not in sizes:
            raise ValueError(
                f"subset_epochs names size {short_repr(key)}, which is not one of class_counts "
                f"{list(sizes)}"
            )
        epochs[size] = check_limit("epochs", value, f"subset_epochs.{key}")
    return epochs


def source_classes(store: ArtifactStore, source: str) -> list[str]:
    """The class names of the source: a built-in set's, or a named build's (read only).

    Raises:
        DatasetError: the source is neither built in nor built in ``store``.
    """
    if source in BUILTIN_DATASETS:
        return list(BUILTIN_DATASETS[source].class_names)
    record = named_dataset(store, source)
    if record is None:
        raise DatasetError(
            f"source {short_repr(source)} is neither a built-in dataset "
            f"({', '.join(sorted(BUILTIN_DATASETS))}) nor built in {store.uri}: build it first "
            "(aprflow data build NAME --from URI)"
        )
    return list(load_manifest(store, DatasetRef(**record["ref"]))["class_names"])


def plan_layout(
    source: str,
    class_names: list[str],
    class_counts: list[int],
    draws: int,
    seed: int,
    resolution: int,
    others: Sequence[str] = (),
) -> Layout:
    """The study's datasets and the classes of each subset, without building anything (the
    classes are those :func:`components.data.subsets.choose_classes` keeps).

    Raises:
        ValueError: a size not below the source's number of classes, a dataset name that is
            not valid (too long), or an other dataset named like one of the study's.
    """
    sizes, draws = check_design(class_counts, draws, others)
    n_classes = len(class_names)
    too_many = [k for k in sizes if k >= n_classes]
    if too_many:
        raise ValueError(
            f"class_counts {too_many} must be below the {n_classes} classes of "
            f"{short_repr(source)}: a subset keeps fewer classes than the full set"
        )
    full = full_name(source, resolution, seed)
    subsets = []
    for size in sizes:
        for draw in range(draws):
            rule = SubsetRule(classes=size, nested=True, draw=draw, seed=seed)
            kept = tuple(class_names[i] for i in choose_classes(n_classes, rule))
            subsets.append(Subset(subset_name(source, full, seed, size, draw), size, draw, kept))
    for name in [full, *(s.name for s in subsets)]:
        try:
            check_name(name)
        except DatasetError as e:
            raise ValueError(f"the study's dataset name {name!r} is not valid: {e}") from None
    clashes = sorted({full, *(s.name for s in subsets)} & set(others))
    if clashes or source in others:
        raise ValueError(
            f"other_datasets {short_repr(list(others))} names the source or a subset of the study "
            f"({', '.join(clashes or [source])}): list only other datasets there"
        )
    return Layout(source, full, n_classes, tuple(subsets), tuple(others), seed)


def builtin_full_descriptor(
    source: str, name: str, resolution: int, seed: int
) -> DatasetDescriptor:
    """A built-in set as a named build: its images at ``resolution`` and the split its
    built-in materialisation has (stratified 75/25 train/test, no validation)."""
    return DatasetDescriptor(
        name=name,
        source=f"builtin:{source}",
        split=SplitRule(
            "stratified", val_fraction=0.0, test_fraction=BUILTIN_TEST_FRACTION, seed=seed
        ),
        image=ImagePolicy(resolution=resolution, encoding="png"),
    )


def build_class_subsets(
    source: str,
    class_counts: list[int],
    draws: int,
    seed: int,
    resolution: int,
    others: Sequence[str] = (),
    store_uri: str | None = None,
    subset_epochs: dict | None = None,
) -> tuple[list[DatasetRef], Layout]:
    """Builds (or finds) the full set and every subset in the store and materialises the
    other datasets; returns every dataset's reference as the plan step takes them (the full
    set, the subsets largest first and by draw, the others) and the layout.

    Args:
        source: a built-in set or a named build with more classes than every size.
        class_counts: subset sizes.
        draws: seeded draws of each size.
        seed: seed of the class draws (and of a built-in source's split).
        resolution: training image side in pixels.
        others: further datasets trained on the same models (built-in or built).
        store_uri: the artifact store ('' or None: the default).
        subset_epochs: ``{size: epochs}`` for sizes trained for their own number of epochs
            (carried by their references to the plan step; the others train the study's).

    Raises:
        ValueError: a bad design (see :func:`check_design`, :func:`plan_layout`).
        DatasetError: an unknown source or other dataset, or a subset's name bound to other
            content in the store.
    """
    others = list(others)
    store = open_store(store_uri)
    layout = plan_layout(
        source, source_classes(store, source), class_counts, draws, seed, resolution, others
    )
    epochs = check_subset_epochs(subset_epochs or {}, layout.sizes)
    store.check()
    if source in BUILTIN_DATASETS:
        build_dataset(store, builtin_full_descriptor(source, layout.full, resolution, seed))
    for subset in layout.subsets:
        rule = SubsetRule(classes=subset.classes, nested=True, draw=subset.draw, seed=seed)
        build_dataset(store, subset_descriptor(subset.name, layout.full, rule))
    refs = prepare_all(layout.datasets, resolution, seed, store.uri)
    size_of = {subset.name: subset.classes for subset in layout.subsets}
    refs = [replace(ref, epochs=epochs.get(size_of.get(ref.name), 0)) for ref in refs]
    report(
        "data",
        f"{layout.full}: {layout.n_classes} classes; {len(layout.sizes)} subset sizes "
        f"({', '.join(map(str, layout.sizes))}) x {layout.draws} draws",
    )
    return refs, layout
