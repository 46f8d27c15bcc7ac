"""The MLflow UI in a real browser: a small study's runs, their durations, the study's report
and its registered model, as headless Chromium renders them from ``mlflow server`` on the
study's SQLite database.

One module-scoped study (2 sampled AnyNetX models x faces, 1 epoch at 12 px, the best model
logged and registered) runs through the functions of the pipeline's tasks (plan, train each
trial, analyze) on a local SQLite file, as ``aprflow run`` does; then ``mlflow server`` serves
that file and the study's artifact root, the way ``mlflow ui`` does after ``make demo``.

MLflow's UI is a React single-page app that fetches what it shows from the server's REST API
(``/ajax-api/2.0/mlflow/...``): a dump of the page before its scripts ran holds none of it. The
tests therefore drive Chromium over the Chrome DevTools protocol (a websocket; websocket-client
is in requirements/runtime.lock), wait until the page has rendered what they look for, and
assert on the rendered DOM. Each test saves a screenshot in its pytest temporary folder and
prints its path (``pytest -s`` shows them).
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CHROMIUM,
    chromium_command,
    free_port,
    mlflow_server_command,
    running_server,
)

from components.common import tracking

pytestmark = [
    pytest.mark.extended,
    pytest.mark.skipif(
        CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
    ),
]

EXPERIMENT = "ui-study"
DATASET = "faces"
RUN_NAME_CELL = '[col-id="attributes.`Run Name`"]'
# MLflow 3.17.2 opens an experiment in the view of the workflow the UI's "GenAI | Model
# training" switch holds: the URL's `workflowType`, else the browser's local storage key
# `mlflow.workflowType`, whose initial value is "genai" (the `workflowType` context provider in
# mlflow/server/js/build/static/js/main.c2f5f8d4.js); the experiment's
# `mlflow.experimentKind` tag does not choose it. A fresh browser profile therefore needs the
# switch, here in the URL, to list the training runs.
MODEL_TRAINING = "workflowType=machine_learning"
# How the runs table writes a duration (`Utils.formatDuration` in the same file): whole
# milliseconds below 0.5 s, else one decimal of the largest unit that fits.
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|min|h|d)")
UNIT_MS = {"ms": 1, "s": 1e3, "min": 6e4, "h": 3.6e6, "d": 8.64e7}


class Page:
    """One Chromium tab, driven over the Chrome DevTools protocol.

    Args:
        websocket_url: the tab's ``webSocketDebuggerUrl``.
        screenshots: folder the screenshots are saved in.
    """

    def __init__(self, websocket_url: str, screenshots: Path) -> None:
        import websocket

        # Chromium refuses a DevTools websocket whose Origin header it was not told to allow.
        self._socket = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self._screenshots = screenshots

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends one protocol command and returns its result (events are skipped)."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"Chromium refused {method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 90) -> Any:
        """Polls ``expression`` (a JSON value, not a DOM node) until it is truthy (the app
        renders after its API calls) and returns its value.

        Raises:
            TimeoutError: past ``timeout`` seconds, with a screenshot's path, the page's text
                and the expression's last error (a page still loading has no body yet).
        """
        deadline = time.monotonic() + timeout
        error = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as e:
                error = e
            else:
                if value:
                    return value
            time.sleep(0.25)
        path = self.screenshot("timeout")
        text = self.evaluate("document.body?.innerText ?? ''")
        raise TimeoutError(
            f"the page did not show {what} within {timeout:.0f} s (screenshot: {path}; last "
            f"error: {error}); it shows: {text[:2000]!r}"
        )

    def text(self, selector: str) -> str:
        """The rendered text of the first element ``selector`` matches ("" when none)."""
        found = json.dumps(selector)
        return self.evaluate(f"document.querySelector({found})?.innerText.trim() ?? ''")

    def click(self, selector: str) -> None:
        found = f"document.querySelector({json.dumps(selector)})"
        if not self.evaluate(f"(e => e ? (e.click(), true) : false)({found})"):
            raise AssertionError(f"nothing to click: no element matches {selector}")

    def screenshot(self, name: str) -> Path:
        """Saves the tab as ``<name>.png`` (a numbered name if taken) and prints its path."""
        path = self._screenshots / f"{name}.png"
        for n in itertools.count(2):
            if not path.exists():
                break
            path = self._screenshots / f"{name}-{n}.png"
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self._socket.close()


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float = 60) -> int:
    """The port Chromium's DevTools listen on: the first line of ``DevToolsActivePort``, which
    it writes into its profile once it listens (``--remote-debugging-port=0``)."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Chromium exited with {process.returncode}")
        lines = marker.read_text().splitlines() if marker.exists() else []
        if lines:
            return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError(f"Chromium opened no DevTools port within {timeout:.0f} s")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Any]:
    """Runs the small study on a SQLite file; returns what the pages are compared with."""
    from mlflow.tracking import MlflowClient

    from components.analyze.run import analyze_study
    from components.data.datasets import prepare_all
    from components.sample.samplers import sample_specs
    from components.train.run import plan_study, train_trial

    root = tmp_path_factory.mktemp("ui-study")
    store_uri = str(root / "store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APRFLOW_TORCH_THREADS", "1")  # two shared cores
        # The results table links each registered model to the UI that the tests start.
        patch.setenv(tracking.UI_URL_ENV, f"http://127.0.0.1:{port}")
        refs = [r.to_dict() for r in prepare_all([DATASET], 12, 0, store_uri)]
        specs = [s.to_dict() for s in sample_specs("anynetx_a", 2, (150e6, 250e6), seed=0).specs]
        ids, study_id, parent = plan_study(
            specs, refs, EXPERIMENT, "apr_tiny", {"epochs": 1}, [0], "torch", store_uri, uri
        )
        results = [train_trial(trial_id, study_id, store_uri, uri) for trial_id in ids]
        analyze_study(ids, study_id, parent, None, store_uri, uri, root / "out", best_models=1)
    client = MlflowClient(uri)
    runs = {
        run.info.run_id: run
        for run in tracking.child_runs(uri, parent)
        if tracking.TRIAL_TAG in run.data.tags
    }
    best = min(results, key=lambda r: r["top1_error"])["trial_id"]
    with open(root / "out" / "results.csv", newline="") as table:
        model_urls = {row["trial_id"]: row["model_url"] for row in csv.DictReader(table)}
    return {
        "root": root,
        "port": port,
        "experiment_id": client.get_experiment_by_name(EXPERIMENT).experiment_id,
        "study_id": study_id,
        "parent": parent,
        "trial_ids": ids,
        "runs": runs,
        "best_run": next(r for r in runs.values() if r.data.tags[tracking.TRIAL_TAG] == best),
        "model_url": model_urls[best],
    }


