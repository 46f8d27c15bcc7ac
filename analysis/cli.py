"""``aprflow analyze RESULTS.csv --reference DATASET --out-dir DIR`` (``python -m analysis``).

The report goes to ``--out-dir``; stdout gets a summary line (the report's ``summary.json``
with ``--json``).
"""

from __future__ import annotations

import argparse

from analysis.stats import DEFAULT_RESAMPLES, MAX_RESAMPLES, MC_TOLERANCE, TEST_NOISE
from analysis.table import SCALES, load_results
from components.common.cli import add_common_options, print_result, run_cli


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the analysis CLI."""
    parser = argparse.ArgumentParser(
        prog="aprflow analyze",
        description="Analyse the architecture-performance relationship across datasets.",
    )
    parser.add_argument(
        "results",
        help="results table (.csv, or .parquet/.pq): wide (metric columns) or long "
        "(columns metric, value)",
    )
    parser.add_argument(
        "--out-dir", required=True, help="output folder (report.html, summary.json, figures)"
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="reference dataset (default: 'imagenet' if present, else the one with most models)",
    )
    parser.add_argument("--top-k", type=int, default=15, help="top-k size (default 15)")
    parser.add_argument(
        "--bootstrap",
        type=_resamples,
        default=DEFAULT_RESAMPLES,
        help=f"most bootstrap resamples per comparison (default {DEFAULT_RESAMPLES:,}, at most "
        f"{MAX_RESAMPLES:,}; fewer once the interval endpoints are precise to {MC_TOLERANCE}, "
        "else their Monte-Carlo error is printed beside them; 0: no intervals)",
    )
    parser.add_argument(
        "--test-noise",
        choices=TEST_NOISE,
        default="auto",
        help="include the noise of the finite test sets in the intervals: 'binomial' redraws "
        "each model's error from Binomial(n_test, error) in every resample (needs --test-size "
        "of every dataset), 'none' resamples the models only; default 'auto': binomial for "
        "the datasets with a --test-size",
    )
    parser.add_argument(
        "--test-size",
        type=_test_size,
        action="append",
        default=[],
        metavar="DATASET=N",
        help="images in a dataset's test split, for --test-noise (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--metric",
        default=None,
        help="wide table: the primary metric column (default: first of error, top1_error, "
        "accuracy, top1; the evaluation columns top5_error and <metric>@<test set> are read "
        "beside it); long table: the primary metric",
    )
    parser.add_argument(
        "--regime",
        default=None,
        help="the primary regime (column regime, recipe or method) when there are several",
    )
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default=None,
        help="unit of the metric values (default: a '# unit: ...' line or 'unit' column; "
        "without one, values above 1 mean percent and all values in [0, 1] are refused)",
    )
    parser.add_argument("--title", default=None, help="report title")
    add_common_options(parser, json_output=True)
    return parser


def _resamples(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to {MAX_RESAMPLES:,}, got {text!r}"
        )
    return int(text)


def _test_size(text: str) -> tuple[str, int]:
    name, separator, count = text.rpartition("=")
    if not separator or not name or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(
            f"expected DATASET=N with N a positive number of test images, got {text!r}"
        )
    return name, int(count)


def _analyze(args: argparse.Namespace) -> int:
    from analysis.report import analyze  # matplotlib: not for --help

    sizes = dict(args.test_size)
    if len(sizes) < len(args.test_size):
        names = [name for name, _ in args.test_size]
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"--test-size given more than once for {repeated}")
    table = load_results(args.results, metric=args.metric, scale=args.scale)
    summary = analyze(
        table,
        args.out_dir,
        reference=args.reference,
        top_k=args.top_k,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        title=args.title,
        regime=args.regime,
        metric=args.metric,
        test_noise=args.test_noise,
        test_sizes=sizes,
    )
    n_excluded = summary["input"]["n_rows_excluded"]
    print_result(
        args,
        summary,
        text=f"analysed {summary['input']['n_models']} models on "
        f"{summary['input']['n_datasets']} datasets (reference {summary['apr']['reference']}, "
        f"{n_excluded} rows excluded); report: {args.out_dir}/report.html",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``aprflow analyze``: 0 on success, 1 on a failure (bad input: one ``error: ...``
    line on stderr), 2 on a usage error."""
    return run_cli(build_parser(), _analyze, argv)
