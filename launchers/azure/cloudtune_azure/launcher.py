"""The Azure Machine Learning launcher: plan (see `request.py`), then submit, status, logs, cancel and download.

A thin user of `cloudtune.kit`: `submit()` stages and uploads what is missing to the workspace datastore
(content-addressed, over the Blob store in `storage.py`), registers the bundle as the code asset
`cloudtune-code:<hash>` when that version is not there yet, then creates the command job under the plan's name
with `MLClient.jobs.create_or_update`. The name is ours, so a create whose answer was lost is adopted by name.
Every call runs under the kit's retry policy (the SDK's own retries are switched off) and its errors become one
line (`errors.py`). The Azure SDKs are imported lazily; clients may be passed in (tests bind them to loopback
fakes: `ml_client`, `blob_service`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloudtune.errors import InvalidInput
from cloudtune.kit.base import CloudLauncher, import_sdk, table_status
from cloudtune.kit.cost import epoch_seconds
from cloudtune.kit.objectstore import resolve_input, split_uri, upload_all
from cloudtune.kit.retry import Caller, RetryPolicy
from cloudtune.kit.states import AZUREML, map_native
from cloudtune.kit.triage import Cause
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.plan import Plan
from cloudtune.states import JobState
from cloudtune.sweeptrials import Trial
from cloudtune_azure import sweep
from cloudtune_azure.emulator import EmulatorCredential, emulator_endpoint, plain_http_policy
from cloudtune_azure.errors import classify
from cloudtune_azure.mlflowruns import MlflowRuns, rest_base
from cloudtune_azure.request import BUNDLE_FILE, CAPABILITIES, CODE_ASSET, DATASTORE_URI
from cloudtune_azure.settings import AzureSettings
from cloudtune_azure.storage import BLOB_ENDPOINT_VAR, BlobStore, Datastore, STORAGE_KEY_VAR, long_form, short_form

# The fixes of a failed job's causes in Azure ML's words (cloudtune.kit.triage; the others are cloudtune's)
TRIAGE_FIXES: dict[Cause, str] = {
    Cause.CAPACITY_OR_QUOTA: ("request vCPU quota for the VM family in the workspace's region (Azure ML "
                              "studio > Quotas), or use another compute or resources.accelerator"),
    Cause.BAD_IMAGE: ("check the ACR image and tag and that the workspace's identity has AcrPull on the "
                      "registry (or that the environment builds: see its build log)"),
}
ARTIFACT_DATASTORE = "workspaceartifactstore"  # holds each job's logs: ExperimentRun/dcid.<job>/user_logs/
LOG_PREFIX = "ExperimentRun/dcid.{name}/user_logs/"
# azure-core's transport waits 300 s for an answer by default; the kit's retry policy (60 s in all) must hold, so
# every client is made with these (seconds) and with the SDKs' own retries off (retry_total=0)
CLIENT_TIMEOUTS = {"connection_timeout": 10, "read_timeout": 60}


def studio_url(settings: dict[str, Any], name: str) -> str:
    return (f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/{settings['subscription_id']}/resourcegroups/"
            f"{settings['resource_group']}/workspaces/{settings['workspace']}")


class AzureLauncher(CloudLauncher):
    name = "azure"
    service = "Azure Machine Learning"
    capabilities = CAPABILITIES
    settings_model = AzureSettings
    triage_fixes = TRIAGE_FIXES
    compile = staticmethod(sweep.compile_plan)  # a command job, or a sweep job for a spec with a sweep

    def __init__(self, ml_client: Any = None, blob_service: Any = None, *, credential: Any = None,
                 client_kwargs: dict[str, Any] | None = None, policy: RetryPolicy | None = None, poll_s: float = 10.0,
                 home: Path | None = None, lock_dir: Path | None = None) -> None:
        super().__init__(classify, policy=policy, poll_s=poll_s, home=home, lock_dir=lock_dir)
        self.blob_caller = Caller("Blob storage", classify, self.caller.policy)  # Blob calls name their own service
        self._given = ml_client  # one client for every workspace (tests); else one per workspace, made lazily
        self._blob_service = blob_service
        self._credential = credential
        self._client_kwargs = client_kwargs or {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._stores: dict[tuple[str, str, str], BlobStore] = {}
        self._mlflow: dict[tuple[str, str, str], MlflowRuns] = {}
        self._datastores: dict[tuple[int, str], Datastore] = {}

    # ================================================================ clients (lazy; `cloudtune list` may span workspaces)
    @staticmethod
    def _workspace(settings: dict[str, Any]) -> tuple[str, str, str]:
        return settings["subscription_id"], settings["resource_group"], settings["workspace"]

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = import_sdk("azure", "azure.identity", "azure-identity").DefaultAzureCredential()
        return self._credential

    def ml_client(self, settings: dict[str, Any]) -> Any:
        """The MLClient of the settings' workspace."""
        _quiet_sdk()
        if self._given is not None:
            return self._given
        key = self._workspace(settings)
        if key not in self._clients:
            MLClient = import_sdk("azure", "azure.ai.ml", "azure-ai-ml").MLClient
            kwargs = {"enable_telemetry": False, **CLIENT_TIMEOUTS, **self._client_kwargs}
            if self._credential is None and emulator_endpoint():
                self._credential = EmulatorCredential()
                kwargs.setdefault("authentication_policy", plain_http_policy(self._credential))
            self._clients[key] = MLClient(self.credential(), *key, retry_total=0, **kwargs)
        return self._clients[key]

    def store(self, settings: dict[str, Any]) -> BlobStore:
        """The Blob store of the settings' workspace datastores."""
        key = self._workspace(settings)
        if key not in self._stores:
            client = self.ml_client(settings)
            self._stores[key] = BlobStore(lambda name: self._datastore(client, name), self._credential_for_blob(),
                                          self._blob_service, client_kwargs={"retry_total": 0, **CLIENT_TIMEOUTS,
                                                                             **self._client_kwargs})
        return self._stores[key]

    def _credential_for_blob(self) -> Any:
        """None when the Blob client signs another way: a given client, or an account key for an endpoint set in the
        environment (storage.py); else the Azure credential."""
        import os

        if self._blob_service is not None or (os.environ.get(BLOB_ENDPOINT_VAR) and os.environ.get(STORAGE_KEY_VAR)):
            return None
        return self.credential()

    def _datastore(self, client: Any, name: str) -> Datastore:
        if (id(client), name) not in self._datastores:
            ds = self.caller.call(client.datastores.get, name, what=f"read the datastore {name}")
            account = getattr(ds, "account_name", None)
            if not account or not getattr(ds, "container_name", None):
                raise InvalidInput(f"datastore {name!r} is not an Azure Blob datastore",
                                   fix="set providers.azure.datastore to a Blob datastore (e.g. workspaceblobstore)")
            protocol, endpoint = getattr(ds, "protocol", None) or "https", getattr(ds, "endpoint", None) or "core.windows.net"
            self._datastores[(id(client), name)] = Datastore(name, f"{protocol}://{account}.blob.{endpoint}", ds.container_name)
        return self._datastores[(id(client), name)]

    # ================================================================ submit
    def submit(self, plan: Plan) -> JobRef:
        settings = (plan.spec.get("providers") or {}).get("azure") or {}
        store = self.store(settings)
        self._check_remote_inputs(plan, store)
        self.last_uploaded_bytes = upload_all(plan.uploads, store, self.blob_caller.call)
        self._register_code(plan, settings)
        return self._plan_ref(plan, self._create(plan, settings), self.last_uploaded_bytes)

    def _plan_ref(self, plan: Plan, name: str, uploaded: int = 0) -> JobRef:
        settings = (plan.spec.get("providers") or {}).get("azure") or {}
        # a sweep's trials write to their own default outputs (cloudtune_azure.sweep): no checkpoint path to record
        where = sweep.ref_extra(plan) if sweep.is_sweep(plan.request) else {
            "checkpoint_uri": plan.request["outputs"]["checkpoints"]["path"]}
        # the model in long form: a later `train.model: job:<this job>` knows which workspace holds it
        return JobRef(provider="azure", job_id=plan.job_name, native_id=name, console_url=studio_url(settings, name),
                      model_uri=long_form(self._workspace(settings), plan.model_uri) if plan.model_uri else None,
                      extra={"subscription_id": settings["subscription_id"], "resource_group": settings["resource_group"],
                             "workspace": settings["workspace"], "job_name": plan.job_name, **where,
                             "uploaded_bytes": uploaded})

    # Azure ML restarts no command job: cloudtune.api.Job.wait relaunches a preempted attempt (see request.restart_note)
    relaunches_preempted = True

    @staticmethod
    def retry_plan(plan: Plan, attempt: int) -> Plan:
        """`plan` under a new job name for attempt number `attempt` (2, 3, ...): `<name>-r<attempt>` wherever the job
        name appears (name, outputs); `resume` then points its checkpoints output at the previous attempt's."""
        import json

        old = plan.job_name
        new = f"{re.sub(r'-r[0-9]+$', '', old)}-r{attempt}"  # attempt 3 of `x` is x-r3, not x-r2-r3
        request = json.loads(json.dumps(plan.request).replace(old, new))
        model = plan.model_uri.replace(old, new) if plan.model_uri else None
        return replace(plan, job_name=new, request=request, model_uri=model)

    def resume(self, plan: Plan, earlier: JobRef) -> Plan:
        """`plan` made to start from `earlier`'s newest checkpoint: its `checkpoints` output is the earlier job's
        folder (mounted read-write), where the runtime resumes from the newest complete checkpoint."""
        import copy

        uri = str(earlier.extra.get("checkpoint_uri") or "")
        request = copy.deepcopy(plan.request)
        request["outputs"]["checkpoints"]["path"] = uri
        return replace(plan, request=request, notes=(*plan.notes, f"resumes from {earlier.job_id}'s newest checkpoint "
                                                                   f"(its checkpoints output {uri})"))

    def find(self, plan: Plan) -> JobRef | None:
        """The command job `plan` made, looked up by its name; None when the workspace has none."""
        client = self.ml_client((plan.spec.get("providers") or {}).get("azure") or {})
        job = self.caller.call(client.jobs.get, plan.request["name"], what="look up the command job", missing_ok=True)
        return None if job is None else self._plan_ref(plan, str(job.name))

    def _check_remote_inputs(self, plan: Plan, store: BlobStore) -> None:
        """Each azureml:// input exists, and is the file or folder its entry says (before anything is paid for)."""
        for name, entry in sorted(plan.request["inputs"].items()):
            uri = entry["path"]
            if not DATASTORE_URI.fullmatch(uri) or any(u.destination == uri for u in plan.uploads):
                continue
            found = resolve_input(store, uri, self.blob_caller.call, prefix_match=False)
            folder = found.endswith("/")
            if folder != (entry["type"] == "uri_folder"):
                raise InvalidInput(f"input {name}: {uri} is a {'folder' if folder else 'file'}",
                                   fix=f"give {uri.rstrip('/') + '/' if folder else uri.rstrip('/')} in the spec's inputs")

    def _register_code(self, plan: Plan, settings: dict[str, Any]) -> None:
        """The code asset `cloudtune-code:<hash>` pointing at the uploaded bundle's folder, registered once."""
        from azure.ai.ml.entities._assets import Code  # not exported by azure.ai.ml.entities

        client = self.ml_client(settings)
        code_ops = client._code  # MLClient keeps its code-asset operations private
        version = sweep.trial_of(plan.request)["code"].rsplit("/", 1)[-1]
        if self.caller.call(code_ops.get, name=CODE_ASSET, version=version, what="look up the code asset",
                            missing_ok=True) is not None:
            return
        upload = next(u for u in plan.uploads if u.destination.endswith(f"/{BUNDLE_FILE}"))
        _, _, key = split_uri(upload.destination)
        datastore, path = key.split("/paths/", 1)
        folder = self._datastore(client, datastore).url(path.rsplit("/", 1)[0] + "/")
        self.caller.call(code_ops.create_or_update, Code(name=CODE_ASSET, version=version, path=folder),
                         what="register the code asset")

    def _create(self, plan: Plan, settings: dict[str, Any]) -> str:
        """create_or_update once under the plan's name; a retry adopts the job a lost answer made."""
        import yaml
        from azure.ai.ml import load_job

        client = self.ml_client(settings)
        name = plan.request["name"]

        def create() -> str:
            job = load_job(source=io.StringIO(yaml.safe_dump(plan.request, sort_keys=False)))
            return str(client.jobs.create_or_update(job).name)

        def find() -> str | None:
            job = self.caller.call(client.jobs.get, name, what="look up the job", missing_ok=True)
            return None if job is None else str(job.name)

        return self.caller.create_once(create, find, what="create the command job")

    # ================================================================ after submit
    @staticmethod
    def _settings(ref: JobRef) -> dict[str, Any]:
        return {k: ref.extra[k] for k in ("subscription_id", "resource_group", "workspace")}

    def status(self, ref: JobRef) -> JobStatus:
        client = self.ml_client(self._settings(ref))
        job = self.caller.call(client.jobs.get, ref.native_id, what="get the command job")
        native = str(getattr(job.status, "value", job.status))  # the SDK gives its JobStatus enum or a string
        error = None
        if map_native(AZUREML, native) is JobState.FAILED:
            error = self._run_error(client, ref.native_id)
        props = getattr(job, "properties", None)  # the run's StartTimeUtc/EndTimeUtc, once it has them
        props = props if isinstance(props, dict) else {}
        return replace(map_status(native, error), started_at=epoch_seconds(props.get("StartTimeUtc")),
                       ended_at=epoch_seconds(props.get("EndTimeUtc")))

    def sweep_trials(self, ref: JobRef) -> list[Trial]:
        """A sweep job's trials: its child jobs as Azure ML lists them, each with its values and objective from the
        workspace's MLflow (`cloudtune_azure.sweep.trials_of`, `cloudtune_azure.mlflowruns`)."""
        settings = self._settings(ref)
        client = self.ml_client(settings)
        children = self.caller.call(lambda: list(client.jobs.list(parent_job_name=ref.native_id)),
                                    what="list the sweep job's trials")
        runs = self.mlflow_runs(settings)
        figures = {child.name: self.caller.call(runs.run, child.name, what="read a trial's MLflow run")
                   for child in children}
        return sweep.trials_of(children, figures, ref.extra.get("sweep"))

    def mlflow_runs(self, settings: dict[str, Any]) -> MlflowRuns:
        """The reader of the settings' workspace MLflow runs (its tracking URI is the workspace's), made once per
        workspace."""
        key = self._workspace(settings)
        if key not in self._mlflow:
            client = self.ml_client(settings)
            workspace = self.caller.call(client.workspaces.get, settings["workspace"], what="get the workspace")
            emulator = emulator_endpoint()
            base = rest_base(str(workspace.mlflow_tracking_uri), emulator)
            if emulator:  # no Entra ID to sign in to (cloudtune_azure.emulator)
                credential = self._credential or EmulatorCredential()
                self._mlflow[key] = MlflowRuns(base, credential, plain_http_policy(credential))
            else:
                self._mlflow[key] = MlflowRuns(base, self.credential())
        return self._mlflow[key]

    def _run_error(self, client: Any, name: str) -> str | None:
        """The failed job's error message, from its run details (the job resource itself carries none); None when
        the run history cannot say."""
        try:
            details = self.caller.call(client.jobs._runs_operations.get_run_details, name,
                                       what="read the job's error")
        except Exception:  # the message is a courtesy: the state is already known
            return None
        return _error_message(details)

    def cancel(self, ref: JobRef) -> None:
        if self.status(ref).state.terminal:
            return  # cancelling a job that already ended is not an error for `cloudtune cancel`
        client = self.ml_client(self._settings(ref))
        poller = self.caller.call(client.jobs.begin_cancel, ref.native_id, what="cancel the command job")
        self.caller.call(poller.result, what="wait for the cancel to be accepted")

    def logs(self, ref: JobRef, follow: bool = False, *, max_polls: int | None = None) -> Iterator[str]:
        """The job's std_log files (every node and process), each line once; with `follow`, until the job ends.
        Several files: each line is prefixed with its file's name (e.g. `[std_log_process_1]`)."""
        store = self.store(self._settings(ref))
        prefix = LOG_PREFIX.format(name=ref.native_id)
        offsets: dict[str, int] = {}
        partial: dict[str, str] = {}  # a file's last line until its newline arrives

        def read() -> list[str]:
            keys = self.blob_caller.call(store.list_keys, "datastores", f"{ARTIFACT_DATASTORE}/paths/{prefix}", 1000,
                                    what="list the job's log files")
            files = sorted(k.split("/paths/", 1)[1] for k in keys if k.rsplit("/", 1)[-1].startswith("std_log"))
            out: list[str] = []
            for path in files:
                data = self.blob_caller.call(store.read_from, ARTIFACT_DATASTORE, path, offsets.get(path, 0),
                                        what="read the job's log")
                offsets[path] = offsets.get(path, 0) + len(data)
                lines = (partial.pop(path, "") + data.decode("utf-8", "replace")).split("\n")
                if lines[-1]:
                    partial[path] = lines[-1]
                label = f"[{path.rsplit('/', 1)[-1].removesuffix('.txt')}] " if len(files) > 1 else ""
                out += [label + line for line in lines[:-1]]
            return out

        yield from self.follow(ref, read, follow, max_polls)
        yield from (text for text in partial.values() if text)  # a last line without its newline

    def download(self, ref: JobRef, dest: Path, *, checkpoints: bool = False) -> Path:
        """The job's `model` output (and with `checkpoints`, its `checkpoints` output into dest/checkpoints/)
        through the kit's download (sizes and Content-MD5 checked); see `Launcher.download`."""
        from cloudtune.kit.download import download_outputs, model_uri_of  # off the dry run's start-up path

        settings = self._settings(ref)
        model_uri = model_uri_of(ref, "download it from Azure ML Studio")
        model_uri = short_form(self._workspace(settings), model_uri) or model_uri
        # recorded at submit; the outputs are siblings (<prefix>/output/<job>/{model,checkpoints}/)
        uri = (ref.extra.get("checkpoint_uri") or model_uri.rstrip("/").rsplit("/", 1)[0] + "/checkpoints/"
               if checkpoints else None)
        return download_outputs(self.store(settings), self.blob_caller.call, model_uri, dest, uri)


def _quiet_sdk() -> None:
    """The SDK's own log lines on the user's terminal, not cloudtune's: "This is an experimental class" (for
    queue_settings) and the tracebacks it logs when an error answer is not JSON. Its errors still reach the kit."""
    import logging

    for name in ("azure.ai.ml._utils._experimental", "azure.ai.ml._restclient"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _error_message(details: Any) -> str | None:
    """The message of run details' error (RunDetails.error: an ErrorResponse whose `error` holds the message)."""
    error = getattr(details, "error", None)
    inner = getattr(error, "error", None) or error
    message = getattr(inner, "message", None)
    return " ".join(str(message).split())[:400] or None if message else None


def map_status(native: str, error: str | None) -> JobStatus:
    """An Azure ML job status name (and its error message) -> JobStatus, through the kit's Azure ML table."""
    failed = ("the job stopped sending heartbeats (NotResponding)" if native == "NotResponding"
              else "the command job failed (see its logs)")
    return table_status(AZUREML, native, native.lower(), error or failed)
