"""Launches that are never lost (issue 19 point 3) on the Vertex AI fake, through a proxy that loses create
answers: a CLI killed while its create is in flight leaves a job `list` shows and `cancel` stops; a create whose
answer is lost and which lands later says "the job may have been created: cloudtune status NAME", and a relaunch
of the same spec adopts that job (found by its launch label) instead of creating a second one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.cloudfaults import CreateStall, cli, kill_during_create, start_cli
from tests.gcp.fake_vertex import FakeVertex
from tests.gcp.test_cli_errors import _env, _job

pytest.importorskip("google.cloud.aiplatform_v1")


def _is_create(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "POST" and path.split("?")[0].endswith("/customJobs")


def test_a_cli_killed_during_the_create_leaves_a_job_list_shows_and_cancel_stops(gcs, tmp_path: Path) -> None:
    with FakeVertex() as vertex, CreateStall(vertex.url, "hold", _is_create) as proxy:
        env = _env(tmp_path, storage=os.environ["STORAGE_EMULATOR_HOST"], vertex=proxy.url)
        proc = start_cli("launch", str(_job(tmp_path)), "--provider", "gcp", "--detach", cwd=tmp_path, env=env)
        kill_during_create(proc, proxy.created)
        [resource] = vertex.jobs
        listed = cli("list", "--json", cwd=tmp_path, env=env)
        assert listed.rc == 0, listed.err
        [row] = json.loads(listed.out)
        assert row["provider"] == "gcp" and row["state"] == "pending", row
        cancel = cli("cancel", row["job_id"], cwd=tmp_path, env=env)
        assert cancel.rc == 0, cancel.err
        assert vertex.jobs[resource]["state"] == "JOB_STATE_CANCELLED"


def test_a_lost_answer_is_said_and_a_relaunch_adopts_the_job(gcs, tmp_path: Path) -> None:
    with FakeVertex() as vertex:
        with CreateStall(vertex.url, "late", _is_create) as proxy:
            env = _env(tmp_path, storage=os.environ["STORAGE_EMULATOR_HOST"], vertex=proxy.url)
            run = cli("launch", str(_job(tmp_path)), "--provider", "gcp", "--detach", cwd=tmp_path, env=env)
            assert run.rc == 1 and "Traceback" not in run.err, run.err
            found = re.search(r"the job may have been created: cloudtune status (\S+)", run.err)
            assert found, run.err
            name = found.group(1)
            assert not vertex.jobs
            proxy.land()
        env = _env(tmp_path, storage=os.environ["STORAGE_EMULATOR_HOST"], vertex=vertex.url)
        again = cli("launch", str(_job(tmp_path)), "--provider", "gcp", "--detach", cwd=tmp_path, env=env)
        assert again.rc == 0, again.err
        assert f"submitted {name} (gcp)" in again.out and "following it" in again.err, (again.out, again.err)
        assert len(vertex.jobs) == 1  # no second job
