"""The real CLI against the Azure ML workspace fake and Azurite (AZUREML_DEV_URL_MFE on plain http loopback: the
launcher signs with an unsigned emulator token): launch, list, status, logs, download, cancel work as for every
provider; service errors end in one line with the fix, never an azure-core traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.azure.fake_azureml import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE
from tests.azure.planning import write_data
from tests.cloudfaults import FaultServer, assert_one_error, bounded, cli

pytest.importorskip("azure.ai.ml")


def _job(tmp_path: Path, lock_dir: Path, name: str = "az-cli") -> Path:
    write_data(tmp_path)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"""name: {name}
command: python train.py
code: src
inputs: {{train: data/train.jsonl}}
resources: {{accelerator: T4:1}}
providers:
  azure:
    subscription_id: {SUBSCRIPTION}
    resource_group: {RESOURCE_GROUP}
    workspace: {WORKSPACE}
    wheel_locks: {lock_dir}
""")
    return spec


def _env(tmp_path: Path, azurite, mfe: str) -> dict[str, str]:
    (tmp_path / "userhome").mkdir(exist_ok=True)
    return {"CLOUDTUNE_HOME": str(tmp_path / "ct"), "HOME": str(tmp_path / "userhome"), "AZUREML_DEV_URL_MFE": mfe,
            "AZUREML_CURRENT_CLOUD": "AzureCloud", "CLOUDTUNE_AZURE_BLOB_ENDPOINT": azurite.url,
            "CLOUDTUNE_AZURE_STORAGE_KEY": azurite.key, "CLOUDTUNE_RETRY_DEADLINE": "3"}


def test_launch_list_status_logs_download_cancel(azureml_fake, azurite, tmp_path: Path, lock_dir: Path) -> None:
    env = _env(tmp_path, azurite, azureml_fake.url)
    run = cli("launch", str(_job(tmp_path, lock_dir)), "--provider", "azure", "--detach", cwd=tmp_path, env=env)
    assert run.rc == 0, run.err
    job_id = re.search(r"submitted (\S+) \(azure\)", run.out).group(1)
    assert len(azureml_fake.job_puts()) == 1

    listed = cli("list", "--json", cwd=tmp_path, env=env)
    assert listed.rc == 0 and any(j["job_id"] == job_id and j["provider"] == "azure" for j in json.loads(listed.out))

    states = []
    for _ in range(4):  # NotStarted -> Queued -> Running -> Completed: the fake moves one step per GET (list reads too)
        st = cli("status", job_id, "--json", cwd=tmp_path, env=env)
        assert st.rc == 0, st.err
        states.append(json.loads(st.out)["state"])
    assert states[-1] == "succeeded" and set(states) <= {"pending", "running", "succeeded"}
    info = json.loads(st.out)
    assert info["console_url"].startswith("https://ml.azure.com/runs/")

    logs = cli("logs", job_id, cwd=tmp_path, env=env)
    assert logs.rc == 0 and logs.out.strip(), logs.err

    dl = cli("download", job_id, str(tmp_path / "model"), cwd=tmp_path, env=env)
    assert dl.rc == 0, dl.err
    assert (tmp_path / "model" / "model.txt").read_bytes() == azureml_fake.model_files["model.txt"]

    cancel = cli("cancel", job_id, cwd=tmp_path, env=env)  # an ended job: nothing to do, not an error
    assert cancel.rc == 0, cancel.err
    assert not azureml_fake.calls("POST", "/cancel")


def test_cancel_a_running_job(azureml_fake, azurite, tmp_path: Path, lock_dir: Path) -> None:
    env = _env(tmp_path, azurite, azureml_fake.url)
    spec = _job(tmp_path, lock_dir, name="az-cancel")
    run = cli("launch", str(spec), "--provider", "azure", "--detach", cwd=tmp_path, env=env)
    assert run.rc == 0, run.err
    job_id = re.search(r"submitted (\S+) \(azure\)", run.out).group(1)
    [name] = azureml_fake.jobs
    azureml_fake.keep_running(name)
    cancel = cli("cancel", job_id, cwd=tmp_path, env=env)
    assert cancel.rc == 0, cancel.err
    assert len(azureml_fake.calls("POST", "/cancel")) == 1


@pytest.mark.parametrize("mode, rc, needle", [("403", 2, "403"), ("503", 1, "503")])
def test_service_errors_are_one_line(azurite, tmp_path: Path, lock_dir: Path, mode: str, rc: int, needle: str) -> None:
    with FaultServer(mode) as server:
        env = _env(tmp_path, azurite, server.url)
        run = cli("launch", str(_job(tmp_path, lock_dir)), "--provider", "azure", "--detach", cwd=tmp_path, env=env)
    line = assert_one_error(run, rc, "Azure Machine Learning", needle)
    bounded(run)  # the retries the policy allows, read from the run's lines (not its duration)
    assert "Traceback" not in run.err and line


def test_a_sweep_launches_and_status_lists_its_trials(azureml_fake, azurite, tmp_path: Path, lock_dir: Path) -> None:
    spec = _job(tmp_path, lock_dir, name="az-cli-sweep")
    spec.write_text(spec.read_text() + "sweep:\n  parameters: {lr: {loguniform: [1.0e-5, 1.0e-3]}}\n"
                    "  objective: {metric: val_loss}\n  algorithm: random\n  max_trials: 3\n")
    env = _env(tmp_path, azurite, azureml_fake.url)
    run = cli("launch", str(spec), "--provider", "azure", "--detach", cwd=tmp_path, env=env)
    assert run.rc == 0, run.err
    job_id = re.search(r"submitted (\S+) \(azure\)", run.out).group(1)
    [put] = azureml_fake.job_puts()
    assert put.body["properties"]["jobType"] == "Sweep"
    sweep_name = put.path.rsplit("/", 1)[-1]
    azureml_fake.keep_running(sweep_name)
    children = azureml_fake.add_trials(sweep_name, "Completed", "Running", "Failed")
    # what each trial's container logged to the workspace's MLflow (the failed one failed before it logged)
    azureml_fake.log_run(children[0], {"lr": "0.0002"}, {"val_loss": 0.75})
    azureml_fake.log_run(children[1], {"lr": "5e-05"}, {"val_loss": 1.5})

    st = cli("status", job_id, "--json", cwd=tmp_path, env=env)
    assert st.rc == 0, st.err
    info = json.loads(st.out)
    assert [(t["number"], t["state"], t["job_id"], t["parameters"], t["objective"]) for t in info["trials"]] == [
        (0, "succeeded", children[0], {"lr": 0.0002}, 0.75),
        (1, "running", children[1], {"lr": 5e-05}, 1.5),
        (2, "failed", children[2], {}, None)]
    assert "ended before it logged" in info["trials"][2]["note"]  # failed before its container logged
    assert info["trial_counts"] == {"succeeded": 1, "running": 1, "failed": 1}
    assert (info["best_trial"]["job_id"], info["best_trial"]["objective"]) == (children[0], 0.75)
    text = cli("status", job_id, cwd=tmp_path, env=env)
    assert text.rc == 0 and children[1] in text.out and "0.0002" in text.out
    assert f"best:   trial 0 ({children[0]}), val_loss=" in text.out
    assert "note:   trial 2: no MLflow run: the trial ended before it logged its values" in text.out
