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


def entry_script(pip_flags: str, requirement_suffix: str) -> str:
    """The script-mode program on the stock image: install the carried cloudtune wheel from the wheels channel
    (no index), then become cloudtune-run. Standard library only (it runs before anything is installed)."""
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir", *pip_flags.split()]
    lines = [
        '"""cloudtune entry point on the stock SageMaker images (run by the training toolkit in script mode)."""',
        "import glob, os, subprocess, sys",
        "here = os.path.dirname(os.path.abspath(__file__))",
        "wheel = glob.glob(os.path.join(here, 'cloudtune-*.whl'))[0]",
        f"subprocess.run([sys.executable, *{pip!r}, wheel + {requirement_suffix!r}], check=True)",
        "os.execvp('cloudtune-run', ['cloudtune-run'])",
    ]
    return "\n".join(lines) + "\n"


# What the training toolkit does in script mode once it has extracted sagemaker_submit_directory into CODE_DIR,
# as a shell program run in CODE_DIR ($1: sagemaker_program; the rest: the hyperparameters as `--key value`).
# Source: aws/sagemaker-training-toolkit, entry_point.install and process.ProcessRunner._create_command: a code
# dir with a setup.py is a PYTHON_PACKAGE (`pip install . -r requirements.txt`, then `python -m <program>`);
# otherwise a .py program gets `pip install -r requirements.txt` when that file exists (from PyPI: it fails
# under network isolation or in a VPC without a route out), then `python <program>`.
SCRIPT_MODE = (
    'set -e; p="$1"; shift; '
    'if [ -f setup.py ]; then r=""; if [ -f requirements.txt ]; then r="-r requirements.txt"; fi; '
    'python -m pip install . $r; exec python -m "${p%.py}" "$@"; fi; '
    'if [ -f requirements.txt ]; then python -m pip install -r requirements.txt; fi; '
    'exec python "$p" "$@"'
)
