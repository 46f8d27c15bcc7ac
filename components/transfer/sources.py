"""Where the transfer study's models come from, and how their inputs are prepared.

A model is a :class:`ModelEntry`: a timm model name with weights from a local file, an
``s3://`` checkpoint, ``random`` (seeded initialisation, a baseline) or ``hub`` (timm's own
download, only with ``allow_download``); or ``trial:<id>``, a checkpoint our trials produced
(``trials:all`` lists every finished trial of the store). A list file holds many:

    # unit: percent
    model,weights,source_dataset,source_top1
    resnet50,/weights/resnet50_a1.pth,imagenet,80.4
    efficientnet_b0,s3://bucket/ckpt/effnet_b0.pth,imagenet,77.7
    trial:3f2a9c0d1e2b4a5c

``source_top1`` is the model's accuracy on its source data (the x axis of Kornblith et al.);
its unit is data: a ``# unit: percent|fraction`` line or a ``unit`` column. ``source_hashes``
(optional; a local path or ``s3://bucket/key``) lists the content hashes of the images the
weights were trained on, for the leakage check (:mod:`components.transfer.leakage`); a trial's
are found from its record.

Input preparation comes from the model's ``pretrained_cfg`` through
``timm.data.resolve_data_config`` and ``timm.data.create_transform`` (input size,
interpolation, crop, mean/std); ``input_size`` may override the side (e.g. 32 px on a laptop).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from components.common.hashing import content_hash
from components.common.storage import ArtifactStore, open_store
from components.common.uris import carries_credentials, redact_uri
from components.transfer.errors import TransferError
from components.transfer.features import TIMM_PREFIX, TRIAL_PREFIX

#: ``weights`` values that are not a location.
RANDOM_WEIGHTS = "random"
HUB_WEIGHTS = "hub"
ALL_TRIALS = "trials:all"
#: Where ``s3://`` weights and hash lists are kept when no cache folder is given.
WEIGHTS_CACHE = os.path.join(tempfile.gettempdir(), "aprflow-weights")
LIST_COLUMNS = ("model", "weights", "source_dataset", "source_top1", "unit", "source_hashes")


@dataclass(frozen=True)
class ModelEntry:
    """One model of a transfer study.

    Attributes:
        model: ``trial:<id>`` or a timm model name (a ``timm:`` prefix is accepted).
        weights: local path, ``s3://bucket/key``, ``random`` or ``hub``; '' for trials.
        source_dataset: the dataset of ``source_top1`` (e.g. ``imagenet``).
        source_top1: accuracy on the source data in percent, or None.
        source_hashes: local path or ``s3://bucket/key`` of a list of the source images'
            content hashes ('' none; see :mod:`components.transfer.leakage`).
    """

    model: str
    weights: str = ""
    source_dataset: str = ""
    source_top1: float | None = None
    source_hashes: str = ""

    @property
    def name(self) -> str:
        """The model's id in result tables: the trial source or the timm name."""
        return self.model.removeprefix(TIMM_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "weights": self.weights,
            "source_dataset": self.source_dataset,
            "source_top1": self.source_top1,
            "source_hashes": self.source_hashes,
        }


@dataclass
class LoadedModel:
    """A model ready for feature extraction.

    Attributes:
        entry: what was asked for.
        model: the network with its source classifier (if any), eval mode, CPU.
        data_config: timm data config (input_size, interpolation, crop_pct, crop_mode, mean,
            std) that builds the eval transform.
        weights_hash: content hash of the weights (``random:<seed>`` for random ones).
        source_dataset: source dataset name ('' unknown).
        source_top1: source accuracy in percent, or None.
        source_input_size: the input side the weights were made for (a trial's training
            resolution, the pretrained_cfg's for weights from a file or the hub), or None for
            random weights.
        info: provenance for logs.
    """

    entry: ModelEntry
    model: nn.Module
    data_config: dict[str, Any]
    weights_hash: str
    source_dataset: str = ""
    source_top1: float | None = None
    source_input_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def transform_id(self) -> str:
        """Hash of the eval transform's settings (part of the feature cache key)."""
        return content_hash(jsonable(self.data_config), length=12)


