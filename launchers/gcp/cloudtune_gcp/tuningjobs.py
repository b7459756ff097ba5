"""A Vertex AI sweep after planning: create the HyperparameterTuningJob once, read its state and trials, cancel it.

Mixed into `GcpLauncher` (which dispatches to it for a plan or job whose request is a tuning job); uses its retry
caller and its lazily made JobServiceClient. The trials are the tuning job's own `trials` field: each trial's
parameters (protobuf Values: Vertex AI returns an integer parameter as a double, `16.0`) back to the sweep's option
paths with their own types, its state, and its final measurement's value of the objective metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudtune.kit.base import table_status
from cloudtune.kit.cost import epoch_seconds
from cloudtune.kit.states import VERTEX
from cloudtune.launcher import JobRef, JobStatus
from cloudtune.spec.sweep import SweepSpec, format_value, values_from_arguments
from cloudtune.sweeptrials import Trial
from cloudtune.states import JobState

if TYPE_CHECKING:
    from cloudtune.plan import Plan

SWEEP_KIND = "sweep"  # JobRef.extra["kind"] of a sweep (cloudtune.sweep.KIND)
BODY_KEY = "hyperparameterTuningJob"
CALL_TIMEOUT_S = 60.0
# aiplatform_v1.Trial.State -> the sweep's trial state (INFEASIBLE: the trial failed or reported no objective)
TRIAL_STATES = {"REQUESTED": "pending", "ACTIVE": "running", "STOPPING": "running", "SUCCEEDED": "succeeded",
                "INFEASIBLE": "failed", "STATE_UNSPECIFIED": "pending"}


def is_tuning(request: dict[str, Any]) -> bool:
    return BODY_KEY in request


def console_url(project: str, region: str, job_id: str) -> str:
    return (f"https://console.cloud.google.com/vertex-ai/locations/{region}/training/{job_id}"
            f"?project={project}&view=hyperparameter-tuning")


def label_finder(list_jobs: Any, parent: str, label: str, value: str) -> Any:
    """A call that returns the resource name of the first job under `parent` labelled `label=value` (a lost create's
    job, found by the launch's own label), or None; `list_jobs` is the JobServiceClient's list method of the kind."""
    def find() -> str | None:
        pager = list_jobs(request={"parent": parent, "filter": f'labels.{label}="{value}"'}, retry=None,
                          timeout=CALL_TIMEOUT_S)
        names = [job.name for job in pager]
        return names[0] if names else None

    return find


class TuningJobs:
    """The sweep half of GcpLauncher (see the module docstring)."""

    caller: Any

    def job_client(self, region: str) -> Any:  # pragma: no cover - GcpLauncher's
        raise NotImplementedError

    def create_sweep(self, plan: "Plan", region: str, launch_label: str) -> JobRef:
        """create_hyperparameter_tuning_job once; a retry first adopts the one this launch made (its launch label)."""
        from google.cloud.aiplatform_v1 import HyperparameterTuningJob

        import json

        client, job = self.job_client(region), HyperparameterTuningJob.from_json(json.dumps(plan.request[BODY_KEY]))
        name = self.caller.create_once(lambda: client.create_hyperparameter_tuning_job(
            parent=plan.request["parent"], hyperparameter_tuning_job=job, retry=None, timeout=CALL_TIMEOUT_S).name,
            self._sweep_finder(plan, region, launch_label), what="create the hyperparameter tuning job")
        return sweep_ref(plan, name)

    def _sweep_finder(self, plan: "Plan", region: str, launch_label: str) -> Any:
        return label_finder(self.job_client(region).list_hyperparameter_tuning_jobs, plan.request["parent"],
                            launch_label, plan.request[BODY_KEY]["labels"][launch_label])

    def find_sweep(self, plan: "Plan", region: str, launch_label: str) -> JobRef | None:
        name = self.caller.call(self._sweep_finder(plan, region, launch_label), what="look up the tuning job")
        return None if name is None else sweep_ref(plan, name)

    def _get_sweep(self, ref: JobRef) -> Any:
        client = self.job_client(ref.extra["region"])
        return self.caller.call(client.get_hyperparameter_tuning_job, name=ref.native_id, retry=None,
                                timeout=CALL_TIMEOUT_S, what="get the hyperparameter tuning job")

    def sweep_status(self, ref: JobRef) -> JobStatus:
        job = self._get_sweep(ref)
        native = job.state.name
        done = sum(1 for t in job.trials if t.state.name in ("SUCCEEDED", "INFEASIBLE"))
        detail = f"{native.removeprefix('JOB_STATE_').lower()}; {done} of {job.max_trial_count} trials ended"
        reason = (job.error.message if job.error and job.error.message
                  else "the tuning job failed (see `cloudtune status` for its trials)")
        return table_status(VERTEX, native, detail, reason, started_at=epoch_seconds(getattr(job, "start_time", None)),
                            ended_at=epoch_seconds(getattr(job, "end_time", None)))

    def sweep_trials(self, ref: JobRef) -> list[Trial]:
        """The tuning job's trials, in trial order."""
        job = self._get_sweep(ref)
        return [trial_of(t, ref) for t in sorted(job.trials, key=lambda t: int(t.id) if str(t.id).isdigit() else 0)]

    def cancel_sweep(self, ref: JobRef) -> None:
        """CancelHyperparameterTuningJob: Vertex AI cancels every running trial; an ended job is no error."""
        if JobState(self.sweep_status(ref).state).terminal:
            return
        client = self.job_client(ref.extra["region"])
        self.caller.call(client.cancel_hyperparameter_tuning_job, name=ref.native_id, retry=None,
                         timeout=CALL_TIMEOUT_S, what="cancel the hyperparameter tuning job")


def sweep_ref(plan: "Plan", name: str) -> JobRef:
    """The sweep's JobRef; `extra` keeps the sweep section (to read values back with their types) and the trials'
    base output directory (each trial's model is <base>/<trial id>/model/)."""
    settings = (plan.spec.get("providers") or {}).get("gcp") or {}
    project, region = settings["project"], settings["region"]
    base = plan.request[BODY_KEY]["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"].rstrip("/")
    return JobRef(provider="gcp", job_id=plan.job_name, native_id=name,
                  console_url=console_url(project, region, name.rsplit("/", 1)[-1]), model_uri=None,
                  extra={"project": project, "region": region, "job_name": plan.job_name, "kind": SWEEP_KIND,
                         "sweep": (plan.spec or {}).get("sweep"), "output_base": base})


def trial_of(trial: Any, ref: JobRef) -> Trial:
    """One aiplatform_v1.Trial as the sweep's Trial."""
    sweep = SweepSpec.model_validate(ref.extra["sweep"])
    metric = sweep.objective.metric
    final = {m.metric_id: m.value for m in trial.final_measurement.metrics} if trial.final_measurement else {}
    state = TRIAL_STATES.get(trial.state.name, "pending")
    start, end = epoch_seconds(getattr(trial, "start_time", None)), epoch_seconds(getattr(trial, "end_time", None))
    intermediate = [[float(m.step_count), v.value] for m in trial.measurements for v in m.metrics if v.metric_id == metric]
    base = ref.extra.get("output_base")
    return Trial(number=int(trial.id) if str(trial.id).isdigit() else 0,
                 parameters=tuned_values(trial.parameters, sweep), state=state,
                 objective=float(final[metric]) if metric in final else None,
                 job_id=trial.custom_job or f"{ref.native_id}/trials/{trial.id}", intermediate=intermediate,
                 model_uri=f"{base}/{trial.id}/model/" if base and state == "succeeded" else None,
                 duration_s=(end - start) if start is not None and end is not None else None,
                 note=trial.infeasible_reason or None)


def tuned_values(parameters: Any, sweep: Any) -> dict[str, Any]:
    """Trial parameters (parameterId = wire name, a protobuf Value: numbers as doubles) -> option path -> value of
    the range's own type (`16.0` -> 16 for an int range or an integer choice)."""
    arguments = []
    for p in parameters:
        value = p.value
        arguments.append(f"--{p.parameter_id}={format_value(value) if isinstance(value, (bool, int, float)) else value}")
    return values_from_arguments(arguments, sweep)
