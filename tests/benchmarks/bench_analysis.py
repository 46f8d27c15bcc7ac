"""Benchmark of the APR analysis (a script, not collected by pytest).

Two generated tables, timed stage by stage and end to end (``analyze()``: statistics,
figures, HTML/Markdown reports, summary.json), with 1000 bootstrap resamples at most:

- 15,625 models x 3 datasets: the shape of the NATS-Bench topology table (every cell of its
  search space on CIFAR-10, CIFAR-100, ImageNet16-120), here with AnyNetX-like columns;
- 500 models x 10 datasets: Tuggener et al.'s study (500 AnyNetX models, 9-10 datasets).

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_analysis.py [--repeats 1]
        [--shape 15625x3 --shape 500x10] [--bootstrap 1000] [--evaluations]

``--evaluations`` adds two further evaluations of each checkpoint (``top5_error`` and a
second test set ``top1_error@v2``), as the trials write them: three metrics per row,
compared with each other on every dataset. ``--test-size N`` gives every dataset a test
split of N images, so the intervals include its binomial noise, as a study's analysis does;
the demo's statistics (8 models, 200,000 resamples at most) are about

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_analysis.py --shape 8x3 \
        --evaluations --bootstrap 200000 --test-size 100 --repeats 3

Target on the 2-core development machine: 15,625 x 3 under 10 s and 500 x 10 under 3 s end
to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from analysis import analyze, load_results
from analysis.compute import compute_analysis
from analysis.files import write_atomic
from analysis.report import model_table, render_figures, render_template, report_context, to_json
from analysis.synthetic import synthetic_results


def with_evaluations(frame, seed: int = 0):
    """``frame`` with a top-5 error and an error on a second test set per row, both related
    to the top-1 error with noise (columns read as metrics of the same checkpoints)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    top1 = frame["top1_error"].to_numpy()
    return frame.assign(
        top5_error=np.clip(top1 / 4 + rng.normal(0, 0.5, top1.size), 0, 100),
        **{"top1_error@v2": np.clip(top1 * 1.2 + rng.normal(0, 2, top1.size), 0, 100)},
    )


class Clock:
    """Wall-clock and CPU seconds of the stages of one run. On a shared machine the wall
    time depends on the other jobs; the CPU time of this process does not."""

    def __init__(self) -> None:
        self.stages: dict[str, tuple[float, float]] = {}
        self._start = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.stages[name] = (now[0] - self._start[0], now[1] - self._start[1])
        self._start = now


def stage_times(frame, out: Path, n_bootstrap: int, noise: dict) -> tuple[Clock, int]:
    """Seconds of each stage of one analysis (the same steps ``analyze()`` takes) and the
    most bootstrap resamples a pair used; ``noise``: the test-set noise arguments."""
    clock = Clock()
    table = load_results(frame, scale="percent")
    clock.lap("load_results")
    analysis = compute_analysis(table, n_bootstrap=n_bootstrap, **noise)
    clock.lap("statistics")
    pngs = render_figures(analysis)
    clock.lap("figures")
    context = report_context(analysis.summary, pngs, model_table(analysis))
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        write_atomic(out / "figures" / f"{name}.png", png)
    write_atomic(out / "report.md", render_template("report.md.j2", context))
    write_atomic(out / "report.html", render_template("report.html.j2", context))
    write_atomic(out / "summary.json", to_json(analysis.summary))
    clock.lap("reports + files")
    used = max(
        pair["spearman"].get("n_boot_valid") or 0
        for pair in analysis.summary["apr"]["targets"].values()
    )
    return clock, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help="MODELSxDATASETS (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--evaluations", action="store_true", help="add top-5 and a 2nd test set")
    parser.add_argument(
        "--test-size", type=int, default=0, help="test images per dataset (binomial noise)"
    )
    args = parser.parse_args()
    for shape in args.shape or ["15625x3", "500x10"]:
        n_models, n_datasets = (int(v) for v in shape.split("x"))
        frame = synthetic_results(n_models, n_datasets, n_failed=10)
        if args.evaluations:
            frame = with_evaluations(frame)
        print(
            f"== {n_models} models x {n_datasets} datasets ({len(frame)} rows"
            f"{', 3 evaluations each' if args.evaluations else ''}), bootstrap <= {args.bootstrap}"
        )
        noise: dict = {}
        if args.test_size:
            sizes = dict.fromkeys(frame["dataset"].unique(), args.test_size)
            noise = {"test_noise": "binomial", "test_sizes": sizes}
        with tempfile.TemporaryDirectory() as out:
            clock, used = stage_times(frame, Path(out), args.bootstrap, noise)
            for name, (wall, cpu) in clock.stages.items():
                print(f"  {name:24s} {wall:6.2f} s wall  {cpu:6.2f} s CPU")
            print(f"  (bootstrap resamples per pair: {used})")
            walls, cpus = [], []
            for _ in range(args.repeats):
                start, cpu = time.perf_counter(), time.process_time()
                table = load_results(frame, scale="percent")
                analyze(table, out, n_bootstrap=args.bootstrap, **noise)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
            html = (Path(out) / "report.html").stat().st_size / 1e6
        print(
            f"  {'end to end (analyze)':24s} {statistics.median(walls):6.2f} s wall  "
            f"{statistics.median(cpus):6.2f} s CPU  (median of {args.repeats}; "
            f"report.html {html:.1f} MB; load average {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
