"""Command line: ``python -m analysis RESULTS.csv --reference DATASET --out DIR``."""

from __future__ import annotations

import argparse
import sys

from analysis.report import analyze
from analysis.table import SCALES, load_results

# Exit status for bad input, as argparse uses for bad arguments.
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the analysis CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Analyse the architecture-performance relationship across datasets.",
    )
    parser.add_argument(
        "results",
        help="results table (.csv, or .parquet/.pq): wide (metric columns) or long "
        "(columns metric, value)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--reference",
        default=None,
        help="reference dataset (default: 'imagenet' if present, else the one with most models)",
    )
    parser.add_argument("--top-k", type=int, default=15, help="top-k size (default 15)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="most bootstrap resamples per comparison (default 1000; fewer once the interval "
        "endpoints are precise to 0.002; 0: no intervals)",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the analysis from the command line.

    Returns:
        0 on success, 2 on bad input (one ``error: ...`` line on stderr).
    """
    args = build_parser().parse_args(argv)
    try:
        table = load_results(args.results, metric=args.metric, scale=args.scale)
        summary = analyze(
            table,
            args.out,
            reference=args.reference,
            top_k=args.top_k,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            title=args.title,
            regime=args.regime,
            metric=args.metric,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    n_excluded = summary["input"]["n_rows_excluded"]
    print(
        f"analysed {summary['input']['n_models']} models on {summary['input']['n_datasets']} "
        f"datasets (reference {summary['apr']['reference']}, {n_excluded} rows excluded); "
        f"report: {args.out}/report.html"
    )
    return 0
