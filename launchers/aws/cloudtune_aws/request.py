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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.contracts import sagemaker as sm
from cloudtune.contracts.sagemaker import entry_script
from cloudtune.errors import UnsupportedSpec
from cloudtune.kit.base import bucket_base
from cloudtune.kit import cost, staging
from cloudtune.kit.objectstore import local_input_upload, prefix_note
from cloudtune.kit.naming import SAGEMAKER_JOB
from cloudtune.kit.settings import require
from cloudtune.kit.versions import versions_note
from cloudtune.launcher import Capabilities, Capability
from cloudtune.plan import Plan, Upload
from cloudtune.spec import is_remote
from cloudtune_aws.settings import AwsSettings

if TYPE_CHECKING:
    from cloudtune.bundle import Bundle
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

_DEFAULT_METRICS = {  # fallback only: the recipe's own METRIC_REGEXES are the source of truth
    "train_loss": r"\[cloudtune\] step=\d+ loss=([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan))",
    "learning_rate": r"\[cloudtune\] step=\d+ .*learning_rate=([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan))",
    "eval_loss": r"\[cloudtune\] eval \w+: eval_loss=([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan))",
}




def metric_definitions() -> list[dict[str, str]]:
    try:
        from cloudtune.train.logfmt import METRIC_REGEXES  # stdlib-only
    except ImportError:  # pragma: no cover - an older core without the constants
        METRIC_REGEXES = _DEFAULT_METRICS
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
            raise UnsupportedSpec(f"instance_type.aws {override!r} is not a SageMaker instance type",
                                  fix="SageMaker types start with ml., e.g. ml.g5.2xlarge")
        offer = catalog.by_instance_type("aws", override)
        instance_type = override
        if offer is None:
            notes.append(f"instance type {override} is not in the catalog: no price estimate")
        elif not accel.is_cpu and offer.accelerator != catalog.normalize(accel.name):
            notes.append(f"instance_type.aws {override} carries {offer.accelerator}, not the requested {accel}")
    else:
        offer = catalog.resolve("aws", "cpu" if accel.is_cpu else accel.name, accel.count)
        why = cost.choice_note(catalog, offer, str(accel))
        if why:
            notes.append(why)
        instance_type = offer.instance_type
    return offer, instance_type


def _inputs(spec: "JobSpec", base: str, notes: list[str]) -> tuple[list[Upload], dict[str, str]]:
    """One channel per input: local paths uploaded content-addressed, s3:// URIs as they are."""
    uploads: list[Upload] = []
    channel_uris: dict[str, str] = {}
    for name, uri in sorted(spec.inputs.items()):
        if is_remote(uri):
            if not uri.startswith("s3://"):
                raise UnsupportedSpec(f"input {name!r} ({uri}) is not on S3; a SageMaker job reads s3:// inputs only",
                                      fix="copy it to S3 and give the s3:// URI, or give a local path (uploaded at launch)")
            channel_uris[name] = uri
            if (note := prefix_note(name, uri)) is not None:  # S3Prefix: resolved by one look-up at submit
                notes.append(note)
            continue
        up = local_input_upload(Path(uri), base)
        uploads.append(up)
        channel_uris[name] = up.destination
    return uploads, channel_uris


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


def compile_plan(spec: "JobSpec", settings: AwsSettings, *, suffix: str, bundle: "Bundle | None", home: Path,
                 lock_dir: Path | None = None) -> Plan:
    """Compile a spec into a CreateTrainingJob Plan. Pure and offline (see the module docstring)."""
    from cloudtune.catalog import load_catalog
    from cloudtune.jobconfig import check_local_inputs, runtime_job, with_model_input

    spec = with_model_input(spec, "aws")
    notes: list[str] = []
    catalog = load_catalog()
    accel = spec.resources.accel

    _refuse(spec, settings, catalog)
    region = str(settings.region)
    base = bucket_base(str(settings.bucket), "s3", BUCKET_PATTERN.pattern, "aws", "S3")
    job_name = SAGEMAKER_JOB.check(spec.name, suffix)

    offer, instance_type = _machine(spec, catalog, notes)
    gpus = offer.count if offer is not None else accel.count
    ppn = spec.processes_per_node(gpus or None)
    nodes = spec.resources.nodes

    check_local_inputs(spec)
    uploads, channel_uris = _inputs(spec, base, notes)

    # ---- the runtime job, the code bundle, and how the container starts
    job = runtime_job(spec, {name: f"{DATA_DIR}/{name}" for name in spec.inputs}, ppn)
    start = _start(spec, job, bundle, base, home, lock_dir, region, instance_type, gpus, notes)
    uploads += start.uploads
    channel_uris.update(start.channels)
    if settings.network_isolation and spec.secrets:
        raise UnsupportedSpec("network isolation: the container cannot reach Secrets Manager to resolve secrets",
                              fix="drop providers.aws.network_isolation, or pass no secrets")

    environment = _environment(spec, notes)

    output = (spec.outputs or f"{base}/output").rstrip("/")
    request = _request(spec, settings, job_name, start, channel_uris, instance_type, environment, output)
    if spec.retries or spec.resources.spot:
        notes.append(restart_note(spec.retries, spec.resources.spot))

    # ---- cost
    estimate, cost_basis = cost.estimate(offer, spec.resources.spot, nodes)
    if cost_basis == cost.UPPER_BOUND:
        notes.append("managed spot has no list price: the estimate is the on-demand price, an upper bound; "
                     "`cloudtune status` reports the saving SageMaker bills after the job")
    if spec.secrets:
        notes.append("secrets travel as ARNs; the job's role needs secretsmanager:GetSecretValue on them: "
                     + ", ".join(sorted(spec.secrets)))

    plan_spec = spec.model_dump(mode="json")
    plan_spec.setdefault("providers", {})["aws"] = settings.model_dump(mode="json")
    return Plan(
        provider="aws",
        job_name=job_name,
        request=request,
        uploads=tuple(uploads),
        instance_type=instance_type,
        instance_count=nodes,
        estimated_usd_per_hour=estimate,
        cost_basis=cost_basis,
        model_uri=f"{output}/{job_name}/output/model.tar.gz",
        notes=tuple(notes),
        spec=plan_spec,
    )


