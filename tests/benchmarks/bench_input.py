"""Images/s of aprflow's streaming input pipeline vs torchvision ImageFolder + DataLoader.

Both decode JPEG files and apply the same training transform (timm's RandomResizedCrop + flip +
normalise at the target size, :func:`components.data.loader.train_transform`) with the same
number of DataLoader workers and batch size, side by side in one run (three alternating epochs
each, the median reported):

* aprflow: the images built into tar shards (``aprflow data build``), streamed by
  :class:`components.data.loader.StreamBatches` (shard reads through the cache, seeded epoch
  order and per-image seeding for determinism);
* torchvision: ``ImageFolder`` over the same JPEG files + ``DataLoader(shuffle=True)``.

Then the trainer: one epoch of a small AnyNet on the stream, timing how long the training loop
waits for the next batch (``StreamBatches.wait_seconds``) against the epoch's wall time.

    .venv/bin/python tests/benchmarks/bench_input.py                  # 32 and 224 px
    .venv/bin/python tests/benchmarks/bench_input.py --sizes 224 --images 256 --device cuda
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components.common.storage import open_store
from components.data.build import build_dataset, load_manifest
from components.data.descriptor import DatasetDescriptor, SplitRule
from components.data.loader import StreamBatches, train_transform
from components.train.recipes import resolve_recipe

CLASSES = 10


def write_folder(root: Path, n_images: int, side: int, seed: int = 0) -> None:
    """JPEG photos-like images (smooth colour fields + noise) in ``root/<class>/``."""
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        low = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        image = Image.fromarray(low).resize((side, side), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, np.int16) + rng.integers(-12, 12, (side, side, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        (folder / f"{i:06d}.jpg").write_bytes(buffer.getvalue())


def rate(batches) -> tuple[float, int]:
    """(images/s, images) of one pass over ``batches``."""
    tic, n = time.perf_counter(), 0
    for images, _ in batches:
        n += len(images)
    return n / (time.perf_counter() - tic), n


def trainer_wait(stream: StreamBatches, device: torch.device, batch_size: int) -> dict:
    """One training epoch of a small AnyNet on the stream: time waiting for data vs total."""
    from components.sample.anynet import build_model
    from components.sample.space import REFERENCE_SPECS, uses_small_stem

    spec = REFERENCE_SPECS["regnetx_200mf"]
    model = build_model(
        spec, num_classes=CLASSES, small_input=uses_small_stem(stream.resolution, None)
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    recipe = resolve_recipe("apr_tiny", {"batch_size": batch_size, "hflip": True})
    tic, n = time.perf_counter(), 0
    for images, labels in stream.train(recipe, torch.Generator(), epoch=0):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        n += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - tic
    return {
        "train_images_per_s": n / total,
        "wait_s": stream.wait_seconds,
        "epoch_s": total,
        "wait_fraction": stream.wait_seconds / total,
    }


def bench(side: int, n_images: int, workers: int, batch_size: int, device: str, root: Path):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    source_side = max(64, round(side * 1.15))  # stored a little larger, as photos are
    folder = root / f"src-{side}"
    write_folder(folder / "train", n_images, source_side)  # both read exactly these images
    write_folder(folder / "test", CLASSES, source_side, seed=1)
    store = open_store(str(root / "store"))
    descriptor = DatasetDescriptor(
        name=f"bench{side}", source=str(folder), split=SplitRule(mode="given", val_fraction=0.0)
    )
    ref = build_dataset(store, descriptor, lambda _: None)
    manifest = load_manifest(store, ref)
    mean, std = manifest["mean"], manifest["std"]
    target = torch.device(device)
    stream = StreamBatches(
        store.uri,
        [(shard["key"], shard["images"]) for shard in manifest["splits"]["train"]["shards"]],
        side,
        mean,
        std,
        target,
        seed=0,
        workers=workers,
    )
    recipe = resolve_recipe("apr_tiny", {"batch_size": batch_size, "hflip": True})
    transform = train_transform(side, mean, std, recipe)
    plain = DataLoader(
        ImageFolder(str(folder / "train"), transform=transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=target.type == "cuda",
        drop_last=True,
    )
    rate(stream.train(recipe, torch.Generator(), 0))  # warm the page cache for both
    rate(plain)
    # Alternating epochs, the median of each: the machine's other load drifts.
    runs = [(rate(stream.train(recipe, torch.Generator(), e)), rate(plain)) for e in range(3)]
    (ours, n_ours), (theirs, n_theirs) = (sorted(side)[1] for side in zip(*runs, strict=True))
    waits = trainer_wait(stream, target, batch_size)
    print(
        f"{side}px ({source_side}px JPEG sources, {workers} workers, batch {batch_size}): "
        f"aprflow stream {ours:.0f} img/s ({n_ours} images), torchvision ImageFolder "
        f"{theirs:.0f} img/s ({n_theirs}), ratio {ours / theirs:.2f}; trainer "
        f"{waits['train_images_per_s']:.0f} img/s on {device}, waited on data "
        f"{waits['wait_s']:.2f} s of {waits['epoch_s']:.2f} s ({waits['wait_fraction']:.0%})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--images", type=int, default=0, help="images (0 = 2048 at 32, 384 above)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the workers get the other cores
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sizes:
            n_images = args.images or (2048 if side <= 64 else 384)
            bench(side, n_images, args.workers, args.batch_size, args.device, Path(folder))


if __name__ == "__main__":
    main()
