"""APR analysis: compare the architecture-performance relationship across datasets.

Pure numpy/scipy/matplotlib; see ``analysis/README.md``.
"""

from analysis.report import analyze
from analysis.table import ResultsTable, load_results

__all__ = ["ResultsTable", "analyze", "load_results"]
