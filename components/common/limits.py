"""Bounds of study sizes that every entry point enforces up front (``aprflow run`` preflight and
the step CLIs): far above any real study (the paper: 500 models, 600 epochs, 224 px) and far
below what would sample for hours or allocate terabytes by mistake."""

from __future__ import annotations

import argparse
from collections.abc import Callable

MAX_MODELS = 10_000
MAX_EPOCHS = 10_000
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
MAX_SEED = 2**32 - 1


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
