"""Compile a job spec into an Azure Machine Learning command job Plan: the job YAML that `az ml job create --file`
reads and `azure.ai.ml.load_job` loads (schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json).

Pure and offline: no Azure SDK import, nothing written (the code bundle with cloudtune's wheel is named by its
hash and staged by `submit()`). Uploads go to the workspace datastore and are named by datastore URI,
`azureml://datastores/<datastore>/paths/<prefix>/...`, which the job reads as it is.

The container contract is `cloudtune.contracts.azureml`: inputs and outputs are mounted (or downloaded) and passed
on the command line as `${{inputs.NAME}}` / `${{outputs.NAME}}`. The code asset (`cloudtune-code:<hash>`) is a
folder holding the bundle archive; Azure ML copies it into the working directory, where the command unpacks it,
installs cloudtune's wheel and hands over to cloudtune-run. Multi-node jobs use the `pytorch` distribution with one
process per instance: Azure ML sets MASTER_ADDR/MASTER_PORT/WORLD_SIZE/NODE_RANK, and cloudtune-run starts
torchrun with the spec's processes per node (the same path as SageMaker, Vertex AI and the local emulation).
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

from cloudtune.contracts import azureml as az
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit import cost
from cloudtune.kit.naming import NameRule
from cloudtune.kit.planning import Draft, PlanningTemplate
from cloudtune.kit.settings import require
from cloudtune.launcher import Capabilities, Capability
from cloudtune.plan import Upload
from cloudtune_azure.images import CURATED_ENVIRONMENT, ENVIRONMENT_NAME, FRAMEWORK_VERSION, LOCK_TARGET
from cloudtune_azure.settings import AzureSettings
from cloudtune_azure.storage import short_form

if TYPE_CHECKING:
    from cloudtune.catalog import Offer
    from cloudtune.spec import JobSpec

SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json"
CODE_ASSET = "cloudtune-code"  # the bundle's code asset: version = the first 16 hex digits of its sha256
BUNDLE_FILE = "bundle.tar.gz"  # the one file in the code asset's folder
WHEELHOUSE_INPUT = "cloudtune_wheelhouse"
JOB_TAG = "cloudtune-job"
DOWNLOAD_MAX_BYTES = 2 * 1024**3  # inputs up to this size are downloaded (faster for small data); larger: mounted
DATASTORE_URI = re.compile(r"azureml://datastores/([^/]+)/paths/(.*)")
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}")
COMPUTE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]")  # Azure ML compute names: 3-32 characters
IDENTITY = re.compile(r"user_identity|managed|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
BLOB_HTTPS = re.compile(r"https://[a-z0-9]{3,24}\.blob\.core\.windows\.net/[^/?#@]+/[^?#@]+")  # no SAS, no user
KEY_VAULT_SECRET = re.compile(r"https://[A-Za-z0-9-]{3,24}\.vault\.azure\.net/secrets/[A-Za-z0-9-]{1,127}(/[A-Za-z0-9]{1,64})?")
# Azure ML job names (the job's id in the workspace; ARM `jobs/{id}`): 1-255 letters, digits, '-' and '_',
# starting with a letter or digit (Azure ML REST API, Jobs - Create Or Update, parameter `id`).
AZUREML_JOB = NameRule("Azure Machine Learning", "job names", 255, r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}",
                       "1-255 letters, digits, '-' and '_', starting with a letter or digit")
INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # azure-ai-ml's input/output name rule (constants/_component.py)

BOOTSTRAP = az.BOOTSTRAP  # the command's shell text (cloudtune.contracts.azureml)

CAPABILITIES = Capabilities(
    gpu=Capability(True, "Azure ML compute with NVIDIA GPUs (T4, A100, H100, H200) from the catalog: a named cluster "
                   "or serverless compute"),
    tpu=Capability(False, "Azure has no TPUs"),
    multi_node=Capability(True, "instance_count nodes under the pytorch distribution, joined by torchrun"),
    spot=Capability(True, "serverless compute's spot job tier, or a low-priority cluster; Azure ML does not "
                    "restart a preempted command job: relaunch it"),
    log_streaming=Capability(True, "the job's std_log files (every node) in the workspace's artifact store"),
    remote_inputs=Capability(True, "azureml:// datastore URIs and https:// Blob URLs are read as they are; local "
                             "paths are uploaded to the workspace datastore"),
    secrets=Capability(True, "Key Vault secrets, read in the job with its identity (user identity or a managed "
                       "identity)"),
)


def _check_settings(spec: "JobSpec", settings: AzureSettings) -> None:
    require(settings, "azure", ("subscription_id", "resource_group", "workspace"))
    if settings.compute and not COMPUTE.fullmatch(settings.compute.removeprefix("azureml:")):
        raise UnsupportedSpec(f"providers.azure.compute {settings.compute!r} is not a compute name",
                              fix="give the cluster's name (3-32 letters, digits and '-'), or unset it for serverless")
    if not NAME.fullmatch(settings.datastore):
        raise UnsupportedSpec(f"providers.azure.datastore {settings.datastore!r} is not a datastore name",
                              fix="give a Blob datastore's name, e.g. workspaceblobstore")
    for key, ref in sorted(spec.secrets.items()):
        if not KEY_VAULT_SECRET.fullmatch(ref):
            raise UnsupportedSpec(f"secret {key!r} is not a Key Vault secret; an Azure ML job cannot read it",
                                  fix="store it in Azure Key Vault and give https://VAULT.vault.azure.net/secrets/NAME")
    for name in sorted(spec.inputs):
        if not INPUT_NAME.fullmatch(name):
            raise UnsupportedSpec(f"input name {name!r} cannot be an Azure ML job input (letters, digits and '_', "
                                  "not starting with a digit)", fix=f"rename it, e.g. {re.sub(r'[^A-Za-z0-9_]', '_', name)}")
    if WHEELHOUSE_INPUT in spec.inputs:
        raise UnsupportedSpec(f"input name {WHEELHOUSE_INPUT!r} is the job's own (the stock-image wheelhouse)",
                              fix="rename that input")
    if settings.identity and not IDENTITY.fullmatch(settings.identity):
        raise UnsupportedSpec(f"providers.azure.identity {settings.identity!r} is not an identity",
                              fix="use user_identity, managed, or a user-assigned managed identity's client id")
    if settings.experiment_name and not NAME.fullmatch(settings.experiment_name):
        raise UnsupportedSpec(f"providers.azure.experiment_name {settings.experiment_name!r} is not valid",
                              fix="use letters, digits, '-' and '_' (at most 255)")
    if spec.outputs is not None and not DATASTORE_URI.fullmatch(spec.outputs):
        raise UnsupportedSpec(f"outputs {spec.outputs!r} is not a datastore URI",
                              fix="set outputs: azureml://datastores/NAME/paths/PREFIX, or leave it unset")
    if spec.resources.spot and settings.compute and settings.compute_tier != "low_priority":
        raise UnsupportedSpec(f"spot: true on the cluster {settings.compute!r}: a cluster's VMs are dedicated or "
                              "low-priority as the cluster was created, not per job, and cloudtune cannot see which "
                              "offline", fix="unset providers.azure.compute for serverless spot, or run on a "
                              "low-priority cluster and set providers.azure.compute_tier: low_priority")


def _input_entry(path: str, kind: str, size: int | None) -> dict[str, str]:
    mode = "download" if size is not None and size <= DOWNLOAD_MAX_BYTES else "ro_mount"
    return {"type": kind, "path": path, "mode": mode}


def _remote_input(name: str, uri: str, settings: AzureSettings) -> dict[str, str]:
    """The input entry of a remote input: as it is (a URI ending in '/' or without a file extension is a folder; a
    long-form datastore URI of this workspace in its short form), mounted (its size is unknown)."""
    local = short_form((str(settings.subscription_id), str(settings.resource_group), str(settings.workspace)), uri)
    if local is None:  # e.g. train.model: job:<a job of another workspace>
        raise UnsupportedSpec(f"input {name!r} ({uri}) is in another Azure ML workspace",
                              fix="download it (`cloudtune download JOB DIR` for a job's model) and give the "
                              "local path, or copy it to a datastore of providers.azure.workspace")
    uri = local
    if not (DATASTORE_URI.fullmatch(uri) or BLOB_HTTPS.fullmatch(uri)):
        if any(c in uri for c in "?#@"):  # a SAS token or a user name would travel in the job YAML
            raise UnsupportedSpec(f"input {name!r}: a URL with a query, fragment or user part (a SAS token?) "
                                  "would be written into the job", fix="give the URL without it and grant the "
                                  "job's identity access, or register a datastore and give its azureml:// URI")
        raise UnsupportedSpec(f"input {name!r} ({uri}) is not on Azure storage; an Azure ML job reads "
                              "azureml://datastores/... URIs and https://ACCOUNT.blob.core.windows.net/... URLs",
                              fix="copy it to a datastore and give its azureml:// URI, or give a local path "
                              "(uploaded at launch)")
    leaf = uri.rstrip("/").rsplit("/", 1)[-1]
    folder = uri.endswith("/") or "." not in leaf
    return _input_entry(uri, "uri_folder" if folder else "uri_file", None)


def _environment(spec: "JobSpec", settings: AzureSettings, notes: list[str]) -> tuple[Any, str | None]:
    """(the environment, the wheel-lock target of its wheelhouse or None for a custom image)."""
    if spec.image:
        return {"image": spec.image}, None
    if settings.environment:
        notes.append(f"environment {settings.environment}: it must have Python 3.10 and torch (the wheelhouse is "
                     f"locked for {LOCK_TARGET})")
        return settings.environment, LOCK_TARGET
    notes.append(f"environment: Azure ML curated {ENVIRONMENT_NAME} (PyTorch {FRAMEWORK_VERSION}, Python 3.10)")
    return CURATED_ENVIRONMENT, LOCK_TARGET


def _command(bootstrap_args: list[str], run_args: list[str]) -> str:
    """The shell command line; `${{...}}` references stay as they are (Azure ML substitutes them before the shell
    runs, also inside quotes)."""
    words = ["sh", "-c", BOOTSTRAP, "cloudtune-bootstrap", *bootstrap_args, *run_args]
    return " ".join(shlex.quote(w) if w else "''" for w in words)


def _identity(spec: "JobSpec", settings: AzureSettings, notes: list[str]) -> dict[str, str] | None:
    kind = settings.identity or ("user_identity" if spec.secrets else None)
    if spec.secrets:
        vaults = sorted({ref.partition("/secrets/")[0] for ref in spec.secrets.values()})
        notes.append(f"secrets are read from Key Vault in the job as {kind}: it needs the 'Key Vault Secrets User' "
                     "role on " + ", ".join(vaults))
    if kind is None:
        return None
    if kind in ("user_identity", "managed"):
        return {"type": kind}
    return {"type": "managed", "client_id": kind}


def _resources(spec: "JobSpec", settings: AzureSettings, offer: "Offer", notes: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if settings.compute:
        fields["compute"] = f"azureml:{settings.compute.removeprefix('azureml:')}"
        fields["resources"] = {"instance_count": spec.resources.nodes}
    else:
        fields["resources"] = {"instance_type": offer.instance_type, "instance_count": spec.resources.nodes}
        notes.append(f"serverless compute: {offer.instance_type} x {spec.resources.nodes} (needs the VM family's "
                     "quota in the workspace's region)")
    if offer.count:
        fields["resources"]["shm_size"] = "16g"  # NCCL and DataLoader workers use /dev/shm (Azure ML default: 2g)
    if spec.resources.nodes > 1:
        fields["distribution"] = {"type": "pytorch", "process_count_per_instance": 1}
    if spec.resources.spot and not settings.compute:
        fields["queue_settings"] = {"job_tier": "spot"}
    fields["limits"] = {"timeout": spec.resources.max_runtime_seconds}
    return fields


def _extra_requirements(spec: "JobSpec", notes: list[str]) -> str:
    """What the job installs from the wheelhouse beyond cloudtune: azureml-mlflow (Azure ML points MLFLOW_TRACKING_URI
    at the workspace; the plugin sends metrics to Studio's metrics tab) and, for secrets, the Key Vault client."""
    if spec.image:
        notes.append("image: it must carry azureml-mlflow (metrics in Studio)"
                     + (" and azure-identity + azure-keyvault-secrets (secrets)" if spec.secrets else ""))
        return ""
    return "azureml-mlflow" + (" azure-identity azure-keyvault-secrets" if spec.secrets else "")


def workspace_id(settings: AzureSettings) -> str:
    """The workspace's ARM resource id."""
    return (f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{settings.workspace}")


def restart_note(retries: int) -> str:
    """Who restarts what on Azure ML: the service takes no retry count and restarts no command job (a command job's
    YAML has no retry field), so cloudtune relaunches a preempted attempt itself while it watches the job
    (`cloudtune.api.Job.wait`)."""
    return (f"retries {retries}: Azure ML takes no retry count and does not restart a command job; cloudtune does, "
            "while a cloudtune process watches the job (`cloudtune launch` without --detach, or `Job.wait()`): a "
            "preempted attempt (a spot eviction, exit 143) or an infrastructure failure (75) is launched again, up to "
            f"{retries} times, as a new command job whose checkpoints output is the previous attempt's, so it resumes "
            "from the newest checkpoint; bad input (65), divergence (66) and the job's own error are never launched "
            "again, as `--provider local` never retries them. A detached launch that nothing watches is not "
            "restarted: `cloudtune launch job.yaml --resume JOB` resumes it")


# azure-ai-ml's reserved compute name for serverless compute (azure.ai.ml.constants._common.SERVERLESS_COMPUTE)
SERVERLESS_COMPUTE = "serverless"


def _serverless(settings: AzureSettings, notes: list[str]) -> AzureSettings:
    """`compute: serverless` (or `azureml:serverless`) is serverless compute, not a cluster of that name: the
    settings with `compute` unset, and a note saying so."""
    if (settings.compute or "").removeprefix("azureml:").lower() != SERVERLESS_COMPUTE:
        return settings
    notes.append(f"compute {settings.compute}: azure-ai-ml's reserved name for serverless compute, sized from "
                 "resources (no cluster is named in the request)")
    return settings.model_copy(update={"compute": None})


class AzureMLPlanning(PlanningTemplate):
    """Azure ML's part of the planning template (`cloudtune.kit.planning`)."""

    provider = "azure"
    service = "Azure ML"
    installer = "the job"
    request_format = "yaml"

    def check(self, d: Draft) -> None:
        d.settings = _serverless(d.settings, d.notes)
        _check_settings(d.spec, d.settings)
        if d.spec.retries:
            d.notes.append(restart_note(d.spec.retries))

    def store_base(self, d: Draft) -> str:
        return f"azureml://datastores/{d.settings.datastore}/paths/{d.settings.prefix.strip('/')}"

    def job_name(self, d: Draft) -> str:
        return AZUREML_JOB.check(d.spec.name, d.suffix)

    def machine(self, d: Draft) -> None:
        """The catalog offer the job's nodes are: a VM size for serverless compute, the estimate for a named
        cluster."""
        spec, settings = d.spec, d.settings
        accel = spec.resources.accel
        if accel.name.upper().startswith("TPU"):
            CAPABILITIES.require("tpu", f"resources.accelerator {accel}", "use a GPU (e.g. A100-80GB:8) or --provider gcp")
        offer, why = cost.catalog_offer(spec, "azure", "VM size")
        if why and not settings.compute:  # a named cluster's VM size is the cluster's: no choice to explain
            d.notes.append(why)
        if settings.compute:
            d.notes.append(f"compute {settings.compute}: the cluster's VM size decides the machine; the estimate is "
                           f"for {offer.instance_type} ({accel}) x {spec.resources.nodes}")
        d.offer, d.instance_type = offer, settings.compute or offer.instance_type

    def remote_input(self, d: Draft, name: str, uri: str) -> dict[str, str]:
        return _remote_input(name, uri, d.settings)

    def local_input(self, d: Draft, name: str, upload: Upload) -> dict[str, str]:
        """Small inputs are downloaded to the node, large ones mounted."""
        kind = "uri_folder" if upload.destination.endswith("/") else "uri_file"
        return _input_entry(upload.destination, kind, upload.bytes)

    def container_inputs(self, d: Draft) -> dict[str, str]:
        return {n: f"${{{{inputs.{n}}}}}" for n in d.spec.inputs}

    def image(self, d: Draft) -> tuple[Any, str | None]:
        return _environment(d.spec, d.settings, d.notes)

    def mount_wheels(self, d: Draft) -> str:
        assert d.wheels is not None
        d.inputs[WHEELHOUSE_INPUT] = {"type": "uri_folder", "path": d.wheels.destination, "mode": "download"}
        return f"${{{{inputs.{WHEELHOUSE_INPUT}}}}}"

    def code_destination(self, d: Draft, sha256: str) -> str:
        return f"{d.base}/code/{sha256}/{BUNDLE_FILE}"

    def request(self, d: Draft, job: dict[str, Any]) -> dict[str, Any]:
        """The command job YAML. Its code names the registered code version by its ARM id (azure-ai-ml reads
        `azureml:NAME:VERSION` in a job's `code` as a local folder)."""
        assert d.code is not None and d.offer is not None
        spec, settings = d.spec, d.settings
        outputs = self.outputs(d)
        run_args = az.run_args(job, self.container_inputs(d), {o: f"${{{{outputs.{o}}}}}" for o in outputs})
        extra_req = _extra_requirements(spec, d.notes)
        code_ref = f"azureml:{workspace_id(settings)}/codes/{CODE_ASSET}/versions/{d.code.sha256[:16]}"
        request: dict[str, Any] = {
            "$schema": SCHEMA, "type": "command", "name": d.job_name, "display_name": spec.name,
            "experiment_name": settings.experiment_name or spec.name,
            "code": code_ref, "command": _command([BUNDLE_FILE, d.pip_flags, d.extras, extra_req], run_args),
            "environment": d.image, "inputs": d.inputs, "outputs": outputs,
            **_resources(spec, settings, d.offer, d.notes),
        }
        if spec.env:
            request["environment_variables"] = dict(sorted(spec.env.items()))
        identity = _identity(spec, settings, d.notes)
        if identity:
            request["identity"] = identity
            if identity.get("client_id"):  # DefaultAzureCredential in the job picks this user-assigned identity
                request.setdefault("environment_variables", {})["AZURE_CLIENT_ID"] = identity["client_id"]
        request["tags"] = dict(sorted({**settings.tags, JOB_TAG: spec.name}.items()))
        return request

    def outputs(self, d: Draft) -> dict[str, dict[str, str]]:
        out_base = f"{(d.spec.outputs or f'{d.base}/output').rstrip('/')}/{d.job_name}"
        return {o: {"type": "uri_folder", "path": f"{out_base}/{o}/", "mode": "rw_mount"}
                for o in (az.MODEL_OUTPUT, az.CHECKPOINT_OUTPUT, az.LOG_OUTPUT)}

    def model_uri(self, d: Draft) -> str:
        return self.outputs(d)[az.MODEL_OUTPUT]["path"]


compile_plan = AzureMLPlanning().compile
