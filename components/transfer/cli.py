"""``python -m components.transfer``: score a backbone's fixed features on datasets.

Sub-command ``score``: LogME / LEEP of your own arrays; without one, the single-backbone
evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.errors import AprflowError
from components.common.storage import default_store_uri
from components.data.datasets import BUILTIN_DATASETS
from components.transfer.errors import TransferError
from components.transfer.run import METHODS, evaluate_transfer, format_table, write_csv
from components.transfer.scores import SCORE_METHODS


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


def build_score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow transfer score",
        description="A cheap transferability score of your own arrays, printed as JSON: "
        "LogME of features and labels, or LEEP of source-class probabilities and labels.",
    )
    parser.add_argument("--method", required=True, choices=SCORE_METHODS)
    parser.add_argument("--features", required=True, help="(n, D) features, .npy")
    parser.add_argument("--labels", required=True, help="(n,) integer target classes, .npy")
    parser.add_argument(
        "--probs", default=None, help="(n, Z) source-class probabilities, .npy (LEEP)"
    )
    return parser


def score_main(argv: list[str]) -> int:
    """``aprflow transfer score``: prints ``{"logme": value}`` or ``{"leep": value}``."""
    import numpy as np

    from components.transfer.scores import leep, logme

    args = build_score_parser().parse_args(argv)
    try:
        labels = np.load(args.labels, allow_pickle=False)
        if args.method == "logme":
            value = logme(np.load(args.features, allow_pickle=False), labels)
        else:
            if args.probs is None:
                raise TransferError("leep needs --probs (the source model's class probabilities)")
            value = leep(np.load(args.probs, allow_pickle=False), labels)
    except (AprflowError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({args.method: value}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["score"]:
        return score_main(argv[1:])
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
