"""The kit's object store on Azure Blob storage, addressed by Azure ML datastore URIs.

A datastore URI `azureml://datastores/<datastore>/paths/<path>` splits (kit.objectstore.split_uri) into bucket
`datastores` and key `<datastore>/paths/<path>`; the store maps the datastore to its storage account and container
(read once from the workspace with `MLClient.datastores.get`) and the path to the blob name. The azure-storage-blob
client is made lazily, with the caller's credential (the identity needs 'Storage Blob Data Contributor' on the
account), or, when CLOUDTUNE_AZURE_BLOB_ENDPOINT is set (Azurite, or another endpoint), against that account URL
with the account key in CLOUDTUNE_AZURE_STORAGE_KEY.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtune.kit.retry import CloudConfigError

# A datastore URI that names its workspace (Azure ML docs, "Create data assets": the long form
# azureml://subscriptions/S/resourcegroups/R/workspaces/W/datastores/D/paths/P); the short form means "this workspace".
LONG_FORM = re.compile(r"azureml://subscriptions/([^/]+)/resourcegroups/([^/]+)/workspaces/([^/]+)/(datastores/.+)",
                       re.IGNORECASE)
BLOB_ENDPOINT_VAR = "CLOUDTUNE_AZURE_BLOB_ENDPOINT"
STORAGE_KEY_VAR = "CLOUDTUNE_AZURE_STORAGE_KEY"
CALL_TIMEOUT_S = 60


@dataclass(frozen=True)
class Datastore:
    """A Blob datastore: the account URL (https://ACCOUNT.blob.core.windows.net) and the container."""

    name: str
    account_url: str
    container: str

    def url(self, path: str) -> str:
        """The https URL of `path` inside the container."""
        return f"{self.account_url.rstrip('/')}/{self.container}/{path}"


def long_form(workspace: tuple[str, str, str], uri: str) -> str:
    """`azureml://datastores/...` of `workspace` (subscription, resource group, name) -> its long form."""
    sub, group, name = workspace
    return f"azureml://subscriptions/{sub}/resourcegroups/{group}/workspaces/{name}/{uri.removeprefix('azureml://')}"


def short_form(workspace: tuple[str, str, str], uri: str) -> str | None:
    """A long-form datastore URI of `workspace` -> `azureml://datastores/...`; None when it names another workspace;
    any other URI as it is."""
    m = LONG_FORM.fullmatch(uri)
    if not m:
        return uri
    if tuple(p.lower() for p in m.groups()[:3]) != tuple(p.lower() for p in workspace):
        return None
    return f"azureml://{m.group(4)}"


def split_key(bucket: str, key: str) -> tuple[str, str]:
    """(datastore, blob path) of a split datastore URI; CloudConfigError for any other URI."""
    datastore, sep, path = key.partition("/paths/")
    if bucket != "datastores" or not sep:
        raise CloudConfigError(f"azureml://{bucket}/{key} is not a datastore URI",
                               fix="give azureml://datastores/NAME/paths/PATH")
    return datastore, path


class BlobStore:
    """ObjectStore over Blob containers. `datastore(name)` returns a Datastore (read from the workspace)."""

    scheme = "azureml"

    def __init__(self, datastore: Callable[[str], Datastore], credential: Any, service: Any = None, *,
                 client_kwargs: dict[str, Any] | None = None) -> None:
        self._datastore = datastore
        self._client_kwargs = client_kwargs or {}  # for the BlobServiceClient it makes: retries and timeouts
        self._credential = credential
        self._service = service  # a BlobServiceClient given by the caller (tests bind one to Azurite)
        self._clients: dict[str, Any] = {}

    def container(self, datastore: str) -> Any:
        if datastore not in self._clients:
            ds = self._datastore(datastore)
            self._clients[datastore] = self.service(ds.account_url).get_container_client(ds.container)
        return self._clients[datastore]

    def service(self, account_url: str) -> Any:
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            endpoint = os.environ.get(BLOB_ENDPOINT_VAR)
            if endpoint:
                key = os.environ.get(STORAGE_KEY_VAR)
                name = endpoint.rstrip("/").rsplit("/", 1)[-1]
                credential = {"account_name": name, "account_key": key} if key else self._credential
                self._service = BlobServiceClient(account_url=endpoint, credential=credential, **self._client_kwargs)
            else:
                self._service = BlobServiceClient(account_url=account_url, credential=self._credential,
                                                  **self._client_kwargs)
        return self._service

    def exists(self, bucket: str, key: str) -> bool:
        datastore, path = split_key(bucket, key)
        return bool(self.container(datastore).get_blob_client(path).exists(timeout=CALL_TIMEOUT_S))

    def list_keys(self, bucket: str, prefix: str, limit: int) -> list[str]:
        datastore, path = split_key(bucket, prefix)
        head = f"{datastore}/paths/"
        names = self.container(datastore).list_blob_names(name_starts_with=path, results_per_page=limit,
                                                          timeout=CALL_TIMEOUT_S)
        out: list[str] = []
        for name in names:
            out.append(head + name)
            if len(out) >= limit:
                break
        return out

    def list_objects(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size in bytes) of every blob under `prefix`, in name order."""
        datastore, path = split_key(bucket, prefix)
        head = f"{datastore}/paths/"
        blobs = self.container(datastore).list_blobs(name_starts_with=path, timeout=CALL_TIMEOUT_S)
        return [(head + b.name, int(b.size)) for b in blobs]

    def put(self, bucket: str, key: str, path: Path, progress: Callable[[int], None] | None) -> None:
        datastore, blob = split_key(bucket, key)
        size = path.stat().st_size

        def hook(response: Any) -> None:  # azure-core's raw_response_hook: once per block sent
            if progress is not None:
                sent = response.context.get("upload_stream_current") or 0
                progress(max(0, sent - hook.done))  # type: ignore[attr-defined]
                hook.done = max(hook.done, sent)  # type: ignore[attr-defined]

        hook.done = 0  # type: ignore[attr-defined]
        with path.open("rb") as fh:
            self.container(datastore).upload_blob(blob, fh, length=size, overwrite=True, timeout=CALL_TIMEOUT_S,
                                                  raw_response_hook=hook if progress is not None else None)

    def get(self, bucket: str, key: str, dest: Path, progress: Callable[[int], None] | None) -> str | None:
        """Write the blob at `key` to `dest`; returns its Content-MD5 (hex) when the blob carries one."""
        datastore, blob = split_key(bucket, key)
        stream = self.container(datastore).download_blob(blob, timeout=CALL_TIMEOUT_S)
        with dest.open("wb") as fh:
            for chunk in stream.chunks():
                fh.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        md5 = stream.properties.content_settings.content_md5
        return bytes(md5).hex() if md5 else None

    def read_from(self, datastore: str, path: str, offset: int) -> bytes:
        """The bytes of a blob from `offset` to its end (b"" when nothing was added)."""
        blob = self.container(datastore).get_blob_client(path)
        size = int(blob.get_blob_properties(timeout=CALL_TIMEOUT_S).size)
        if size <= offset:
            return b""
        return blob.download_blob(offset=offset, length=size - offset, timeout=CALL_TIMEOUT_S).readall()
