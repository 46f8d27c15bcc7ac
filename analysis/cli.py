"""``aprflow analyze RESULTS.csv --reference DATASET --out-dir DIR`` (``python -m analysis``).

The report goes to ``--out-dir``; stdout gets a summary line (the report's ``summary.json``
with ``--json``).
"""

from __future__ import annotations

import argparse

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
    add_common_options(parser, json_output=True)
    return parser


def _analyze(args: argparse.Namespace) -> int:
    from analysis.report import analyze  # matplotlib: not for --help

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
