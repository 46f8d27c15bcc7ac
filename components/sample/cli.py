"""Command line: sample a population of specs and write it as JSON lines.

Example::

    python -m components.sample --space anynetx_a --n 500 --flops 360e6:400e6 --seed 0 \\
        --out specs.jsonl --summary-dir summary/
"""

from __future__ import annotations

import argparse
import os
import sys

from components.sample.samplers import SPACES, sample_specs
from components.sample.spec_io import write_specs_jsonl


class _Parser(argparse.ArgumentParser):
    # argparse exits on a usage error; raising lets main() report it like every other error.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


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
    parser = _Parser(
        prog="aprflow sample",
        description=(
            "Sample unique AnyNet specs of a design space whose FLOPs (pycls multiply-adds at "
            "224x224 with the spec's own stem) lie in a band, and write one JSON record per "
            'line: {"spec": ..., "spec_hash": ..., "flops": ..., "params": ..., "acts": ...}.'
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name; None reads sys.argv.

    Returns:
        0 on success, 2 on any error (reported as one ``error: ...`` line on stderr).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.path.isdir(args.out):
        print(
            f"error: --out {args.out} is a directory: name a file, e.g. specs.jsonl",
            file=sys.stderr,
        )
        return 2
    low, high = args.flops
    print(
        f"sampling {args.n} {args.space} specs, FLOPs in [{low:.4g}, {high:.4g}], seed {args.seed}"
    )
    try:
        result = sample_specs(
            args.space,
            args.n,
            flops_range=args.flops,
            seed=args.seed,
            max_tries=args.max_tries,
            num_classes=args.num_classes,
        )
        stats = result.stats
        print(
            f"accepted {stats.accepted} of {stats.tried} tried "
            f"(rate {stats.acceptance_rate:.4f}) in {stats.seconds:.2f} s; rejected: "
            f"{stats.rejected_by_flops} by FLOPs, {stats.rejected_by_constraints} by "
            f"constraints, {stats.rejected_duplicate} duplicates"
        )
        if args.summary_dir:
            # Imported here: it is the only part that needs matplotlib.
            from components.sample.summary import write_summary

            for path in write_summary(args.summary_dir, result):
                print(f"wrote {path}")
        write_specs_jsonl(args.out, result.specs)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(result.specs)} specs to {args.out}")
    return 0
