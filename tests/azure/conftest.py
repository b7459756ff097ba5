"""Fixtures for the Azure ML tests: Azurite (Blob storage) and a loopback fake of the Azure ML workspace API.

Offline: both bind 127.0.0.1 and are stopped at the end; nothing here reaches Azure or Entra ID.

- `azurite` (function): Azurite's blob service (one process per test session, started on first use) with the
  containers of the fake workspace emptied for each test ("azureml-blobstore-test" = workspaceblobstore,
  "azureml" = workspaceartifactstore). Sets CLOUDTUNE_AZURE_BLOB_ENDPOINT and CLOUDTUNE_AZURE_STORAGE_KEY.
  Yields an `Azurite` (url, account, key, port, pid, blob_service()). No Azurite installed: skipped with the
  install command, or failed when CLOUDTUNE_REQUIRE_EMULATORS=1 (CI).
- `azureml_fake` (function): a started `FakeAzureML` writing into that Azurite; sets AZUREML_DEV_URL_MFE.
- `ml_client_kwargs` (function): the keyword arguments of an `MLClient` bound to the fake.
- `ml_client` (function): `MLClient(**ml_client_kwargs)`.

Install Azurite (pinned in tests/azure/package-lock.json): npm ci --prefix tests/azure
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:  # the plugin is normally installed (pip install -e launchers/azure); a bare checkout works too
    import cloudtune_azure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "launchers" / "azure"))

from tests.azure.fake_azureml import (  # noqa: E402
    ARTIFACT_CONTAINER,
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    BLOBSTORE_CONTAINER,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    TENANT,
    WORKSPACE,
    FakeAzureML,
    unsigned_jwt,
)

INSTALL = "npm ci --prefix tests/azure --no-audit --no-fund"
REQUIRE_VAR = "CLOUDTUNE_REQUIRE_EMULATORS"
BLOB_ENDPOINT_VAR = "CLOUDTUNE_AZURE_BLOB_ENDPOINT"
STORAGE_KEY_VAR = "CLOUDTUNE_AZURE_STORAGE_KEY"
_LISTENING = re.compile(r"successfully listens on (http://127\.0\.0\.1:(\d+))")


def azurite_binary() -> str | None:
    local = Path(__file__).parent / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def _missing(what: str) -> None:
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{what} ({REQUIRE_VAR}=1): install it with `{INSTALL}`", pytrace=False)
    pytest.skip(f"{what}: install it with `{INSTALL}`")


@dataclass
class Azurite:
    url: str  # the account URL, e.g. http://127.0.0.1:PORT/devstoreaccount1
    port: int
    pid: int
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.url};")

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.url, credential={"account_name": self.account, "account_key": self.key})

    def read(self, container: str, blob: str) -> bytes:
        with self.blob_service() as service:
            return service.get_blob_client(container, blob).download_blob().readall()

    def names(self, container: str, prefix: str = "") -> list[str]:
        with self.blob_service() as service:
            return sorted(b.name for b in service.get_container_client(container).list_blobs(name_starts_with=prefix))


class _AzuriteProcess:
    """azurite-blob on 127.0.0.1, an OS-chosen port, in-memory (at most 256 MB), no telemetry."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="azurite-")
        self.log = Path(self.dir) / "azurite.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                 "--extentMemoryLimit", "256", "--silent", "--disableTelemetry", "--skipApiVersionCheck",
                 "--loose", "--disableProductStyleUrl"],
                cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 180  # node's start on a loaded machine; a dead process ends the wait at once
        while True:
            m = _LISTENING.search(self.log.read_text(errors="replace"))
            if m:
                self.port = int(m.group(2))
                self.url = f"{m.group(1)}/{AZURITE_ACCOUNT}"
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = self.log.read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"azurite-blob did not start: {text[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: azurite-blob and nothing else
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _azurite_process() -> Iterator[_AzuriteProcess | str]:
    binary = azurite_binary()
    if binary is None:
        yield "Azurite (azurite-blob) is not installed"
        return
    if shutil.which("node") is None:
        yield "Azurite needs Node.js (node is not on PATH)"
        return
    proc = _AzuriteProcess(binary)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture()
