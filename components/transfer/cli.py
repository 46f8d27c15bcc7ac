"""``python -m components.transfer`` / ``aprflow transfer``: score pretrained models' features.

    aprflow transfer --backbone trial:ID|timm:NAME --datasets digits faces [--regimes knn linear]
    aprflow transfer study --models models.csv --datasets digits [--regimes knn linear logme ...]
    aprflow transfer score logme|leep --features F.npy --labels Y.npy [--probs P.npy]
    aprflow transfer hashes IMAGE_OR_FOLDER ... > source.sha256

Without a sub-command, the single-backbone evaluation. ``--regimes`` names the same evaluations
in both (and the transfer-study pipeline's ``regimes`` parameter). Results go to stdout
(``--json``: as JSON), progress to stderr.
"""

from __future__ import annotations

import argparse
import re
import sys

from components.common.cli import add_common_options, print_result, run_cli
from components.common.limits import limit_type
from components.common.progress import report
from components.common.storage import add_store_option
from components.data.datasets import BUILTIN_DATASETS
from components.train.recipes import add_recipe_set_option, recipe_sets
from components.transfer.errors import TransferError
from components.transfer.run import METHODS, evaluate_transfer, format_table, write_csv
from components.transfer.scores import LOGME_VARIANTS, SCORE_METHODS

#: Share of a target's test split that may be a model's training images (content hashes).
MAX_OVERLAP_HELP = (
    "largest share of a target's test images that may be the model's training images, by "
    "content hash (default 0.01: 1 %%); above it the pair is refused"
)
# The common options a caller may put before a sub-command (``aprflow --debug transfer study``).
_COMMON_FLAG = re.compile(r"--debug|--quiet|--verbose|--json|-[qv]+")


def _datasets_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        metavar="DATASET",
        help=f"target dataset names: built in ({', '.join(sorted(BUILTIN_DATASETS))}) or built "
        "in the store with 'aprflow data build' / 'aprflow data subset'",
    )


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
    _datasets_option(parser)
    parser.add_argument(
        "--resolution", type=int, default=16, help="image side of the materialised datasets"
    )
    parser.add_argument(
        "--regimes",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        metavar="REGIME",
        help=f"evaluations, from {' '.join(METHODS)} (default all)",
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
    parser.add_argument("--max-overlap", type=float, default=0.01, help=MAX_OVERLAP_HELP)
    add_store_option(parser)
    parser.add_argument(
        "--out", default=None, metavar="FILE", help="also write a tidy CSV of the results here"
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="log to this MLflow experiment as a transfer study: one parent run, one nested "
        "run per dataset x regime (default: no MLflow logging)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI for --experiment (default: MLFLOW_TRACKING_URI or "
        "sqlite:///runs/mlflow.db)",
    )
    add_common_options(parser, json_output=True)
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    rows = evaluate_transfer(
        args.backbone,
        args.datasets,
        args.resolution,
        args.store,
        args.regimes,
        input_size=args.input_size,
        pretrained=args.pretrained,
        k=args.k,
        seed=args.seed,
        max_overlap=args.max_overlap,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
    )
    if args.out:
        write_csv(rows, args.out)
        report("transfer", f"wrote {args.out}")
    print_result(args, rows, format_table(rows))
    return 0


def build_score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow transfer score",
        description="A cheap transferability score of your own arrays: LogME of features and "
        "labels, or LEEP of source-class probabilities and labels.",
    )
    parser.add_argument("score", choices=SCORE_METHODS, help="the score to compute")
    parser.add_argument("--features", help="(n, D) features, .npy (LogME)")
    parser.add_argument("--labels", required=True, help="(n,) integer target classes, .npy")
    parser.add_argument(
        "--probs", default=None, help="(n, Z) source-class probabilities, .npy (LEEP)"
    )
    parser.add_argument(
        "--variant",
        choices=LOGME_VARIANTS,
        default="paper",
        help="LogME: 'paper' (log|A| over all D feature dimensions, as the evidence equation of "
        "You et al. 2021 says) or 'reference' (thuml/LogME's LogME.py, to reproduce published "
        "numbers; the two differ when n < D)",
    )
    add_common_options(parser, json_output=True)
    return parser


