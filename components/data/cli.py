"""``python -m components.data`` / ``aprflow data``: build, derive, describe and list datasets.

    aprflow data build NAME --from URI [--split auto|given|val=0.1,test=0.2] [--resolution N]
    aprflow data subset PARENT --classes K | --per-class N | --coarse MAP --seed S --name NEW
    (build and subset: --replace rebinds a NAME already bound to other content)
    aprflow data describe NAME [--json]
    aprflow data list [--json]
    aprflow data prepare digits shapes --resolution 16    (also: aprflow data digits shapes)

A name built or derived here is usable in a study (``datasets: [NAME, digits]``) that uses the
same artifact store. A name is bound once: building other content under it is refused without
``--replace``; the built-in names are reserved.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.errors import AprflowError
from components.common.limits import limit_type
from components.common.storage import add_store_option, open_store
from components.data.build import (
    build_dataset,
    check_target,
    list_named,
    load_manifest,
    named_dataset,
)
from components.data.datasets import BUILTIN_DATASETS, prepare_all
from components.data.descriptor import (
    DatasetDescriptor,
    DatasetError,
    DatasetRef,
    ImagePolicy,
    SplitRule,
    SubsetRule,
)

COMMANDS = ("build", "subset", "describe", "list", "prepare")
SEED = limit_type("seed")
RESOLUTION = limit_type("resolution")


def add_replace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace",
        action="store_true",
        help="rebind the name if it is bound to other content (else that is refused)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow data",
        description="Datasets as versioned tar shards in the artifact store: build one from an "
        "image collection, derive subsets, describe and list them, or materialise built-in "
        "sets. Builds are content-addressed: the same inputs are never built twice.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build a named dataset from a source URI")
    build.add_argument("name", help="dataset name (lower-case letters, digits, '_', '.', '-')")
    build.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a directory or s3:// prefix (ImageFolder), a shard pattern "
        "'dir/shard-{000000..000009}.tar', a .csv/.parquet manifest (path,label[,split]), "
        "torchvision:CLASS:ROOT or builtin:NAME",
    )
    build.add_argument(
        "--split",
        default="auto",
        help="auto (the source's splits, else stratified), given, stratified, or "
        "val=F,test=F (default auto; fractions default val=0.1,test=0.2)",
    )
    build.add_argument(
        "--resolution",
        type=RESOLUTION,
        default=None,
        help="resize images to N x N when storing",
    )
    build.add_argument("--encoding", default="png", choices=["png", "jpeg"])
    build.add_argument("--classes", default="", help="comma-separated class list to keep")
    build.add_argument("--seed", type=SEED, default=0, help="split and shuffle seed")
    add_replace_option(build)
    add_store_option(build)

    subset = commands.add_parser("subset", help="derive a subset of a named dataset")
    subset.add_argument("parent", help="a dataset built or derived before")
    subset.add_argument("--name", required=True, help="name of the derived dataset")
    subset.add_argument("--classes", type=int, default=0, help="keep K random classes")
    subset.add_argument(
        "--independent",
        action="store_true",
        help="draw each class count independently (default: nested draws, 2 within 5 ...)",
    )
    subset.add_argument("--draw", type=int, default=0, help="index of the class draw")
    subset.add_argument(
        "--draws",
        type=limit_type("draws"),
        default=1,
        help="build this many draws, named NAME-d0, NAME-d1, ...",
    )
    subset.add_argument("--per-class", type=int, default=0, help="training images per class")
    subset.add_argument(
        "--total",
        type=int,
        default=0,
        help="fixed training budget: per-class = TOTAL // classes kept",
    )
    subset.add_argument(
        "--coarse", default="", help="child->parent class map (.json, .yaml or .csv child,parent)"
    )
    subset.add_argument("--seed", type=SEED, default=0, help="seed of the draws")
    add_replace_option(subset)
    add_store_option(subset)

    describe = commands.add_parser("describe", help="show a named dataset's manifest")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    add_store_option(describe)

    listing = commands.add_parser("list", help="list the datasets built in the store")
    listing.add_argument("--json", action="store_true")
    add_store_option(listing)

    prepare = commands.add_parser("prepare", help="materialise datasets as a study would")
    prepare.add_argument("datasets", nargs="+", help="built-in or built names")
    prepare.add_argument(
        "--resolution",
        type=RESOLUTION,
        default=16,
        help="image side in pixels",
    )
    prepare.add_argument("--seed", type=SEED, default=0, help="generator and split seed")
    add_store_option(prepare)
    return parser


def _build(args: argparse.Namespace) -> int:
    descriptor = DatasetDescriptor(
        name=args.name,
        source=args.source,
        split=SplitRule.parse(args.split, seed=args.seed),
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()),
        image=ImagePolicy(resolution=args.resolution, encoding=args.encoding),
    )
    store = open_store(args.store)
    store.check()
    ref = build_dataset(store, descriptor, replace=args.replace)
    print(json.dumps(ref.to_dict()))
    return 0


def _subset(args: argparse.Namespace) -> int:
    from components.data.subsets import read_coarse_map, subset_descriptor

    store = open_store(args.store)
    store.check()
    coarse = read_coarse_map(args.coarse) if args.coarse else ()
    per_class = args.per_class
    if args.total:
        if per_class:
            raise DatasetError("give --per-class or --total, not both")
        record = named_dataset(store, args.parent)
        n_classes = args.classes or (record["ref"]["num_classes"] if record else 0)
        if not n_classes:
            raise DatasetError(f"no dataset {args.parent!r} in {store.uri}")
        per_class = args.total // n_classes
    draws = range(args.draw, args.draw + args.draws)
    descriptors = []
    for draw in draws:
        rule = SubsetRule(
            classes=args.classes,
            nested=not args.independent,
            draw=draw,
            per_class=per_class,
            coarse=coarse,
            seed=args.seed,
        )
        name = f"{args.name}-d{draw}" if args.draws > 1 else args.name
        descriptors.append(subset_descriptor(name, args.parent, rule))
    for descriptor in descriptors:
        check_target(descriptor)  # every name before the first build
    for descriptor in descriptors:
        ref = build_dataset(store, descriptor, replace=args.replace)
        print(json.dumps(ref.to_dict()))
    return 0


def _manifest_of(store, name: str) -> dict:
    record = named_dataset(store, name)
    if record is None:
        hint = (
            f"{name!r} is built in: it is materialised per study resolution "
            f"(aprflow data prepare {name} --resolution 16)"
            if name in BUILTIN_DATASETS
            else "aprflow data list shows the datasets built there"
        )
        raise DatasetError(f"no dataset {name!r} in {store.uri}: {hint}")
    return load_manifest(store, DatasetRef(**record["ref"]))


def format_table(manifest: dict) -> str:
    """The manifest as a human-readable table."""
    splits = manifest["splits"]
    lines = [
        f"{manifest['name']}  ({manifest['descriptor']['source']})",
        f"  images {manifest['n_images']}: train {splits['train']['n']}, val "
        f"{splits['val']['n']}, test {splits['test']['n']}; {len(manifest['class_names'])} "
        f"classes; imbalance (max/min train) {manifest['imbalance']}",
        f"  image width {manifest['image_size']['width']}, height "
        f"{manifest['image_size']['height']}",
        f"  content hash {manifest['ref']['content_hash']}, seed {manifest['seed']}, "
        f"manifest {manifest['ref']['manifest_key']}",
        f"  summary {manifest.get('summary', {}).get('html', '-')}",
        "",
        f"  {'class':<24} {'train':>7} {'val':>7} {'test':>7}",
    ]
    for name in manifest["class_names"]:
        counts = [splits[s]["per_class"].get(name, 0) for s in ("train", "val", "test")]
        lines.append(f"  {name[:24]:<24} {counts[0]:>7} {counts[1]:>7} {counts[2]:>7}")
    lines.append("")
    lines.append(f"  skipped files: {manifest['n_skipped']}")
    for skipped in manifest["skipped"][:50]:
        lines.append(f"    {skipped['file']}: {skipped['reason']}")
    if manifest["n_skipped"] > 50:
        lines.append(f"    ... {manifest['n_skipped'] - 50} more (--json lists all)")
    return "\n".join(lines)


def _describe(args: argparse.Namespace) -> int:
    manifest = _manifest_of(open_store(args.store), args.name)
    print(json.dumps(manifest, indent=2) if args.json else format_table(manifest))
    return 0


def _list(args: argparse.Namespace) -> int:
    records = list_named(open_store(args.store))
    if args.json:
        print(json.dumps([r["ref"] | {"source": r["descriptor"]["source"]} for r in records]))
        return 0
    print(f"{'name':<24} {'classes':>7} {'train':>7} {'val':>7} {'test':>7}  source")
    for record in records:
        ref = record["ref"]
        print(
            f"{ref['name']:<24} {ref['num_classes']:>7} {ref['n_train']:>7} {ref['n_val']:>7} "
            f"{ref['n_test']:>7}  {record['descriptor']['source']}"
        )
    print(f"built in: {', '.join(sorted(BUILTIN_DATASETS))} (materialised per study resolution)")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    for ref in prepare_all(args.datasets, args.resolution, args.seed, args.store):
        print(json.dumps(ref.to_dict()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv.insert(0, "prepare")  # the original form: aprflow data digits shapes
    args = build_parser().parse_args(argv)
    handlers = {
        "build": _build,
        "subset": _subset,
        "describe": _describe,
        "list": _list,
        "prepare": _prepare,
    }
    try:
        return handlers[args.command](args)
    except (AprflowError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
