"""Azure Machine Learning command jobs.

Sources: Azure ML docs, "Access data in a job" (inputs and outputs mounted and passed as ${{inputs.NAME}} /
${{outputs.NAME}} on the command line) and "Distributed training" (PyTorch distribution sets MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, NODE_RANK, RANK, LOCAL_RANK).
"""

from __future__ import annotations

import json

RUN_ID_VAR = "AZUREML_RUN_ID"
EXPERIMENT_VAR = "AZUREML_EXPERIMENT_NAME"
# Azure ML sets it in every job to the workspace's MLflow endpoint ("Track ML experiments and models with MLflow")
MLFLOW_TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
JOB_JSON_ARG = "--job-json"
INPUT_ARG = "--input"
MODEL_DIR_ARG = "--model-dir"
CHECKPOINT_DIR_ARG = "--checkpoint-dir"
LOG_DIR_ARG = "--log-dir"
MODEL_OUTPUT = "model"
CHECKPOINT_OUTPUT = "checkpoints"
LOG_OUTPUT = "logs"
# The stock-environment command: unpack the bundle ($1) into the working directory (the user's code and
# .cloudtune/), pip-install the carried wheel ($2: pip flags, $3: the wheel's extras, $4: an extra requirement),
# then hand over to cloudtune-run.
BOOTSTRAP = ('set -e; tar -xzf "$1"; python -m pip install -q --disable-pip-version-check --no-cache-dir $2 '
             '"$(ls .cloudtune/*.whl)$3" $4; shift 4; exec cloudtune-run "$@"')


def run_args(job: dict[str, object], inputs: dict[str, str], outputs: dict[str, str]) -> list[str]:
    """cloudtune-run's arguments: `inputs` name -> path (or ${{inputs.NAME}}), `outputs` model/checkpoints/logs."""
    args = [JOB_JSON_ARG, json.dumps(job, sort_keys=True)]
    for name, path in sorted(inputs.items()):
        args += [INPUT_ARG, f"{name}={path}"]
    return args + [MODEL_DIR_ARG, outputs[MODEL_OUTPUT], CHECKPOINT_DIR_ARG, outputs[CHECKPOINT_OUTPUT],
                   LOG_DIR_ARG, outputs[LOG_OUTPUT]]

