"""Talking to a local emulator of the Azure ML workspace API instead of Azure.

`AZUREML_DEV_URL_MFE` is azure-ai-ml's own setting for another workspace endpoint. When it names plain http on
this machine (http://127.0.0.1:PORT or http://localhost:PORT; Azure itself serves only https), there is no Entra
ID to sign in to: the launcher then signs requests with an unsigned token (it carries no secret) through a policy
that allows plain http, as gcp's launcher uses anonymous credentials against its emulators.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

ENDPOINT_VAR = "AZUREML_DEV_URL_MFE"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def emulator_endpoint() -> str | None:
    """The loopback plain-http endpoint AZUREML_DEV_URL_MFE names, or None."""
    url = os.environ.get(ENDPOINT_VAR, "")
    parts = urlsplit(url)
    return url if parts.scheme == "http" and parts.hostname in LOOPBACK else None


def _segment(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class EmulatorCredential:
    """A TokenCredential for an emulator: an unsigned JWT whose audience is the scope asked for (azure-ai-ml reads
    `aud` and `tid` from the token it sends)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        audience = scopes[0].removesuffix("/.default").rstrip("/") if scopes else "https://management.azure.com"
        expires = int(time.time()) + 3600
        claims = {"aud": audience, "tid": "00000000-0000-0000-0000-000000000000", "exp": expires,
                  "oid": "00000000-0000-0000-0000-000000000001", "upn": "emulator@localhost"}
        return AccessToken(f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}.", expires)

    def close(self) -> None:
        pass


def plain_http_policy(credential: Any, scope: str = "https://management.azure.com/.default") -> Any:
    """An authentication policy that sends `Authorization: Bearer` over plain http (azure-core's own refuses http,
    and it is what removes the SDK's `enforce_https` request option, so this one does too)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _PlainHttpBearer(SansIOHTTPPolicy):
        def on_request(self, request: Any) -> None:
            request.context.options.pop("enforce_https", None)
            request.http_request.headers["Authorization"] = f"Bearer {credential.get_token(scope).token}"

    return _PlainHttpBearer()
