"""Benchmark: the three MLflow searches of docs/mlflow.md over a study-sized experiment.

Logs a study of ``--n-models`` sampled AnyNetX architectures x ``--datasets`` datasets through
``components.common.tracking`` (the parent run and one nested run per trial, as the train task
logs them: architecture params, derived quantities, dataset input, tags), then times each
search (best of ``--repeat``) and checks that it returns the expected runs. Nothing is trained:
the error of each trial is drawn at random (seeded), so the numbers measure MLflow, not models.

Run as ``python tests/benchmarks/bench_mlflow_search.py [--n-models 500] [--datasets 3]
[--server]`` from the repository root (pytest does not collect it). Without ``--server`` the
runs go to a SQLite file (what ``mlflow ui`` reads after ``make demo``); with it, to a real
``mlflow server`` on loopback with that SQLite file as its back end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Allow running as a plain script from anywhere.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from components.common import tracking  # noqa: E402
from components.common.hashing import content_hash  # noqa: E402
from components.sample.samplers import sample_specs  # noqa: E402
from components.train.run import _architecture_params  # noqa: E402

DATASETS = (
    "shapes",
    "digits",
    "faces",
    "imagenet",
    "cifar10",
    "cifar100",
    "concrete",
    "ham10000",
    "insects",
)
EXPERIMENT = "bench-search"


def log_study(uri: str, n_models: int, datasets: tuple[str, ...], seed: int) -> dict:
    """Logs the synthetic study; returns what the searches must find."""
    rng = np.random.default_rng(seed)
    specs = sample_specs("anynetx_a", n_models, seed=seed).specs
    parent = tracking.start_study_run(uri, EXPERIMENT, f"bench-{seed}", {"n_models": n_models})
    errors: dict[tuple[str, str], float] = {}
    failed: set[str] = set()
    start = time.perf_counter()
    for i, spec in enumerate(specs):
        model = spec.spec_hash()
        for dataset in datasets:
            trial_id = content_hash({"model": model, "dataset": dataset})
            status = "failed" if rng.random() < 0.02 else "ok"
            error = float(rng.uniform(5, 95))
            record = {"name": dataset, "content_hash": content_hash(dataset), "resolution": 32}
            params = _architecture_params(spec.to_dict()) | {
                "model": model,
                "dataset": dataset,
                "recipe": "apr_tiny",
                "seed": 0,
            }
            log = tracking.TrialLog(
                parent,
                trial_id,
                run_name=tracking.trial_run_name(model, dataset, "apr_tiny", 0, status),
                params=params,
                metrics={"top1_error": error} if status == "ok" else {},
                status=status,
                tags={"aprflow.model": model, "aprflow.dataset": dataset},
                dataset=record,
                dataset_source=f"/bench/{dataset}",
            )
            tracking.log_trial_run(uri, log)
            if status == "ok":
                errors[model, dataset] = error
            else:
                failed.add(trial_id)
        if (i + 1) % 50 == 0:
            print(f"  logged {(i + 1) * len(datasets)} runs", flush=True)
    seconds = time.perf_counter() - start
    tracking.finish_study_run(uri, parent, {})
    n_runs = len(specs) * len(datasets)
    print(f"logging: {n_runs} trial runs in {seconds:.1f} s ({n_runs / seconds:.1f} runs/s)")
    return {"errors": errors, "failed": failed, "models": [s.spec_hash() for s in specs]}


def timed(repeat: int, search) -> tuple[float, list]:
    best, runs = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        runs = search()
        best = min(best, time.perf_counter() - start)
    return best, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=500, help="architectures")
    parser.add_argument("--datasets", type=int, default=3, help=f"datasets (<= {len(DATASETS)})")
    parser.add_argument("--server", action="store_true", help="through a loopback mlflow server")
    parser.add_argument("--repeat", type=int, default=3, help="timings per search (best kept)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and error seed")
    args = parser.parse_args()
    datasets = DATASETS[: args.datasets]

    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{folder}/mlflow.db"
        server = None
        uri = db
        if args.server:
            from helpers import free_port, wait_for_http

            port = free_port()
            uri = f"http://127.0.0.1:{port}"
            command = [str(Path(sys.executable).parent / "mlflow"), "server"]
            command += ["--backend-store-uri", db, "--default-artifact-root", f"{folder}/a"]
            command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            wait_for_http(f"{uri}/health", server, timeout=120)
        try:
            print(f"{args.n_models} models x {len(datasets)} datasets, tracking at {uri}")
            truth = log_study(uri, args.n_models, datasets, args.seed)
            client = MlflowClient(tracking_uri=uri)
            experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id

            def search(filter_string: str, order_by=None, max_results: int = 1000):
                return lambda: list(
                    client.search_runs(
                        [experiment_id], filter_string, order_by=order_by, max_results=max_results
                    )
                )

            best_s, best = timed(
                args.repeat,
                search(
                    "params.dataset = 'shapes' and tags.aprflow.status = 'ok'",
                    ["metrics.top1_error ASC"],
                    15,
                ),
            )
            expected = sorted(e for (_, d), e in truth["errors"].items() if d == "shapes")[:15]
            assert [r.data.metrics["top1_error"] for r in best] == expected
            print(f"best 15 on shapes:           {best_s * 1000:8.1f} ms ({len(best)} runs)")

            failed_s, failed = timed(args.repeat, search("tags.aprflow.status = 'failed'"))
            assert {r.data.tags[tracking.TRIAL_TAG] for r in failed} == truth["failed"]
            print(f"failed trials:               {failed_s * 1000:8.1f} ms ({len(failed)} runs)")

            model = truth["models"][0]
            one_s, one = timed(args.repeat, search(f"params.model = '{model}'"))
            assert len(one) == len(datasets)
            print(f"one architecture, all sets:  {one_s * 1000:8.1f} ms ({len(one)} runs)")
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)


if __name__ == "__main__":
    main()
