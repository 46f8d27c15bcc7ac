"""The run open while a chunk trains carries MLflow's system metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.common import tracking

ROOT = Path(__file__).parents[2]
# A tiny AnyNetX spec: the live run is tested, not the model.
SPEC = {
    "depths": [1, 1, 1, 1],
    "widths": [8, 16, 24, 32],
    "bottleneck_ratios": [1.0, 1.0, 2.0, 4.0],
    "group_widths": [1, 2, 4, 8],
}


@pytest.mark.slow
def test_chunk_trains_under_a_live_run_with_system_metrics(local_env, monkeypatch):
    from mlflow.tracking import MlflowClient

    from components.data.datasets import prepare_all
    from components.train.run import plan_study

    # Trials of a few seconds, sampled every 0.5 s.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    refs = [r.to_dict() for r in prepare_all(["faces"], 12, 0)]
    ids, study, parent = plan_study(
        [SPEC], refs, "live", "apr_tiny", {"epochs": 12}, [0, 1], "torch", None, None, chunk_size=2
    )
    # In a process of its own, as in a chunk task: the runner leaves MLflow to a fork server's
    # child, whose imports are there already (seconds of every task's start-up otherwise).
    runner = (
        "import json, sys\n"
        "from components.train.chunk import ChunkSettings, run_chunk\n"
        f"ids = run_chunk({study!r}, 0, None, None, 'kfp-1', ChunkSettings(cpus=2))\n"
        "print(json.dumps({'ids': ids, 'mlflow': 'mlflow' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", runner], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(done.stdout) == {"ids": ids, "mlflow": False}
    uri = tracking.resolve_tracking_uri()
    client = MlflowClient(uri)
    children = tracking.child_runs(uri, parent)
    (live,) = [r for r in children if tracking.LIVE_TAG in r.data.tags]
    assert live.info.run_name == "chunk-0" and live.info.status == "FINISHED"
    assert (
        live.data.tags["aprflow.chunk"] == "0" and live.data.tags[tracking.KFP_RUN_TAG] == "kfp-1"
    )
    cpu = client.get_metric_history(live.info.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2
    # The trials' own runs are there as before, and the live run is not one of them.
    assert set(tracking.trial_run_links(uri, parent)) == set(ids)
