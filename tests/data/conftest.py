"""Fixtures of generated image collections (the generators live in imagesets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagesets import make_image_folder, make_webdataset


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "folder")


@pytest.fixture
def shard_pattern(tmp_path) -> str:
    return make_webdataset(tmp_path / "wds")
