"""The GPU benchmark suite: every figure the project needs from a GPU, in one prepared run.

GPU time for measuring is short, so one command measures everything, within a time budget
(``--budget-s``, default 480 s: skipping, with a message, what would overrun) and writes each
section's figures to ``--out`` (``bench-gpu.json``) as soon as they exist:

1. ``trainer_vs_timm``: aprflow's trainer (stream input, a process per trial) against timm's
   ``train.py`` (``--timm-train``), bf16 autocast and channels_last on a GPU, the same JPEG
   files, augmentation, batch and optimizer (:mod:`bench_train_vs_timm`), alternating, for
   ``anynet_regnetx_400mf`` and ``anynet_resnet18`` at 32 and 64 px: images/s each and the
   ratio;
2. ``sweep``: ~400-MFLOP AnyNetX-A models at 32 px on a generated CIFAR-like set, trained by the
   chunk runner with ``trials_per_gpu`` 1, 2, 4, 8 (:mod:`bench_sweep`; then with CUDA MPS when
   ``nvidia-cuda-mps-control`` is there): models/hour, images/s, achieved TFLOP/s and MFU
   against the device's dense bf16 peak;
3. ``engines``: step time of the torch engine against DeepSpeed ZeRO-0 and ZeRO-1, and of
   ``compile_model`` with inductor's cache cold and warm (process wall time included);
4. ``input``: the same model fed from the stream (JPEG decode in workers) and from memory:
   images/s and the share of the step spent waiting for data;
5. ``projection``: GPU-hours of a 500-model x 30-epoch x 50,000-image sweep from the sweep
   setting that projects best: each trial's last-epoch rate for the 30 epochs, plus the
   per-trial time outside them (the chunk's wall time less its trials' epochs), against the
   goal of 2 H100-hours (stretch 1);

and ``throughput``: one row per measured (model, resolution, trials at once): the table the
planner's estimates rest on (:mod:`components.train.throughput`).

    make bench-gpu                                            # on a GPU machine, ~8 minutes
    .venv/bin/python tests/benchmarks/gpu_suite.py --device cpu --tiny      # rehearsal, CPU

``--tiny`` shrinks every size so that the rehearsal runs the same code in a few minutes on a
CPU (``tests/benchmarks/test_gpu_suite.py``). Nothing is downloaded: models have random
weights, and the data are generated. timm's ``train.py`` is not in the timm wheel: pass a copy
of it from a checkout of huggingface/pytorch-image-models (without one, section 1 is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[2]))

# The sweep of the projection: models, epochs, training images per epoch (CIFAR-10).
PROJECTED_MODELS, PROJECTED_EPOCHS, PROJECTED_IMAGES = 500, 30, 50_000
GOAL_GPU_HOURS, STRETCH_GPU_HOURS = 2.0, 1.0
# The sections in running order, with their shares of the budget (a section's unused time
# goes to the next ones).
SECTIONS = {"trainer_vs_timm": 0.4, "sweep": 0.3, "engines": 0.3, "input": 0.1}


class Budget:
    """The suite's wall-clock budget: a step runs only when its estimate fits in what is left."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    @property
    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def share(self, fraction: float) -> Budget:
        """A section's budget: ``fraction`` of the whole, at most what is left, so that one slow
        section cannot leave the next ones without time."""
        return Budget(min(self.left, fraction * self.seconds))

    def allows(self, estimate_s: float, what: str) -> bool:
        if estimate_s <= self.left:
            return True
        progress(f"skipped {what}: needs ~{estimate_s:.0f} s, {max(0, self.left):.0f} s left")
        return False


