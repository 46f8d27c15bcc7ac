"""Command line: sample a population of specs and write it as JSON lines.

Example::

    aprflow sample --space anynetx_a --n 500 --flops 360e6:400e6 --seed 0 \\
        --out specs.jsonl --summary-dir summary/

(also ``python -m components.sample``). The specs go to ``--out``; stdout gets a summary of
the sampling (JSON with ``--json``), stderr the progress.
"""

from __future__ import annotations

import argparse
import os
import time

from analysis.words import plural
from components.common.cli import (
    DefaultsHelpFormatter,
    add_common_options,
    print_result,
    run_cli,
)
from components.common.progress import report
from components.sample.samplers import SPACES, resolve_space, sample_specs
from components.sample.spec_io import write_specs_jsonl


def _flops_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--flops must be LOW:HIGH in multiply-adds, e.g. 360e6:400e6; got {text!r}"
        ) from None
    return low, high


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="aprflow sample",
        description=(
            "Sample unique AnyNet specs of a design space whose FLOPs (pycls multiply-adds at "
            "224x224 with the spec's own stem) lie in a band, and write one JSON record per "
            'line: {"spec": ..., "spec_hash": ..., "flops": ..., "params": ..., "acts": ...}.'
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--space",
        required=True,
        help=f"design space, one of {', '.join(SPACES)} (dashes allowed: anynetx-a)",
    )
    parser.add_argument("--n", type=int, required=True, help="number of specs")
    parser.add_argument(
        "--flops", type=_flops_range, default=(360e6, 400e6), help="FLOP band LOW:HIGH"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", required=True, help="output .jsonl path (written atomically)")
    parser.add_argument(
        "--max-tries", type=int, default=None, help="candidates to try before giving up"
    )
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs")
    parser.add_argument(
        "--summary-dir",
        default=None,
        help="also write summary.json, summary.md and histograms.png here",
    )
    add_common_options(parser, json_output=True)
    return parser


def _sample(args: argparse.Namespace) -> int:
    resolve_space(args.space)  # a mistyped space fails before any work starts
    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a directory: name a file, e.g. specs.jsonl")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {args.out}: folder {folder} does not exist")
    low, high = args.flops
    started = time.time()
    report(
        "sample",
        f"sampling {args.n} {args.space} specs, FLOPs in [{low:.4g}, {high:.4g}], seed {args.seed}",
    )
    result = sample_specs(
        args.space,
        args.n,
        flops_range=args.flops,
        seed=args.seed,
        max_tries=args.max_tries,
        num_classes=args.num_classes,
    )
    stats = result.stats
    report(
        "sample",
        f"accepted {stats.accepted} of {stats.tried} tried (rate {stats.acceptance_rate:.4f}) "
        f"in {stats.seconds:.2f} s; rejected: {stats.rejected_by_flops} by FLOPs, "
        f"{stats.rejected_by_constraints} by constraints, {stats.rejected_duplicate} duplicates",
        started,
    )
    summary_files = []
    if args.summary_dir:
        # Imported here: it is the only part that needs matplotlib.
        from components.sample.summary import write_summary

        summary_files = [str(path) for path in write_summary(args.summary_dir, result)]
    write_specs_jsonl(args.out, result.specs)
    print_result(
        args,
        {
            "out": args.out,
            "specs": len(result.specs),
            "space": args.space,
            "seed": args.seed,
            "tried": stats.tried,
            "acceptance_rate": stats.acceptance_rate,
            "summary_files": summary_files,
        },
        text=f"wrote {plural(len(result.specs), 'spec')} to {args.out}"
        + "".join(f"\nwrote {path}" for path in summary_files),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``aprflow sample`` (:func:`components.common.cli.run_cli`).

    Args:
        argv: Arguments without the program name; None reads sys.argv.

    Returns:
        0 on success, 1 on a failure, 2 on a usage error.
    """
    return run_cli(build_parser(), _sample, argv)
