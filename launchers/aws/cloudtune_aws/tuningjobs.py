"""A SageMaker sweep after planning: create the tuning job once, read its state and its trials back, stop it.

Mixed into `AwsLauncher` (which dispatches to it for a plan or job whose request is a tuning job); uses its retry
caller and its lazily made boto3 clients. The trials are read with ListTrainingJobsForHyperParameterTuningJob: each
summary's TunedHyperParameters (text, under `cloudtune.kit.sweep.wire_name`) back to the sweep's option paths with
their own types, its status, and its FinalHyperParameterTuningJobObjectiveMetric as the objective.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from cloudtune.errors import InvalidInput
from cloudtune.kit.base import table_status
from cloudtune.kit.cost import epoch_seconds
from cloudtune.kit.objectstore import resolve_input, upload_all
from cloudtune.kit.retry import CloudError
from cloudtune.kit.states import SAGEMAKER
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.spec.sweep import SweepSpec, values_from_arguments
from cloudtune.sweeptrials import Trial

if TYPE_CHECKING:
    from cloudtune.plan import Plan

SWEEP_KIND = "sweep"  # JobRef.extra["kind"] of a sweep (cloudtune.sweep.KIND)
NAME_KEY = "HyperParameterTuningJobName"
TRIAL_NUMBER = re.compile(r"-(\d{3})-[0-9a-f]{8}$")  # SageMaker names trials <tuning job>-NNN-<8 hex digits>
# A trial's TrainingJobStatus -> the sweep's trial state. A trial the tuner stopped early (TrainingJobEarlyStoppingType
# Auto) ends Stopped with its objective reported; one stopped with the tuning job ends Stopped without it.
TRIAL_STATES = {"InProgress": "running", "Completed": "succeeded", "Failed": "failed", "Stopping": "running",
                "Stopped": "cancelled"}


def is_tuning(request: dict[str, Any]) -> bool:
    return NAME_KEY in request


def console_url(region: str, name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/hyper-tuning-jobs/{name}")


def resolve_channels(plan: "Plan", store: Any, call: Any, *, within: str | None = None) -> dict[str, Any]:
    """A copy of the plan's request (of `request[within]`'s channels: a tuning job's trial definition) with each s3://
    input channel looked up once: a folder written without its trailing '/' gets it (an S3Prefix `datasets/train`
    would also match `datasets/train-old/...`); a missing input, or an object whose prefix matches other keys, is
    refused here instead of failing the job after it started."""
    remote = {n: u for n, u in ((plan.spec or {}).get("inputs") or {}).items() if u.startswith("s3://")}
    request = copy.deepcopy(plan.request)
    for channel in (request[within] if within else request).get("InputDataConfig", []):
        source = channel["DataSource"]["S3DataSource"]
        if remote.get(channel["ChannelName"]) == source["S3Uri"]:
            source["S3Uri"] = resolve_input(store, source["S3Uri"], call, prefix_match=True)
    return request


class TuningJobs:
    """The sweep half of AwsLauncher (see the module docstring)."""

    caller: Any
    s3_caller: Any
    last_uploaded_bytes: int

    def sagemaker(self, region: str | None = None) -> Any:  # pragma: no cover - AwsLauncher's
        raise NotImplementedError

    def submit_sweep(self, plan: "Plan", store: Any, region: str | None) -> JobRef:
        """Resolve the s3:// channels, upload what is missing, then create the tuning job once (a retry that finds it
        adopts it when it is this plan's)."""
        request = resolve_channels(plan, store, self.s3_caller.call, within="TrainingJobDefinition")
        self.last_uploaded_bytes = upload_all(plan.uploads, store, self.s3_caller.call)
        sm = self.sagemaker(region)
        name = request[NAME_KEY]

        def find() -> str | None:
            described = self.caller.call(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=name,
                                         missing_ok=True, what="describe the tuning job")
            if described is None:
                return None
            if described.get("TrainingJobDefinition", {}).get("RoleArn") != request["TrainingJobDefinition"]["RoleArn"]:
                raise InvalidInput(f"a different SageMaker tuning job named {name} already exists",
                                   fix="launch again: a new launch draws a new name suffix")
            return str(described["HyperParameterTuningJobArn"])

        arn = self.caller.create_once(lambda: sm.create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"],
                                      find, what="create the tuning job")
        return sweep_ref(plan, arn, region, self.last_uploaded_bytes)

    def find_sweep(self, plan: "Plan", region: str | None) -> JobRef | None:
        sm = self.sagemaker(region)
        described = self.caller.call(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=plan.job_name,
                                     missing_ok=True, what="look up the tuning job")
        return None if described is None else sweep_ref(plan, described["HyperParameterTuningJobArn"], region)

    def sweep_status(self, ref: JobRef) -> JobStatus:
        sm = self.sagemaker(ref.extra.get("region"))
        d = self.caller.call(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=ref.job_id,
                             what="describe the tuning job")
        native = str(d.get("HyperParameterTuningJobStatus", "InProgress"))
        detail = ", ".join(f"{v} {k}" for k, v in (d.get("TrainingJobStatusCounters") or {}).items() if v)
        reason = d.get("FailureReason") or "the tuning job failed (see `cloudtune status` for its trials)"
        return table_status(SAGEMAKER, native, detail, reason, started_at=epoch_seconds(d.get("CreationTime")),
                            ended_at=epoch_seconds(d.get("HyperParameterTuningEndTime")))

    def sweep_trials(self, ref: JobRef) -> list[Trial]:
        """Every trial of the tuning job (ListTrainingJobsForHyperParameterTuningJob, all pages), in trial order."""
        sm = self.sagemaker(ref.extra.get("region"))
        summaries: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"HyperParameterTuningJobName": ref.job_id, "MaxResults": 100}
        while True:
            page = self.caller.call(sm.list_training_jobs_for_hyper_parameter_tuning_job, **kwargs,
                                    what="list the tuning job's training jobs")
            summaries += page.get("TrainingJobSummaries", [])
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return [trial_of(s, i, ref) for i, s in enumerate(sorted(summaries, key=_created), start=1)]

    def cancel_sweep(self, ref: JobRef) -> None:
        """StopHyperParameterTuningJob: SageMaker stops every trial still running; one that ended is not an error."""
        sm = self.sagemaker(ref.extra.get("region"))
        try:
            self.caller.call(sm.stop_hyper_parameter_tuning_job, HyperParameterTuningJobName=ref.job_id,
                             what="stop the tuning job")
        except CloudError as exc:
            if not re.search(r"ValidationException: .*(already|status|Completed|Failed|Stopped)", exc.message):
                raise