@pytest.fixture(scope="module")
def ui(study) -> Iterator[str]:
    """``mlflow server`` on the study's SQLite file and artifact root; yields its URL."""

    root = study["root"]
    command = mlflow_server_command(root, study["port"])
    url = f"http://127.0.0.1:{study['port']}"
    yield from (url for _ in running_server(command, f"{url}/health", root / "server.log"))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[Page]:
    """A headless Chromium tab with a fresh profile (no stored UI settings)."""
    folder = tmp_path_factory.mktemp("chromium")
    profile = folder / "profile"
    with open(folder / "chromium.log", "wb") as log:
        process = subprocess.Popen(
            chromium_command(
                profile, "--remote-debugging-port=0", "--window-size=1600,1000", "about:blank"
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _devtools_port(profile, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            tab = next(t for t in json.load(reply) if t["type"] == "page")
        tab_page = Page(tab["webSocketDebuggerUrl"], folder)
        try:
            yield tab_page
        finally:
            tab_page.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _row(run_id: str) -> str:
    return f'[row-id="{run_id}"]'


def _shown_ms(text: str) -> tuple[float, float]:
    """A duration as the runs table writes it: ``(milliseconds, rounding tolerance)``."""
    match = DURATION.fullmatch(text)
    if match is None:
        raise AssertionError(f"{text!r} is not a duration")
    unit = UNIT_MS[match[2]]
    return float(match[1]) * unit, 0.5 if match[2] == "ms" else 0.05 * unit


def test_trial_runs_are_listed_with_their_durations(study, ui, page):
    experiment = study["experiment_id"]
    page.goto(f"{ui}/#/experiments/{experiment}/runs?{MODEL_TRAINING}")
    parent_name = f"{_row(study['parent'])} {RUN_NAME_CELL}"
    page.wait_for(
        f"document.querySelector({json.dumps(parent_name)})?.innerText.includes("
        f"{json.dumps(study['study_id'])})",
        "the study's parent run",
    )
    # Trial runs are nested under the parent run, folded until its row is expanded.
    page.click(f"{parent_name} button")
    trial_rows = json.dumps([_row(run_id) for run_id in study["runs"]])
    page.wait_for(f"{trial_rows}.every(s => document.querySelector(s))", "a row for each trial run")
    page.screenshot("trial-runs")
    assert len(study["runs"]) == len(study["trial_ids"]) == 2
    for run_id, run in study["runs"].items():
        assert run.info.run_name in page.text(f"{_row(run_id)} {RUN_NAME_CELL}")
        shown = page.text(f'{_row(run_id)} [col-id="duration"]')
        # The run's own times, which the trial set to its real start and end.
        expected = run.info.end_time - run.info.start_time
        milliseconds, tolerance = _shown_ms(shown)
        assert milliseconds > 0 and expected > 0, f"{run.info.run_name}: duration {shown!r}"
        assert abs(milliseconds - expected) <= tolerance, (run.info.run_name, shown, expected)


def test_the_study_run_lists_its_report(study, ui, page):
    experiment, parent = study["experiment_id"], study["parent"]
    page.goto(f"{ui}/#/experiments/{experiment}/runs/{parent}/artifacts")
    node = '[data-testid="artifact-tree-node"][artifact-name="{}"]'
    page.wait_for(
        f"!!document.querySelector({json.dumps(node.format('report'))})",
        "the report folder among the run's artifacts",
    )
    page.click(node.format("report"))
    files = ["report.html", "report.md", "results.csv", "summary.json", "figures"]
    shown = page.wait_for(
        f"{json.dumps([node.format(f) for f in files])}.every(s => document.querySelector(s))"
        " && document.body.innerText",
        f"the report's files {files}",
    )
    assert all(name in shown for name in files)
    page.click(node.format("report.html"))
    page.wait_for(
        "document.body?.innerText.includes('report/report.html')"
        " && !!document.querySelector('iframe')",
        "the preview of report.html",
    )
    page.screenshot("study-report")


def test_the_registered_model_is_on_the_models_page(study, ui, page):
    name = f"{study['study_id']}-{DATASET}"
    page.goto(f"{ui}/#/models")
    row = page.wait_for(
        f"[...document.querySelectorAll('a')].find(a => a.innerText.trim() === "
        f"{json.dumps(name)})?.closest('[role=row]')?.innerText",
        f"the registered model {name}",
    )
    assert "Version 1" in row
    page.screenshot("registered-models")
    # The link of the results table and the report opens the version, with its source run.
    assert study["model_url"] == f"{ui}/#/models/{name}/versions/1"
    page.goto(study["model_url"])
    best = study["best_run"].info.run_name
    shown = page.wait_for(
        f"document.body?.innerText.includes({json.dumps(best)}) && document.body.innerText",
        f"version 1 of {name} with its source run {best}",
    )
    assert name in shown and "Version 1" in shown and tracking.TRIAL_TAG in shown
    page.screenshot("registered-model-version")


def test_the_best_trial_run_shows_its_logged_model(study, ui, page):
    run = study["best_run"]
    page.goto(f"{ui}/#/experiments/{study['experiment_id']}/runs/{run.info.run_id}")
    # The section first renders "(0)" while its request is in flight: wait for a count.
    count = page.wait_for(
        r"document.body?.innerText.match(/Logged models \(([1-9]\d*)\)/)?.[1]",
        f"a logged model on the page of {run.info.run_name}",
        timeout=45,
    )
    page.screenshot("best-trial-run")
    assert count == "1", f"the page of {run.info.run_name} lists {count} logged models"
