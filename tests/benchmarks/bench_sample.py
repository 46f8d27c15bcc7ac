"""Benchmark: sample specs in the default FLOP band, then build and run each model once.

Run as ``python tests/benchmarks/bench_sample.py [--n 500] [--resolution 224]`` from the
repository root (pytest does not collect it: the name does not match ``test_*.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Allow running as a plain script from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from components.sample.anynet import build_model  # noqa: E402
from components.sample.samplers import sample_specs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of specs")
    parser.add_argument("--resolution", type=int, default=224, help="forward input side")
    parser.add_argument("--space", default="anynetx_a", help="design space")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args()

    start = time.perf_counter()
    result = sample_specs(args.space, args.n, seed=args.seed)
    sample_s = time.perf_counter() - start
    stats = result.stats
    print(
        f"sample: {args.n} {args.space} specs in {sample_s:.3f} s "
        f"({stats.tried} tried, acceptance {stats.acceptance_rate:.4f})"
    )

    build_s = forward_s = 0.0
    x = torch.randn(1, 3, args.resolution, args.resolution)
    for i, spec in enumerate(result.specs, start=1):
        start = time.perf_counter()
        model = build_model(spec).eval()
        build_s += time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            model(x)
        forward_s += time.perf_counter() - start
        if i % 100 == 0:
            print(f"  {i}/{args.n} models", flush=True)
    n = len(result.specs)
    print(f"build:   total {build_s:.2f} s, mean {1e3 * build_s / n:.1f} ms/model")
    print(
        f"forward: total {forward_s:.2f} s, mean {1e3 * forward_s / n:.1f} ms/model "
        f"(batch 1, {args.resolution}x{args.resolution}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
