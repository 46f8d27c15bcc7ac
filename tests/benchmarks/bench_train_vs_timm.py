"""Training throughput of aprflow's trainer on its stream input vs timm's own ``train.py``.

Both sides train the same registered model (``anynet_<reference>``, e.g.
``anynet_regnetx_400mf``, ``anynet_resnet18``: the AnyNet renderings of
:data:`components.sample.space.REFERENCE_SPECS`, registered with timm by
``components.sample.anynet``; at 64 px and below both use the small-image stem) with the same
augmentation on the same JPEG files: per-image RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3,
bilinear) + horizontal flip + normalisation, decoded in DataLoader workers; same batch size,
SGD-Nesterov, cosine schedule, label smoothing 0.1, torch's default threads, this machine.

* timm: its ``train.py`` (``create_dataset`` ImageFolder + ``create_loader``: persistent
  workers, fast-collate prefetcher on or off, pinned memory on CUDA), once per loader setting,
  with glibc's default allocator and with the one aprflow's trainer sets (``--timm-malloc``:
  ``MALLOC_MMAP_THRESHOLD_`` 32 MiB, ``MALLOC_TRIM_THRESHOLD_`` 1 GiB, which aprflow sets
  with ``mallopt``), so that timm's best setting is the one compared;
  the figure is the average ``N/s`` of its last epoch's log lines;
* aprflow: the same files built into tar shards (``aprflow data build``, originals kept),
  trained by the real trial loop (``components.train.trial.run_trial``, ``input: stream``,
  ``APRFLOW_DATA_WORKERS`` workers) in a fresh process of its own, as a study runs each
  trial (and as timm's train.py runs); the figures are the ``images_per_s`` of the result's
  history (each epoch's training loop) and ``train_images_per_s`` (all epochs).

Runs of the two sides alternate (``--rounds`` times), and the best run of each side is
compared (ratio aprflow / timm, on the last epoch and on all epochs): on a shared machine
other load only slows a run down. The 1-minute load average before each run is printed
with it.

timm's ``train.py`` is not in the timm wheel: take it from a checkout of
huggingface/pytorch-image-models (the version matching the installed timm)::

    .venv/bin/python tests/benchmarks/bench_train_vs_timm.py --timm-train PATH/train.py
    .venv/bin/python tests/benchmarks/bench_train_vs_timm.py --timm-train PATH/train.py \\
        --references resnet18 --resolutions 96 --workers 1 --images 256
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench_input import CLASSES, write_folder

from components.common.storage import open_store
from components.data.build import build_dataset, load_manifest
from components.data.descriptor import DatasetDescriptor, SplitRule
from components.data.loader import TrainData, open_split
from components.sample.space import REFERENCE_SPECS, uses_small_stem
from components.train import trial as trial_module
from components.train.recipes import resolve_recipe
from components.train.trial import Trial, run_trial

# Registers aprflow's models in timm, then runs train.py as timm's own command line would.
TIMM_RUNNER = (
    "import runpy, sys; import components.sample.anynet; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
# "Train: 1 [   7/8 (100%)]  Loss: ... Time: 0.50s, 64.0/s  (0.52s, 61.5/s)"
TIMM_LINE = re.compile(
    r"Train: (\d+) \[\s*(\d+)/(\d+)\s.*?\(\s*([\d.]+)s,\s*([\d.]+)/s\)", re.DOTALL
)
LR, MOMENTUM, WEIGHT_DECAY, SMOOTHING = 0.1, 0.9, 5e-4, 0.1
# This script's own mode that runs one aprflow trial: RUN_TRIAL STORE_URI TRIAL_JSON.
RUN_TRIAL = "--run-trial"


def load_average() -> float:
    return os.getloadavg()[0]


def timm_rates(args, model: str, resolution: int, data: Path, mean, std, setting: dict):
    """(last-epoch images/s, all-epochs images/s) of one train.py run."""
    on_gpu = args.device == "cuda"
    command = [
        *(sys.executable, "-c", TIMM_RUNNER, str(args.timm_train)),
        *("--data-dir", str(data), "--train-split", "train", "--val-split", "test"),
        *("--model", model, "--num-classes", str(CLASSES)),
        *("--img-size", str(resolution), "-b", str(args.batch_size)),
        *("--epochs", str(args.epochs), "--warmup-epochs", "0", "--sched", "cosine"),
        *("--opt", "sgd", "--lr", str(LR), "--momentum", str(MOMENTUM)),
        *("--weight-decay", str(WEIGHT_DECAY), "--smoothing", str(SMOOTHING)),
        *("--scale", "0.08", "1.0", "--ratio", str(3 / 4), str(4 / 3), "--hflip", "0.5"),
        *("--color-jitter", "0", "--reprob", "0", "--train-interpolation", "bilinear"),
        *("--mean", *map(str, mean), "--std", *map(str, std), "--device", args.device),
        # Its last log line of an epoch (always written) averages the epoch's updates.
        *("--workers", str(setting["workers"]), "--log-interval", "50"),
        *("--output", str(data.parent / "timm-out"), "--checkpoint-hist", "1"),
        *([] if setting["prefetcher"] else ["--no-prefetcher"]),
        # On a GPU, what aprflow's torch engine does there: bf16 autocast, channels_last.
        *(["--pin-mem", "--amp", "--amp-dtype", "bfloat16", "--channels-last"] if on_gpu else []),
        *(["--model-kwargs", "small_input=True"] if uses_small_stem(resolution, None) else []),
    ]
    # glibc reads these at start-up: the allocator setting aprflow's trainer makes with mallopt.
    malloc = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    env = os.environ | (malloc if setting["malloc"] == "tuned" else {})
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"timm train.py failed:\n{log[-3000:]}")
    # Per epoch, its last line: (updates, average seconds per update).
    epochs: dict[int, tuple[int, float]] = {}
    for line in log.splitlines():
        if (match := TIMM_LINE.search(line)) is not None:
            epoch, index, _, avg_s, _ = match.groups()
            epochs[int(epoch)] = (int(index) + 1, float(avg_s))
    if len(epochs) != args.epochs:
        raise RuntimeError(f"no throughput per epoch in timm's log:\n{log[-3000:]}")
    images = {e: updates * args.batch_size for e, (updates, _) in epochs.items()}
    seconds = {e: updates * avg_s for e, (updates, avg_s) in epochs.items()}
    last = args.epochs - 1
    per_epoch = [images[e] / seconds[e] for e in sorted(epochs)]
    print(f"    timm per epoch: {', '.join(f'{r:.1f}' for r in per_epoch)} images/s", flush=True)
    return images[last] / seconds[last], sum(images.values()) / sum(seconds.values())


def run_profiled_trial(store_uri: str, trial_dict: dict) -> dict:
    """Runs the trial in this process; its result, and the seconds its last epoch waited for
    data out of the images it trained per epoch."""
    # The trial's training split, whose wait_seconds is the last epoch's time spent waiting
    # for batches (data) rather than training (compute).
    opened: list[TrainData] = []

    def recording_open_split(*split_args, **kwargs) -> TrainData:
        opened.append(open_split(*split_args, **kwargs))
        return opened[-1]

    trial_module.open_split = recording_open_split
    trial = Trial.from_dict(trial_dict)
    result = run_trial(open_store(store_uri), trial, progress=lambda _: None)
    return {"result": result, "wait_seconds": opened[0].wait_seconds, "images": len(opened[0])}


def aprflow_trial(args, reference: str, ref, **fields) -> Trial:
    """A trial of ``reference`` on ``ref`` with the recipe timm's run gets; ``fields`` set other
    :class:`Trial` fields (engine, engine_options, compile_model)."""
    recipe = resolve_recipe(
        "apr_tiny",
        {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": LR,
            "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY,
            "label_smoothing": SMOOTHING,
            "warmup_epochs": 0.0,
            "crop_padding": 0,
            "hflip": True,
        },
    )
    # A fresh trial id per run (the seed), so nothing is reused from an earlier run.
    args.trial_seed += 1
    trial = Trial(REFERENCE_SPECS[reference].to_dict(), ref, recipe, seed=args.trial_seed)
    return replace(trial, **fields, **({"device": args.device} if args.device != "cpu" else {}))


def run_in_process(args, trial: Trial, workers: int, env: dict | None = None) -> dict:
    """Runs ``trial`` in a process of its own, as in a study (a chunk's fork-server child) and
    as timm's train.py: the result, the last epoch's seconds waiting for data, the images per
    epoch, the process's wall time (start-up, imports and compilation included), when its
    epochs ended and it exited (seconds from its start), and the end of its progress log."""
    started, tic = time.time(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, RUN_TRIAL, args.store, json.dumps(trial.to_dict())],
        env=os.environ | {"APRFLOW_DATA_WORKERS": str(workers)} | (env or {}),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"aprflow trial process failed:\n{done.stderr[-3000:]}")
    profiled = json.loads(done.stdout.splitlines()[-1])
    result = profiled["result"]
    if result["status"] != "ok":
        raise RuntimeError(f"aprflow trial {result['status']}: {result.get('reason')}")
    return profiled | {
        "wall_s": time.perf_counter() - tic,
        "epoch_ends_s": [t - started for t in result["epoch_times"]],
        "exit_s": time.time() - started,
        "log_tail": done.stderr.splitlines()[-12:],
    }


def aprflow_rates(args, reference: str, ref, workers: int):
    """(last-epoch images/s, all-epochs images/s) of one trial on the stream input."""
    profiled = run_in_process(args, aprflow_trial(args, reference, ref), workers)
    result = profiled["result"]
    per_epoch = result["history"]["images_per_s"]
    images = profiled["images"] // args.batch_size * args.batch_size
    print(
        f"    aprflow per epoch: {', '.join(f'{r:.1f}' for r in per_epoch)} images/s; last "
        f"epoch waited {profiled['wait_seconds']:.2f} s for data of {images / per_epoch[-1]:.2f} s",
        flush=True,
    )
    return per_epoch[-1], result["train_images_per_s"]


def prepare_data(args, tmp: Path):
    """JPEG files in ``tmp/images/{train,test}`` (timm reads these) built into aprflow's store
    ``args.store`` (set here, with ``args.trial_seed``): (folder, dataset reference, mean, std).
    """
    folder = tmp / "images"
    write_folder(folder / "train", args.images, args.source_side)
    write_folder(folder / "test", 2 * CLASSES, args.source_side, seed=1)
    args.store, args.trial_seed = str(tmp / "store"), 0
    descriptor = DatasetDescriptor(
        name="bench", source=str(folder), split=SplitRule(mode="given", val_fraction=0.0)
    )
    ref = build_dataset(open_store(args.store), descriptor, lambda _: None)
    manifest = load_manifest(open_store(args.store), ref)
    return folder, ref, manifest["mean"], manifest["std"]


def compare(args, reference: str, resolution: int, folder: Path, ref, mean, std) -> None:
    """Alternating runs of every setting of each side (``--rounds`` times), then the table and
    the ratio of the best rates."""
    model = f"anynet_{reference}"
    ref = replace(ref, resolution=resolution, input="stream")
    ours = [("aprflow", {"workers": w}) for w in args.workers]
    theirs = [
        ("timm", {"workers": w, "prefetcher": p == "on", "malloc": m})
        for w in args.workers
        for p in args.timm_prefetcher
        for m in args.timm_malloc
    ]
    # The sides interleaved, so that a burst of other load hits both.
    order = []
    for i in range(max(len(ours), len(theirs))):
        order += ours[i : i + 1] + theirs[i : i + 1]
    rows: list[tuple[str, str, float, float, float]] = []
    for _ in range(args.rounds):
        for side, setting in order:
            load = load_average()
            if side == "aprflow":
                last, total = aprflow_rates(args, reference, ref, setting["workers"])
                name = f"{setting['workers']} workers"
            else:
                last, total = timm_rates(args, model, resolution, folder, mean, std, setting)
                prefetcher = "on" if setting["prefetcher"] else "off"
                name = f"{setting['workers']} w, prefetcher {prefetcher}, {setting['malloc']}"
            rows.append((side, name, last, total, load))
            print(f"    {side} {name}: {last:.1f} / {total:.1f} images/s", flush=True)
    print(
        f"{model} at {resolution} px, {ref.n_train} JPEG train images ({args.source_side} px), "
        f"batch {args.batch_size}, {args.epochs} epochs, {args.device}; images/s, last epoch / "
        "all epochs:"
    )
    for side, setting, last, total, load in rows:
        print(f"  {side:8s} {setting:34s} {last:8.1f} / {total:6.1f}   (load average {load:.2f})")
    for column, window in ((2, "last epoch"), (3, "all epochs")):
        best = {side: max(r[column] for r in rows if r[0] == side) for side in ("aprflow", "timm")}
        print(
            f"  best ({window}): aprflow {best['aprflow']:.1f}, timm {best['timm']:.1f}; "
            f"ratio aprflow / timm = {best['aprflow'] / best['timm']:.2f}",
            flush=True,
        )


def main() -> None:
    if sys.argv[1:2] == [RUN_TRIAL]:
        print(json.dumps(run_profiled_trial(sys.argv[2], json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm-train", type=Path, required=True, help="timm's train.py")
    parser.add_argument(
        "--references",
        nargs="+",
        default=["regnetx_400mf", "resnet18"],
        choices=sorted(REFERENCE_SPECS),
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--images", type=int, default=256, help="training images")
    parser.add_argument("--source-side", type=int, default=128, help="side of the JPEG files")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="DataLoader workers to try"
    )
    parser.add_argument(
        "--timm-prefetcher", nargs="+", choices=("on", "off"), default=["on", "off"]
    )
    parser.add_argument(
        "--timm-malloc",
        nargs="+",
        choices=("default", "tuned"),
        default=["default", "tuned"],
        help="timm with glibc's default allocator, or tuned as aprflow's trainer tunes it "
        "(MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of all runs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, ref, mean, std = prepare_data(args, Path(tmp))
        print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
        for reference in args.references:
            for resolution in args.resolutions:
                compare(args, reference, resolution, folder, ref, mean, std)


if __name__ == "__main__":
    main()
