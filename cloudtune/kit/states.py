"""Each cloud's table from its native job states onto cloudtune's (`cloudtune.states.JobState`, where the one
definition of terminal is), and how an unknown native state is read."""

from __future__ import annotations

from collections.abc import Mapping

from cloudtune.states import JobState


def map_native(table: Mapping[str, JobState], native: str, *, default: JobState = JobState.RUNNING) -> JobState:
    """The JobState for a native state name. An unknown name (a state added to the service after this table was
    written) maps to `default`, never to a terminal state, so `wait()` keeps polling rather than stopping early."""
    return table.get(native, default)


# SageMaker DescribeTrainingJob.TrainingJobStatus (botocore service model, shape TrainingJobStatus).
SAGEMAKER: dict[str, JobState] = {
    "InProgress": JobState.RUNNING,
    "Completed": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "Stopping": JobState.RUNNING,
    "Stopped": JobState.CANCELLED,
    "Deleting": JobState.CANCELLED,
}

# Vertex AI google.cloud.aiplatform.v1.JobState (aiplatform_v1.types.JobState).
VERTEX: dict[str, JobState] = {
    "JOB_STATE_UNSPECIFIED": JobState.PENDING,
    "JOB_STATE_QUEUED": JobState.PENDING,
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_CANCELLING": JobState.RUNNING,
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
    "JOB_STATE_PAUSED": JobState.PENDING,
    "JOB_STATE_EXPIRED": JobState.FAILED,
    "JOB_STATE_UPDATING": JobState.RUNNING,
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobState.FAILED,
}

# Azure ML job status (azure-ai-ml's JobStatus enum, ARM models). The SDK counts NotResponding (no heartbeat) and
# Paused among the terminal states (RunHistoryConstants.TERMINAL_STATUSES); a command job never resumes from them.
AZUREML: dict[str, JobState] = {
    "NotStarted": JobState.PENDING,
    "Starting": JobState.PENDING,
    "Provisioning": JobState.PENDING,
    "Preparing": JobState.PENDING,
    "Queued": JobState.PENDING,
    "Running": JobState.RUNNING,
    "Finalizing": JobState.RUNNING,
    "CancelRequested": JobState.RUNNING,
    "Completed": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "Canceled": JobState.CANCELLED,
    "NotResponding": JobState.FAILED,
    "Paused": JobState.FAILED,
    "Unknown": JobState.RUNNING,
}
