"""A loopback HTTP server standing in for the Kubeflow Pipelines v2beta1 REST API.

What it verifies, honestly: the requests that the real ``kfp.Client`` / ``kfp`` CLI send for
aprflow's upload and submit (paths, query parameters, JSON bodies, the Authorization header),
and aprflow's logic on top of the answers (idempotent versions, error lines). It keeps pipelines,
versions, experiments and runs in memory with the API's field names, answers list calls with
``display_name`` EQUALS filters, and nothing more: it does not validate pipeline specs, run
anything or check RBAC, which only a real KFP backend does.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


def _filter_name(query: dict) -> str | None:
    raw = query.get("filter", [""])[0]
    if not raw:
        return None
    (predicate,) = json.loads(raw)["predicates"]
    assert predicate["key"] == "display_name", predicate
    assert predicate["operation"] in ("EQUALS", 1), predicate
    return predicate.get("stringValue") or predicate.get("string_value")


class FakeKfpApi:
    """Start with ``with FakeKfpApi() as api:``; ``api.url`` is the host for kfp.Client."""

    def __init__(self, required_token: str | None = None) -> None:
        self.required_token = required_token
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeKfpApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls(self, method: str, pattern: str) -> list[dict]:
        return [
            r for r in self.requests if r["method"] == method and re.fullmatch(pattern, r["path"])
        ]

    # --- request handling --------------------------------------------------------------------

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                record = {
                    "method": method,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "raw": raw,
                    "json": None,
                }
                if raw and "json" in self.headers.get("Content-Type", ""):
                    record["json"] = json.loads(raw)
                api.requests.append(record)
                # kfp.Client probes healthz unauthenticated; the stand-in serves it to anyone.
                if (
                    url.path != f"{API}/healthz"
                    and api.required_token is not None
                    and self.headers.get("Authorization") != f"Bearer {api.required_token}"
                ):
                    self._reply(403, {"error": "forbidden", "code": 7, "message": "forbidden"})
                    return
                status, body = api._route(record)
                self._reply(status, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler

    def _route(self, r: dict) -> tuple[int, dict]:
        path, query, body = r["path"], r["query"], r["json"]
        if r["method"] == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False, "tag_name": "2.17.0-stand-in"}
        if r["method"] == "GET" and path == f"{API}/pipelines":
            name = _filter_name(query)
            found = [p for p in self.pipelines.values() if name in (None, p["display_name"])]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if r["method"] == "POST" and path == f"{API}/pipelines/create":
            pipeline = dict(body["pipeline"], pipeline_id=str(uuid.uuid4()))
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], body["pipeline_version"])
            return 200, pipeline
        match = re.fullmatch(f"{API}/pipelines/([^/]+)/versions", path)
        if r["method"] == "GET" and match:
            name = _filter_name(query)
            found = [
                v for v in self.versions.get(match[1], []) if name in (None, v["display_name"])
            ]
            return 200, {"pipeline_versions": found} if found else {}
        if r["method"] == "POST" and path == f"{API}/pipelines/upload_version":
            pipeline_id = query["pipelineid"][0]
            if pipeline_id not in self.pipelines:
                return 404, {"message": f"pipeline {pipeline_id} not found"}
            version = {"display_name": query["name"][0], "pipeline_spec": "multipart upload"}
            return 200, self._add_version(pipeline_id, version)
        if r["method"] == "GET" and path == f"{API}/experiments":
            name = _filter_name(query)
            found = [e for e in self.experiments.values() if name in (None, e["display_name"])]
            return 200, {"experiments": found} if found else {}
        if r["method"] == "POST" and path == f"{API}/experiments":
            experiment = dict(body, experiment_id=str(uuid.uuid4()))
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if r["method"] == "POST" and path == f"{API}/runs":
            run = dict(body, run_id=str(uuid.uuid4()), state="PENDING")
            self.runs[run["run_id"]] = run
            return 200, run
        match = re.fullmatch(f"{API}/runs/([^/]+)", path)
        if r["method"] == "GET" and match and match[1] in self.runs:
            return 200, self.runs[match[1]]
        return 404, {"message": f"no route {r['method']} {path}"}

    def _add_version(self, pipeline_id: str, version: dict) -> dict:
        version = dict(version, pipeline_id=pipeline_id, pipeline_version_id=str(uuid.uuid4()))
        self.versions.setdefault(pipeline_id, []).append(version)
        return version
