"""Sweep throughput: N sampled ~400-MF AnyNets x 1 epoch of a generated CIFAR-size set at 32 px,
trained by the chunk runner (components/train/chunk.py) without and with packing.

    .venv/bin/python tests/benchmarks/bench_sweep.py --models 4 --images 50000 --pack 4

For each mode it plans a study in a temporary store, runs one chunk holding every trial
(``trials_per_gpu`` = 1, then ``--pack``), and prints models/hour, images/s (training images
of every model / wall time of the chunk) and MFU = 6 x MACs per image x images/s / device peak
(6 = 2 FLOPs per multiply-add x 3 for forward + backward; the issue's "analytic FLOPs x 3" with
FLOPs counted as 2 per MAC). The device peak is the datasheet dense bf16 peak on a known GPU,
and on a CPU the fp32 matmul throughput measured here (so CPU MFU is relative to what this CPU
does at best, not to a datasheet). The data set is the procedural ``shapes`` generator at
32 px (6 classes), as many images as ``--images`` (80% train); no real CIFAR is downloaded.
The two modes use different training seeds so that the second does not reuse the first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

GPU_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def device_peak(gpu: bool = True) -> tuple[str, float, str]:
    """(device name, peak FLOP/s, where the peak comes from): a GPU's when ``gpu`` and there is
    one, else this CPU's."""
    import torch

    if gpu and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        for key, peak in GPU_BF16_PEAK.items():
            if key in name:
                return name, peak, "datasheet dense bf16"
        raise SystemExit(f"unknown GPU {name!r}: add its bf16 peak to GPU_BF16_PEAK")
    a = torch.randn(1024, 1024)
    torch.mm(a, a)
    tic, n = time.perf_counter(), 20
    for _ in range(n):
        torch.mm(a, a)
    seconds = time.perf_counter() - tic
    threads = torch.get_num_threads()
    return f"cpu ({threads} threads)", 2 * 1024**3 * n / seconds, "measured fp32 matmul"


def generated_dataset(store, n_images: int, seed: int = 0):
    """The ``shapes`` generator at 32 px with ``n_images`` images, built into ``store``."""
    from PIL import Image

    from components.data.build import materialize_scan
    from components.data.builtin import _shapes, to_rgb_uint8
    from components.data.datasets import builtin_descriptor
    from components.data.sources import Scan, SourceItem

    raw = _shapes(seed, per_class=max(2, n_images // 6), size=32)
    descriptor = replace(builtin_descriptor("shapes", 32, seed, 0.2), name="shapes32")
    listing = Scan("generated", (), ["shapes32", n_images, seed])
    images = to_rgb_uint8(raw.images, 32)
    listing.class_order = raw.class_names
    listing.items = (
        SourceItem(f"s[{i}]", raw.class_names[int(y)], None, lambda im=im: Image.fromarray(im))
        for i, (im, y) in enumerate(zip(images, raw.labels, strict=True))
    )
    return materialize_scan(store, descriptor, listing, progress=lambda _: None)


def mean_train_macs(specs: list[dict], ref) -> float:
    """Multiply-adds per image of ``specs`` as trained on ``ref`` (its resolution and classes,
    the small-image stem at 32 px), averaged."""
    from components.sample.space import AnyNetSpec, complexity, uses_small_stem

    small = uses_small_stem(ref.resolution, None)
    macs = [
        complexity(
            replace(AnyNetSpec.from_dict(s), num_classes=ref.num_classes), ref.resolution, small
        ).flops
        for s in specs
    ]
    return sum(macs) / len(macs)


def sweep(
    store,
    ref,
    specs: list[dict],
    packs,
    batch_size: int,
    cpus: int,
    epochs: int = 1,
    first_seed: int = 0,
):
    """Per ``trials_per_gpu`` in ``packs``: one chunk training every spec on ``ref`` for
    ``epochs`` (a study of its own, with training seed ``first_seed`` + its position, so that
    nothing is reused from another setting), timed.

    Returns one row per setting: trials_per_gpu, wall_s, models_per_hour, images_per_s (training
    images of every model / the chunk's wall time), and per trial the training loop's
    images_per_s over all epochs (``trial_images_per_s``) and in the last epoch
    (``trial_last_epoch_images_per_s``).
    """
    from components.train.chunk import ChunkSettings, run_chunk
    from components.train.run import plan_study, result_key

    rows = []
    for seed, pack in enumerate(packs, start=first_seed):
        trial_ids, study, _ = plan_study(
            specs,
            [ref.to_dict()],
            f"bench-pack{pack}-{seed}",
            "apr_short",
            {"epochs": epochs, "batch_size": batch_size, "warmup_epochs": 0},
            [seed],
            "torch",
            None,
            None,
            chunk_size=len(specs),
        )
        settings = ChunkSettings(trials_per_gpu=pack, cpus=cpus)
        tic = time.perf_counter()
        run_chunk(study, 0, None, None, "bench", settings)
        wall = time.perf_counter() - tic
        results = [store.get_json(result_key(t)) for t in trial_ids]
        rows.append(
            {
                "trials_per_gpu": pack,
                "wall_s": wall,
                "models_per_hour": 3600 * len(specs) / wall,
                "images_per_s": len(specs) * epochs * ref.n_train / wall,
                "trial_images_per_s": [r["train_images_per_s"] for r in results],
                # The last epoch's rate: the first one carries the warm-up (cuDNN's autotuner
                # tries each new convolution shape, the allocator grows).
                "trial_last_epoch_images_per_s": [
                    r["history"]["images_per_s"][-1] for r in results
                ],
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=4, help="architectures (N)")
    parser.add_argument("--images", type=int, default=50_000, help="generated images")
    parser.add_argument("--pack", type=int, default=4, help="trials_per_gpu of the packed run")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    os.environ["APRFLOW_STORE_URI"] = str(root / "store")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"

    import torch

    from components.common.storage import open_store
    from components.sample.samplers import sample_specs

    name, peak, peak_source = device_peak()
    print(
        f"device {name}: peak {peak / 1e12:.3f} TFLOP/s ({peak_source}); torch {torch.__version__}"
    )
    store = open_store()
    tic = time.perf_counter()
    ref = generated_dataset(store, args.images)
    print(
        f"data: {ref.n_train} train / {ref.n_test} test images at 32 px "
        f"({time.perf_counter() - tic:.0f} s to build)"
    )
    specs = [s.to_dict() for s in sample_specs("anynetx_a", args.models, (360e6, 400e6), 0).specs]
    mean_macs = mean_train_macs(specs, ref)
    print(f"{args.models} models, {mean_macs / 1e6:.1f} M multiply-adds per 32-px image (mean)")
    rows = sweep(store, ref, specs, (1, args.pack), args.batch_size, os.cpu_count() or 1)
    for row in rows:
        row["mfu"] = 6 * mean_macs * row["images_per_s"] / peak
    print("\ntrials_per_gpu | wall s | models/hour | images/s | MFU")
    for r in rows:
        print(
            f"{r['trials_per_gpu']:>14} | {r['wall_s']:6.1f} | {r['models_per_hour']:11.1f} | "
            f"{r['images_per_s']:8.1f} | {r['mfu']:.2%}"
        )
    per_hour_best = max(r["models_per_hour"] for r in rows)
    epochs, n_models, n_train = 30, 500, 50_000
    scale = n_train / ref.n_train * epochs
    print(
        f"\nextrapolation: {n_models} models x {epochs} epochs x {n_train} images at the best "
        f"rate here = {n_models * scale / per_hour_best:.1f} device-hours on {name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