@dataclass(frozen=True)
class _Start:
    """How the container starts: its image, hyperparameters, AlgorithmSpecification additions, the uploads and
    channels that carry cloudtune."""

    image: str
    hyperparameters: dict[str, str]
    algorithm: dict[str, Any]
    uploads: list[Upload]
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


def _job_hyperparameter(job: dict[str, Any], texts: dict[str, str], unpacked_at: str, notes: list[str]) -> str:
    """The runtime job as the `cloudtune_job` hyperparameter, or over the limit the path of its copy in the bundle."""
    job_json = json.dumps(job, sort_keys=True)
    if len(job_json) <= HYPERPARAMETER_MAX:
        return job_json
    texts[JOB_FILE] = job_json
    notes.append(f"the runtime job ({len(job_json)} characters) is over SageMaker's {HYPERPARAMETER_MAX}-character "
                 f"hyperparameter limit: it travels in the code bundle as {JOB_FILE}")
    return f"{unpacked_at}/{JOB_FILE}"


def _code_upload(bundle: "Bundle | None", texts: dict[str, str], base: str, home: Path) -> Upload:
    files = staging.cloudtune_files(True, texts)
    code = staging.compose(bundle, files)
    return Upload(str(home / "bundles" / f"{code.sha256}.tar.gz"), f"{base}/bundles/{code.sha256}.tar.gz", code.size,
                  code.sha256, staging.recipe(bundle, files))


def _start(spec: "JobSpec", job: dict[str, Any], bundle: "Bundle | None", base: str, home: Path,
           lock_dir: Path | None, region: str, instance_type: str, gpus: int, notes: list[str]) -> _Start:
    """On the stock image the job starts through the image's own entrypoint, the training toolkit's script mode
    (`sagemaker_program` + `sagemaker_submit_directory`), the one start path that tuning-job trials also have
    (their HyperParameterAlgorithmSpecification cannot set ContainerEntrypoint). A custom `image:` starts through
    ContainerEntrypoint with the carried wheel installed over the image's own cloudtune (no dependencies)."""
    texts: dict[str, str] = {}
    if spec.image:
        value = _job_hyperparameter(job, texts, UNPACK_DIR, notes)
        code = _code_upload(bundle, texts, base, home)
        algorithm = {"ContainerEntrypoint": ["/bin/sh", "-c"],
                     "ContainerArguments": [BOOTSTRAP, "cloudtune-bootstrap", "--no-deps --force-reinstall", ""]}
        return _Start(spec.image, {sm.JOB_KEY: value}, algorithm, [code], {CODE_CHANNEL: code.destination})
    from cloudtune_aws.images import LOCK_TARGET, image_table, processor_for, training_image_uri

    table = image_table()
    processor = processor_for(instance_type, gpus)
    wheels = staging.wheelhouse(LOCK_TARGET, home, base, lock_dir)
    extras = "[train]" if spec.train is not None else ""
    texts[sm.ENTRY_SCRIPT] = entry_script(f"--no-index --find-links {sm.channel_dir(sm.WHEELS_CHANNEL)}", extras)
    value = _job_hyperparameter(job, texts, sm.CODE_DIR, notes)
    code = _code_upload(bundle, texts, base, home)
    hyper = {sm.JOB_KEY: value, **sm.script_mode_hyperparameters(code.destination, region)}
    notes.append(f"image: stock PyTorch {table.framework_version} training image ({processor}), "
                 + ("from the sagemaker SDK's image-URI config" if table.from_sdk
                    else "from cloudtune-aws's fallback table (the sagemaker SDK is not installed)"))
    notes.append(versions_note(LOCK_TARGET, lock_dir))
    notes.append(f"the image's training toolkit runs {sm.ENTRY_SCRIPT} (script mode), which installs cloudtune"
                 f"{' and its train extra' if extras else ''} from the `{sm.WHEELS_CHANNEL}` channel ({LOCK_TARGET} "
                 f"lock, {wheels.bytes / 1e6:.0f} MB, uploaded once) with --no-index: no route to PyPI is needed")
    return _Start(training_image_uri(region, processor, table), hyper, {}, [code, wheels],
                  {sm.WHEELS_CHANNEL: wheels.destination})