def jsonable(config: dict[str, Any]) -> dict[str, Any]:
    """The data config with tuples as lists and numbers as floats/ints (JSON-safe)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _percent(value: str, unit: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TransferError(f"{where}: source_top1 {value!r} is not a number") from None
    if unit not in ("percent", "fraction"):
        raise TransferError(
            f"{where}: the unit of source_top1 is {unit or 'not stated'!r}: add a "
            "'# unit: percent' (or fraction) line or a unit column"
        )
    limit = 100.0 if unit == "percent" else 1.0
    if not 0 <= number <= limit:
        raise TransferError(f"{where}: source_top1 {number} is outside [0, {limit:g}] ({unit})")
    return number if unit == "percent" else 100.0 * number


def parse_model_list(text: str, name: str = "model list") -> list[ModelEntry]:
    """Parses a model list (CSV with a header; ``#`` lines are comments, ``# unit: U``
    states the unit of ``source_top1``). See the module docstring for the columns.

    Raises:
        TransferError: for a missing ``model`` column, unknown columns, an empty list, a
            duplicate model, a source accuracy without a unit or out of range, or a weights
            URI that carries credentials (refused here, before the list reaches a plan,
            results table, report or store).
    """
    name = redact_uri(name)  # the list's own location, quoted by every message below
    unit = ""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("#").partition(":")
            if key.strip().lower() == "unit":
                unit = value.strip().lower()
            continue
        if stripped:
            lines.append(line)
    reader = csv.DictReader(lines)
    rows = list(reader)
    header = [column for column in reader.fieldnames or [] if column]
    if not lines or "model" not in (rows[0].keys() if rows else lines[0].split(",")):
        raise TransferError(f"{name}: needs a header line with a 'model' column")
    # csv.DictReader files a row's cells beyond the header under the key None.
    unknown = sorted(set(rows[0]) - set(LIST_COLUMNS) - {None}) if rows else []
    if unknown:
        raise TransferError(
            f"{name}: unknown column(s) {', '.join(unknown)}; valid: {', '.join(LIST_COLUMNS)}"
        )
    entries, seen = [], set()
    for i, row in enumerate(rows, 2):
        if None in row:
            raise TransferError(
                f"{name} line {i}: more cells than the header's columns ({', '.join(header)}): "
                "add the missing column names to the header"
            )
        model = (row.get("model") or "").strip()
        if not model:
            raise TransferError(f"{name} line {i}: empty model")
        if model in seen:
            raise TransferError(f"{name} line {i}: model {model!r} is listed twice")
        seen.add(model)
        weights = (row.get("weights") or "").strip()
        hashes = (row.get("source_hashes") or "").strip()
        for what, location in (("weights", weights), ("source_hashes", hashes)):
            if carries_credentials(location):
                raise TransferError(
                    f"{name} line {i}: the {what} URI of {model!r} carries credentials "
                    f"({redact_uri(location)}): give s3://BUCKET/KEY and put credentials in "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                )
        top1 = (row.get("source_top1") or "").strip()
        entries.append(
            ModelEntry(
                model=model,
                weights=weights,
                source_dataset=(row.get("source_dataset") or "").strip(),
                source_top1=_percent(top1, (row.get("unit") or unit).strip().lower(), name)
                if top1
                else None,
                source_hashes=hashes,
            )
        )
    if not entries:
        raise TransferError(f"{name}: lists no model")
    return entries


def read_model_list(path: str | Path) -> list[ModelEntry]:
    """Reads :func:`parse_model_list` from a file.

    Raises:
        TransferError: for an unreadable file or a bad list.
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TransferError(f"cannot read model list {path}: {e.strerror or e}") from None
    return parse_model_list(text, str(path))


def expand_trials(entries: list[ModelEntry], store: ArtifactStore) -> list[ModelEntry]:
    """Replaces a ``trials:all`` entry with one ``trial:<id>`` entry per finished trial."""
    from components.train.definition import result_key

    out = []
    for entry in entries:
        if entry.model != ALL_TRIALS:
            out.append(entry)
            continue
        for key in store.list("trials/"):
            if key.endswith("/result.json"):
                trial_id = key.split("/")[-2]
                if result_key(trial_id) == key and store.get_json(key).get("status") == "ok":
                    out.append(ModelEntry(model=f"{TRIAL_PREFIX}{trial_id}"))
    return out


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def local_file(location: str, cache_dir: Path, what: str = "weights") -> Path:
    """A local path for ``location`` (a path, or ``s3://bucket/key`` fetched once).

    Raises:
        TransferError: ``no {what} at {location}`` when there is no such file or object.
    """
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        target = cache_dir / parsed.netloc / key
        if not target.exists():
            bucket = open_store(f"s3://{parsed.netloc}")
            if not bucket.exists(key):
                raise TransferError(f"no {what} at {location}")
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket.get_file(key, target)
        return target
    path = Path(parsed.path if parsed.scheme == "file" else location)
    if not path.is_file():
        raise TransferError(f"no {what} at {location}")
    return path


