"""azure-core, azure-identity and azure-ai-ml exceptions -> the kit's error kinds (one line, with the fix)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cloudtune.kit.retry import ErrorInfo

LOGIN_FIX = ("run `az login` (or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service "
             "principal), then launch again")
ROLES_FIX = ("grant the roles listed in docs/providers/azure.md (AzureML Data Scientist on the workspace, Storage Blob Data "
             "Contributor on its storage account), and check providers.azure")


def classify(exc: BaseException) -> ErrorInfo | None:
    from azure.core import exceptions as aexc

    if type(exc).__name__ == "CredentialUnavailableError" or isinstance(exc, aexc.ClientAuthenticationError) and \
            getattr(exc, "status_code", None) is None:
        return ErrorInfo("config", f"no Azure credentials: {_one_line(exc)}", LOGIN_FIX)
    if isinstance(exc, (aexc.ServiceRequestError, aexc.ServiceResponseError)):
        return _unreachable(exc)
    if isinstance(exc, aexc.HttpResponseError):
        return _http(exc, aexc)
    if type(exc).__module__.startswith("azure.ai.ml") and type(exc).__name__ in ("ValidationException", "UserErrorException"):
        return ErrorInfo("config", _one_line(exc), "`cloudtune launch --dry-run` prints the job YAML that was sent")
    return None


def _unreachable(exc: Any) -> ErrorInfo:
    from azure.core.exceptions import ServiceRequestError

    url = ""
    request = getattr(getattr(exc, "response", None), "request", None) or getattr(exc, "request", None)
    if request is not None:
        parts = urlsplit(str(getattr(request, "url", "")))
        url = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    where = f" {url}" if url else ""
    full = str(getattr(request, "url", "") or "") if request is not None else ""
    # a request that was never sent (ServiceRequestError: connection refused, DNS) marks its endpoint unreachable;
    # an answer that never came (ServiceResponseError: a read timeout, a dropped connection) may have done its work
    sent = not isinstance(exc, ServiceRequestError)
    return ErrorInfo("transient", f"cannot reach the endpoint{where} ({type(exc).__name__}"
                     + (f": {_one_line(exc)[:160]})" if sent else ")"),
                     "check the network (and CLOUDTUNE_AZURE_BLOB_ENDPOINT or AZUREML_DEV_URL_MFE if set), then launch again",
                     service=_service_of(full or url), endpoint="" if sent else url)


def _http(exc: Any, aexc: Any) -> ErrorInfo:
    status = getattr(exc, "status_code", None)
    message = _message(exc)
    url = str(getattr(getattr(getattr(exc, "response", None), "request", None), "url", "") or "")
    service = _service_of(url)
    if isinstance(exc, aexc.ResourceNotFoundError) or status == 404:
        if "ContainerNotFound" in message:
            return ErrorInfo("config", f"the datastore's container does not exist: {message}",
                             "check providers.azure.datastore (and the workspace's storage account)", service=service)
        return ErrorInfo("not_found", message, "check the job id (cloudtune list) and providers.azure", service=service)
    # a PUT of an existing job's name with another definition: 400 UserError "A job with this name already exists"
    if isinstance(exc, aexc.ResourceExistsError) or status == 409 or (status == 400 and "already exists" in message):
        return ErrorInfo("conflict", message, service=service)
    if isinstance(exc, aexc.ClientAuthenticationError) or status in (401, 403):
        return ErrorInfo("config", f"{status} {message}", ROLES_FIX, service=service)
    if status in (408, 429) or (status is not None and status >= 500):
        return ErrorInfo("transient", f"{status} {message}", "the service is failing or throttling: try again in "
                         "a few minutes", service=service)
    return ErrorInfo("fatal", f"{status} {message}", "see the message; `cloudtune launch --dry-run` prints the job YAML",
                     service=service)


def _message(exc: Any) -> str:
    """The service's own message: the ARM error body's `message` (or storage's), else the exception's first line."""
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) if error is not None else None
    if not text:
        text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split("\n")[0].split())[:400]


def _service_of(url: str) -> str:
    if ".blob." in url or ":10000" in url or "/devstoreaccount1" in url:
        return "Blob storage"
    return ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__
