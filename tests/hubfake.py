"""A loopback fake of the Hugging Face Hub's HTTP API: the routes huggingface_hub 2.x's HfApi uses to create a
repository, a branch and one commit of regular (base64, non-LFS) files (read from huggingface_hub's hf_api.py and
_commit_api.py): POST /api/repos/create, POST /api/validate-yaml (a README.md's metadata, checked before a commit:
its YAML front matter must parse to a mapping, else 400 with `errors`), POST /api/models/{repo}/branch/{branch},
POST /api/models/{repo}/preupload/{revision}, POST /api/models/{repo}/commit/{revision} (NDJSON).

Serves on 127.0.0.1; `start()` returns it running in a thread, `stop()` shuts it down. Requests without the expected
bearer token are refused with 401, as the Hub does."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, token: str, fail_commits: bool = False, gated: dict[str, str] | None = None) -> None:
        self.gated = dict(gated or {})  # model id -> "auto" / "manual": GET /api/models/{id} says so
        self.token = token
        self.fail_commits = fail_commits
        self.repos: dict[str, dict[str, Any]] = {}  # repo -> {private, branches: {name: {path: bytes}}}
        self.requests: list[tuple[str, str]] = []
        self.validated: list[str] = []  # README.md texts sent to /api/validate-yaml
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def _handler(self) -> type:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - GET /api/models/{org}/{name}: the model's public metadata
                path = urlparse(self.path).path
                hub.requests.append(("GET", path))
                parts = [unquote(p) for p in path.strip("/").split("/")]
                if len(parts) == 4 and parts[:2] == ["api", "models"]:
                    repo = f"{parts[2]}/{parts[3]}"
                    return self._send(200, {"id": repo, "modelId": repo, "private": False,
                                            "gated": hub.gated.get(repo, False), "sha": "0" * 40})
                return self._send(404, {"error": f"no route {path}"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlparse(self.path).path
                hub.requests.append(("POST", path))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                parts = [unquote(p) for p in path.strip("/").split("/")]
                if parts == ["api", "validate-yaml"]:
                    import yaml

                    text = json.loads(body)["content"]
                    front = text.split("---", 2)[1] if text.startswith("---") else ""
                    try:
                        ok = isinstance(yaml.safe_load(front) or {}, dict)
                    except yaml.YAMLError:
                        ok = False
                    hub.validated.append(text)
                    return self._send(200 if ok else 400, {"errors": [] if ok else [{"message": "invalid YAML"}],
                                                           "warnings": []})
                if parts == ["api", "repos", "create"]:
                    payload = json.loads(body)
                    repo = f"{payload['organization']}/{payload['name']}"
                    if repo in hub.repos:
                        return self._send(409, {"error": "You already created this model repo", "url": f"{hub.endpoint}/{repo}"})
                    hub.repos[repo] = {"private": payload.get("visibility") == "private" or payload.get("private") is True,
                                       "branches": {"main": {}}}
                    return self._send(200, {"url": f"{hub.endpoint}/{repo}"})
                if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                    repo, action, rev = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"})
                    branches = hub.repos[repo]["branches"]
                    if action == "branch":
                        if rev in branches:
                            return self._send(409, {"error": "Reference already exists"})
                        branches[rev] = dict(branches["main"])
                        return self._send(200, {})
                    if rev not in branches:
                        return self._send(404, {"error": f"Invalid rev id: {rev}"})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                           "shouldIgnore": False, "oid": None} for f in files]})
                    if action == "commit":
                        if hub.fail_commits:
                            return self._send(500, {"error": "Internal Error - We're working hard to fix this"})
                        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                        for item in lines:
                            if item["key"] == "file":
                                branches[rev][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        oid = hashlib.sha1(body).hexdigest()
                        return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid})
                return self._send(404, {"error": f"no route {path}"})

        return Handler
