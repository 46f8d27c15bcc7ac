"""The GPU benchmark suite's CPU rehearsal: the same script, every size shrunk, so that it is
known to work before any GPU time is spent on it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "gpu_suite.py"


def _run(tmp_path: Path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "bench-gpu.json"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--device", "cpu", "--tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.extended
def test_cpu_rehearsal_measures_every_section(tmp_path):
    record, done = _run(tmp_path, "--budget-s", "600")
    sections = record["sections"]
    assert sections["trainer_vs_timm"]["skipped"].startswith("no --timm-train")

    sweep = sections["sweep"]["rows"]
    assert [r["trials_per_gpu"] for r in sweep] == [2, 1]
    for row in sweep:
        assert all(_positive(row[k]) for k in ("wall_s", "models_per_hour", "images_per_s"))
        assert 0 < row["mfu"] < 1 and len(row["trial_images_per_s"]) == 2
        assert all(_positive(r) for r in row["trial_last_epoch_images_per_s"])

    engines = {r["engine"]: r for r in sections["engines"]["rows"]}
    assert list(engines) == [
        "torch",
        "deepspeed zero-0",
        "deepspeed zero-1",
        "torch compile, cold cache",
        "torch compile, warm cache",
    ]
    assert all(_positive(r["step_ms"]) for r in engines.values()), engines
    assert not engines["torch"]["compiled"] and engines["torch compile, cold cache"]["compiled"]
    # The warm run loads what the cold one compiled: the cache really was cold, then warm.
    assert engines["torch compile, cold cache"]["compile_cache"]["hits"] == 0
    assert engines["torch compile, warm cache"]["compile_cache"]["hits"] > 0

    inputs = {r["input"]: r for r in sections["input"]["rows"]}
    assert set(inputs) == {"stream", "memory"}
    assert 0 <= inputs["stream"]["data_wait_fraction"] < 1

    projection = record["projection"]
    assert _positive(projection["gpu_hours"]) and _positive(
        projection["trial_last_epoch_images_per_s"]
    )
    assert {r["trials_at_once"] for r in record["throughput"]} == {1, 2}
    assert "sweep 2 at once" in done.stdout and "projection:" in done.stdout
    assert record["seconds"] < 600


def test_a_budget_too_small_skips_with_a_message_and_still_writes_the_record(tmp_path):
    record, done = _run(tmp_path, "--budget-s", "1", "--sections", "sweep", "engines")
    assert "skipped sweep with 2 trials at once" in done.stderr
    assert "skipped torch compile, cold cache" in done.stderr
    assert record["sections"]["sweep"]["rows"] == []
    assert record["sections"]["engines"]["rows"] == []
    assert record["projection"] == {"skipped": "no sweep figures"}
    assert "total" in done.stdout  # the table is printed even with nothing measured


def test_the_projection_uses_the_last_epoch_rate_and_the_time_outside_training():
    sys.path.insert(0, str(SUITE.parent))
    from gpu_suite import projected_hours, projection

    sweep = {"models": 8, "epochs": 2, "train_images": 16_000}
    row = {
        "trials_per_gpu": 2,
        "wall_s": 100.0,
        "mps": False,
        "trial_last_epoch_images_per_s": [9000.0, 8000.0, 7000.0],
    }
    hours, outside_s, rate = projected_hours(row, sweep)
    # A slot's 4 trials took 100 s, 4 s each of it in 2 epochs at the median 8,000 img/s.
    assert rate == 8000.0 and outside_s == pytest.approx(100 * 2 / 8 - 2 * 16_000 / 8000)
    assert hours == pytest.approx(500 * (21 + 30 * 50_000 / 8000) / 2 / 3600)
    slower = row | {"trials_per_gpu": 1, "wall_s": 150.0}
    chosen = projection({**sweep, "rows": [slower, row]}, "GPU")
    assert chosen["at"] == "2 trials at once" and chosen["gpu_hours"] == pytest.approx(hours)


def test_the_table_shows_the_ratio_and_how_long_the_trial_process_takes_to_exit():
    sys.path.insert(0, str(SUITE.parent))
    from gpu_suite import table

    row = {
        "model": "anynet_resnet18",
        "resolution": 32,
        "aprflow": {"last_epoch_images_per_s": 6000.0, "exit_after_last_epoch_s": 81.2},
        "timm": {"last_epoch_images_per_s": 8000.0},
    }
    record = {
        "device": "GPU",
        "torch": "2",
        "timm": "1",
        "sections": {"trainer_vs_timm": {"rows": [row]}},
        "seconds": 1.0,
        "budget_s": 2.0,
    }
    line = table(record).splitlines()[1]
    assert "ratio 0.75" in line and "exits 81.2 s after its last epoch" in line
