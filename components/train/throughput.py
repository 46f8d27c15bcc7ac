"""Measured training throughput: what the planner's time estimates rest on.

``throughput.json`` beside this file holds measurements of aprflow's own trainer, one trial at
a time: the images/s of its training loop and the seconds a trial spends outside it (start-up,
data loading, evaluation), by device, model size (multiply-adds per image at the trained
resolution) and input. A trial's estimate is

    seconds = overhead_s + training images x epochs / rate,
    rate = images_per_s x min(1, MACs of the measurement / MACs of the trial)

from the measurement of the same kind of device (``cpu``, or any GPU) nearest in model size
(log MACs; the same input breaks ties, then the newest): a larger model is slower in
proportion to its work, a smaller one is taken to be no faster (small models on a GPU are
bound by kernel launches and data, not arithmetic). Every estimate names its measurement
(:meth:`Measurement.describe`), so a plan says what it rests on and how old that is.

Add the rows of a GPU benchmark run (``make bench-gpu``, ``bench-gpu.json``)::

    python -m components.train.throughput add bench-gpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("throughput.json")


@dataclass(frozen=True)
class Measurement:
    """One measured trial setting: where, what size, how fast, and when."""

    device: str  # "cpu" or the GPU's name ("NVIDIA H200")
    macs_per_image: float
    resolution: int
    input: str  # "memory" or "stream"
    images_per_s: float
    overhead_s: float
    date: str  # YYYY-MM-DD
    source: str  # the command (and commit) that measured it

    @property
    def kind(self) -> str:
        return "cpu" if self.device == "cpu" else "gpu"

    def describe(self, today: dt.date | None = None) -> str:
        """E.g. ``NVIDIA H200, 32.4 M MACs at 32 px from memory: 11791 images/s + 17 s per
        trial, measured 2026-12-04 (3 days ago) by ...``."""
        age = ((today or dt.date.today()) - dt.date.fromisoformat(self.date)).days
        when = {0: "today", 1: "1 day ago"}.get(age, f"{age} days ago")
        return (
            f"{self.device}, {self.macs_per_image / 1e6:.1f} M MACs at {self.resolution} px "
            f"from {self.input}: {self.images_per_s:.0f} images/s + {self.overhead_s:.0f} s per "
            f"trial, measured {self.date} ({when}) by {self.source}"
        )


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: Measurement


@functools.cache
def load_table(path: Path = TABLE) -> tuple[Measurement, ...]:
    """The measurements of ``path``."""
    rows = json.loads(path.read_text())["measurements"]
    return tuple(Measurement(**row) for row in rows)


def device_kind(device: str) -> str:
    """The kind of device a trial's ``device`` setting plans for: ``cpu`` when pinned to the
    CPU, else ``gpu`` (``auto`` trains on a GPU wherever a study is meant to run at scale)."""
    return "cpu" if device == "cpu" else "gpu"


def basis_for(
    kind: str, macs: float, input_mode: str, table: tuple[Measurement, ...] | None = None
) -> Measurement:
    """The measurement an estimate for this kind of device, model size and input rests on.

    Raises:
        ValueError: when the table holds no measurement of that kind of device.
    """
    rows = [row for row in table or load_table() if row.kind == kind]
    if not rows:
        raise ValueError(
            f"no {kind} throughput measurement in {TABLE}: add one with "
            "`python -m components.train.throughput add bench-gpu.json`"
        )

    def distance(row: Measurement) -> tuple[float, bool, int]:
        size = abs(math.log(max(macs, 1.0) / row.macs_per_image))
        newest_first = -dt.date.fromisoformat(row.date).toordinal()
        return round(size, 6), row.input != input_mode, newest_first

    return min(rows, key=distance)


def _rate(basis: Measurement, macs: float) -> float:
    """Training images/s of a model of ``macs`` on ``basis``'s setting."""
    return basis.images_per_s * min(1.0, basis.macs_per_image / max(macs, 1.0))


def estimate(
    macs: float,
    images: int,
    epochs: int,
    kind: str,
    input_mode: str,
    table: tuple[Measurement, ...] | None = None,
) -> Estimate:
    """A trial's estimated wall time (seconds) and the measurement it rests on."""
    basis = basis_for(kind, macs, input_mode, table)
    return Estimate(basis.overhead_s + images * epochs / _rate(basis, macs), basis)


# A forward pass is about a third of a training step's work (backward: about twice forward).
FORWARD_SHARE = 1 / 3


def work_estimate(
    macs: float,
    images: int,
    kind: str,
    forward_only: bool = False,
    table: tuple[Measurement, ...] | None = None,
) -> Estimate:
    """Seconds to train on (or, ``forward_only``, to extract features of) ``images`` images
    with a model of ``macs`` multiply-adds per image, at the trainer's measured rate (memory
    input) and without a trial's time outside its loop: the work of a transfer study."""
    basis = basis_for(kind, macs, "memory", table)
    share = FORWARD_SHARE if forward_only else 1.0
    return Estimate(images * share / _rate(basis, macs), basis)


def bench_rows(record: dict) -> list[Measurement]:
    """The measurements of a GPU benchmark run's record (``bench-gpu.json``): its rows of one
    trial at a time."""
    return [
        Measurement(
            device=record["device"],
            macs_per_image=row["macs_per_image"],
            resolution=row["resolution"],
            input=row.get("input", "memory"),
            images_per_s=row["images_per_s"],
            overhead_s=row.get("overhead_s", 0.0),
            date=record["date"],
            source=row["source"],
        )
        for row in record.get("throughput", [])
        if row.get("trials_at_once", 1) == 1
    ]


def add(record_path: Path, table_path: Path = TABLE) -> list[Measurement]:
    """Adds a benchmark run's measurements to the table, replacing those of the same device,
    model size, resolution and input; returns the rows added."""
    new = bench_rows(json.loads(record_path.read_text()))
    table = json.loads(table_path.read_text())

    def key(row: dict) -> tuple:
        return (row["device"], round(row["macs_per_image"]), row["resolution"], row["input"])

    replaced = {key(asdict(row)) for row in new}
    kept = [row for row in table["measurements"] if key(row) not in replaced]
    table["measurements"] = kept + [asdict(row) for row in new]
    table_path.write_text(json.dumps(table, indent=2) + "\n")
    load_table.cache_clear()
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.train.throughput",
        description="The planner's throughput table: list it, or add a benchmark run's rows.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print the measurements")
    adding = commands.add_parser("add", help="add the one-trial rows of a bench-gpu.json")
    adding.add_argument("record", type=Path, help="a bench-gpu.json (make bench-gpu)")
    args = parser.parse_args(argv)
    rows = add(args.record) if args.command == "add" else list(load_table())
    for row in rows:
        print(row.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
