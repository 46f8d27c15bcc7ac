"""``python -m components.data`` / ``aprflow data``: materialise datasets into the store."""

from __future__ import annotations

import argparse
import json
import sys

from components.common.errors import AprflowError
from components.common.storage import default_store_uri
from components.data.datasets import BUILTIN_DATASETS, prepare_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow data",
        description="Materialise built-in datasets as shards in the artifact store (idempotent: "
        "an existing dataset with the same descriptor is reused) and print their references.",
    )
    parser.add_argument(
        "datasets", nargs="+", help=f"dataset names: {', '.join(sorted(BUILTIN_DATASETS))}"
    )
    parser.add_argument("--resolution", type=int, default=16, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="generator and split seed")
    parser.add_argument("--store", default=None, help=f"store URI (default {default_store_uri()})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for ref in prepare_all(args.datasets, args.resolution, args.seed, args.store):
            print(json.dumps(ref.to_dict()))
    except AprflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
