"""Compile a job spec into a SageMaker `CreateTrainingJob` Plan.

Pure and offline: no boto3/botocore/sagemaker import (the stock image URI is read from the SageMaker SDK's
JSON config file, see `images.py`), and nothing written: the code channel's tarball (the user's code, a wheel of
cloudtune, a large runtime job) is named by its hash and staged by `submit()` (`cloudtune.kit.staging`).

The container contract (what `cloudtune.runtime.context` reads), the same as `local` with `emulate: aws`:
- hyperparameter `cloudtune_job`: the runtime job JSON (or, over SageMaker's 2500-character limit,
  the path of `.cloudtune/job.json`, unpacked from the code channel by the entrypoint);
- one File-mode S3 channel per input at /opt/ml/input/data/<name>, plus `code` holding the bundle tar.gz;
- model /opt/ml/model (-> <S3OutputPath>/<job>/output/model.tar.gz), checkpoints /opt/ml/checkpoints
  (synced to S3 by CheckpointConfig), TensorBoard logs /opt/ml/output/tensorboard.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudtune.catalog import load_catalog
from cloudtune.contracts import sagemaker as sm
from cloudtune.contracts.sagemaker import entry_script
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit import cost, staging
from cloudtune.kit.base import bucket_base
from cloudtune.kit.naming import NameRule
from cloudtune.kit.objectstore import prefix_note
from cloudtune.kit.planning import Draft, PlanningTemplate
from cloudtune.kit.settings import require
from cloudtune.launcher import Capabilities, Capability
from cloudtune_aws.images import LOCK_TARGET, image_table, processor_for, training_image_uri
from cloudtune_aws.settings import AwsSettings

if TYPE_CHECKING:
    from cloudtune.catalog import Catalog, Offer
    from cloudtune.spec import JobSpec

LOG_GROUP = sm.LOG_GROUP
DATA_DIR = sm.DATA_DIR
CODE_CHANNEL = sm.CODE_CHANNEL
CHECKPOINT_DIR = sm.CHECKPOINT_DIR
TENSORBOARD_DIR = sm.TENSORBOARD_DIR
UNPACK_DIR = "/tmp/cloudtune"
JOB_FILE = f"{staging.CLOUDTUNE_DIR}/job.json"
HYPERPARAMETER_MAX = sm.HYPERPARAMETER_MAX
ENV_MAX_ENTRIES = sm.ENV_MAX_ENTRIES
ENV_MAX_LEN = sm.ENV_MAX_LEN
MAX_CHANNELS = sm.MAX_CHANNELS
MAX_RUNTIME_S = sm.MAX_RUNTIME_S
ROLE_PATTERN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
# CreateTrainingJob.TrainingJobName (botocore shape TrainingJobName): 1-63, pattern below.
SAGEMAKER_JOB = NameRule("SageMaker", "training job names", 63, r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
                         "1-63 letters, digits and '-', no leading or trailing '-'")

# The container entrypoint: unpack cloudtune's files from the code channel, pip-install the carried
# wheel, then hand over to cloudtune-run. $1: pip flags, $2: the wheel's extras. (Each ContainerArguments
# item is limited to 256 characters.)
BOOTSTRAP = (
    f"set -e; d={UNPACK_DIR}; mkdir -p $d; tar -xzf {DATA_DIR}/{CODE_CHANNEL}/*.tar.gz -C $d .cloudtune; "
    'python -m pip install -q --disable-pip-version-check --no-cache-dir $1 "$(ls $d/.cloudtune/*.whl)$2"; '
    "exec cloudtune-run"
)

CAPABILITIES = Capabilities(
    gpu=Capability(True, "SageMaker GPU instances (ml.g4dn, ml.g5, ml.g6, ml.p4d, ml.p5, ...) chosen from the catalog"),
    tpu=Capability(False, "TPUs exist only on Google Cloud; SageMaker has none"),
    multi_node=Capability(True, "InstanceCount nodes (algo-1..N) joined by torchrun"),
    spot=Capability(True, "managed spot training, with checkpoints synced to S3 and resumed after a reclaim"),
    log_streaming=Capability(True, f"CloudWatch Logs group {LOG_GROUP}"),
    remote_inputs=Capability(True, "s3:// inputs become channels as they are; local paths are uploaded to S3"),
    secrets=Capability(True, "AWS Secrets Manager ARNs, resolved in the container with the job's role"),
)


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker's MetricDefinitions: the regexes of cloudtune's log lines (cloudtune.contracts.logfmt)."""
    from cloudtune.contracts.logfmt import METRIC_REGEXES  # stdlib-only

    return [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()]


