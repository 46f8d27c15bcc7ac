"""APR analysis: compare the architecture-performance relationship across datasets.

Pure numpy/scipy/matplotlib; see ``analysis/README.md``. The public names load on first use, so
that importing a light submodule (``analysis.words``) does not import scipy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "analyze": "analysis.report",
    "ResultsTable": "analysis.table",
    "load_results": "analysis.table",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
