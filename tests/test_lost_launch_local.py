"""A local launch killed between starting the job and recording it (issue 19 point 3): `submit` records the launch
before the launcher starts anything, so the job a killed CLI started is still one `cloudtune list` shows (looked up
by its job directory) and `cloudtune cancel` stops. The state a kill leaves is made here step by step: the record
`submit` writes first, then the launcher's own start, and nothing after it."""

from __future__ import annotations

import json
from pathlib import Path

from cloudtune import api
from cloudtune.local.launcher import LocalLauncher
from cloudtune.store import JobStore
from tests.cloudfaults import cli


def test_a_local_job_started_but_never_recorded_is_listed_and_cancelled(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("import time\nfor _ in range(600):\n    time.sleep(0.2)\n")
    (tmp_path / "job.yaml").write_text("name: lost-local\ncommand: python train.py\ncode: src\n")
    plan = api.plan(tmp_path / "job.yaml", "local")
    JobStore().add(api.launch_record(plan, None))  # what submit writes before the launcher starts the job
    LocalLauncher().submit(plan)  # ... the job starts, and the CLI is killed before it records it
    env = {"CLOUDTUNE_HOME": str(home), "HOME": str(tmp_path)}
    try:
        listed = cli("list", "--json", cwd=tmp_path, env=env)
        assert listed.rc == 0, listed.err
        [row] = json.loads(listed.out)
        assert row["job_id"] == plan.job_name and row["state"] in ("pending", "running"), row
        assert JobStore().get(plan.job_name).extra["launch"] == "confirmed"
    finally:
        cancel = cli("cancel", plan.job_name, cwd=tmp_path, env=env)
    assert cancel.rc == 0, cancel.err
    assert api.get_job(plan.job_name).status() == "cancelled"
