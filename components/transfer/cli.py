"""``python -m components.transfer``: score a backbone's fixed features on datasets."""

from __future__ import annotations

import argparse
import sys

from components.common.errors import AprflowError
from components.common.storage import default_store_uri
from components.data.datasets import BUILTIN_DATASETS
from components.transfer.run import METHODS, evaluate_transfer, format_table, write_csv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow transfer",
        description="Embed built-in datasets with a backbone (a trained trial or a timm model) "
        "and score the fixed features: cosine kNN top-1 and top-5 fraction, and a linear "
        "probe (L-BFGS logistic regression, C chosen on a validation split).",
    )
    parser.add_argument(
        "--backbone",
        required=True,
        help="trial:<trial_id> (a trained trial in the store) or timm:<model name>",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        help=f"dataset names: {', '.join(sorted(BUILTIN_DATASETS))}",
    )
    parser.add_argument(
        "--resolution", type=int, default=16, help="image side of the materialised datasets"
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated evaluations (default {','.join(METHODS)})",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="resize images to this side for the backbone (default: the backbone's own: the "
        "trial's training resolution, or the timm model's default input size)",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="timm backbones: load timm's pretrained weights (needs network or a cache)",
    )
    parser.add_argument("--k", type=int, default=5, help="neighbours of the kNN fraction score")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--store", default=None, help=f"store URI (default {default_store_uri()})")
    parser.add_argument("--out", default=None, help="write a tidy CSV of the results here")
    parser.add_argument(
        "--experiment",
        default=None,
        help="log to this MLflow experiment as a transfer study: one parent run, one nested "
        "run per dataset x method (default: no MLflow logging)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI for --experiment (default: MLFLOW_TRACKING_URI or "
        "sqlite:///runs/mlflow.db)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = evaluate_transfer(
            args.backbone,
            args.datasets,
            args.resolution,
            args.store,
            args.methods,
            input_size=args.input_size,
            pretrained=args.pretrained,
            k=args.k,
            seed=args.seed,
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
        )
        if args.out:
            write_csv(rows, args.out)
    except (AprflowError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.out:
        print(f"wrote {args.out}")
    return 0