def progress(line: str) -> None:
    print(f"[gpu-suite {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def trainer_vs_timm(args, budget: Budget, data: dict) -> dict:
    """Section 1: alternating runs of aprflow's trainer and timm's train.py, per model and size."""
    from bench_train_vs_timm import aprflow_trial, run_in_process, timm_rates

    if args.timm_train is None:
        return {"skipped": "no --timm-train (timm's train.py is not in the timm wheel)"}
    rows, estimate = [], {"aprflow": 20.0, "timm": 20.0}
    setting = {"workers": args.workers, "prefetcher": True, "malloc": "default"}
    for reference in args.references:
        for resolution in args.resolutions:
            ref = replace(data["ref"], resolution=resolution, input="stream")
            row = {"model": f"anynet_{reference}", "resolution": resolution}
            for side in ("aprflow", "timm"):
                if not budget.allows(estimate[side], f"{side} {reference} at {resolution} px"):
                    continue
                tic = time.perf_counter()
                if side == "aprflow":
                    run = run_in_process(args, aprflow_trial(args, reference, ref), args.workers)
                    history = run["result"]["history"]["images_per_s"]
                    images = run["images"] // args.batch_size * args.batch_size
                    row["aprflow"] = {
                        "last_epoch_images_per_s": history[-1],
                        "all_epochs_images_per_s": run["result"]["train_images_per_s"],
                        "data_wait_fraction": run["wait_seconds"] * history[-1] / images,
                        "macs_per_image": run["result"]["flops_trained"],
                        "epoch_ends_s": run["epoch_ends_s"],
                        "exit_s": run["exit_s"],
                        # Was 81 s on an H200 with pinned memory
                        # (https://github.com/pytorch/pytorch/issues/81794).
                        "exit_after_last_epoch_s": run["exit_s"] - run["epoch_ends_s"][-1],
                        "overhead_s": overhead_s(run, args.epochs),
                        "log_tail": run["log_tail"],
                    }
                else:
                    folder, mean, std = data["folder"], data["mean"], data["std"]
                    last, total = timm_rates(
                        args, row["model"], resolution, folder, mean, std, setting
                    )
                    row["timm"] = {
                        "last_epoch_images_per_s": last,
                        "all_epochs_images_per_s": total,
                    }
                estimate[side] = 1.2 * (time.perf_counter() - tic)
            if "aprflow" in row and "timm" in row:
                row["ratio_last_epoch"] = (
                    row["aprflow"]["last_epoch_images_per_s"]
                    / row["timm"]["last_epoch_images_per_s"]
                )
                progress(
                    f"{row['model']} {resolution} px: aprflow "
                    f"{row['aprflow']['last_epoch_images_per_s']:.0f} img/s, timm "
                    f"{row['timm']['last_epoch_images_per_s']:.0f} img/s, "
                    f"ratio {row['ratio_last_epoch']:.2f}"
                )
            rows.append(row)
    return {
        "workers": args.workers,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "rows": rows,
    }


def overhead_s(run: dict, epochs: int) -> float:
    """Seconds of a trial's process outside its training loop (start-up, data, evaluation)."""
    return run["exit_s"] - run["images"] * epochs / run["result"]["train_images_per_s"]


def sweep_section(args, budget: Budget, peak: float) -> dict:
    """Section 2: the chunk runner's throughput for 1, 2, 4, 8 trials at once (and with MPS)."""
    from bench_sweep import generated_dataset, mean_train_macs, sweep

    from components.common.storage import open_store
    from components.sample.samplers import sample_specs

    store = open_store()
    tic = time.perf_counter()
    ref = generated_dataset(store, args.sweep_images)
    progress(
        f"sweep data: {ref.n_train} train images at 32 px in {time.perf_counter() - tic:.0f} s"
    )
    specs = [
        s.to_dict() for s in sample_specs("anynetx_a", args.sweep_models, (360e6, 400e6), 0).specs
    ]
    macs = mean_train_macs(specs, ref)
    rows, slot_s = [], 60.0  # a trial slot's seconds for all models, before any measurement
    for i, pack in enumerate(args.packs):
        # Fewer trials at once take longer: at worst, as long as the slots they lose.
        if not budget.allows(1.3 * slot_s / pack, f"sweep with {pack} trials at once"):
            continue
        [row] = sweep(
            store, ref, specs, (pack,), args.sweep_batch_size, args.cpus, args.sweep_epochs, i
        )
        rows.append(row | {"mps": False})
        slot_s = row["wall_s"] * pack
        progress(f"sweep, {pack} at once: {row['models_per_hour']:.0f} models/hour")
    mps = shutil.which("nvidia-cuda-mps-control")
    if args.device == "cuda" and mps and rows:
        best_row = max(rows, key=lambda r: r["models_per_hour"])
        best = best_row["trials_per_gpu"]
        if budget.allows(1.3 * best_row["wall_s"], f"sweep with {best} at once under CUDA MPS"):
            rows.append(mps_sweep(mps, store, ref, specs, best, args, len(args.packs)))
    for row in rows:
        row["tflop_per_s"] = 6 * macs * row["images_per_s"] / 1e12
        row["mfu"] = row["tflop_per_s"] * 1e12 / peak
    return {
        "models": len(specs),
        "train_images": ref.n_train,
        "epochs": args.sweep_epochs,
        "batch_size": args.sweep_batch_size,
        "macs_per_image": macs,
        "mps": "tried" if mps and args.device == "cuda" else "nvidia-cuda-mps-control not found",
        "rows": rows,
    }


def mps_sweep(mps: str, store, ref, specs, pack: int, args, seed: int) -> dict:
    """The sweep at ``pack`` trials at once with CUDA MPS's control daemon running (started
    here in its default folders and stopped after); the card's settings are left alone."""
    from bench_sweep import sweep

    started = subprocess.run([mps, "-d"], capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        return {"trials_per_gpu": pack, "mps": True, "error": started.stderr[-500:]}
    try:
        [row] = sweep(
            store, ref, specs, (pack,), args.sweep_batch_size, args.cpus, args.sweep_epochs, seed
        )
        return row | {"mps": True}
    finally:
        subprocess.run([mps], input="quit\n", text=True, timeout=30)


def engines_section(args, budget: Budget, data: dict) -> dict:
    """Section 3: one model from memory, trained by each engine setting in a process of its own."""
    from bench_train_vs_timm import aprflow_trial, run_in_process

    ref = replace(data["ref"], resolution=32, input="memory")
    cache = Path(tempfile.mkdtemp(prefix="inductor-"))
    settings = [
        ("torch", {}, {}),
        ("deepspeed zero-0", {"engine": "deepspeed"}, {}),
        ("deepspeed zero-1", {"engine": "deepspeed", "engine_options": {"zero_stage": 1}}, {}),
        (
            "torch compile, cold cache",
            {"compile_model": True},
            {"TORCHINDUCTOR_CACHE_DIR": str(cache)},
        ),
        (
            "torch compile, warm cache",
            {"compile_model": True},
            {"TORCHINDUCTOR_CACHE_DIR": str(cache)},
        ),
    ]
    rows, estimate = [], 30.0
    for name, fields, env in settings:
        if not budget.allows(estimate * (3 if "cold" in name else 1), name):
            continue
        try:
            trial = aprflow_trial(args, args.engine_model, ref, **fields)
            run = run_in_process(args, trial, args.workers, env)
        except Exception as e:  # noqa: BLE001 - one engine's failure is a row, not the end
            rows.append({"engine": name, "error": str(e)[-1500:]})
            progress(f"engines: {name} failed: {str(e)[-300:]}")
            continue
        history = run["result"]["history"]["images_per_s"]
        rows.append(
            {
                "engine": name,
                "last_epoch_images_per_s": history[-1],
                "step_ms": 1000 * args.batch_size / history[-1],
                "first_epoch_images_per_s": history[0],
                "process_wall_s": run["wall_s"],
                "epoch_ends_s": run["epoch_ends_s"],
                "overhead_s": overhead_s(run, args.epochs),
                "macs_per_image": run["result"]["flops_trained"],
                # What really ran: the engine's precision, compiled or not, cache hits.
                "precision": run["result"]["precision"],
                "compiled": run["result"]["compiled"],
                "compile_cache": run["result"].get("compile_cache"),
            }
        )
        estimate = run["wall_s"] if "cold" not in name else estimate
        progress(f"engines: {name}: {rows[-1]['step_ms']:.1f} ms/step, {run['wall_s']:.0f} s")
    return {"model": f"anynet_{args.engine_model}", "resolution": 32, "rows": rows}


def input_section(args, budget: Budget, data: dict) -> dict:
    """Section 4: the same trial fed from the stream and from memory."""
    from bench_train_vs_timm import aprflow_trial, run_in_process

    rows, estimate = [], 45.0
    for mode in ("stream", "memory"):
        if not budget.allows(estimate, f"input {mode}"):
            continue
        tic = time.perf_counter()
        ref = replace(data["ref"], resolution=32, input=mode)
        run = run_in_process(args, aprflow_trial(args, args.engine_model, ref), args.workers)
        rate = run["result"]["history"]["images_per_s"][-1]
        images = run["images"] // args.batch_size * args.batch_size
        rows.append(
            {
                "input": mode,
                "last_epoch_images_per_s": rate,
                "data_wait_fraction": run["wait_seconds"] * rate / images,
            }
        )
        estimate = 1.2 * (time.perf_counter() - tic)
        progress(f"input {mode}: {rate:.0f} img/s, waited {rows[-1]['data_wait_fraction']:.0%}")
    return {"model": f"anynet_{args.engine_model}", "workers": args.workers, "rows": rows}


def projected_hours(row: dict, sweep: dict) -> tuple[float, float, float]:
    """(GPU-hours of the projected sweep, the per-trial seconds outside training, the median
    trial's last-epoch images/s) from one sweep row: each trial trains the projected epochs at
    its last-epoch rate, ``trials_per_gpu`` at once, and keeps its measured time outside them
    (the chunk's wall time per trial slot, less that slot's epochs at the same rate)."""
    rates = sorted(row["trial_last_epoch_images_per_s"])
    rate = rates[len(rates) // 2]
    slots = row["trials_per_gpu"]
    outside_s = (
        row["wall_s"] * slots / sweep["models"] - sweep["epochs"] * sweep["train_images"] / rate
    )
    per_trial_s = max(outside_s, 0.0) + PROJECTED_EPOCHS * PROJECTED_IMAGES / rate
    return PROJECTED_MODELS * per_trial_s / slots / 3600, outside_s, rate


def projection(sweep: dict, device: str) -> dict:
    """GPU-hours of the projected sweep from the sweep row that projects best."""
    rows = [r for r in sweep.get("rows", []) if "trial_last_epoch_images_per_s" in r]
    if not rows:
        return {"skipped": "no sweep figures"}
    best = min(rows, key=lambda r: projected_hours(r, sweep)[0])
    hours, outside_s, rate = projected_hours(best, sweep)
    return {
        "sweep": (
            f"{PROJECTED_MODELS} models x {PROJECTED_EPOCHS} epochs x {PROJECTED_IMAGES} images"
        ),
        "at": f"{best['trials_per_gpu']} trials at once{' (MPS)' if best['mps'] else ''}",
        "trial_last_epoch_images_per_s": rate,
        "outside_training_s_per_trial": outside_s,
        "gpu_hours": hours,
        "device": device,
        "goal_gpu_hours": GOAL_GPU_HOURS,
        "stretch_gpu_hours": STRETCH_GPU_HOURS,
        "meets_goal": hours <= GOAL_GPU_HOURS,
    }


def throughput_rows(record: dict) -> list[dict]:
    """The planner's table rows (:mod:`components.train.throughput`): per measured model,
    resolution, input and packing, images/s of one trial's training loop and, for one trial at
    a time, its seconds outside the loop."""
    device, rows = record["device"], []
    for row in record["sections"].get("trainer_vs_timm", {}).get("rows", []):
        if "aprflow" in row:
            rows.append(
                {
                    "device": device,
                    "macs_per_image": row["aprflow"]["macs_per_image"],
                    "resolution": row["resolution"],
                    "input": "stream",
                    "trials_at_once": 1,
                    "images_per_s": row["aprflow"]["last_epoch_images_per_s"],
                    "overhead_s": row["aprflow"]["overhead_s"],
                    "source": f"gpu_suite trainer_vs_timm {row['model']}",
                }
            )
    engines = record["sections"].get("engines", {})
    for row in engines.get("rows", []):
        if row["engine"] == "torch" and "step_ms" in row:
            rows.append(
                {
                    "device": device,
                    "macs_per_image": row["macs_per_image"],
                    "resolution": engines["resolution"],
                    "input": "memory",
                    "trials_at_once": 1,
                    "images_per_s": row["last_epoch_images_per_s"],
                    "overhead_s": row["overhead_s"],
                    "source": f"gpu_suite engines {engines['model']} (torch)",
                }
            )
    sweep = record["sections"].get("sweep", {})
    for row in sweep.get("rows", []):
        if "trial_last_epoch_images_per_s" in row and not row["mps"]:
            _, outside_s, rate = projected_hours(row, sweep)
            rows.append(
                {
                    "device": device,
                    "macs_per_image": sweep["macs_per_image"],
                    "resolution": 32,
                    "input": "memory",
                    "trials_at_once": row["trials_per_gpu"],
                    "images_per_s": rate,
                    "overhead_s": outside_s,
                    "source": "gpu_suite sweep (median trial, last epoch)",
                }
            )
    return rows


def run_section(record: dict, name: str, out: Path, call: Callable[[], dict]) -> None:
    """Runs one section; its figures, or its error, go into ``record`` and ``out`` at once."""
    tic = time.perf_counter()
    progress(f"section {name}")
    try:
        record["sections"][name] = call()
    except Exception:  # noqa: BLE001 - a failed section must not cost the others' figures
        record["sections"][name] = {"error": traceback.format_exc()[-3000:]}
        progress(f"section {name} failed:\n{traceback.format_exc()[-1500:]}")
    record["sections"][name]["seconds"] = time.perf_counter() - tic
    out.write_text(json.dumps(record, indent=2) + "\n")


def table(record: dict) -> str:
    """The suite's figures as a short text table (the end of the output)."""
    lines = [f"device {record['device']}, torch {record['torch']}, timm {record['timm']}"]
    s = record["sections"]
    for row in s.get("trainer_vs_timm", {}).get("rows", []):
        ours = row.get("aprflow", {}).get("last_epoch_images_per_s", float("nan"))
        theirs = row.get("timm", {}).get("last_epoch_images_per_s", float("nan"))
        exit_s = row.get("aprflow", {}).get("exit_after_last_epoch_s", float("nan"))
        lines.append(
            f"trainer {row['model']:22s} {row['resolution']:3d} px: aprflow {ours:8.0f} img/s, "
            f"timm {theirs:8.0f} img/s, ratio {ours / theirs:.2f}; aprflow's process exits "
            f"{exit_s:.1f} s after its last epoch"
        )
    for row in s.get("sweep", {}).get("rows", []):
        if "error" in row:
            lines.append(f"sweep {row['trials_per_gpu']} at once (MPS): {row['error'][:200]}")
            continue
        lines.append(
            f"sweep {row['trials_per_gpu']} at once{' MPS' if row['mps'] else ''}: "
            f"{row['models_per_hour']:7.0f} models/h, {row['images_per_s']:8.0f} img/s, "
            f"{row['tflop_per_s']:6.1f} TFLOP/s, MFU {row['mfu']:.1%}"
        )
    for row in s.get("engines", {}).get("rows", []):
        if "error" in row:
            lines.append(f"engine {row['engine']}: failed")
        else:
            lines.append(
                f"engine {row['engine']:26s} {row['step_ms']:7.2f} ms/step, process "
                f"{row['process_wall_s']:5.1f} s"
            )
    for row in s.get("input", {}).get("rows", []):
        lines.append(
            f"input {row['input']:6s} {row['last_epoch_images_per_s']:8.0f} img/s, data wait "
            f"{row['data_wait_fraction']:.0%} of the step"
        )
    p = record.get("projection", {})
    if "gpu_hours" in p:
        lines.append(
            f"projection: {p['sweep']} = {p['gpu_hours']:.2f} GPU-hours on {p['device']} "
            f"at {p['at']}: {p['trial_last_epoch_images_per_s']:.0f} img/s per trial, "
            f"{p['outside_training_s_per_trial']:.1f} s per trial outside training "
            f"(goal <= {p['goal_gpu_hours']:g}, stretch <= {p['stretch_gpu_hours']:g})"
        )
    for name, section in s.items():
        if "error" in section or "skipped" in section:
            lines.append(f"{name}: {section.get('skipped') or section['error'].splitlines()[-1]}")
    lines.append(f"total {record['seconds']:.0f} s of a {record['budget_s']:.0f} s budget")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="every size shrunk: CPU rehearsal")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget")
    parser.add_argument("--out", type=Path, default=Path("bench-gpu.json"))
    parser.add_argument("--timm-train", type=Path, help="timm's train.py (section 1)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    sizes = {  # tiny (CPU rehearsal) / full (one GPU)
        "images": (160, 16_000),
        "epochs": (2, 2),
        "batch_size": (32, 256),
        "references": (["resnet18"], ["regnetx_400mf", "resnet18"]),
        "resolutions": ([32], [32, 64]),
        "workers": (1, min(8, max(1, cpus - 2))),
        "sweep_images": (120, 20_000),
        "sweep_models": (2, 8),
        "sweep_epochs": (2, 2),  # the last one without the first's warm-up
        "sweep_batch_size": (32, 256),
        # Most trials at once first: the projection's setting, and the one a short budget keeps.
        "packs": ((2, 1), (8, 4, 2, 1)),
        "engine_model": ("regnetx_200mf", "regnetx_400mf"),
    }
    for name, (tiny, full) in sizes.items():
        setattr(args, name, tiny if args.tiny else full)
    args.source_side, args.cpus = 64, cpus
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    os.environ["APRFLOW_STORE_URI"] = str(root / "store")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    budget = Budget(args.budget_s)

    import timm
    import torch
    from bench_sweep import device_peak
    from bench_train_vs_timm import prepare_data

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run the rehearsal with --device cpu --tiny")
    device, peak, peak_source = device_peak(gpu=args.device == "cuda")
    record = {
        "device": device,
        "peak_flop_per_s": peak,
        "peak_source": peak_source,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cpus": args.cpus,
        "tiny": args.tiny,
        "budget_s": args.budget_s,
        "date": time.strftime("%Y-%m-%d"),
        "sections": {},
    }
    progress(f"{device}, peak {peak / 1e12:.1f} TFLOP/s ({peak_source}); data in {root}")
    tic = time.perf_counter()
    folder, ref, mean, std = prepare_data(args, root)
    data = {"folder": folder, "ref": ref, "mean": mean, "std": std}
    progress(f"{ref.n_train} JPEG train images built in {time.perf_counter() - tic:.0f} s")
    sections = {
        "trainer_vs_timm": lambda part: trainer_vs_timm(args, part, data),
        "sweep": lambda part: sweep_section(args, part, peak),
        "engines": lambda part: engines_section(args, part, data),
        "input": lambda part: input_section(args, part, data),
    }
    chosen = [name for name in SECTIONS if name in args.sections]
    for i, name in enumerate(chosen):
        # This section's share, and the shares of the sections skipped or not chosen before it.
        fraction = SECTIONS[name] / sum(SECTIONS[n] for n in chosen[i:])
        part = budget.share(fraction * budget.left / budget.seconds)
        run_section(record, name, args.out, lambda part=part, name=name: sections[name](part))
    record["projection"] = projection(record["sections"].get("sweep", {}), device)
    record["throughput"] = throughput_rows(record)
    record["seconds"] = time.perf_counter() - budget.start
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