def sweep_ref(plan: "Plan", arn: str, region: str | None, uploaded: int = 0) -> JobRef:
    """The sweep's JobRef: what `sweep_trials` needs later travels in `extra` (the sweep section, to read the tuned
    values back with their types, and the trials' S3 output path, where each trial's model is)."""
    region = region or "us-east-1"
    output = plan.request["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return JobRef(provider="aws", job_id=plan.job_name, native_id=arn, console_url=console_url(region, plan.job_name),
                  model_uri=None, extra={"region": region, "job_name": plan.job_name, "kind": SWEEP_KIND,
                                         "sweep": (plan.spec or {}).get("sweep"), "output_path": output,
                                         "uploaded_bytes": uploaded})


def _created(summary: dict[str, Any]) -> tuple[float, str]:
    return (epoch_seconds(summary.get("CreationTime")) or 0.0, str(summary.get("TrainingJobName")))


def trial_of(summary: dict[str, Any], index: int, ref: JobRef) -> Trial:
    """One TrainingJobSummary as the sweep's Trial."""
    name = str(summary["TrainingJobName"])
    found = TRIAL_NUMBER.search(name)
    final = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    objective = float(final["Value"]) if "Value" in final else None
    state = TRIAL_STATES.get(str(summary.get("TrainingJobStatus")), "pending")
    if state == "cancelled" and objective is not None:
        state = "pruned"  # stopped by the tuner's early stopping, after reporting
    started, ended = epoch_seconds(summary.get("TrainingStartTime")), epoch_seconds(summary.get("TrainingEndTime"))
    output = ref.extra.get("output_path")
    return Trial(number=int(found.group(1)) if found else index,
                 parameters=tuned_values(summary.get("TunedHyperParameters") or {}, ref.extra.get("sweep")),
                 state=state, objective=objective, job_id=name,
                 model_uri=f"{output}/{name}/output/model.tar.gz" if output and state == "succeeded" else None,
                 duration_s=(ended - started) if started is not None and ended is not None else None,
                 note=summary.get("FailureReason") or None)


def tuned_values(tuned: dict[str, str], sweep: dict[str, Any] | None) -> dict[str, Any]:
    """TunedHyperParameters (text under wire names) -> option path -> value of the range's type (SageMaker sends
    every value as text)."""
    if not sweep:
        return dict(tuned)
    return values_from_arguments([f"--{k}={v}" for k, v in tuned.items()], SweepSpec.model_validate(sweep))
