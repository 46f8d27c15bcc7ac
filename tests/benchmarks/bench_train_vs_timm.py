"""Training throughput of aprflow's trial loop vs timm's own ``train.py``, side by side.

Both train the same registered model (``anynet_regnetx_200mf`` by default, built from the same
spec) on the same images, batch size, optimizer and thread count, on this machine; the figure
is images per second during training (timm: its running average ``N/s`` of the last epoch's
log lines; aprflow: ``train_images_per_s`` of the trial result) and their ratio.

timm's ``train.py`` is not part of the timm wheel: take it from a checkout of
huggingface/pytorch-image-models and pass its path::

    .venv/bin/python tests/benchmarks/bench_train_vs_timm.py --timm-train PATH/train.py

The resolution must be above 64 px so that aprflow does not swap in its small-image stem (the
two models would then differ).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from components.common.storage import open_store
from components.data.datasets import load_manifest, load_split, prepare_all
from components.sample.space import REFERENCE_SPECS
from components.train.recipes import resolve_recipe
from components.train.trial import Trial, run_trial

# Registers aprflow's models in timm, then runs train.py as timm's own command line would.
TIMM_RUNNER = (
    "import runpy, sys; import components.sample.anynet; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
RATE = re.compile(r"\(\s*[\d.]+s,\s*([\d.]+)/s\)")


def write_image_folder(store, ref, root: Path) -> None:
    """Writes the materialised splits as ImageFolder PNGs: root/{train,validation}/<class>/."""
    names = load_manifest(store, ref)["class_names"]
    for split, folder in (("train", "train"), ("test", "validation")):
        x, y = load_split(store, ref, split)
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            target = root / folder / names[label]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target / f"{i:05d}.png")


def timm_rate(args, data: Path, num_classes: int, mean, std, out: Path) -> float:
    command = [
        *(sys.executable, "-c", TIMM_RUNNER, str(args.timm_train)),
        *("--data-dir", str(data), "--model", args.model, "--num-classes", str(num_classes)),
        *("--img-size", str(args.resolution), "-b", str(args.batch_size)),
        *("--epochs", str(args.epochs), "--warmup-epochs", "0", "--sched", "cosine"),
        *("--opt", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "5e-4"),
        *("--smoothing", "0.1", "--device", "cpu", "--workers", str(args.workers)),
        *("--mean", *map(str, mean), "--std", *map(str, std), "--no-aug"),
        *("--log-interval", "5", "--output", str(out), "--checkpoint-hist", "1"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"timm train.py failed:\n{log[-3000:]}")
    last_epoch = f"Train: {args.epochs - 1} "
    rates = [
        float(m) for line in log.splitlines() if last_epoch in line for m in RATE.findall(line)
    ]
    if not rates:
        raise SystemExit(f"no throughput in timm's log:\n{log[-3000:]}")
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm-train", type=Path, required=True, help="timm's train.py")
    parser.add_argument("--reference", default="regnetx_200mf", choices=sorted(REFERENCE_SPECS))
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="timm's data loader workers (0 was timm's fastest on 2 cores: 225 vs 180-186 "
        "images/s with 1-2 workers)",
    )
    args = parser.parse_args()
    if args.resolution <= 64:
        parser.error("--resolution must be above 64 px (see the module docstring)")
    args.model = f"anynet_{args.reference}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = open_store(str(tmp / "store"))
        (ref,) = prepare_all([args.dataset], args.resolution, 0, store.uri)
        manifest = load_manifest(store, ref)
        write_image_folder(store, ref, tmp / "images")
        timm = timm_rate(
            args, tmp / "images", ref.num_classes, manifest["mean"], manifest["std"], tmp / "out"
        )
        recipe = resolve_recipe(
            "apr_tiny",
            {"epochs": args.epochs, "batch_size": args.batch_size, "crop_padding": 0},
        )
        spec = REFERENCE_SPECS[args.reference].to_dict()
        result = run_trial(store, Trial(spec, ref, recipe, seed=0), progress=lambda _: None)
        ours = result["train_images_per_s"]
    print(
        f"{args.model} on {args.dataset} ({ref.n_train} train images, {args.resolution} px), "
        f"batch {args.batch_size}, {args.epochs} epochs, CPU:"
    )
    print(f"  timm train.py : {timm:8.1f} images/s")
    print(f"  aprflow trial : {ours:8.1f} images/s")
    print(f"  ratio aprflow / timm = {ours / timm:.2f}")


if __name__ == "__main__":
    main()