def _refuse(spec: "JobSpec", settings: AwsSettings, catalog: "Catalog") -> None:
    """What cannot run on SageMaker, refused before anything else, each with its fix."""
    accel = spec.resources.accel
    if not accel.is_cpu and catalog.normalize(accel.name).startswith("TPU"):
        CAPABILITIES.require("tpu", f"resources.accelerator {accel}",
                                  "run it with --provider gcp (Vertex AI has TPUs), or choose a GPU such as H100:8")
    require(settings, "aws", ("role", "bucket", "region"))
    if not ROLE_PATTERN.match(str(settings.role)):
        raise UnsupportedSpec(f"providers.aws.role {settings.role!r} is not an IAM role ARN",
                              fix="give the role's ARN, e.g. arn:aws:iam::123456789012:role/SageMakerExecution")
    for key, ref in sorted(spec.secrets.items()):
        if not ref.startswith("arn:aws"):
            raise UnsupportedSpec(f"secret {key!r} is not an AWS Secrets Manager ARN; a SageMaker job cannot read it",
                                  fix="store it in AWS Secrets Manager and give its ARN")
    for reserved in (CODE_CHANNEL, sm.WHEELS_CHANNEL):
        if reserved in spec.inputs:
            raise UnsupportedSpec(f"input name {reserved!r} is reserved on aws (the channel that carries cloudtune's "
                                  f"{'code bundle' if reserved == CODE_CHANNEL else 'wheels'})", fix="rename that input")
    carried = 1 if spec.image else 2  # the code channel, and on the stock image the wheels channel
    if len(spec.inputs) + carried > MAX_CHANNELS:
        raise UnsupportedSpec(f"{len(spec.inputs)} inputs: SageMaker allows {MAX_CHANNELS} channels, {carried} of which "
                              "carry cloudtune's code and wheels",
                              fix="combine inputs into fewer directories")
    if spec.outputs is not None and not spec.outputs.startswith("s3://"):
        raise UnsupportedSpec(f"outputs {spec.outputs!r} is not an s3:// URI", fix="set outputs: s3://BUCKET/PREFIX, or leave it unset")
    if (settings.subnets or settings.security_groups) and not (settings.subnets and settings.security_groups):
        raise UnsupportedSpec("a VPC needs both providers.aws.subnets and providers.aws.security_groups",
                              fix="set both, or neither")
    if spec.resources.max_runtime_seconds > MAX_RUNTIME_S:
        raise UnsupportedSpec(f"max_runtime {spec.resources.max_runtime} is over SageMaker's 28-day limit", fix="use at most 28d")


def _machine(spec: "JobSpec", catalog: "Catalog", notes: list[str]) -> tuple["Offer | None", str]:
    """The catalog offer (None for an instance type the catalog lacks) and the instance type."""
    accel = spec.resources.accel
    override = spec.resources.instance_type.get("aws")
    if override:
        if not override.startswith("ml."):
            raise UnsupportedSpec(f"resources.instance_type.aws {override!r} is not a SageMaker instance type",
                                  fix="SageMaker types start with ml., e.g. ml.g5.2xlarge")
        offer = catalog.by_instance_type("aws", override)
        instance_type = override
        if offer is None:
            notes.append(f"instance type {override} is not in the catalog: no price estimate")
        elif not accel.is_cpu and offer.accelerator != catalog.normalize(accel.name):
            notes.append(f"resources.instance_type.aws {override} carries {offer.accelerator}, not the requested {accel}")
    else:
        offer = cost.accelerator_offer(spec, "aws")
        why = cost.choice_note(catalog, offer, str(accel))
        if why:
            notes.append(why)
        instance_type = offer.instance_type
    return offer, instance_type


def _environment(spec: "JobSpec", notes: list[str]) -> dict[str, str]:
    """Plain env values within SageMaker's Environment limits; what does not fit reaches the job through the
    runtime job, which cloudtune-run applies."""
    environment: dict[str, str] = {}
    left_out: list[str] = []
    for key, value in sorted(spec.env.items()):
        if len(key) <= ENV_MAX_LEN and len(value) <= ENV_MAX_LEN and len(environment) < ENV_MAX_ENTRIES:
            environment[key] = value
        else:
            left_out.append(key)
    if left_out:
        notes.append(f"env {', '.join(left_out)}: over SageMaker's Environment limits ({ENV_MAX_ENTRIES} entries, "
                     f"{ENV_MAX_LEN} characters); set by cloudtune-run from the runtime job instead")
    return environment


