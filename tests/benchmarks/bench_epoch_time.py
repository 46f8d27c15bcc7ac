"""Seconds per epoch of the ``apr_short`` recipe on ``shapes`` at 32 px, with the real trial code.

One architecture sampled from the demo's design space (``anynetx_a``, 150-250 MFLOPs at 224 px,
sampler seed 0: ``pipelines/configs/apr_study.toy.yaml``) is trained by
:func:`components.train.trial.run_trial` for ``--epochs`` epochs (default 1) of ``apr_short``
(the recipe's other fields unchanged) on the built-in ``shapes`` set at 32 px, on this
machine's CPU (or ``--device``). Printed: the settings, the 1-minute load average before the
run, the training loop's seconds per epoch (images / the trainer's ``images_per_s``), and the
trial's wall time per epoch (model build, data loading, evaluation and checkpoints included)::

    .venv/bin/python tests/benchmarks/bench_epoch_time.py
    .venv/bin/python tests/benchmarks/bench_epoch_time.py --input stream --epochs 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

import torch

from components.common.storage import open_store
from components.data.datasets import prepare_all
from components.sample.samplers import sample_specs
from components.train.recipes import resolve_recipe
from components.train.trial import Trial, run_trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--recipe", default="apr_short")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--input", choices=("memory", "stream"), default="memory")
    parser.add_argument("--space", default="anynetx_a")
    parser.add_argument("--flops", type=float, nargs=2, default=(150e6, 250e6))
    parser.add_argument("--model-seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    spec = sample_specs(args.space, 1, tuple(args.flops), seed=args.model_seed).specs[0]
    recipe = resolve_recipe(args.recipe, {"epochs": args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        (ref,) = prepare_all([args.dataset], args.resolution, 0, store.uri)
        ref = replace(ref, input=args.input)
        trial = Trial(spec.to_dict(), ref, recipe, seed=0, device=args.device)
        print(
            f"{args.recipe} ({recipe.epochs} epoch(s) of batch {recipe.batch_size}, "
            f"lr {recipe.lr}, {recipe.opt}, {recipe.sched}) on {ref.name} ({ref.n_train} train / "
            f"{ref.n_test} test images, {ref.resolution} px, input {ref.input}); model: "
            f"{args.space} sample {args.model_seed} ({spec.to_dict()}); torch threads "
            f"{torch.get_num_threads()}, device {args.device}",
            flush=True,
        )
        load = os.getloadavg()[0]
        tic = time.perf_counter()
        result = run_trial(store, trial, progress=lambda _: None)
        wall = time.perf_counter() - tic
    if result["status"] != "ok":
        raise SystemExit(f"trial {result['status']}: {result.get('reason')}")
    history = result["history"]
    rates = history.get("images_per_s") or [result["train_images_per_s"]] * recipe.epochs
    images = ref.n_train // recipe.batch_size * recipe.batch_size
    train_s = [images / rate for rate in rates]
    print(
        f"load average before: {load:.2f}; device {result['device_used']}, "
        f"{result['precision']}\n"
        f"  training loop: {sum(train_s) / len(train_s):.2f} s/epoch "
        f"({', '.join(f'{r:.0f}' for r in rates)} images/s)\n"
        f"  trial wall time: {wall / recipe.epochs:.2f} s/epoch ({wall:.1f} s for "
        f"{recipe.epochs} epoch(s), test error {result['top1_error']:.1f}%)",
        flush=True,
    )


if __name__ == "__main__":
    main()
