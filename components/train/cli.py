"""``aprflow train`` (``python -m components.train``): train one architecture on one dataset.

The trial's result is printed on stdout as JSON (``aprflow train ... | jq``); progress goes to
stderr. Exit status 0 when the trial is ``ok``, 1 when it failed or diverged (its result is
still printed) or the input was refused, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json

from components.common.cli import add_common_options, print_result, run_cli
from components.common.limits import MAX_EPOCHS, int_in, limit_type
from components.common.progress import report
from components.common.storage import add_store_option, open_store
from components.data.datasets import BUILTIN_DATASETS, prepare_all
from components.data.descriptor import INPUT_MODES
from components.train.definition import PRECISIONS, check_compile
from components.train.engines import ENGINES
from components.train.plan import engine_options
from components.train.recipes import (
    RECIPES,
    add_recipe_set_option,
    check_crop_padding,
    recipe_input,
    recipe_sets,
    resolve_recipe,
)
from components.train.trial import Trial, run_trial


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow train",
        description="Train one architecture on one dataset and print its result as JSON (the "
        "result is JSON by nature: --json changes nothing). The trial "
        "is idempotent: its result is stored under trials/<trial_id>/ and reused when the same "
        "trial runs again; an interrupted trial resumes from its last epoch.",
    )
    parser.add_argument(
        "--spec",
        required=True,
        help="architecture: a JSON spec file, a JSONL file from 'aprflow sample' (--index), or "
        "timm:NAME for a timm model trained from scratch (e.g. timm:resnet18)",
    )
    parser.add_argument("--index", type=int, default=0, help="line of a JSONL spec file")
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"a built-in dataset ({', '.join(sorted(BUILTIN_DATASETS))}) or a name built in the "
        "store with 'aprflow data build' / 'aprflow data subset'",
    )
    parser.add_argument(
        "--resolution",
        type=limit_type("resolution"),
        default=16,
        help="training image side in pixels",
    )
    parser.add_argument(
        "--input",
        choices=INPUT_MODES,
        default=None,
        help="memory (decoded once, augmented on the device) or stream (shards through "
        "DataLoader workers, per-image timm augmentation); default: stream when the recipe "
        "asks for per-image augmentation only the stream input does (RandAugment, "
        "RandomResizedCrop ranges, colour jitter, random erasing: the rsb_* recipes), else "
        "memory when it fits 1 GiB",
    )
    parser.add_argument(
        "--recipe",
        default="apr_tiny",
        help=f"training recipe (recipes/*.yaml; 'aprflow recipes' lists them): "
        f"{', '.join(sorted(RECIPES))}",
    )
    add_recipe_set_option(parser)
    parser.add_argument(
        "--epochs",
        type=int_in(0, MAX_EPOCHS),
        default=0,
        help="0 = the recipe's own (same as --set recipe.epochs=N)",
    )
    parser.add_argument("--seed", type=limit_type("seed"), default=0, help="training seed")
    parser.add_argument("--engine", default="torch", choices=sorted(ENGINES))
    parser.add_argument(
        "--zero-stage",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="DeepSpeed ZeRO stage (engine deepspeed; part of the trial id)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (bf16 autocast on a GPU, fp32 on the CPU), fp32, bf16 or fp16 (GPU, with "
        "loss scaling); part of the trial id",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (engine torch; kernels cached in TORCHINDUCTOR_CACHE_DIR, "
        "default ~/.cache/aprflow/inductor; a compiled trial has its own trial id)",
    )
    add_store_option(parser)
    add_common_options(parser, json_output=True)
    return parser


def _load_spec(path: str, index: int) -> dict:
    from components.sample.models import named_spec
    from components.sample.space import AnyNetSpec
    from components.sample.spec_io import read_specs_jsonl

    if path.startswith("timm:"):
        return named_spec(path.removeprefix("timm:"))
    if path.endswith(".jsonl"):
        specs = read_specs_jsonl(path)
        if not 0 <= index < len(specs):
            raise ValueError(f"--index {index} is out of range: {path} holds {len(specs)} specs")
        spec = specs[index]
    else:
        with open(path) as f:
            spec = AnyNetSpec.from_dict(json.load(f))
    # A structurally broken spec is bad input here, not a trial result to store for good.
    spec.validate(design_space=False)
    return spec.to_dict()


def _train(args: argparse.Namespace) -> int:
    check_compile(args.engine, args.compile)
    spec = _load_spec(args.spec, args.index)
    overrides = ({"epochs": args.epochs} if args.epochs else {}) | recipe_sets(args.sets)
    recipe = resolve_recipe(args.recipe, overrides)
    options = engine_options(args.engine, args.zero_stage, args.precision)
    # Checked before anything is written.
    data_input = recipe_input(recipe, args.input, args.dataset)
    check_crop_padding(recipe, data_input, args.resolution, args.dataset)
    if data_input and not args.input:
        report(
            "train",
            f"recipe {recipe.name} sets {', '.join(recipe.stream_augmentations())}: "
            "stream input (per-image augmentation)",
        )
    settings = {args.dataset: {"input": data_input}} if data_input else {}
    (dataset,) = prepare_all([args.dataset], args.resolution, 0, args.store, settings)
    trial = Trial(
        spec=spec,
        dataset=dataset,
        recipe=recipe,
        seed=args.seed,
        engine=args.engine,
        compile_model=args.compile,
        engine_options=options,
    )
    # Epoch lines are progress: stderr, leaving stdout to the result.
    result = run_trial(open_store(args.store), trial)
    print_result(args, result)
    return 0 if result["status"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    """Runs ``aprflow train``: 0 for an ``ok`` trial, 1 for a failed one or a failure, 2 for a
    usage error."""
    return run_cli(build_parser(), _train, argv)
