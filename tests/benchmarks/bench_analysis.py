"""Benchmark of the APR analysis (a script, not collected by pytest).

Generates a synthetic 500 models x 10 datasets table with architecture columns and times
the statistics alone (``compute_analysis``) and ``analyze()`` end to end (statistics,
figures, reports, files), each with 1000 bootstrap resamples.

    PYTHONPATH=. python tests/benchmarks/bench_analysis.py [--models 500] [--datasets 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from analysis import analyze, load_results
from analysis.compute import compute_analysis
from analysis.synthetic import synthetic_results


def timed(function, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``function``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--datasets", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    frame = synthetic_results(args.models, args.datasets, n_seeds=args.seeds, n_failed=10)
    table = load_results(frame)
    print(
        f"table: {len(frame)} rows ({args.models} models x {args.datasets} datasets x "
        f"{args.seeds} seed(s)), {args.bootstrap} bootstrap resamples"
    )
    with tempfile.TemporaryDirectory() as out:
        runs = {
            "load_results": lambda: load_results(frame),
            "statistics (compute_analysis)": lambda: compute_analysis(
                table, n_bootstrap=args.bootstrap
            ),
            "analyze() end to end": lambda: analyze(table, out, n_bootstrap=args.bootstrap),
        }
        for name, function in runs.items():
            times = timed(function, args.repeats)
            print(
                f"{name:32s} median {statistics.median(times):6.2f} s  "
                f"(min {min(times):.2f}, max {max(times):.2f}, n={args.repeats})"
            )


if __name__ == "__main__":
    main()
