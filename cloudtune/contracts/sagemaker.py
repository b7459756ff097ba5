"""Amazon SageMaker training containers (a custom image gets no SM_* variables; the JSON files are the contract).

Sources: SageMaker Developer Guide, "How Amazon SageMaker Provides Training Information" and "Use Checkpoints";
CreateTrainingJob API reference (limits below).
"""

from __future__ import annotations

import json

CONFIG_DIR = "/opt/ml/input/config"
HYPERPARAMETERS = f"{CONFIG_DIR}/hyperparameters.json"
RESOURCE_CONFIG = f"{CONFIG_DIR}/resourceconfig.json"
INPUT_DATA_CONFIG = f"{CONFIG_DIR}/inputdataconfig.json"
CHECKPOINT_CONFIG = f"{CONFIG_DIR}/checkpointconfig.json"  # written when the request sets CheckpointConfig (smdebug reads it)
DATA_DIR = "/opt/ml/input/data"  # one directory per channel
MODEL_DIR = "/opt/ml/model"  # uploaded as <S3OutputPath>/<job>/output/model.tar.gz
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # synced to S3 when CheckpointConfig is set
TENSORBOARD_DIR = "/opt/ml/output/tensorboard"  # synced when TensorBoardOutputConfig is set
FAILURE_FILE = "/opt/ml/output/failure"  # its text becomes FailureReason
CODE_DIR = "/opt/ml/code"
JOB_NAME_VAR = "TRAINING_JOB_NAME"
JOB_ARN_VAR = "TRAINING_JOB_ARN"
JOB_KEY = "cloudtune_job"  # the hyperparameter carrying the runtime job
CODE_CHANNEL = "code"  # the channel carrying the code bundle
WHEELS_CHANNEL = "wheels"
# The training toolkit's script mode (the stock images' entrypoint): it extracts the tarball at
# sagemaker_submit_directory into CODE_DIR and runs `python <sagemaker_program>` there. Values are JSON-encoded,
# as the SageMaker Python SDK sends them.
PROGRAM_KEY = "sagemaker_program"
SUBMIT_DIR_KEY = "sagemaker_submit_directory"
REGION_KEY = "sagemaker_region"
ENTRY_SCRIPT = ".cloudtune/entry.py"  # the channel carrying the stock-image wheelhouse (cloudtune.kit.bootstrap)
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
HYPERPARAMETER_MAX = 2500  # characters per hyperparameter value
ENV_MAX_ENTRIES = 100
ENV_MAX_LEN = 512
MAX_CHANNELS = 20
MAX_RUNTIME_S = 28 * 24 * 3600
NETWORK_INTERFACE = "eth0"  # resourceconfig.json's network_interface_name on SageMaker's training instances
GROUP_NAME = "homogeneousCluster"  # the one instance group of a request without InstanceGroups


def checkpoint_config(s3_uri: str) -> dict[str, str]:
    """The request's `CheckpointConfig`, which SageMaker also writes to the container as CHECKPOINT_CONFIG."""
    return {"S3Uri": s3_uri, "LocalPath": CHECKPOINT_DIR}


def resource_config(current: str, hosts: list[str], instance_type: str) -> dict[str, object]:
    """resourceconfig.json as SageMaker writes it on each host of a homogeneous cluster."""
    return {
        "current_host": current,
        "current_instance_type": instance_type,
        "current_group_name": GROUP_NAME,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": GROUP_NAME, "instance_type": instance_type, "hosts": hosts}],
        "network_interface_name": NETWORK_INTERFACE,
    }


def script_mode_hyperparameters(submit_directory: str, region: str) -> dict[str, str]:
    """The training toolkit's script-mode keys, JSON-encoded as the SageMaker Python SDK sends them: the program
    (cloudtune's entry script) and the tarball it extracts into CODE_DIR."""
    return {PROGRAM_KEY: json.dumps(ENTRY_SCRIPT), SUBMIT_DIR_KEY: json.dumps(submit_directory),
            REGION_KEY: json.dumps(region)}


def channel_dir(name: str) -> str:
    return f"{DATA_DIR}/{name}"


def host(index: int) -> str:
    """The host name of node `index` (0-based): algo-1 .. algo-N."""
    return f"algo-{index + 1}"
