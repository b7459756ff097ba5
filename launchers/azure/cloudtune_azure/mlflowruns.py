"""A sweep trial's values and figures, read from the workspace's MLflow: where Azure ML keeps them.

Azure ML lists a sweep job's trials (its child jobs) with a name, status, tags and properties only. A trial's
figures live in the workspace's MLflow tracking server, one MLflow run per job whose run id is the job's name, and
cloudtune's container logs the trial's values there too (`cloudtune.train.metricreport.log_trial_values`: params
keyed by option path) beside each evaluation's metrics. This module reads them back with MLflow's REST API
(`GET <base>/api/2.0/mlflow/runs/get?run_id=<job>`, answer `{"run": {"info", "data": {"params": [{key, value}],
"metrics": [{key, value, step, timestamp}]}}}` with each metric's latest value, mlflow/protos/service.proto).

The base URL comes from the workspace's `mlflow_tracking_uri`
(`azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<ws>`), as azureml-mlflow 1.62
builds it for MLflow 2 and 3 (`AzureMLRestStore.get_host_creds`): `https://<host>/mlflow/v2.0/subscriptions/...`,
with a bearer token for the resource manager's scope (`https://management.azure.com/.default`). Against the local
emulator (`cloudtune_azure.emulator`) the host is the emulator's. The SDK's own HTTP stack (azure-core's
PipelineClient) carries the requests; its HttpResponseError reaches the launcher's error table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ARM_SCOPE = "https://management.azure.com/.default"
API_VERSION = "/mlflow/v2.0"  # azureml-mlflow's for mlflow >= 2 (the workspace's URI names v1.0)


@dataclass(frozen=True)
class RunFigures:
    """One MLflow run's params (key -> text) and latest metric values (key -> number)."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def rest_base(tracking_uri: str, emulator: str | None = None) -> str:
    """The REST base of the workspace's MLflow from its tracking URI (`azureml://host/mlflow/v1.0/<scope>` ->
    `https://host/mlflow/v2.0/<scope>`); the emulator's scheme and host instead when one is given. ValueError on a
    URI of another form."""
    parts = urlsplit(tracking_uri)
    marker = "/mlflow/"
    if parts.scheme not in ("azureml", "https") or marker not in parts.path:
        raise ValueError(f"not an Azure ML MLflow tracking URI: {tracking_uri!r}")
    scope = "/" + parts.path.split(marker, 1)[1].split("/", 1)[1]  # after "/mlflow/v1.0"
    host = emulator.rstrip("/") if emulator else f"https://{parts.netloc}"
    return f"{host}{API_VERSION}{scope.rstrip('/')}"


def figures_of(answer: dict[str, Any]) -> RunFigures:
    """A `runs/get` answer's params and metrics."""
    data = (answer.get("run") or {}).get("data") or {}
    params = {str(p["key"]): str(p.get("value", "")) for p in data.get("params") or [] if "key" in p}
    metrics = {}
    for entry in data.get("metrics") or []:
        try:
            metrics[str(entry["key"])] = float(entry["value"])
        except (KeyError, TypeError, ValueError):
            continue
    return RunFigures(params, metrics)


class MlflowRuns:
    """Reads MLflow runs of one workspace. `credential`: a TokenCredential; `auth_policy`: an azure-core policy that
    replaces the bearer-token one (the emulator's plain-http policy)."""

    def __init__(self, base: str, credential: Any, auth_policy: Any = None, transport: Any = None) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, RetryPolicy

        auth = auth_policy or BearerTokenCredentialPolicy(credential, ARM_SCOPE)
        # retries are the launcher's (its caller), as for the MLClient (retry_total=0)
        self.base = base
        self.client = PipelineClient(base, policies=[HeadersPolicy({"Accept": "application/json"}),
                                                     RetryPolicy(retry_total=0), auth], transport=transport)

    def run(self, run_id: str) -> RunFigures | None:
        """The run's figures; None when MLflow has no such run (a trial that has not started). Raises azure-core's
        HttpResponseError on any other error answer."""
        from azure.core.rest import HttpRequest

        response = self.client.send_request(HttpRequest("GET", f"{self.base}/api/2.0/mlflow/runs/get",
                                                        params={"run_id": run_id}))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return figures_of(response.json())
