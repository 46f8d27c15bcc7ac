"""The pretraining-factors study's datasets, made inside the pipeline: a pool of the source's
classes, the classes held out from it, and the pool's variants (one per factor level), every
one a derived dataset of the store (:mod:`components.data.subsets`); their
:class:`~analysis.pretrain_factors.Layout` tells the analysis which is which.

* **The source** is a named build used as it is, or a built-in set built at the study's
  resolution (``digits-16px``), as the class-count study builds it.
* **The pool and the held-out classes.** With ``held_out_classes`` H, a seeded draw keeps
  P = C - H of the source's C classes as the pool (``<base>-p<P>``) and the other H as the
  held-out set (``<base>-h<H>``, fine labels): every variant draws on the pool only, so the
  held-out classes are never seen in pretraining (the induction test). Without held-out
  classes the pool is the source itself.
* **The variants** derive from the pool and keep its train/val/test assignment:
  ``<pool>-n<N>`` (N training images per class), ``<pool>-c<K>`` (K seeded classes, all their
  images), ``<pool>-coarse<M>-<hash>`` (the pool's images under the user's coarse labels, M
  parents) and ``<pool>-b<T>-c<K>`` (a budget of T images as K classes x T / K images).

Idempotent: every build is content-addressed and a name already bound to the same content is
reused, so a re-run writes nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from analysis.pretrain_factors import REFERENCE, REGIME_METRIC, Layout, Variant
from components.classcount.subsets import builtin_full_descriptor, full_name, source_classes
from components.common.hashing import content_hash
from components.common.limits import check_count, check_limit
from components.common.progress import report
from components.common.storage import open_store
from components.common.validation import short_repr
from components.data.build import build_dataset
from components.data.builtin import BUILTIN_DATASETS
from components.data.datasets import prepare_all
from components.data.descriptor import DatasetError, DatasetRef, SubsetRule, check_name
from components.data.subsets import choose_classes, subset_descriptor


@dataclass(frozen=True)
class Design:
    """What the user varies, checked (:func:`check_design`).

    Attributes:
        held_out_classes: classes held out of pretraining for the induction test (0: none).
        images_per_class: training images per class of each ``images_per_class`` level.
        pool_class_counts: classes of each ``classes`` level.
        coarse_map: child class -> parent class, for the ``labels`` level ({}: none).
        budget_images: the fixed total of the ``budget`` levels (0: none).
        budget_class_counts: classes of each ``budget`` level (T / K images each).
        targets: transfer targets besides the held-out classes.
    """

    held_out_classes: int
    images_per_class: tuple[int, ...]
    pool_class_counts: tuple[int, ...]
    coarse_map: tuple[tuple[str, str], ...]
    budget_images: int
    budget_class_counts: tuple[int, ...]
    targets: tuple[str, ...]


def _is_name(value: Any) -> bool:
    """A class name: non-empty text, or a whole number (YAML reads ``0`` as one)."""
    return (isinstance(value, str) and bool(value)) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _distinct_list(name: str, value: Any, limit: str, example: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list, e.g. {example}, got {short_repr(value)}")
    check_count("factor_levels", value, name)
    numbers = check_limit(limit, list(value), name)
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{name} {short_repr(value)} names a value twice")
    return tuple(sorted(numbers, reverse=True))


def check_design(arguments: Mapping[str, Any]) -> Design:
    """The study's factors from the pipeline's arguments, checked without a store.

    Raises:
        ValueError: a value of the wrong type or out of the limits table, a budget without its
            class counts (or the reverse), a coarse map that is not text -> text, targets
            that are not distinct names, or no factor at all.
    """
    held_out = check_limit("num_classes", arguments["held_out_classes"], "held_out_classes")
    if held_out == 1:
        raise ValueError(
            "held_out_classes must be 0 (no induction test) or 2 or more: a kNN or a probe on "
            "the held-out classes needs 2 to tell apart"
        )
    per_class = _distinct_list(
        "images_per_class", arguments["images_per_class"], "images_per_class", "[500, 250]"
    )
    classes = _distinct_list(
        "pool_class_counts", arguments["pool_class_counts"], "subset_classes", "[500, 100]"
    )
    budget_counts = _distinct_list(
        "budget_class_counts", arguments["budget_class_counts"], "subset_classes", "[500, 100]"
    )
    budget = check_limit("images", arguments["budget_images"], "budget_images")
    if bool(budget) != bool(budget_counts):
        raise ValueError(
            "budget_images and budget_class_counts go together: a fixed total of images split "
            f"between each number of classes (got {budget} images, {list(budget_counts)})"
        )
    if budget and len(budget_counts) < 2:
        raise ValueError("budget_class_counts needs 2 or more class counts to compare")
    coarse = arguments["coarse_map"]
    # YAML reads a class named 0 as a number: names are text, so numbers are taken as theirs.
    if not isinstance(coarse, Mapping) or not all(
        _is_name(k) and _is_name(v) for k, v in coarse.items()
    ):
        raise ValueError(
            "coarse_map must map each class to its parent class, e.g. {cat: animal, car: "
            f"vehicle}}, got {short_repr(coarse)}"
        )
    coarse = {str(k): str(v) for k, v in coarse.items()}
    targets = arguments["targets"]
    if not isinstance(targets, list | tuple) or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a list of dataset names, got {short_repr(targets)}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets {short_repr(targets)} names a dataset twice")
    if targets:  # none: the held-out classes are the only target
        check_count("datasets", targets, "targets")
    if not (per_class or classes or coarse or budget):
        raise ValueError(
            "no factor to vary: give images_per_class, pool_class_counts, coarse_map or "
            "budget_images with budget_class_counts"
        )
    if not targets and not held_out:
        raise ValueError(
            "nothing to transfer to: give targets, or held_out_classes for the induction test"
        )
    return Design(
        held_out_classes=held_out,
        images_per_class=per_class,
        pool_class_counts=classes,
        coarse_map=tuple(sorted(coarse.items())),
        budget_images=budget,
        budget_class_counts=budget_counts,
        targets=tuple(targets),
    )


def check_regimes(regimes: Any, induction: bool) -> tuple[str, ...]:
    """The transfer regimes, checked: distinct ones of :data:`~analysis.pretrain_factors.
    REGIME_METRIC` (this study measures accuracy; LogME and LEEP rank models), with ``knn`` or
    ``linear`` when classes are held out (the induction test's measures).

    Raises:
        ValueError: an unknown or repeated regime, none, or no induction measure.
    """
    if (
        not isinstance(regimes, list | tuple)
        or not regimes
        or any(r not in REGIME_METRIC for r in regimes)
        or len(set(regimes)) != len(regimes)
    ):
        raise ValueError(
            f"regimes must be distinct ones of {', '.join(REGIME_METRIC)}, got "
            f"{short_repr(regimes)}"
        )
    if induction and not {"knn", "linear"} & set(regimes):
        raise ValueError(
            "the induction test on the held-out classes needs the knn or linear regime: add "
            "one to regimes, or set held_out_classes=0"
        )
    return tuple(regimes)


def _pool_rules(n_classes: int, held_out: int, seed: int) -> tuple[SubsetRule, SubsetRule]:
    pool = n_classes - held_out
    return (
        SubsetRule(classes=pool, seed=seed),
        SubsetRule(classes=pool, seed=seed, held_out=True),
    )


def plan_variants(design: Design, pool_classes: Sequence[str]) -> list[Variant]:
    """Every variant, the reference first, named from the pool (``{pool}`` in each name)."""
    n_pool = len(pool_classes)
    variants = [Variant("{pool}", REFERENCE, f"all {n_pool} classes, fine labels", n_pool)]
    variants += [
        Variant(f"{{pool}}-n{n}", "images_per_class", f"{n} / class", n_pool, n)
        for n in design.images_per_class
    ]
    variants += [
        Variant(f"{{pool}}-c{k}", "classes", f"{k} classes", k) for k in design.pool_class_counts
    ]
    if design.coarse_map:
        parents = len({parent for _, parent in _pool_map(design, pool_classes)})
        tag = content_hash(dict(design.coarse_map), length=6)
        variants.append(
            Variant(f"{{pool}}-coarse{parents}-{tag}", "labels", f"coarse ({parents})", parents)
        )
    for k in design.budget_class_counts:
        n = design.budget_images // k
        variants.append(
            Variant(f"{{pool}}-b{design.budget_images}-c{k}", "budget", f"{k} x {n}", k, n)
        )
    return variants


def _pool_map(design: Design, pool_classes: Sequence[str]) -> list[tuple[str, str]]:
    """The coarse map restricted to the pool, every pool class mapped (else ValueError)."""
    mapping = dict(design.coarse_map)
    unmapped = [c for c in pool_classes if c not in mapping]
    if unmapped:
        raise ValueError(
            f"coarse_map leaves class(es) {', '.join(unmapped[:10])} of the pool without a "
            "parent: map every class of the source"
        )
    pairs = [(c, mapping[c]) for c in pool_classes]
    if len({parent for _, parent in pairs}) in (1, len(pool_classes)):
        raise ValueError(
            "coarse_map must group the pool's classes into fewer parents than classes, and "
            f"2 or more: it gives {len({p for _, p in pairs})} parent(s) for "
            f"{len(pool_classes)} classes"
        )
    return pairs


def _rule(variant: Variant, design: Design, pool_classes: Sequence[str], seed: int) -> SubsetRule:
    """The subset rule that makes a variant of the pool."""
    if variant.factor == "images_per_class":
        return SubsetRule(per_class=variant.images_per_class, seed=seed)
    if variant.factor == "classes":
        return SubsetRule(classes=variant.classes, seed=seed)
    if variant.factor == "labels":
        return SubsetRule(coarse=tuple(_pool_map(design, pool_classes)), seed=seed)
    if variant.factor == "budget":
        every = variant.classes == len(pool_classes)
        return SubsetRule(
            classes=0 if every else variant.classes, per_class=variant.images_per_class, seed=seed
        )
    raise ValueError(f"the reference variant is the pool itself, not a rule: {variant}")


def plan_layout(
    source: str,
    class_names: Sequence[str],
    design: Design,
    seed: int,
    resolution: int,
    smallest_class: int | None = None,
) -> Layout:
    """The study's datasets without building anything.

    Args:
        smallest_class: training images of the pool's smallest class, when known (the
            per-class and budget levels are checked against it).

    Raises:
        ValueError: a level the source cannot satisfy, or a dataset name that is not valid.
    """
    n_classes = len(class_names)
    held_out = design.held_out_classes
    if held_out and n_classes - held_out < 2:
        raise ValueError(
            f"held_out_classes {held_out} leaves {n_classes - held_out} of the "
            f"{n_classes} classes of {short_repr(source)} to pretrain on: keep 2 or more"
        )
    full = full_name(source, resolution, seed)
    base = full if source in BUILTIN_DATASETS or not seed else f"{source}-s{seed}"
    if held_out:
        pool_rule, held_rule = _pool_rules(n_classes, held_out, seed)
        pool_classes = [class_names[i] for i in choose_classes(n_classes, pool_rule)]
        held_classes = [class_names[i] for i in choose_classes(n_classes, held_rule)]
        pool = f"{base}-p{len(pool_classes)}"
        held_name = f"{base}-h{held_out}"
    else:
        pool_classes, held_classes, pool, held_name = list(class_names), [], full, ""
    n_pool = len(pool_classes)
    too_many = [k for k in (*design.pool_class_counts, *design.budget_class_counts) if k > n_pool]
    too_many += [k for k in design.pool_class_counts if k == n_pool]
    if too_many:
        raise ValueError(
            f"class counts {sorted(set(too_many))} do not fit the pool's {n_pool} classes "
            "(pool_class_counts below it, budget_class_counts up to it)"
        )
    budget_small = [k for k in design.budget_class_counts if design.budget_images // k < 1]
    if budget_small:
        raise ValueError(
            f"budget_images {design.budget_images} gives under one image per class at "
            f"{budget_small} classes"
        )
    if smallest_class is not None:
        largest = [
            *design.images_per_class,
            *(design.budget_images // k for k in design.budget_class_counts),
        ]
        over = [n for n in largest if n > smallest_class]
        if over:
            raise ValueError(
                f"{sorted(set(over))} images per class exceed the {smallest_class} training "
                f"images of the pool's smallest class"
            )
    variants = tuple(
        Variant(v.name.format(pool=pool), v.factor, v.level, v.classes, v.images_per_class)
        for v in plan_variants(design, pool_classes)
    )
    for name in [full, pool, *([held_name] if held_name else []), *(v.name for v in variants)]:
        try:
            check_name(name)
        except DatasetError as e:
            raise ValueError(f"the study's dataset name {name!r} is not valid: {e}") from None
    if source in design.targets:
        raise ValueError(
            f"targets {short_repr(list(design.targets))} names the source {source!r}: transfer "
            "to other data (the held-out classes are a target already)"
        )
    return Layout(
        source=source,
        full=full,
        n_classes=n_classes,
        pool_classes=tuple(pool_classes),
        held_out=held_name,
        held_out_classes=tuple(held_classes),
        variants=variants,
        targets=design.targets,
        seed=seed,
    )


def equal_step_epochs(reference_epochs: int, n_train: Sequence[int]) -> list[int]:
    """Each variant's epochs for as many optimizer steps as the reference's (the first)
    schedule: ``reference_epochs x reference images / variant images``, rounded, at least 1
    and within the limits table. Without it a variant with fewer images would also train
    for fewer steps, and the factor would be confounded with the schedule's length.

    Raises:
        ValueError: a variant would need more epochs than the limits table allows.
    """
    base = n_train[0] * reference_epochs
    return [
        check_limit("epochs", max(1, round(base / n)), "equal-step epochs of a variant")
        for n in n_train
    ]


def build_variants(
    source: str,
    design: Design,
    seed: int,
    resolution: int,
    store_uri: str | None = None,
    equal_steps_epochs: int = 0,
) -> tuple[list[DatasetRef], list[DatasetRef], Layout]:
    """Builds (or finds) the pool, the held-out classes and every variant in the store and
    materialises the targets.

    Args:
        equal_steps_epochs: the reference's epochs, when every variant is to train for as
            many optimizer steps as the reference (:func:`equal_step_epochs`; each
            reference carries its epochs to the plan step); 0: every variant trains the
            study's epochs.

    Returns:
        (the variants' references as the plan step takes them, the reference first; the
        transfer datasets' references, the held-out classes last; the layout).

    Raises:
        ValueError: a design the source cannot satisfy (:func:`plan_layout`).
        DatasetError: an unknown source or target, a class with fewer training images than a
            level asks for, or a name bound to other content in the store.
    """
    store = open_store(store_uri)
    classes = source_classes(store, source)
    layout = plan_layout(source, classes, design, seed, resolution)
    store.check()
    if source in BUILTIN_DATASETS:
        build_dataset(store, builtin_full_descriptor(source, layout.full, resolution, seed))
    pool = layout.reference.name
    if layout.held_out:
        pool_rule, held_rule = _pool_rules(len(classes), design.held_out_classes, seed)
        build_dataset(store, subset_descriptor(pool, layout.full, pool_rule))
        build_dataset(store, subset_descriptor(layout.held_out, layout.full, held_rule))
    for variant in layout.variants[1:]:
        rule = _rule(variant, design, layout.pool_classes, seed)
        build_dataset(store, subset_descriptor(variant.name, pool, rule))
    refs = prepare_all(layout.datasets, resolution, seed, store.uri)
    if equal_steps_epochs:
        epochs = equal_step_epochs(equal_steps_epochs, [r.n_train for r in refs])
        refs = [replace(ref, epochs=e) for ref, e in zip(refs, epochs, strict=True)]
    # Seed 0 as the transfer study's plan prepares its targets: a missing target fails here,
    # before any training, and the plan then finds every target built.
    transfer = prepare_all(layout.transfer_datasets, resolution, 0, store.uri)
    report(
        "data",
        f"{pool}: {len(layout.pool_classes)} classes to pretrain on, "
        f"{len(layout.held_out_classes)} held out; {len(layout.variants)} variants "
        f"({', '.join(layout.factors)}); targets: {', '.join(layout.transfer_datasets)}",
    )
    return refs, transfer, layout
