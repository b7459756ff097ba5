"""`cloudtune launch job.yaml --resume JOB` on the local launcher (issue 10): a new job that starts from JOB's newest
checkpoint, linked to it in the store. The job here is a `command` that counts steps in $CLOUDTUNE_CHECKPOINT_DIR
(one file per step, as a checkpoint is written): cancelled mid-way, then resumed, it goes on from where it stopped,
and the stopped job's own checkpoints are left as they were. Refusals are one error with its fix (exit 2)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.errors import InvalidInput
from cloudtune.store import JobStore
from tests.cloudfaults import cli

COUNTER = """import os, sys, time
ckpt = os.environ["CLOUDTUNE_CHECKPOINT_DIR"]
os.makedirs(ckpt, exist_ok=True)
done = sorted(int(n.split("-")[1]) for n in os.listdir(ckpt) if n.startswith("checkpoint-"))
start = done[-1] if done else 0
print(f"starting at step {start}", flush=True)
stop = int(os.environ.get("STOP_AT", "1000000"))
for step in range(start + 1, 41):
    time.sleep(0.05)
    open(os.path.join(ckpt, f"checkpoint-{step}"), "w").write(str(step))
    if step == stop:
        while True:
            time.sleep(0.1)  # wait here to be cancelled
open(os.path.join(os.environ["CLOUDTUNE_MODEL_DIR"], "steps.txt"), "w").write(str(40 - start))
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "count.py").write_text(COUNTER)
    (tmp_path / "job.yaml").write_text("name: counter\ncommand: python count.py\ncode: src\n")
    return tmp_path


def _stopped_job(project: Path):
    job = api.launch(project / "job.yaml", env={"STOP_AT": "12"})
    ckpt = Path(job.record.extra["checkpoint_uri"])
    deadline = time.monotonic() + 60
    while not (ckpt / "checkpoint-12").exists():
        assert time.monotonic() < deadline and job.status() in ("pending", "running"), "\n".join(job.logs())
        time.sleep(0.1)
    job.cancel()
    assert job.wait(timeout=60) == "cancelled"
    return job


def test_resume_starts_from_the_stopped_jobs_newest_checkpoint(project: Path) -> None:
    first = _stopped_job(project)
    before = sorted(p.name for p in Path(first.record.extra["checkpoint_uri"]).iterdir())
    again = api.launch(project / "job.yaml", resume=first.job_id)
    assert again.wait(timeout=120) == "succeeded", "\n".join(again.logs())
    log = "\n".join(again.logs())
    assert "starting at step 12" in log, log
    assert (Path(again.model_uri) / "steps.txt").read_text() == "28"  # 13..40: nothing done twice
    assert sorted(p.name for p in Path(first.record.extra["checkpoint_uri"]).iterdir()) == before  # left as it was
    store = JobStore()
    assert store.get(again.job_id).extra["resumed_from"] == first.job_id
    assert store.get(first.job_id).extra["resumed_by"] == again.job_id


def test_resume_refusals_name_the_job_and_the_fix(project: Path) -> None:
    done = api.launch(project / "job.yaml")
    assert done.wait(timeout=120) == "succeeded"
    with pytest.raises(InvalidInput) as exc:
        api.launch(project / "job.yaml", resume=done.job_id)
    assert "succeeded; there is nothing to resume" in exc.value.message and exc.value.fix
    first = _stopped_job(project)
    cleaned = cli("clean", first.job_id, cwd=project, env={"CLOUDTUNE_HOME": str(project / "home"), "HOME": str(project)})
    assert cleaned.rc == 0 and not Path(first.record.extra["checkpoint_uri"]).exists(), cleaned.err
    with pytest.raises(InvalidInput) as exc:  # it would start from step 0 while the user thinks it resumed
        api.launch(project / "job.yaml", resume=first.job_id, dry_run=True)
    assert "has no checkpoint left" in exc.value.message and "without --resume" in (exc.value.fix or "")
    run = cli("launch", str(project / "job.yaml"), "--resume", "no-such-job", cwd=project,
              env={"CLOUDTUNE_HOME": str(project / "home"), "HOME": str(project)})
    assert run.rc == 2 and "Traceback" not in run.err and "To fix:" in run.err, run.err


def test_the_dry_run_shows_the_resume_and_writes_nothing(project: Path) -> None:
    first = _stopped_job(project)
    db = (project / "home" / "jobs.db").read_bytes()
    run = cli("launch", str(project / "job.yaml"), "--resume", first.job_id, "--dry-run", "--json", cwd=project,
              env={"CLOUDTUNE_HOME": str(project / "home"), "HOME": str(project)})
    assert run.rc == 0, run.err
    plan = json.loads(run.out)
    assert plan["request"]["resume_from"] == first.record.extra["checkpoint_uri"]
    assert any(re.search(rf"resumes from {first.job_id}'s newest checkpoint", n) for n in plan["notes"])
    assert (project / "home" / "jobs.db").read_bytes() == db


def test_a_resume_with_another_model_is_refused_before_anything_runs(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoints of a job trained on one model (or adapter) do not load into another: a resume that changes
    train.model (or task, base_model, lora) is one error at plan time, not a size-mismatch traceback in the job."""
    import yaml

    from cloudtune.store import JobRecord
    from tests.tiny_models import make_tiny_gpt2

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    make_tiny_gpt2(tmp_path / "small")
    make_tiny_gpt2(tmp_path / "other")
    (tmp_path / "train.jsonl").write_text('{"text": "the kettle sings"}\n' * 8)
    spec = {"name": "r", "inputs": {"train": "train.jsonl"}, "train": {"model": "./small", "data": {"eval": None}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    planned = api.plan(tmp_path / "job.yaml", "local")
    checkpoints = tmp_path / "ckpt"
    (checkpoints / "checkpoint-4").mkdir(parents=True)
    JobStore().add(JobRecord(job_id="r-earlier", provider="local", name="r", state="cancelled", created_at=time.time(),
                             updated_at=time.time(), plan=planned.to_dict(), extra={"checkpoint_uri": str(checkpoints)}))
    same = api.launch(tmp_path / "job.yaml", resume="r-earlier", dry_run=True)  # other options may change
    assert same.request["resume_from"] == str(checkpoints)
    spec["train"]["model"] = "./other"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InvalidInput) as exc:
        api.launch(tmp_path / "job.yaml", resume="r-earlier", dry_run=True)
    assert "train.model differs from that job's" in exc.value.message and "without --resume" in (exc.value.fix or "")
    spec["train"].update(model="./small", lora={"r": 4})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InvalidInput, match="train.lora differs"):
        api.launch(tmp_path / "job.yaml", resume="r-earlier", dry_run=True)
