"""The transfer study: models x target datasets x regimes into one long results table.

For every model (:mod:`components.transfer.sources`) and target dataset version, the
penultimate-layer features of each split are extracted once (batched; bf16 autocast on a GPU,
fp32 on the CPU) and cached in the store by (model, weights hash, dataset version, transform).
The regimes:

=========  ===================================  =========================================
regime     metrics (unit)                        from
=========  ===================================  =========================================
knn        knn_top1, knn_top5_fraction (fraction) cosine kNN train -> test
linear     linear_top1 (fraction), linear_C       L-BFGS logistic regression, C on val (003)
logme      logme (score)                          You et al., train features
leep       leep (score)                           Nguyen et al., source-class probabilities
finetune   top1 (fraction), finetune_lr,          SGD Nesterov, lr x wd on val, refit on
           finetune_weight_decay, finetune_refit  train + val (003 regime 2)
scratch    (the same as finetune)                 the same from random init (003 regime 3)
source     top1 (fraction)                        the model list's source accuracy
setup      input sizes, test overlap              per model and target (below)
=========  ===================================  =========================================

Each row is ``model, dataset, regime, metric, value, unit, seconds, status, status_reason``:
``seconds`` is what the number cost, feature extraction of the splits it uses included (a
cached feature keeps the seconds it took to compute). A model that cannot be loaded, a target
with one class, a run out of memory or an input size the model rejects: the affected rows are
``failed`` with the reason, and the study goes on.

Budgets and checks are rows too. Per model and target, regime ``setup``: ``input_size`` (the
side the model is fed), ``source_input_size`` (the side its weights were made for: a trial's
training resolution, the pretrained_cfg's; none for random weights), ``input_size_changed``
(1 when they differ: ``input_size`` overrode it), ``target_resolution`` (the side the target's
images are stored at), and ``test_overlap_images`` / ``test_overlap_fraction``: the target's
test images that are among the model's source images by content hash
(:mod:`components.transfer.leakage`; empty, with the reason, when no source images are known).
A pair whose overlap exceeds ``max_overlap`` is refused: its regimes fail with the counts. A
trial fed at another side than its training resolution has its LEEP refused (its classifier
was trained at that resolution and loses most of its accuracy at another, so its source-class
probabilities say nothing about the target) and a warning on stderr. Fine-tune and scratch rows
add :data:`BUDGET_METRICS`: the steps of the reported run, its schedule before the cap, the cap
(``max_steps``; empty: none), whether the cap cut the schedule, epochs and images seen.

The validation split is the dataset version's ``val`` split; a dataset without one (the
built-in sets) holds out a stratified 20 % of its training split, seeded by the dataset's
content hash, so every experiment on that version sees the same split.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.common.files import atomic_write_text
from components.common.hashing import content_hash
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore, StoreError
from components.train.recipes import resolve_recipe
from components.transfer.errors import TransferError
from components.transfer.finetune import MAX_CURVE_POINTS
from components.transfer.leakage import check_max_overlap
from components.transfer.scores import LOGME_VARIANTS
from components.transfer.sources import LoadedModel, ModelEntry, jsonable, load_model

REGIMES = ("knn", "linear", "logme", "leep", "finetune", "scratch")
SETUP = "setup"
CHEAP_REGIMES = ("knn", "linear", "logme", "leep")
#: Fine-tune / scratch rows: the reported accuracy, the configuration chosen on validation,
#: and ``finetune_refit`` (1: the accuracy is of the refit on train + validation).
FINETUNE_METRICS = ("top1", "finetune_lr", "finetune_weight_decay", "finetune_refit")
#: The metric rows of each regime (``knn_top5_fraction`` for the default k = 5).
REGIME_METRICS = {
    "knn": ("knn_top1", "knn_top5_fraction"),
    "linear": ("linear_top1", "linear_C"),
    "logme": ("logme",),
    "leep": ("leep",),
    "finetune": FINETUNE_METRICS,
    "scratch": FINETUNE_METRICS,
}
#: The budget of a fine-tune / scratch result: the steps of the run whose accuracy is
#: reported, its schedule before the cap, the cap (None: no cap), whether the cap cut the
#: schedule (1/0), epochs (steps x batch / training images) and images seen (steps x batch).
BUDGET_METRICS = (
    "finetune_steps",
    "finetune_schedule_steps",
    "finetune_max_steps",
    "finetune_capped",
    "finetune_epochs",
    "finetune_images_seen",
)
#: The ``setup`` rows of a model on a target (see the module docstring).
SETUP_METRICS = (
    "input_size",
    "source_input_size",
    "input_size_changed",
    "target_resolution",
    "test_overlap_images",
    "test_overlap_fraction",
)
UNITS = {
    "knn_top1": "fraction",
    "knn_top5_fraction": "fraction",
    "linear_top1": "fraction",
    "top1": "fraction",
    "finetune_steps": "steps",
    "finetune_schedule_steps": "steps",
    "finetune_max_steps": "steps",
    "finetune_epochs": "epochs",
    "finetune_images_seen": "images",
    "input_size": "px",
    "source_input_size": "px",
    "target_resolution": "px",
    "test_overlap_images": "images",
    "test_overlap_fraction": "fraction",
}
RESULT_COLUMNS = (
    "model",
    "dataset",
    "regime",
    "metric",
    "value",
    "unit",
    "seconds",
    "status",
    "status_reason",
)
VAL_FRACTION = 0.2
FEATURE_PREFIX = "transfer/features"


@dataclass(frozen=True)
class StudySettings:
    """How each (model, dataset) is evaluated.

    Attributes:
        regimes: regimes to run (see :data:`REGIMES`).
        input_size: square input side for every model (None: each model's pretrained_cfg).
        k: neighbours of the kNN fraction score.
        batch_size: images per forward pass.
        device: ``auto``, ``cuda`` or ``cpu``.
        allow_download: let timm fetch ``hub`` weights.
        finetune_max_steps: cap on fine-tune/scratch steps (None: the scaled 20k).
        recipe_overrides: fields over the ``finetune`` and ``scratch`` recipes' values (e.g.
            ``{"lr_grid": [0.01, 0.1]}``), checked as ``aprflow recipes finetune --set``.
        seed: seed of random weights, new heads and batch order (never of a data split).
        max_overlap: largest share of a target's test images that may be among a model's
            source images (by content hash); a pair above it is refused.
        logme_variant: ``paper`` or ``reference`` (:func:`components.transfer.scores.logme`:
            the two differ when a target has fewer training images than feature dimensions).
        curve_points: evaluation points of each fine-tune / scratch learning curve, the test
            accuracy over steps of the reported run (:mod:`components.transfer.curves`; 0:
            none).
    """

    regimes: tuple[str, ...] = CHEAP_REGIMES
    input_size: int | None = None
    k: int = 5
    batch_size: int = 128
    device: str = "auto"
    allow_download: bool = False
    finetune_max_steps: int | None = None
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_overlap: float = 0.01
    logme_variant: str = "paper"
    curve_points: int = 10

    def __post_init__(self) -> None:
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown or not self.regimes:
            raise TransferError(
                f"unknown or no regime(s) {', '.join(unknown) or '(none)'}: choose from "
                f"{', '.join(REGIMES)}"
            )
        if self.k < 1 or self.batch_size < 1:
            raise TransferError(f"k and batch_size must be >= 1, got {self.k}, {self.batch_size}")
        if self.input_size is not None and self.input_size < 8:
            raise TransferError(f"input_size must be >= 8 pixels, got {self.input_size}")
        check_max_overlap(self.max_overlap)
        if self.logme_variant not in LOGME_VARIANTS:
            raise TransferError(
                f"unknown logme_variant {self.logme_variant!r}: choose from "
                f"{', '.join(LOGME_VARIANTS)}"
            )
        if not 0 <= self.curve_points <= MAX_CURVE_POINTS:
            raise TransferError(
                f"curve_points must be in [0, {MAX_CURVE_POINTS}], got {self.curve_points}"
            )
        if self.finetune_max_steps is not None:
            try:
                check_limit("steps", self.finetune_max_steps, "finetune_max_steps")
            except ValueError as e:
                raise TransferError(str(e)) from None
        for regime in ("finetune", "scratch"):
            if regime in self.regimes:
                try:
                    resolve_recipe(regime, self.recipe_overrides)
                except ValueError as e:
                    raise TransferError(f"recipe {regime}: {e}") from None


@dataclass
class SplitFeatures:
    """Features of one split, as cached.

    Attributes:
        features: (n, D) float32 penultimate-layer features.
        labels: (n,) int64 classes.
        probs: (n, Z) float32 source-class probabilities, or None (no source classifier).
        seconds: wall seconds the extraction took when it was computed.
    """

    features: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None
    seconds: float


@dataclass
class Row:
    """One row of the results table."""

    model: str
    dataset: str
    regime: str
    metric: str
    value: float | None
    seconds: float = 0.0
    status: str = "ok"
    status_reason: str = ""
    unit: str = field(default="")
    # The learning curve of a fine-tune / scratch top1 row, (step, test accuracy): not a column
    # of the table but the side table of components.transfer.curves.
    curve: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        unit = self.unit or UNITS.get(self.metric, "")
        return {
            "model": self.model,
            "dataset": self.dataset,
            "regime": self.regime,
            "metric": self.metric,
            "value": self.value,
            "unit": unit,
            "seconds": round(self.seconds, 4),
            "status": self.status,
            "status_reason": self.status_reason,
        }


def failed_rows(model: str, dataset: str, regimes: Sequence[str], reason: str) -> list[Row]:
    """The rows of regimes that could not run, with the reason."""
    return [
        Row(model, dataset, regime, metric, None, status="failed", status_reason=reason)
        for regime in regimes
        for metric in REGIME_METRICS[regime]
    ]


def feature_key(loaded: LoadedModel, dataset_hash: str, split: str) -> str:
    """Store key of a split's cached features: (model, weights, dataset version, transform)."""
    identity = {
        "model": loaded.entry.name,
        "weights": loaded.weights_hash,
        "dataset": dataset_hash,
        "transform": jsonable(loaded.data_config),
    }
    return f"{FEATURE_PREFIX}/{content_hash(identity)}/{split}.npz"