def azurite(_azurite_process: _AzuriteProcess | str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Azurite]:
    """Azurite's blob service with empty "azureml-blobstore-test" and "azureml" containers."""
    if isinstance(_azurite_process, str):
        _missing(_azurite_process)
    proc = _azurite_process
    assert isinstance(proc, _AzuriteProcess)
    if proc.proc.poll() is not None:
        pytest.fail(f"azurite-blob exited: {proc.log.read_text(errors='replace')[-2000:]}")
    info = Azurite(url=proc.url, port=proc.port, pid=proc.proc.pid)
    with info.blob_service() as service:
        for container in (BLOBSTORE_CONTAINER, ARTIFACT_CONTAINER):
            client = service.get_container_client(container)
            if client.exists():
                for blob in list(client.list_blobs()):
                    client.delete_blob(blob.name, delete_snapshots="include")
            else:
                client.create_container()
    monkeypatch.setenv(BLOB_ENDPOINT_VAR, info.url)
    monkeypatch.setenv(STORAGE_KEY_VAR, info.key)
    yield info


# ---------------------------------------------------------------------------------------- the Azure ML fake
@pytest.fixture()
def azureml_fake(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    """The fake Azure ML workspace (subscription/resource group/workspace of tests.azure.fake_azureml), started,
    writing logs and models into `azurite`. MLClient finds it through AZUREML_DEV_URL_MFE."""
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")  # MLClient writes it into os.environ; undone after
    for var in ("ARM_CLOUD_METADATA_URL", "REGISTRY_DISCOVERY_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # either would make the SDK fetch from a real endpoint
    with FakeAzureML(blob_endpoint=azurite.url, account_key=azurite.key) as fake:
        monkeypatch.setenv("AZUREML_DEV_URL_MFE", fake.url)
        yield fake
    if fake.errors:
        pytest.fail(f"the Azure ML fake failed inside: {fake.errors}", pytrace=False)


class FakeCredential:
    """The test's TokenCredential: hands out unsigned JWTs for the scope asked (azure-ai-ml decodes the token for
    `aud`, which must be https://ml.azure.com for user-identity jobs, and `tid`). Never calls Entra ID."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        resource = scopes[0].removesuffix("/.default").rstrip("/") if scopes else "https://management.azure.com"
        expires = int(time.time()) + 3600
        token = unsigned_jwt({"aud": resource, "tid": TENANT, "oid": "22222222-0000-0000-0000-000000000000",
                              "upn": "dev@example.com", "iss": f"https://sts.windows.net/{TENANT}/",
                              "exp": expires})
        return AccessToken(token, expires)

    def close(self) -> None:
        pass


def bearer_policy(credential: Any, scope: str = "https://management.azure.com/.default") -> Any:
    """An authentication policy that adds `Authorization: Bearer <token>` over plain http. azure-core's
    BearerTokenCredentialPolicy refuses http; it is also what removes the SDK's `enforce_https` option from the
    request, so this policy does that too (else requests.Session.request gets an unknown keyword)."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class _FakeBearerPolicy(SansIOHTTPPolicy):
        def on_request(self, request: Any) -> None:
            request.context.options.pop("enforce_https", None)
            request.http_request.headers["Authorization"] = f"Bearer {credential.get_token(scope).token}"

    return _FakeBearerPolicy()


def mlclient_kwargs(fake: FakeAzureML, credential: Any = None) -> dict[str, Any]:
    credential = credential or FakeCredential()
    return {"credential": credential, "subscription_id": fake.subscription,
            "resource_group_name": fake.resource_group, "workspace_name": fake.workspace,
            "authentication_policy": bearer_policy(credential), "enable_telemetry": False}


@pytest.fixture()
def ml_client_kwargs(azureml_fake: FakeAzureML) -> dict[str, Any]:
    """MLClient(**ml_client_kwargs) talks to `azureml_fake` (AZUREML_DEV_URL_MFE is set by that fixture)."""
    return mlclient_kwargs(azureml_fake)


@pytest.fixture()
def ml_client(ml_client_kwargs: dict[str, Any]) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(**ml_client_kwargs)


__all__ = ["Azurite", "FakeCredential", "bearer_policy", "mlclient_kwargs", "SUBSCRIPTION", "RESOURCE_GROUP",
           "WORKSPACE"]
