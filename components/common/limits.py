"""Bounds of study sizes that every entry point enforces up front (``aprflow run`` preflight and
the step CLIs): far above any real study (the paper: 500 models, 600 epochs, 224 px) and far
below what would sample for hours or allocate terabytes by mistake."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

MAX_MODELS = 10_000
MAX_EPOCHS = 10_000
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
MAX_SEED = 2**32 - 1
# A trial's wall-clock limit (trial_timeout_s, seconds): 30 days is longer than any one trial
# trains and short of a mistyped number.
MAX_TRIAL_TIMEOUT_S = 30 * 24 * 3600
# Shards one WebDataset brace pattern may name ({000000..000999}): the largest public sets
# (LAION-5B at ~10k samples a shard) have under a million; the names are counted before any is
# made, and 10^9 of them would hold ~24 GB before the first shard is checked.
MAX_BRACE_EXPANSION = 1_000_000
# Pixels one source image may have (8192 x 8192): far above any training image, far below a
# decompression bomb (a 140 KB PNG of 12000 x 12000 needs 7 GB to decode); a larger image is
# skipped, unread. PIL's own guard is set to it too (it warns above it, raises above twice it).
MAX_IMAGE_PIXELS = 8192 * 8192
# Size of a user YAML text (config file, --set value, recipe, coarse map, cluster profile):
# configs are a few KB and a coarse map of ImageNet-21k's 21,841 classes under 1 MB, while
# PyYAML's pure-Python loader takes seconds per MB and memory per node.
MAX_YAML_BYTES = 4 * 2**20
# Nesting depth of user YAML: aprflow's inputs nest a few levels, and PyYAML composes nested
# collections recursively (yaml/composer.py), so ~1000 levels would end in a RecursionError.
MAX_YAML_DEPTH = 64
# A study name becomes an MLflow experiment name and a store prefix (studies/<name>-<hash>/):
# letters, digits, '.', '_' and '-', starting with a letter or digit; so no path, no control
# character, nothing that escapes the store.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_safe_name(key: str, name: object) -> str:
    """Returns ``name`` if it is a safe name (see :data:`SAFE_NAME`), else raises ValueError."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{key} {name!r} is not a valid name: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. apr-demo)"
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
                f"expected an integer in [{low}, {high}]{unit}, got {text!r}"
            )
        return value

    return parse
