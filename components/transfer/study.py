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
=========  ===================================  =========================================

Each row is ``model, dataset, regime, metric, value, unit, seconds, status, status_reason``:
``seconds`` is what the number cost, feature extraction of the splits it uses included (a
cached feature keeps the seconds it took to compute). A model that cannot be loaded, a target
with one class, a run out of memory or an input size the model rejects: the affected rows are
``failed`` with the reason, and the study goes on.

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
from typing import Any

import numpy as np
import torch

from components.common.files import atomic_write_text
from components.common.hashing import content_hash
from components.common.limits import check_limit
from components.common.progress import report
from components.common.storage import ArtifactStore
from components.train.recipes import resolve_recipe
from components.transfer.errors import TransferError
from components.transfer.sources import LoadedModel, ModelEntry, jsonable, load_model

REGIMES = ("knn", "linear", "logme", "leep", "finetune", "scratch")
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
UNITS = {
    "knn_top1": "fraction",
    "knn_top5_fraction": "fraction",
    "linear_top1": "fraction",
    "top1": "fraction",
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
    name: str, dataset: str, feats: dict[str, SplitFeatures], settings: StudySettings
) -> list[Row]:
    from components.transfer.knn import knn_evaluate
    from components.transfer.linear_probe import linear_probe
    from components.transfer.scores import leep, logme

    train, val, test = feats["train"], feats["val"], feats["test"]
    rows: list[Row] = []
    for regime in settings.regimes:
        if regime not in CHEAP_REGIMES:
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
                values = {"logme": logme(train.features, train.labels)}
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
        }
        rows += [Row(loaded.entry.name, ref.name, regime, m, v, seconds) for m, v in values.items()]
    return rows


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
    device = resolve_device(settings.device)
    for ref in refs:
        if ref.num_classes < 2:
            reason = f"target {ref.name} has {ref.num_classes} class: nothing to rank"
            rows += failed_rows(name, ref.name, settings.regimes, reason)
            continue
        trained = loaded.info.get("trained_on_version")
        if loaded.info.get("trained_on") == ref.name and trained not in (None, ref.content_hash):
            # Another split of the trial's own data: its test images may be training images.
            reason = (
                f"target {ref.name} version {ref.content_hash} is not the version the trial "
                f"trained on ({trained}): its test split may hold training images"
            )
            rows += failed_rows(name, ref.name, settings.regimes, reason)
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
        rows += _cheap_rows(name, ref.name, feats, settings)
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
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rows_to_csv(rows))
