"""``python -m components.data`` / ``aprflow data``: build, derive, describe and list datasets.

    aprflow data build NAME --from URI [--split auto|given|val=0.1,test=0.2] [--resolution N]
    aprflow data subset PARENT --n-classes K | --per-class N | --coarse MAP --seed S --name NEW
    (build and subset: --replace rebinds a NAME already bound to other content)
    aprflow data describe NAME
    aprflow data list
    aprflow data prepare digits shapes --resolution 16    (also: aprflow data digits shapes)

Every sub-command prints its result on stdout (``--json``: as JSON) and its progress on stderr.

A name built or derived here is usable in a study (``datasets: [NAME, digits]``) that uses the
same artifact store. A name is bound once: building other content under it is refused without
``--replace``; the built-in names are reserved. The built-in sets (``digits``, ``faces``,
``shapes``) are listed and described like built ones; a study materialises them at its
resolution on first use (``prepare`` does it ahead), and ``build NAME --from builtin:digits``
makes a named dataset of one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from components.common.cli import add_common_options, did_you_mean, print_result, run_cli
from components.common.limits import limit_type
from components.common.storage import ArtifactStore, add_store_option, open_store
from components.data.build import (
    build_dataset,
    check_target,
    list_named,
    load_manifest,
    named_dataset,
)
from components.data.datasets import (
    BUILTIN_DATASETS,
    catalog,
    describe_builtin,
    prepare_all,
)
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


def _command(
    commands: argparse._SubParsersAction, name: str, help_: str
) -> argparse.ArgumentParser:
    """A sub-command with the common options (``--json`` included) and ``--store``."""
    parser = commands.add_parser(name, help=help_, description=help_)
    add_store_option(parser)
    add_common_options(parser, json_output=True)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow data",
        description="Datasets as versioned tar shards in the artifact store: build one from an "
        "image collection, derive subsets, describe and list them (the built-in sets too), or "
        "materialise built-in sets. Builds are content-addressed: the same inputs are never "
        "built twice.",
    )
    add_common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = _command(commands, "build", "build a named dataset from a source URI")
    build.add_argument("name", help="dataset name (lower-case letters, digits, '_', '.', '-')")
    build.add_argument(
        "--from",
        dest="source",
        required=True,
        help="a directory or s3:// prefix (ImageFolder), a shard pattern "
        "'dir/shard-{000000..000009}.tar', a .csv/.parquet manifest (path,label[,split]), "
        "torchvision:CLASS:ROOT or builtin:NAME (a built-in set: digits, faces, shapes)",
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
        help="resize images to N x N when storing (default: keep their size)",
    )
    build.add_argument("--encoding", default="png", choices=["png", "jpeg"])
    build.add_argument(
        "--classes", nargs="+", default=[], metavar="CLASS", help="keep only these classes"
    )
    build.add_argument("--seed", type=SEED, default=0, help="split and shuffle seed")
    add_replace_option(build)
    build.set_defaults(func=_build)

    subset = _command(commands, "subset", "derive a subset of a named dataset")
    subset.add_argument("parent", help="a dataset built or derived before")
    subset.add_argument("--name", required=True, help="name of the derived dataset")
    subset.add_argument("--n-classes", type=int, default=0, help="keep K random classes")
    subset.add_argument(
        "--independent",
        action="store_true",
        help="draw each class count independently (default: nested draws, 2 within 5 ...)",
    )
    subset.add_argument(
        "--held-out",
        action="store_true",
        help="keep the classes the draw of --n-classes leaves out instead (the held-out "
        "classes of an induction test: pretrain on the draw, evaluate on the rest)",
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
    subset.set_defaults(func=_subset)

    describe = _command(
        commands,
        "describe",
        "show a dataset: a built one's classes, splits and skipped files (--json: its whole "
        "manifest), or a built-in set's origin, licence, classes, splits and where it was "
        "materialised in the store",
    )
    describe.add_argument("name", help="a built-in set or a name built in the store")
    describe.set_defaults(func=_describe)

    listing = _command(
        commands, "list", "list the datasets a study can name: built in the store, and built in"
    )
    listing.set_defaults(func=_list)

    prepare = _command(commands, "prepare", "materialise datasets as a study would")
    prepare.add_argument("datasets", nargs="+", help="built-in or built names")
    prepare.add_argument(
        "--resolution",
        type=RESOLUTION,
        default=16,
        help="image side in pixels",
    )
    prepare.add_argument("--seed", type=SEED, default=0, help="generator and split seed")
    prepare.set_defaults(func=_prepare)
    return parser


def ref_line(ref: DatasetRef) -> str:
    """One line of a materialised dataset: counts, resolution, content hash and manifest."""
    return (
        f"{ref.name}: {ref.n_train} train / {ref.n_val} val / {ref.n_test} test images, "
        f"{ref.num_classes} classes, {ref.resolution}px, content {ref.content_hash}, manifest "
        f"{ref.manifest_key}"
    )


def _print_refs(args: argparse.Namespace, refs: list[DatasetRef]) -> None:
    print_result(args, [ref.to_dict() for ref in refs], "\n".join(map(ref_line, refs)))


def _build(args: argparse.Namespace) -> int:
    descriptor = DatasetDescriptor(
        name=args.name,
        source=args.source,
        split=SplitRule.parse(args.split, seed=args.seed),
        classes=tuple(args.classes),
        image=ImagePolicy(resolution=args.resolution, encoding=args.encoding),
    )
    store = open_store(args.store)
    store.check()
    ref = build_dataset(store, descriptor, replace=args.replace)
    print_result(args, ref.to_dict(), ref_line(ref))
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
        n_classes = args.n_classes or (record["ref"]["num_classes"] if record else 0)
        if not n_classes:
            raise DatasetError(f"no dataset {args.parent!r} in {store.uri}")
        per_class = args.total // n_classes
    draws = range(args.draw, args.draw + args.draws)
    descriptors = []
    for draw in draws:
        rule = SubsetRule(
            classes=args.n_classes,
            nested=not args.independent,
            draw=draw,
            per_class=per_class,
            coarse=coarse,
            seed=args.seed,
            held_out=args.held_out,
        )
        name = f"{args.name}-d{draw}" if args.draws > 1 else args.name
        descriptors.append(subset_descriptor(name, args.parent, rule))
    for descriptor in descriptors:
        check_target(descriptor)  # every name before the first build
    refs = [build_dataset(store, d, replace=args.replace) for d in descriptors]
    _print_refs(args, refs)
    return 0


def _unknown(store: ArtifactStore, name: str) -> DatasetError:
    """The error for a name that is neither built in nor built in ``store``."""
    names = [*BUILTIN_DATASETS, *(record["ref"]["name"] for record in list_named(store))]
    hint = did_you_mean(name, names)
    return DatasetError(
        f"no dataset {name!r} in {store.uri}: {hint + ' ' if hint else ''}"
        "aprflow data list shows the datasets there and the built-in ones"
    )


def format_table(manifest: dict) -> str:
    """A built dataset's manifest as a human-readable table."""
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
        _class_table(manifest["class_names"], splits, ("train", "val", "test")),
        "",
        f"  skipped files: {manifest['n_skipped']}",
    ]
    for skipped in manifest["skipped"][:50]:
        lines.append(f"    {skipped['file']}: {skipped['reason']}")
    if manifest["n_skipped"] > 50:
        lines.append(f"    ... {manifest['n_skipped'] - 50} more (--json lists all)")
    return "\n".join(lines)


