"""The one table of bounds on every count, size and repetition a user can set, with the reason
for each, and the one check that applies them (:func:`check_limit`).

Every path that sets such a value checks it here before memory is spent: the CLI flags, ``--set``
and config files (pipelines.config), ``recipe_overrides`` and recipe files (every recipe field is
checked when a Recipe is built, components.train.recipes), ``dataset_settings``, spec files
(components.sample.space validates every spec before a model is built) and the study's
preflight. The bounds lie far above any real study (the paper: 500 models, 600 epochs, 224 px)
and far below what would sample for hours or allocate terabytes by mistake.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from components.common.validation import Bound, check_type, short_repr

#: Name -> inclusive range of a whole number, with the reason (a count of a list's items where
#: the name is a list's: ``datasets``, ``train_seeds``, ``grid_points``).
LIMITS: dict[str, Bound] = {
    "n_models": Bound(
        0,
        10_000,
        reason="the paper samples 500 architectures; more samples for minutes (0: named "
        "architectures only)",
    ),
    "architectures": Bound(
        0,
        200,
        reason="named timm models trained beside the sampled ones, each on every dataset and "
        "seed: Kornblith et al. compare 16 ImageNet architectures",
    ),
    "n_seeds": Bound(
        3,
        1_000,
        reason="training seeds of a seed study, one trial each: Wightman et al. train 100; a "
        "correlation across seeds needs at least 3",
    ),
    "datasets": Bound(1, 100, reason="each dataset repeats every architecture's trials"),
    "train_seeds": Bound(1, 1_000, reason="each training seed repeats every trial"),
    "seed": Bound(0, 2**32 - 1, reason="numpy and torch seeds are unsigned 32-bit integers"),
    "epochs": Bound(1, 10_000, reason="the paper trains 600 epochs at most"),
    "steps": Bound(0, 10_000_000, reason="optimizer steps: Kornblith et al. fine-tune for 20,000"),
    "images": Bound(0, 10**10, reason="a training-set size beyond any dataset"),
    "resolution": Bound(
        8, 1024, reason="image side in pixels: ImageNet trains at 224; 1024 px fills a GPU"
    ),
    "batch_size": Bound(
        1, 65_536, reason="LAMB's largest ImageNet batch is 32,768 (You et al., 2020)"
    ),
    "aug_repeats": Bound(
        0, 16, reason="RSB and DeiT repeat each image 3 times; each repeat is one more epoch"
    ),
    "crop_padding": Bound(0, 1023, reason="padding stays below the image side, at most 1024 px"),
    "grid_points": Bound(0, 64, reason="each grid value is one more fine-tune per model"),
    "bootstrap": Bound(
        0,
        1_000_000,
        reason="the most resamples per interval (analysis.stats.MAX_RESAMPLES): the intervals "
        "stop earlier once their endpoints are precise to 0.002",
    ),
    "trial_timeout_s": Bound(
        0, 30 * 24 * 3600, reason="30 days is longer than any one trial trains"
    ),
    "trials_per_gpu": Bound(1, 64, reason="each packed trial holds its own model and batch"),
    "task_cpu": Bound(1, 1024, reason="cores of one training task; GPU nodes have a few hundred"),
    "max_attempts": Bound(1, 100, reason="a trial killed 100 times will not finish"),
    "chunks": Bound(
        1,
        10_000,
        reason="training tasks of one study: each is 3 pods, and the analysis task's input "
        "holds one count per chunk within Linux's 128 KiB per argument; raise chunk_size",
    ),
    "draws": Bound(1, 100, reason="each draw builds and stores one more dataset"),
    "class_counts": Bound(
        1,
        20,
        reason="subset sizes of a class-count study, each trained in every draw: Tuggener et "
        "al.'s ImageNet-X has 4 (100, 10, 5, 2 classes)",
    ),
    "subset_classes": Bound(
        2,
        100_000,
        reason="classes of one class subset: a classification subset needs 2; ImageNet-21k "
        "has 21,841",
    ),
    "factor_levels": Bound(
        0,
        20,
        reason="levels of one pretraining factor, each one more dataset pretrained under every "
        "seed and evaluated on every target",
    ),
    "images_per_class": Bound(
        1, 10_000_000, reason="training images per class: ImageNet-21k's largest have ~3,000"
    ),
    "best_models": Bound(
        0, 50, reason="each is one trial's weights exported and uploaded to MLflow, per dataset"
    ),
    "top_k": Bound(
        0,
        500,
        reason="the top-k statistics compare each dataset's k best models (Tuggener et al.: "
        "15 of 500); 0 chooses k from the number of models",
    ),
    # An architecture spec (components.sample.space).
    "stages": Bound(1, 8, reason="AnyNet, ResNet and RegNet have 4 stages"),
    "width": Bound(
        1,
        8192,
        reason="ResNet-50's widest stage has 2048 channels; an 8192-wide 3x3 conv "
        "alone has 604M weights",
    ),
    "stage_depth": Bound(1, 256, reason="ResNet-1001 has 111 blocks per stage"),
    "total_depth": Bound(1, 1024, reason="ResNet-1001 has 333 blocks"),
    "num_classes": Bound(0, 100_000, reason="ImageNet-21k has 21,841 classes"),
    "params": Bound(
        1,
        2 * 10**9,
        reason="8 GB of fp32 weights, 4x with gradients and optimizer state; ResNet-50 has 25.6M",
    ),
    "hub_models": Bound(
        1,
        5_000,
        reason="models one hub: row of a transfer study's model list expands to: timm 1.0.31 "
        "has 1,371 architectures and 1,826 pretrained weights, each scored on every target",
    ),
    # Inputs read before they are parsed (components.common.yamlsafe, components.data).
    "shards": Bound(
        0,
        1_000_000,
        reason="names in one WebDataset brace pattern, counted before any is made: LAION-5B "
        "has under a million shards; 10^9 names would hold ~24 GB",
    ),
    "image_pixels": Bound(
        1,
        8192 * 8192,
        reason="pixels of one source image, read from its header: far above any training "
        "image, far below a decompression bomb (a 140 KB PNG of 12000 x 12000 decodes to 7 GB)",
    ),
    "yaml_bytes": Bound(
        0,
        4 * 2**20,
        reason="a config, recipe or profile is a few KB and a coarse map of ImageNet-21k's "
        "21,841 classes under 1 MB; PyYAML's pure-Python loader takes seconds per MB",
    ),
    "yaml_depth": Bound(
        0,
        64,
        reason="nesting of user YAML: inputs nest a few levels; PyYAML composes recursively "
        "(yaml/composer.py) and ~1000 levels end in a RecursionError",
    ),
}
#: Pipeline parameters (pipelines.config) bounded by a table entry of the same meaning; a list
#: parameter is bounded in its number of items.
PARAMETER_LIMITS = {
    "n_models": "n_models",
    "architectures": "architectures",
    "n_seeds": "n_seeds",
    "datasets": "datasets",
    "train_seeds": "train_seeds",
    "seed": "seed",
    "resolution": "resolution",
    "trial_timeout_s": "trial_timeout_s",
    "trials_per_gpu": "trials_per_gpu",
    "max_attempts": "max_attempts",
    "finetune_max_steps": "steps",
    "n_bootstrap": "bootstrap",
    "best_models": "best_models",
    "top_k": "top_k",
    "data_seed": "seed",
    "class_counts": "class_counts",
    "draws": "draws",
    "images_per_class": "factor_levels",
    "pool_class_counts": "factor_levels",
    "budget_class_counts": "factor_levels",
}


def check_limit(name: str, value: Any, label: str | None = None) -> Any:
    """Returns ``value`` as an int (a list or tuple: each value) if it is a whole number within
    ``LIMITS[name]``.

    Raises:
        ValueError: one line naming ``label`` (default ``name``), the range, the value (quoted
            short) and the reason for the bound.
    """
    label = label or name
    if isinstance(value, list | tuple):
        value = type(value)(check_type(label, item, int) for item in value)
    else:
        value = check_type(label, value, int)
    LIMITS[name].check(label, value)
    return value


def check_count(name: str, items: Any, label: str | None = None) -> None:
    """Raises ValueError unless the number of ``items`` is within ``LIMITS[name]``."""
    check_limit(name, len(items), f"the number of {label or name}")


def limit_type(name: str) -> Callable[[str], int]:
    """An argparse ``type`` for ``LIMITS[name]`` (``--draws 1000000`` is refused with the range
    and the reason)."""
    bound = LIMITS[name]
    return int_in(int(bound.low), int(bound.high), f" ({bound.reason})")


def _high(name: str) -> int:
    return int(LIMITS[name].high)


MAX_MODELS = _high("n_models")
MAX_EPOCHS = _high("epochs")
MIN_RESOLUTION, MAX_RESOLUTION = int(LIMITS["resolution"].low), _high("resolution")
MAX_SEED = _high("seed")
MAX_TRIAL_TIMEOUT_S = _high("trial_timeout_s")
MAX_TASK_CPU = _high("task_cpu")
MAX_CHUNKS = _high("chunks")
MAX_BRACE_EXPANSION = _high("shards")
MAX_IMAGE_PIXELS = _high("image_pixels")
MAX_YAML_BYTES = _high("yaml_bytes")
MAX_YAML_DEPTH = _high("yaml_depth")
# A study name becomes an MLflow experiment name and a store prefix (studies/<name>-<hash>/):
# letters, digits, '.', '_' and '-', starting with a letter or digit; so no path, no control
# character, nothing that escapes the store.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_safe_name(key: str, name: object) -> str:
    """Returns ``name`` if it is a safe name (see :data:`SAFE_NAME`), else raises ValueError."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{key} {short_repr(name)} is not a valid name: use 1-100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (e.g. apr-demo)"
        )
    return name


def int_in(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse ``type`` that accepts integers in ``[low, high]`` with a message naming both."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{low}, {high}]{unit}, got {short_repr(text)}"
            )
        return value

    return parse
