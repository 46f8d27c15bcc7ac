"""``python -m components.transfer``: score a backbone's fixed features on datasets.

Sub-commands: ``score`` (LogME / LEEP of your own arrays) and ``study`` (many models x
targets x regimes into one long results table, then the analysis); without one, the
single-backbone evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.errors import AprflowError
from components.common.limits import limit_type
from components.common.storage import add_store_option
from components.data.datasets import BUILTIN_DATASETS
from components.train.recipes import add_recipe_set_option, recipe_sets
from components.transfer.errors import TransferError
from components.transfer.run import METHODS, evaluate_transfer, format_table, write_csv
from components.transfer.scores import SCORE_METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow transfer",
        description="Embed datasets with a backbone (a trained trial or a timm model) "
        "and score the fixed features: cosine kNN top-1 and top-5 fraction, and a linear "
        "probe (L-BFGS logistic regression, C chosen on a validation split).",
        epilog="Many models at once (kNN, probe, LogME, LEEP, fine-tune, scratch, and whether "
        "the cheap scores predict fine-tuning): 'aprflow transfer study --help'. A score of "
        "your own arrays: 'aprflow transfer score --help'.",
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
        help=f"dataset names: built in ({', '.join(sorted(BUILTIN_DATASETS))}) or built in the "
        "store with 'aprflow data build' / 'aprflow data subset'",
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
    add_store_option(parser)
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


def build_study_parser() -> argparse.ArgumentParser:
    from components.transfer.study import CHEAP_REGIMES, REGIMES

    parser = argparse.ArgumentParser(
        prog="aprflow transfer study",
        description="Many models x target datasets x regimes into one long results table "
        "(model, dataset, regime, metric, value, unit, seconds, status), then the comparison "
        "of every cheap score with fine-tuning and the APR analysis. Models that cannot be "
        "loaded or run are recorded failed with the reason; the others go on.",
    )
    parser.add_argument(
        "--models",
        required=True,
        help="model list CSV (columns model[,weights,source_dataset,source_top1,unit]; "
        "'# unit: percent' states the unit of source_top1): local path or s3://bucket/key",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        help="target dataset names: built in or built in the store with 'aprflow data'",
    )
    parser.add_argument("--resolution", type=int, default=32, help="side of built-in targets")
    parser.add_argument(
        "--regimes",
        default=",".join(CHEAP_REGIMES),
        help=f"comma-separated, from {','.join(REGIMES)} (default {','.join(CHEAP_REGIMES)})",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input side for every model (default: each model's pretrained_cfg)",
    )
    parser.add_argument("--k", type=int, default=5, help="neighbours of the kNN fraction")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help="let timm download weights for models whose weights are 'hub'",
    )
    parser.add_argument(
        "--finetune-max-steps",
        type=limit_type("steps"),
        default=None,
        help="cap on fine-tune/scratch steps (default: 20k scaled by dataset size)",
    )
    add_recipe_set_option(parser)  # over the finetune and scratch recipes
    parser.add_argument("--chunk-size", type=int, default=0, help="models per chunk (0: 8)")
    parser.add_argument(
        "--bootstrap", type=limit_type("bootstrap"), default=1000, help="bootstrap resamples"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and heads")
    parser.add_argument("--name", default="transfer", help="study name (MLflow experiment)")
    add_store_option(parser)
    parser.add_argument(
        "--out",
        default="transfer-report",
        help="report folder (report.html, comparison.json, results.csv, figures/, apr/)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="log to MLflow here (parent run + one nested run per model x dataset x regime)",
    )
    return parser


def study_main(argv: list[str]) -> int:
    """``aprflow transfer study``: plan, every chunk in this process, analysis."""
    from components.transfer.steps import run_all
    from components.transfer.study import StudySettings

    args = build_study_parser().parse_args(argv)
    try:
        settings = StudySettings(
            regimes=tuple(r.strip() for r in args.regimes.split(",") if r.strip()),
            input_size=args.input_size,
            k=args.k,
            batch_size=args.batch_size,
            device=args.device,
            allow_download=args.allow_download,
            finetune_max_steps=args.finetune_max_steps,
            recipe_overrides=recipe_sets(args.sets),
            seed=args.seed,
        )
        result = run_all(
            args.name,
            args.models,
            args.datasets,
            args.resolution,
            settings,
            args.store,
            args.out,
            args.chunk_size,
            args.bootstrap,
            args.tracking_uri,
        )
    except (AprflowError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {result['report']}")
    print(f"results: {result['results']}")
    if result["apr_report"]:
        print(f"apr report: {result['apr_report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["score"]:
        return score_main(argv[1:])
    if argv[:1] == ["study"]:
        return study_main(argv[1:])
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