def _class_table(classes: list[str], splits: dict[str, Any], columns: tuple[str, ...]) -> str:
    """Images per class (rows) and split (columns)."""
    lines = [f"  {'class':<24}" + "".join(f" {split:>7}" for split in columns)]
    for name in classes:
        counts = [splits[split]["per_class"].get(name, 0) for split in columns]
        lines.append(f"  {name[:24]:<24}" + "".join(f" {n:>7}" for n in counts))
    return "\n".join(lines)


def format_builtin(info: dict[str, Any], store_uri: str) -> str:
    """A built-in set's description (:func:`~components.data.datasets.describe_builtin`)."""
    splits = info["splits"]
    side = info["image_side"]
    lines = [
        f"{info['name']}  (built in, {info['source']}): {info['description']}",
        f"  origin   {info['origin']}",
        f"  licence  {info['licence']}",
        f"  images {info['n_images']} ({side}x{side} {info['colour']}); "
        f"{len(info['class_names'])} classes; stratified split per class: train "
        f"{splits['train']['n']}, test {splits['test']['n']} (no val); resized to the study's "
        "resolution",
    ]
    if info["prepared"]:
        lines.append(f"  prepared in {store_uri}:")
        for p in info["prepared"]:
            lines.append(
                f"    {p['resolution']}px, seed {p['seed']}: content {p['content_hash']}, "
                f"manifest {p['manifest_key']}"
            )
    else:
        lines.append(
            f"  not prepared in {store_uri}: prepared on first use (ahead of a study: aprflow "
            f"data prepare {info['name']} --resolution 16)"
        )
    lines += ["", _class_table(info["class_names"], splits, ("train", "test"))]
    return "\n".join(lines)


def _describe(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.name in BUILTIN_DATASETS:
        info = describe_builtin(store, args.name)
        print_result(args, info, format_builtin(info, store.uri))
        return 0
    record = named_dataset(store, args.name)
    if record is None:
        raise _unknown(store, args.name)
    manifest = load_manifest(store, DatasetRef(**record["ref"]))
    print_result(args, manifest, format_table(manifest))
    return 0


def _prepared_note(entry: dict[str, Any]) -> str:
    """How a built-in set stands in the store: its resolutions there, or first use."""
    sides = sorted({p["resolution"] for p in entry["prepared"]})
    if not sides:
        return "prepared on first use"
    return f"prepared at {', '.join(map(str, sides))} px"


def format_catalog(entries: list[dict[str, Any]]) -> str:
    """The catalog (:func:`~components.data.datasets.catalog`) as a table."""
    lines = [f"{'name':<24} {'kind':<9} {'classes':>7} {'train':>7} {'val':>7} {'test':>7}  source"]
    for e in entries:
        kind = "built-in" if e["builtin"] else "built"
        source = f"{e['source']} ({_prepared_note(e)})" if e["builtin"] else e["source"]
        lines.append(
            f"{e['name']:<24} {kind:<9} {e['num_classes']:>7} {e['n_train']:>7} {e['n_val']:>7} "
            f"{e['n_test']:>7}  {source}"
        )
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    entries = catalog(open_store(args.store))
    print_result(args, entries, format_catalog(entries))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    _print_refs(args, prepare_all(args.datasets, args.resolution, args.seed, args.store))
    return 0


def _with_prepare(argv: list[str]) -> list[str]:
    """``argv`` with ``prepare`` put before a first word that names no sub-command (the
    original form ``aprflow data digits shapes``); a near miss of a sub-command's name is left
    to argparse, which names the sub-commands."""
    for i, word in enumerate(argv):
        if word.startswith("-"):
            continue  # the common options (--debug, -q, -v) come before the sub-command
        if word not in COMMANDS and not did_you_mean(word, COMMANDS):
            return [*argv[:i], "prepare", *argv[i:]]
        break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(build_parser(), lambda args: args.func(args), _with_prepare(argv))
