"""What every process of a trial's TrainJob runs: ``torchrun --module components.trainjob.node``.

All ranks train together (the DeepSpeed engine joins torchrun's process group, so gradients
are averaged across nodes); rank 0 alone logs the trial's MLflow run, exactly as the
single-pod ``train_trial`` task does. Every rank reads the same planned trial from the store.
"""

from __future__ import annotations

import argparse
import os
import sys

from components.common.errors import AprflowError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m components.trainjob.node")
    parser.add_argument("--trial-id", required=True)
    parser.add_argument("--study-id", required=True)
    parser.add_argument("--store-uri", default=None, help="default: APRFLOW_STORE_URI")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    parser.add_argument("--kfp-run-id", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        if rank == 0:
            from components.train.run import train_trial

            result = train_trial(
                args.trial_id, args.study_id, args.store_uri, args.tracking_uri, args.kfp_run_id
            )
        else:
            from components.common.storage import open_store
            from components.train.plan import load_trial
            from components.train.trial import run_trial

            store = open_store(args.store_uri)
            result = run_trial(store, load_trial(store, args.trial_id), progress=lambda _: None)
    except AprflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rank {rank}: trial {args.trial_id} {result['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