def _score(args: argparse.Namespace) -> int:
    """Prints the score; ``--json``: ``{"logme": value}`` or ``{"leep": value}``."""
    import numpy as np

    from components.transfer.scores import leep, logme

    needed = {
        "logme": ("--features", args.features, "the features"),
        "leep": ("--probs", args.probs, "the source model's class probabilities"),
    }
    option, path, what = needed[args.score]
    if path is None:
        raise TransferError(f"{args.score} needs {option} ({what})")
    labels = np.load(args.labels, allow_pickle=False)
    values = np.load(path, allow_pickle=False)
    if args.score == "logme":
        value = logme(values, labels, variant=args.variant)
    else:
        value = leep(values, labels)
    print_result(args, {args.score: value}, f"{args.score} {value:.6g}")
    return 0


def build_hashes_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow transfer hashes",
        description="Content hashes of image files (SHA-256 of the decoded RGB pixels), one "
        "'HASH  PATH' line each: the source_hashes list of a model list, for weights trained "
        "on these images, against which the transfer study checks each target's test split.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively"
    )
    add_common_options(parser)
    return parser


def _hashes(args: argparse.Namespace) -> int:
    """Prints ``HASH  PATH`` per image as it is hashed (a long list streams)."""
    from components.transfer.leakage import hash_image_files

    count = 0
    for digest, path in hash_image_files(args.paths):
        print(f"{digest}  {path}")
        count += 1
    report("transfer", f"hashed {count} images")
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
    _datasets_option(parser)
    parser.add_argument("--resolution", type=int, default=32, help="side of built-in targets")
    parser.add_argument(
        "--regimes",
        nargs="+",
        choices=REGIMES,
        default=list(CHEAP_REGIMES),
        metavar="REGIME",
        help=f"from {' '.join(REGIMES)} (default {' '.join(CHEAP_REGIMES)})",
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
        "--bootstrap",
        type=limit_type("bootstrap"),
        default=200_000,
        help="the most bootstrap resamples of an interval (fewer once its endpoints are precise "
        "to 0.002)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and heads")
    parser.add_argument(
        "--logme-variant",
        choices=LOGME_VARIANTS,
        default="paper",
        help="LogME's evidence: 'paper' or 'reference' (thuml/LogME's code; see 'aprflow "
        "transfer score --help')",
    )
    parser.add_argument(
        "--curve-points",
        type=int,
        default=10,
        help="test accuracy of each fine-tune / scratch run at step 0 and at this many evenly "
        "spaced steps: the learning curves of the report (0: none; at most 100)",
    )
    parser.add_argument("--max-overlap", type=float, default=0.01, help=MAX_OVERLAP_HELP)
    parser.add_argument("--name", default="transfer", help="study name (MLflow experiment)")
    add_store_option(parser)
    parser.add_argument(
        "--out-dir",
        default="transfer-report",
        metavar="DIR",
        help="report folder (report.html, comparison.json, results.csv, figures/, apr/)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="log to MLflow here (parent run + one nested run per model x dataset x regime)",
    )
    add_common_options(parser, json_output=True)
    return parser


def _study(args: argparse.Namespace) -> int:
    """Plan, every chunk in this process, analysis."""
    from components.transfer.steps import run_all
    from components.transfer.study import StudySettings

    settings = StudySettings(
        regimes=tuple(args.regimes),
        input_size=args.input_size,
        k=args.k,
        batch_size=args.batch_size,
        device=args.device,
        allow_download=args.allow_download,
        finetune_max_steps=args.finetune_max_steps,
        recipe_overrides=recipe_sets(args.sets),
        seed=args.seed,
        max_overlap=args.max_overlap,
        logme_variant=args.logme_variant,
        curve_points=args.curve_points,
    )
    result = run_all(
        args.name,
        args.models,
        args.datasets,
        args.resolution,
        settings,
        args.store,
        args.out_dir,
        args.chunk_size,
        args.bootstrap,
        args.tracking_uri,
    )
    lines = [f"report: {result['report']}", f"results: {result['results']}"]
    if result["apr_report"]:
        lines.append(f"apr report: {result['apr_report']}")
    print_result(args, result, "\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((i for i, word in enumerate(argv) if not _COMMON_FLAG.fullmatch(word)), None)
    command = argv[first] if first is not None else None
    if command == "score":
        return run_cli(build_score_parser(), _score, argv[:first] + argv[first + 1 :])
    if command == "study":
        return run_cli(build_study_parser(), _study, argv[:first] + argv[first + 1 :])
    if command == "hashes":
        return run_cli(build_hashes_parser(), _hashes, argv[:first] + argv[first + 1 :])
    return run_cli(build_parser(), _evaluate, argv)