@torch.no_grad()
def extract(
    loaded: LoadedModel, images: np.ndarray, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Penultimate-layer features and source-class probabilities of uint8 NHWC images.

    Images go through the model's timm eval transform; forward passes run in eval mode, in
    bf16 autocast on a GPU and fp32 on the CPU.
    """
    from components.transfer.sources import eval_transform, prepare_images

    model = loaded.model.to(device).eval()
    transform = eval_transform(loaded.data_config)
    has_head = getattr(model, "num_classes", 0) > 0
    features, probs = [], []
    for start in range(0, len(images), batch_size):
        x = prepare_images(images[start : start + batch_size], transform).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pooled = model.forward_features(x)
            pre = model.forward_head(pooled, pre_logits=True)
            logits = model.forward_head(pooled) if has_head else None
        features.append(pre.flatten(1).float().cpu().numpy())
        if logits is not None:
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    width = features[0].shape[1] if features else 0
    out = np.concatenate(features) if features else np.zeros((0, width), np.float32)
    return out, (np.concatenate(probs) if probs else None)


def split_features(
    loaded: LoadedModel,
    store: ArtifactStore,
    ref,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    settings: StudySettings,
    device: torch.device,
) -> tuple[SplitFeatures, bool]:
    """The split's features from the store's cache, or extracted and cached.

    Returns:
        ``(features, cached)``.
    """
    key = feature_key(loaded, ref.content_hash, split)
    if store.exists(key):
        with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as data:
            probs = data["probs"] if data["probs"].size else None
            return SplitFeatures(
                data["features"], data["labels"], probs, float(data["seconds"])
            ), True
    tic = time.perf_counter()
    features, probs = extract(loaded, images, settings.batch_size, device)
    seconds = time.perf_counter() - tic
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=features,
        labels=np.asarray(labels, np.int64),
        probs=probs if probs is not None else np.zeros(0, np.float32),
        seconds=np.float64(seconds),
    )
    store.put_bytes(key, buffer.getvalue())
    return SplitFeatures(features, np.asarray(labels, np.int64), probs, seconds), False


def _splits(store: ArtifactStore, ref) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / val / test images of a dataset version; val carved from train when absent."""
    from components.data.build import stratified_split
    from components.data.datasets import load_split
    from components.data.descriptor import mix_seed

    train = load_split(store, ref, "train")
    test = load_split(store, ref, "test")
    if ref.n_val:
        return {"train": train, "val": load_split(store, ref, "val"), "test": test}
    # The dataset version fixes this split: its seed is the version's content hash.
    keep, _, held = stratified_split(train[1], 0.0, VAL_FRACTION, mix_seed(ref.content_hash))
    return {
        "train": (train[0][keep], train[1][keep]),
        "val": (train[0][held], train[1][held]),
        "test": test,
    }


def _cheap_rows(
    name: str,
    dataset: str,
    feats: dict[str, SplitFeatures],
    settings: StudySettings,
    refused: dict[str, str],
) -> list[Row]:
    """The cheap regimes' rows; a regime in ``refused`` fails with its reason."""
    from components.transfer.knn import knn_evaluate
    from components.transfer.linear_probe import linear_probe
    from components.transfer.scores import leep, logme

    train, val, test = feats["train"], feats["val"], feats["test"]
    rows: list[Row] = []
    for regime in settings.regimes:
        if regime not in CHEAP_REGIMES:
            continue
        if regime in refused:
            rows += failed_rows(name, dataset, [regime], refused[regime])
            continue
        tic = time.perf_counter()
        try:
            if regime == "knn":
                result = knn_evaluate(
                    train.features, train.labels, test.features, test.labels, k=settings.k
                )
                cost = train.seconds + test.seconds
                values = {
                    "knn_top1": result.top1,
                    "knn_top5_fraction": result.topk_fraction,
                }
            elif regime == "linear":
                probe = linear_probe(
                    train.features,
                    train.labels,
                    test.features,
                    test.labels,
                    val_features=val.features,
                    val_labels=val.labels,
                )
                cost = train.seconds + val.seconds + test.seconds
                values = {"linear_top1": probe.accuracy, "linear_C": probe.C}
            elif regime == "logme":
                cost = train.seconds
                values = {
                    "logme": logme(train.features, train.labels, variant=settings.logme_variant)
                }
            else:
                if train.probs is None:
                    raise TransferError("LEEP needs the source classifier; the model has none")
                cost = train.seconds
                values = {"leep": leep(train.probs, train.labels)}
        except (ValueError, TransferError, np.linalg.LinAlgError) as e:
            rows += failed_rows(name, dataset, [regime], f"{regime}: {e}")
            continue
        seconds = cost + time.perf_counter() - tic
        rows += [Row(name, dataset, regime, m, float(v), seconds) for m, v in values.items()]
    return rows


def _tuned_rows(
    loaded: LoadedModel,
    ref,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    settings: StudySettings,
) -> list[Row]:
    import timm

    from components.transfer.finetune import finetune
    from components.transfer.sources import eval_transform, prepare_images

    transform = eval_transform(loaded.data_config)
    tensors = {
        split: (prepare_images(x, transform), torch.as_tensor(y, dtype=torch.int64))
        for split, (x, y) in splits.items()
    }
    rows: list[Row] = []
    for regime in ("finetune", "scratch"):
        if regime not in settings.regimes:
            continue
        tic = time.perf_counter()
        try:
            if regime == "finetune":
                start = loaded.model
            elif loaded.entry.model.startswith("trial:"):
                raise TransferError("scratch runs need a timm architecture, not a trial")
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(settings.seed)
                    start = timm.create_model(loaded.entry.name, pretrained=False)
            result = finetune(
                start,
                ref.num_classes,
                tensors["train"],
                tensors["val"],
                tensors["test"],
                recipe=regime,
                overrides=settings.recipe_overrides,
                max_steps=settings.finetune_max_steps,
                seed=settings.seed,
                device=settings.device,
                curve_points=settings.curve_points,
            )
        except (RuntimeError, ValueError, AssertionError, FloatingPointError, TransferError) as e:
            reason = f"{regime}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            rows += failed_rows(loaded.entry.name, ref.name, [regime], reason)
            continue
        seconds = time.perf_counter() - tic
        values = {
            "top1": result.accuracy,
            "finetune_lr": result.lr,
            "finetune_weight_decay": result.weight_decay,
            "finetune_refit": float(result.refit),
        } | budget_values(result, settings.finetune_max_steps)
        curve = tuple(result.curve)  # carried by the top1 row
        rows += [
            Row(
                loaded.entry.name,
                ref.name,
                regime,
                m,
                v,
                seconds,
                curve=curve if m == "top1" else (),
            )
            for m, v in values.items()
        ]
    return rows


def budget_values(result, max_steps: int | None) -> dict[str, float | None]:
    """:data:`BUDGET_METRICS` of a :class:`~components.transfer.finetune.FinetuneResult`."""
    steps = result.refit_steps if result.refit else result.steps
    seen = steps * result.batch_size
    return {
        "finetune_steps": float(steps),
        "finetune_schedule_steps": float(result.schedule_steps),
        "finetune_max_steps": None if max_steps is None else float(max_steps),
        "finetune_capped": float(steps < result.schedule_steps),
        "finetune_epochs": seen / result.train_images,
        "finetune_images_seen": float(seen),
    }


def _input_sides(loaded: LoadedModel) -> tuple[int, int | None]:
    """The side the model is fed, and the side its weights were made for (None: unknown)."""
    return int(loaded.data_config["input_size"][-1]), loaded.source_input_size


def _source_images(loaded: LoadedModel, store: ArtifactStore) -> tuple[np.ndarray | None, str]:
    """Content hashes of the images the model was trained on, and what they are in words:
    a trial's training split and/or the model list's ``source_hashes`` (None: unknown).

    Raises:
        TransferError: when a trial's training data or a hash list cannot be read.
    """
    from components.common.uris import redact_uri
    from components.transfer.leakage import read_hash_list, trial_training_images
    from components.transfer.sources import WEIGHTS_CACHE, local_file

    parts, words = [], []
    if loaded.info.get("kind") == "trial":
        hashes, described = trial_training_images(store, loaded.info["trial_id"])
        parts.append(hashes)
        words.append(described)
    location = loaded.entry.source_hashes
    if location:
        path = local_file(location, Path(WEIGHTS_CACHE), "source hash list")
        parts.append(read_hash_list(path, redact_uri(location)))
        words.append(f"the list {redact_uri(location)}, {len(parts[-1])} images")
    if not parts:
        return None, ""
    return np.concatenate(parts), " and ".join(words)


def _setup_rows(
    loaded: LoadedModel,
    ref,
    store: ArtifactStore,
    source: tuple[np.ndarray | None, str],
    settings: StudySettings,
) -> tuple[list[Row], str]:
    """The ``setup`` rows of a model on a target, and the reason to refuse the pair ('' none).

    Raises:
        TransferError: when the target's test split cannot be hashed.
    """
    from components.transfer.leakage import overlap, refusal, split_hashes

    name = loaded.entry.name
    fed, made_for = _input_sides(loaded)
    values: dict[str, float | None] = {
        "input_size": float(fed),
        "source_input_size": None if made_for is None else float(made_for),
        "input_size_changed": None if made_for is None else float(fed != made_for),
        "target_resolution": float(ref.resolution),
    }
    rows = [Row(name, ref.name, SETUP, m, v) for m, v in values.items()]
    hashes, words = source
    if hashes is None:
        reason = "not checked: no source images known (give a source_hashes list)"
        rows += [
            Row(name, ref.name, SETUP, m, None, status_reason=reason)
            for m in ("test_overlap_images", "test_overlap_fraction")
        ]
        return rows, ""
    tic = time.perf_counter()
    found = overlap(split_hashes(store, ref, "test"), hashes, words)
    seconds = time.perf_counter() - tic
    rows += [
        Row(name, ref.name, SETUP, "test_overlap_images", float(found.images), seconds),
        Row(name, ref.name, SETUP, "test_overlap_fraction", found.fraction, seconds),
    ]
    return rows, refusal(found, name, ref, settings.max_overlap)


def evaluate_model(
    entry: ModelEntry,
    refs: list,
    store: ArtifactStore,
    settings: StudySettings,
    started: float | None = None,
) -> list[Row]:
    """Every regime of one model on every target; failures become ``failed`` rows."""
    from components.train.engines import resolve_device

    name = entry.name
    rows: list[Row] = []
    if entry.source_top1 is not None and entry.source_dataset:
        rows.append(Row(name, entry.source_dataset, "source", "top1", entry.source_top1 / 100.0))
    try:
        loaded = load_model(
            entry,
            store,
            allow_download=settings.allow_download,
            input_size=settings.input_size,
            seed=settings.seed,
        )
    except TransferError as e:
        report("transfer", f"{name}: failed: {e}", started)
        for ref in refs:
            rows += failed_rows(name, ref.name, settings.regimes, str(e))
        return rows
    if entry.source_top1 is None and loaded.source_top1 is not None and loaded.source_dataset:
        rows.append(Row(name, loaded.source_dataset, "source", "top1", loaded.source_top1 / 100.0))
    try:
        source = _source_images(loaded, store)
    except (TransferError, StoreError) as e:
        reason = f"leakage check: {e}"
        report("transfer", f"{name}: failed: {reason}", started)
        for ref in refs:
            rows += failed_rows(name, ref.name, settings.regimes, reason)
        return rows
    refused: dict[str, str] = {}  # regime -> why it may not run for this model
    fed, made_for = _input_sides(loaded)
    if made_for is not None and fed != made_for:
        report(
            "transfer",
            f"warning: {name} is fed {fed} px, its weights were made for "
            f"{made_for} px (input_size overrides it)",
            started,
        )
        if loaded.info.get("kind") == "trial":
            refused["leep"] = (
                f"leep: refused: the trial's classifier was trained at {made_for} px and "
                f"input_size feeds it {fed} px, so its source-class probabilities are not "
                "its own (drop input_size for LEEP)"
            )
    device = resolve_device(settings.device)
    for ref in refs:
        if ref.num_classes < 2:
            reason = f"target {ref.name} has {ref.num_classes} class: nothing to rank"
            rows += failed_rows(name, ref.name, settings.regimes, reason)
            continue
        try:
            setup, leak = _setup_rows(loaded, ref, store, source, settings)
        except TransferError as e:
            rows += failed_rows(name, ref.name, settings.regimes, f"leakage check: {e}")
            continue
        rows += setup
        if leak:
            report("transfer", f"{name} on {ref.name}: refused: {leak}", started)
            rows += failed_rows(name, ref.name, settings.regimes, leak)
            continue
        splits = _splits(store, ref)
        try:
            feats = {}
            cached = 0
            for split, (x, y) in splits.items():
                feats[split], hit = split_features(
                    loaded, store, ref, split, x, y, settings, device
                )
                cached += hit
        except (RuntimeError, ValueError, AssertionError) as e:  # OOM, input size rejected
            reason = f"features: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            report("transfer", f"{name} on {ref.name}: failed: {reason}", started)
            rows += failed_rows(name, ref.name, settings.regimes, reason)
            continue
        report(
            "transfer",
            f"{name} on {ref.name}: features {feats['train'].features.shape[1]}-d "
            f"({cached}/3 splits cached)",
            started,
        )
        rows += _cheap_rows(name, ref.name, feats, settings, refused)
        rows += _tuned_rows(loaded, ref, splits, settings)
    return rows


def run_study(
    models: list[ModelEntry],
    refs: list,
    store: ArtifactStore,
    settings: StudySettings,
) -> list[dict[str, Any]]:
    """Evaluates every model on every target dataset version; returns the table's rows."""
    started = time.time()
    rows: list[Row] = []
    for i, entry in enumerate(models, 1):
        report("transfer", f"[{i}/{len(models)}] {entry.name}", started)
        rows += evaluate_model(entry, refs, store, settings, started)
    return [row.to_dict() for row in rows]


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """The long results table (:data:`RESULT_COLUMNS`) as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        value = row["value"]
        writer.writerow(row | {"value": "" if value is None else repr(float(value))})
    return buffer.getvalue()


def write_results(rows: list[dict[str, Any]], path) -> None:
    """Writes :func:`rows_to_csv` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rows_to_csv(rows))
