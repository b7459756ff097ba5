"""Job naming: the spec's name plus the per-launch suffix, checked against each cloud's rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudtune.errors import UnsupportedSpec


@dataclass(frozen=True)
class NameRule:
    """A cloud's rule for the name it is given: `max_len` characters matching `pattern` in full."""

    service: str
    what: str
    max_len: int
    pattern: str
    description: str

    def check(self, name: str, suffix: str) -> str:
        """`name-suffix` when it fits the rule; UnsupportedSpec naming the rule and the fix otherwise."""
        full = f"{name}-{suffix}"
        if len(full) > self.max_len or not re.fullmatch(self.pattern, full):
            room = self.max_len - len(suffix) - 1
            raise UnsupportedSpec(
                f"job name {full!r} does not fit {self.service}'s {self.what} ({self.description})",
                fix=f"shorten `name` to at most {room} characters so that name + the {len(suffix)}-character suffix fit",
            )
        return full


# CreateTrainingJob.TrainingJobName (botocore shape TrainingJobName): 1-63, pattern below.
SAGEMAKER_JOB = NameRule("SageMaker", "training job names", 63, r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
                         "1-63 letters, digits and '-', no leading or trailing '-'")
# Vertex CustomJob.displayName: up to 128 UTF-8 characters. Vertex assigns the job id itself.
VERTEX_DISPLAY = NameRule("Vertex AI", "display names", 128, r".{1,128}", "at most 128 characters")
# Vertex/GCP labels: keys and values up to 63 characters of lowercase letters, digits, '_' and '-'.
GCP_LABEL_VALUE = NameRule("Google Cloud", "label values", 63, r"[a-z0-9_-]{0,63}",
                           "at most 63 lowercase letters, digits, '_' and '-'")
# Azure ML job names (the job's id in the workspace; ARM `jobs/{id}`): 1-255 letters, digits, '-' and '_',
# starting with a letter or digit (Azure ML REST API, Jobs - Create Or Update, parameter `id`).
AZUREML_JOB = NameRule("Azure Machine Learning", "job names", 255, r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}",
                       "1-255 letters, digits, '-' and '_', starting with a letter or digit")
