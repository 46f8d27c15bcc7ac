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
