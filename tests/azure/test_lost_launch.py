"""Launches that are never lost (issue 19 point 3) on the Azure ML fake, through a proxy that loses create answers:
a CLI killed while its job PUT is in flight leaves a job `list` shows and `cancel` stops; a create whose answer is
lost and which lands later says "the job may have been created: cloudtune status NAME", and a relaunch of the same
spec adopts that job (found by its name) instead of creating a second one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.azure.test_cli import _env, _job
from tests.cloudfaults import CreateStall, cli, kill_during_create, start_cli

pytest.importorskip("azure.ai.ml")


def _is_create(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "PUT" and "/jobs/" in path


def test_a_cli_killed_during_the_create_leaves_a_job_list_shows_and_cancel_stops(azureml_fake, azurite, tmp_path: Path,
                                                                                lock_dir: Path) -> None:
    with CreateStall(azureml_fake.url, "hold", _is_create) as proxy:
        env = _env(tmp_path, azurite, proxy.url)
        proc = start_cli("launch", str(_job(tmp_path, lock_dir, name="az-lost")), "--provider", "azure", "--detach",
                         cwd=tmp_path, env=env)
        kill_during_create(proc, proxy.created)
        [name] = azureml_fake.jobs
        azureml_fake.keep_running(name)
        listed = cli("list", "--json", cwd=tmp_path, env=env)
        assert listed.rc == 0, listed.err
        [row] = json.loads(listed.out)
        assert row["job_id"] == name and row["state"] in ("pending", "running"), row
        cancel = cli("cancel", name, cwd=tmp_path, env=env)
        assert cancel.rc == 0, cancel.err
    assert len(azureml_fake.calls("POST", "/cancel")) == 1


def test_a_lost_answer_is_said_and_a_relaunch_adopts_the_job(azureml_fake, azurite, tmp_path: Path, lock_dir: Path) -> None:
    spec = _job(tmp_path, lock_dir, name="az-late")
    with CreateStall(azureml_fake.url, "late", _is_create) as proxy:
        run = cli("launch", str(spec), "--provider", "azure", "--detach", cwd=tmp_path, env=_env(tmp_path, azurite, proxy.url))
        assert run.rc == 1 and "Traceback" not in run.err, run.err
        found = re.search(r"the job may have been created: cloudtune status (\S+)", run.err)
        assert found, run.err
        assert not azureml_fake.jobs
        proxy.land()
    env = _env(tmp_path, azurite, azureml_fake.url)
    again = cli("launch", str(spec), "--provider", "azure", "--detach", cwd=tmp_path, env=env)
    assert again.rc == 0, again.err
    assert f"submitted {found.group(1)} (azure)" in again.out and "following it" in again.err, (again.out, again.err)
    assert list(azureml_fake.jobs) == [found.group(1)]  # no second job
