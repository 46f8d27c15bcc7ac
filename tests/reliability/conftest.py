"""Fixtures of the fault-injection tests (helpers are in faults.py)."""

import pytest

from components.common.storage import open_store


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"))
