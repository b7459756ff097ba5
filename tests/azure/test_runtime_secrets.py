"""Key Vault secrets inside an Azure ML job that runs as `user_identity`: the token comes from Azure ML's
on-behalf-of endpoint (OBO_ENDPOINT), which DefaultAzureCredential does not read. A loopback server stands in for
that endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cloudtune.runtime.secrets import _AzureMLOnBehalfOf

pytest.importorskip("azure.core")


def test_the_on_behalf_of_token_is_asked_for_the_vault_audience() -> None:
    asked: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(parse_qs(urlsplit(self.path).query) | {"metadata": [self.headers.get("Metadata", "")]})
            body = json.dumps({"access_token": "tok-123", "expires_on": "1900000000", "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = _AzureMLOnBehalfOf(f"http://127.0.0.1:{server.server_address[1]}/obo").get_token(
            "https://vault.azure.net/.default")
    finally:
        server.shutdown()
        server.server_close()
    assert token.token == "tok-123" and token.expires_on == 1900000000
    assert asked == [{"resource": ["https://vault.azure.net"], "metadata": ["true"]}]
