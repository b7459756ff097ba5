"""Stock-image wheel locks for tests: small stand-in wheel files served from 127.0.0.1, with a lock per target
whose URLs, sizes and sha256s are those of the served files. The launchers fetch, verify, stage and upload them
through their real path; nothing reaches the internet."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloudtune.kit.bootstrap import TARGETS


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def write_locks(served: Path, locks: Path, url: str) -> None:
    served.mkdir(parents=True, exist_ok=True)
    locks.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        wheels = []
        for name in ("pydantic", "transformers"):
            filename = f"{name}-1.0-py3-none-any.whl"
            data = f"stand-in wheel {name}".encode() * 64
            (served / filename).write_bytes(data)
            wheels.append({"name": name, "version": "1.0", "filename": filename, "url": f"{url}/{filename}",
                           "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        (locks / f"{target}.json").write_text(json.dumps({"target": target, "wheels": wheels}))


@pytest.fixture()
def lock_dir(tmp_path: Path) -> Iterator[Path]:
    """A lock directory whose wheels are served on 127.0.0.1 for the test's duration."""
    served = tmp_path / "served-wheels"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        write_locks(served, tmp_path / "locks", f"http://127.0.0.1:{server.server_address[1]}")
        yield tmp_path / "locks"
    finally:
        server.shutdown()
        server.server_close()