class SageMakerPlanning(PlanningTemplate):
    """SageMaker's part of the planning template (`cloudtune.kit.planning`)."""

    provider = "aws"
    service = "SageMaker"
    store_kind = "S3"
    store_schemes = ("s3",)
    installer = f"the image's training toolkit runs {sm.ENTRY_SCRIPT} (script mode), which"
    wheels_from = f"the `{sm.WHEELS_CHANNEL}` channel"
    code_first = True

    def check(self, d: Draft) -> None:
        _refuse(d.spec, d.settings, load_catalog())

    def store_base(self, d: Draft) -> str:
        return bucket_base(str(d.settings.bucket), "s3", BUCKET_PATTERN.pattern, "aws", "S3")

    def job_name(self, d: Draft) -> str:
        return SAGEMAKER_JOB.check(d.spec.name, d.suffix)

    def machine(self, d: Draft) -> None:
        d.offer, d.instance_type = _machine(d.spec, load_catalog(), d.notes)

    def remote_input(self, d: Draft, name: str, uri: str) -> str:
        uri = super().remote_input(d, name, uri)
        if (note := prefix_note(name, uri)) is not None:  # S3Prefix: resolved by one look-up at submit
            d.notes.append(note)
        return uri

    def container_inputs(self, d: Draft) -> dict[str, str]:
        return {name: f"{DATA_DIR}/{name}" for name in d.spec.inputs}

    def image(self, d: Draft) -> tuple[str, str | None]:
        if d.spec.image:
            return d.spec.image, None
        table = image_table()
        processor = processor_for(d.instance_type, d.gpus)
        d.notes.append(f"image: stock PyTorch {table.framework_version} training image ({processor}), "
                       + ("from the sagemaker SDK's image-URI config" if table.from_sdk
                          else "from cloudtune-aws's fallback table (the sagemaker SDK is not installed)"))
        return training_image_uri(str(d.settings.region), processor, table), LOCK_TARGET

    def mount_wheels(self, d: Draft) -> str:
        return sm.channel_dir(sm.WHEELS_CHANNEL)

    def bundle_texts(self, d: Draft, job: dict[str, Any]) -> dict[str, str]:
        """On the stock image the entry script the toolkit runs; the runtime job when it is over the limit."""
        texts: dict[str, str] = {}
        if d.wheels is not None:
            texts[sm.ENTRY_SCRIPT] = entry_script(d.pip_flags, d.extras)
        value, text = _job_hyperparameter(job, sm.CODE_DIR if d.wheels is not None else UNPACK_DIR)
        if text is not None:
            texts[JOB_FILE] = text
            d.notes.append(f"the runtime job ({len(text)} characters) is over SageMaker's {HYPERPARAMETER_MAX}-"
                           f"character hyperparameter limit: it travels in the code bundle as {JOB_FILE}")
        return texts

    def request(self, d: Draft, job: dict[str, Any]) -> dict[str, Any]:
        assert d.code is not None
        if d.settings.network_isolation and d.spec.train is not None and d.spec.train.push_to_hub is not None:
            raise UnsupportedSpec("network isolation: the container cannot reach the Hugging Face Hub to push the "
                                  "model (train.push_to_hub)", fix="drop providers.aws.network_isolation, or remove "
                                  "train.push_to_hub and push the model from its S3 output yourself")
        if d.settings.network_isolation and d.spec.secrets:
            raise UnsupportedSpec("network isolation: the container cannot reach Secrets Manager to resolve secrets",
                                  fix="drop providers.aws.network_isolation, or pass no secrets")
        value = _job_hyperparameter(job, sm.CODE_DIR if d.wheels is not None else UNPACK_DIR)[0]
        if d.wheels is None:
            start = _Start(d.image, {sm.JOB_KEY: value},
                           {"ContainerEntrypoint": ["/bin/sh", "-c"],
                            "ContainerArguments": [BOOTSTRAP, "cloudtune-bootstrap", d.pip_flags, d.extras]},
                           {CODE_CHANNEL: d.code.destination})
        else:
            hyper = {sm.JOB_KEY: value, **sm.script_mode_hyperparameters(d.code.destination, str(d.settings.region))}
            start = _Start(d.image, hyper, {}, {sm.WHEELS_CHANNEL: d.wheels.destination})
        environment = _environment(d.spec, d.notes)
        return _request(d.spec, d.settings, d.job_name, start, {**d.inputs, **start.channels}, d.instance_type,
                        environment, self.output(d))

    def finish(self, d: Draft) -> None:
        if d.spec.retries or d.spec.resources.spot:
            d.notes.append(restart_note(d.spec.retries, d.spec.resources.spot))
        if d.cost_basis == cost.UPPER_BOUND:
            d.notes.append("managed spot has no list price: the estimate is the on-demand price, an upper bound; "
                           "`cloudtune status` reports the saving SageMaker bills after the job")
        if d.spec.secrets:
            d.notes.append("secrets travel as ARNs; the job's role needs secretsmanager:GetSecretValue on them: "
                           + ", ".join(sorted(d.spec.secrets)))

    def output(self, d: Draft) -> str:
        return (d.spec.outputs or f"{d.base}/output").rstrip("/")

    def model_uri(self, d: Draft) -> str:
        return f"{self.output(d)}/{d.job_name}/output/model.tar.gz"


