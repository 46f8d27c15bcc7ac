"""A trial's run while it trains: RUNNING from the trial's start, its per-epoch metrics streamed
as they come, in a background thread so that training never waits for MLflow."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from components.common.progress import report
from components.common.tracking.client import open_client, outage_budget, with_retries
from components.common.tracking.runs import as_ms, is_number
from components.common.tracking.trial import TrialLog, open_trial_run, result_series

# The step-level training loss (mean since the previous point, step = optimizer update), which
# the trainer hands over at most every minute: a long epoch still shows progress.
STEP_LOSS = "train_loss_step"
# How long the end of a trial waits for the stream to log what it holds; what is left is
# logged by the trial's final logging (same timestamps: MLflow keeps each point once).
CLOSE_S = 10.0


class TrialStream:
    """The live side of a trial's run.

    :meth:`start` opens the run (:func:`~components.common.tracking.trial.open_trial_run`:
    RUNNING, started at the trial's start, with its params, tags and dataset); :meth:`epoch`
    logs an epoch's values under the names of the final logging, ``step`` = epoch and
    timestamp = the epoch's end; :meth:`step` logs the step-level loss. Everything runs in one
    background thread, in order. Best-effort: when MLflow does not answer within the outage
    budget, a line says so and the stream stops; the trial's final logging
    (:func:`~components.common.tracking.queue.log_trial_or_queue`) logs the whole history
    with the same timestamps, or queues it.
    """

    def __init__(self, uri: str, log: TrialLog) -> None:
        self.uri, self.log = uri, log
        self.run_id: str | None = None
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="aprflow-trial-run", daemon=True)

    def start(self) -> None:
        """Opens the run in the background; the trial trains meanwhile."""
        if self.log.started_at is None:
            self.log.started_at = time.time()
        self._thread.start()

    def epoch(self, epoch: int, history: Mapping[str, list[float]], ended_at: float) -> None:
        """Streams epoch ``epoch`` (1 = the first) of a trainer's ``history``."""
        values = {
            name: float(series[epoch - 1])
            for name, series in result_series(history).items()
            if len(series) >= epoch and is_number(series[epoch - 1])
        }
        self._ops.put((values, epoch, ended_at))

    def step(self, update: int, loss: float, at: float) -> None:
        """Streams the training loss at optimizer update ``update``."""
        if is_number(loss):
            self._ops.put(({STEP_LOSS: float(loss)}, update, at))

    def close(self, timeout: float = CLOSE_S) -> None:
        """Lets the stream log what it holds, for at most ``timeout`` seconds."""
        if self._thread.is_alive():
            self._ops.put(None)
            self._thread.join(timeout)

    def _work(self) -> None:
        try:
            self.run_id = open_trial_run(self.uri, self.log, outage_budget(self.uri))
            client = open_client(self.uri)
            while (op := self._ops.get()) is not None:
                self._log(client, *op)
        except Exception as e:  # noqa: BLE001 - tracking must never fail training
            report(
                "tracking",
                f"trial {self.log.trial_id}: no live metrics in MLflow ({e}); its result is "
                "logged when it ends",
            )

    def _log(self, client, values: dict[str, Any], step: int, at: float) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, as_ms(at), step) for k, v in values.items()]
        if metrics:
            with_retries(
                lambda: client.log_batch(self.run_id, metrics=metrics),
                f"streaming trial {self.log.trial_id} to MLflow",
                outage_budget(self.uri),
            )
