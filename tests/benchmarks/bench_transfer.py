"""Benchmark: seconds per model for each transfer regime at toy scale, and extraction speed.

Run as ``python tests/benchmarks/bench_transfer.py [--models test_resnet,test_convnext]
[--input-size 32] [--finetune-steps 20] [--knn-train 20000 --knn-dim 2048]`` from the
repository root (pytest does not collect it). Each model gets randomly initialised weights
saved to a file (loaded like any weights file); the target is the built-in digits set at
16 px (1,347 training images: about 1,078 train + 269 val held out by the version, 450
test), fed at ``--input-size``.
A fresh store is used, so features are extracted, not read from the cache.

Prints, per regime, the median seconds per model (the ``seconds`` column of the results
table: extraction of the splits it uses included), features/s of extraction, and with
``--knn-train N`` the time and peak extra memory of cosine kNN of N x D random training
features against N / 5 queries (chunked; the 100k x 2048 case of the issue).
On a GPU machine, ``--device cuda --input-size 224 --models resnet50,...`` measures how many
models per hour the kNN ranking covers (printed as models/hour).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="test_resnet,test_convnext,test_efficientnet")
    parser.add_argument("--regimes", default="knn,linear,logme,leep,finetune,scratch")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--finetune-steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's)")
    parser.add_argument("--knn-train", type=int, default=0, help="kNN scale test rows (0: off)")
    parser.add_argument("--knn-dim", type=int, default=2048)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import timm

    from components.common.storage import open_store
    from components.data.datasets import prepare_all
    from components.transfer.sources import ModelEntry, weights_file_bytes
    from components.transfer.study import StudySettings, evaluate_model

    folder = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    store_uri = str(folder / "store")
    (ref,) = prepare_all(["digits"], 16, 0, store_uri)
    store = open_store(store_uri)
    settings = StudySettings(
        regimes=tuple(args.regimes.split(",")),
        input_size=args.input_size,
        finetune_max_steps=args.finetune_steps,
        device=args.device,
    )
    from components.transfer.study import _splits

    splits = _splits(store, ref)
    images = len(splits["train"][1]) + len(splits["test"][1])  # what kNN's seconds cover
    per_regime: dict[str, list[float]] = {}
    extraction: list[float] = []
    total = time.perf_counter()
    for name in args.models.split(","):
        torch.manual_seed(0)
        path = folder / f"{name}.pth"
        path.write_bytes(weights_file_bytes(timm.create_model(name)))
        tic = time.perf_counter()
        rows = [
            r.to_dict() for r in evaluate_model(ModelEntry(name, str(path)), [ref], store, settings)
        ]
        wall = time.perf_counter() - tic
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            print(f"{name}: {len(failed)} failed rows, e.g. {failed[0]['status_reason']}")
        seen = set()
        for row in rows:
            if row["status"] == "ok" and row["regime"] not in seen:
                seen.add(row["regime"])
                per_regime.setdefault(row["regime"], []).append(row["seconds"])
        knn = next((r for r in rows if r["regime"] == "knn" and r["status"] == "ok"), None)
        if knn:  # kNN's seconds are train + test extraction plus the (tiny) search
            extraction.append(knn["seconds"])
        print(f"{name}: {wall:.1f} s for every regime")
    print(
        f"digits at {args.input_size}px, {args.device}, {torch.get_num_threads()} thread(s), "
        f"{len(args.models.split(','))} models, {time.perf_counter() - total:.1f} s in all"
    )
    for regime, seconds in per_regime.items():
        print(f"  {regime:9s} median {statistics.median(seconds):7.2f} s per model")
    if extraction:
        rate = images / statistics.median(extraction)
        print(f"  extraction: {rate:.0f} images/s (train + test, {images} images, median model)")
        print(f"  kNN ranking: {3600 / statistics.median(extraction):.0f} models/hour on digits")

    if args.knn_train:
        from components.transfer.knn import knn_evaluate

        rng = np.random.default_rng(0)
        n, d = args.knn_train, args.knn_dim
        train = rng.standard_normal((n, d), dtype=np.float32)
        test = rng.standard_normal((n // 5, d), dtype=np.float32)
        labels = rng.integers(0, 100, n)
        tracemalloc.start()
        tic = time.perf_counter()
        knn_evaluate(train, labels, test, labels[: n // 5], k=5)
        seconds = time.perf_counter() - tic
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        inputs = (train.nbytes + test.nbytes) / 2**20
        print(
            f"  kNN {n} x {d} train, {n // 5} queries: {seconds:.1f} s, peak extra memory "
            f"{peak / 2**20:.0f} MiB (inputs {inputs:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