compile_plan = SageMakerPlanning().compile


@dataclass(frozen=True)
class _Start:
    """How the container starts: its image, hyperparameters, AlgorithmSpecification additions and the channels
    that carry cloudtune. On the stock image the job starts through the image's own entrypoint, the training
    toolkit's script mode (`sagemaker_program` + `sagemaker_submit_directory`), the one start path that tuning-job
    trials also have (their HyperParameterAlgorithmSpecification cannot set ContainerEntrypoint). A custom `image:`
    starts through ContainerEntrypoint with the carried wheel installed over the image's own cloudtune."""

    image: str
    hyperparameters: dict[str, str]
    algorithm: dict[str, Any]
    channels: dict[str, str]


def _request(spec: "JobSpec", settings: AwsSettings, job_name: str, start: _Start, channel_uris: dict[str, str],
             instance_type: str, environment: dict[str, str], output: str) -> dict[str, Any]:
    """The CreateTrainingJob request."""
    runtime_s = spec.resources.max_runtime_seconds
    nodes = spec.resources.nodes
    role = str(settings.role)
    output_config: dict[str, Any] = {"S3OutputPath": output}
    if settings.kms_key:
        output_config["KmsKeyId"] = settings.kms_key

    stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime_s}
    if spec.resources.spot:
        stopping["MaxWaitTimeInSeconds"] = max(runtime_s, min(2 * runtime_s, MAX_RUNTIME_S))

    tags = {**settings.tags, "cloudtune:job": spec.name}

    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": start.hyperparameters,
        "AlgorithmSpecification": {
            "TrainingImage": start.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
            **start.algorithm,
        },
        "RoleArn": role,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                "S3DataDistributionType": "FullyReplicated"}},
                "InputMode": "File",
            }
            for name, uri in channel_uris.items()
        ],
        "OutputDataConfig": output_config,
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": nodes, "VolumeSizeInGB": spec.resources.disk_gb},
        "StoppingCondition": stopping,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        "EnableNetworkIsolation": settings.network_isolation,
        "EnableManagedSpotTraining": spec.resources.spot,
        "CheckpointConfig": sm.checkpoint_config(f"{output}/checkpoints/{job_name}"),
    }
    if settings.subnets:
        request["VpcConfig"] = {"SecurityGroupIds": list(settings.security_groups), "Subnets": list(settings.subnets)}
    if settings.tensorboard:
        request["TensorBoardOutputConfig"] = {"S3OutputPath": f"{output}/tensorboard/{job_name}", "LocalPath": TENSORBOARD_DIR}
    if environment:
        request["Environment"] = environment
    if spec.retries:
        request["RetryStrategy"] = {"MaximumRetryAttempts": spec.retries}
    return request


def restart_note(retries: int, spot: bool) -> str:
    """Who re-runs what on SageMaker (its API reference: RetryStrategy retries a job that failed with an
    InternalServerError; managed spot training restarts an interrupted job within MaxWaitTimeInSeconds)."""
    parts = []
    if retries:
        parts.append(f"retries {retries}: SageMaker's RetryStrategy re-runs the job only after its own "
                     "InternalServerError (an instance or platform failure), never after the container's exit "
                     "(AlgorithmError): bad input (65), divergence (66) and the job's own error are not run again, as "
                     "`--provider local` never retries them (an infrastructure exit, 75, is retried locally only)")
    if spot:
        parts.append("a Spot interruption (preemption) is resumed by SageMaker itself within MaxWaitTimeInSeconds, "
                     "from the newest checkpoint synced to CheckpointConfig's S3 URI")
    return "; ".join(parts)


def _job_hyperparameter(job: dict[str, Any], unpacked_at: str) -> tuple[str, str | None]:
    """(the `cloudtune_job` hyperparameter, the runtime job's text to carry in the bundle or None): the runtime job
    itself, or over the limit the path of its copy in the bundle unpacked at `unpacked_at`."""
    job_json = json.dumps(job, sort_keys=True)
    if len(job_json) <= HYPERPARAMETER_MAX:
        return job_json, None
    return f"{unpacked_at}/{JOB_FILE}", job_json