def _timm_model(entry: ModelEntry, allow_download: bool, seed: int, cache_dir: Path):
    import timm

    import components.sample.anynet  # noqa: F401 - registers the anynet_* models with timm

    name = entry.name
    if not timm.is_model(name):
        raise TransferError(f"unknown timm model {name!r}")
    weights = entry.weights
    if not weights:
        raise TransferError(
            f"no weights at (none given) for {name}: give a file, s3:// URI, 'random', or "
            "'hub' with --allow-download"
        )
    if weights == HUB_WEIGHTS and not allow_download:
        raise TransferError(f"no weights at the hub for {name}: downloads need --allow-download")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are the same every run
        try:
            if weights == RANDOM_WEIGHTS:
                return timm.create_model(name, pretrained=False), f"random:{seed}"
            if weights == HUB_WEIGHTS:
                return timm.create_model(name, pretrained=True), f"hub:{name}"
            path = local_file(weights, cache_dir)
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
            )
            return model, _file_hash(path)
        except TransferError:
            raise
        except Exception as e:  # noqa: BLE001 - timm/torch raise many kinds; all mean unusable
            raise TransferError(
                f"cannot load {name} ({weights}): {type(e).__name__}: {e}"
            ) from None


def load_model(
    entry: ModelEntry,
    store: ArtifactStore,
    *,
    allow_download: bool = False,
    input_size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Builds one model with its source classifier and its eval data config.

    Args:
        entry: the model and its weights.
        store: the store that holds trials.
        allow_download: let timm fetch ``hub`` weights.
        input_size: override of the square input side (None: the pretrained_cfg's).
        seed: seed of ``random`` weights.
        cache_dir: where ``s3://`` weights are kept (default: a temporary folder).

    Raises:
        TransferError: with the reason the model cannot be used (``no weights at ...``, an
            unknown model, a load failure).
    """
    from timm.data import resolve_data_config

    from components.transfer.features import _load_trial_backbone

    cache = Path(cache_dir or WEIGHTS_CACHE)
    if entry.model.startswith(TRIAL_PREFIX):
        from components.train.definition import checkpoint_key

        trial_id = entry.model[len(TRIAL_PREFIX) :]
        backbone = _load_trial_backbone(trial_id, store, input_size, keep_head=True)
        side = backbone.input_size
        config = {
            "input_size": (3, side, side),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": tuple(backbone.mean),
            "std": tuple(backbone.std),
        }
        error = backbone.info.get("top1_error")
        return LoadedModel(
            entry=entry,
            model=backbone.model,
            data_config=config,
            weights_hash=hashlib.sha256(store.get_bytes(checkpoint_key(trial_id))).hexdigest()[:16],
            source_dataset=entry.source_dataset or backbone.info["trained_on"],
            source_top1=entry.source_top1
            if entry.source_top1 is not None
            else (100.0 - float(error) if error is not None else None),
            source_input_size=int(backbone.info["trained_resolution"]),
            info=backbone.info,
        )
    model, weights_hash = _timm_model(entry, allow_download, seed, cache)
    config = resolve_data_config({}, model=model)
    made_for = None if entry.weights == RANDOM_WEIGHTS else int(config["input_size"][-1])
    if input_size is not None:
        config["input_size"] = (3, input_size, input_size)
    return LoadedModel(
        entry=entry,
        model=model.eval(),
        data_config=config,
        weights_hash=weights_hash,
        source_dataset=entry.source_dataset,
        source_top1=entry.source_top1,
        source_input_size=made_for,
        info={"kind": "timm", "model": entry.name, "weights": entry.weights},
    )


def eval_transform(config: dict[str, Any]):
    """timm's eval transform (resize, centre crop, to tensor, normalise) for a data config."""
    from timm.data import create_transform

    return create_transform(**config, is_training=False)


def prepare_images(images_uint8_nhwc: np.ndarray, transform) -> torch.Tensor:
    """Applies a PIL-based eval transform to uint8 NHWC images: a float NCHW batch."""
    from PIL import Image

    return torch.stack([transform(Image.fromarray(image)) for image in images_uint8_nhwc])


def weights_file_bytes(model: nn.Module) -> bytes:
    """A model's state dict as the bytes of a ``.pth`` file (tests, tools)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()
