"""A Vertex AI sweep through the real SDK call path (JobServiceClient over REST) against the loopback Vertex fake and
gcp-storage-emulator: create, status, the trials read back (integers that Vertex AI returns as doubles come back as
ints), cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.kit.retry import RetryPolicy
from cloudtune.sweeptrials import best
from tests.gcp.conftest import BUCKET, SUFFIX, job_client, logging_client, settings, spec_from, write_data
from tests.gcp.fake_vertex import FakeVertex

from cloudtune_gcp.launcher import GcpLauncher

pytest.importorskip("google.cloud.aiplatform_v1")
FAST = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, deadline_s=10)


def _proto(body: dict):
    from google.cloud.aiplatform_v1.types import HyperparameterTuningJob

    return HyperparameterTuningJob.from_json(json.dumps(body))


def _trial(number: int, state: str, lr: float, r: float, batch: float, loss: float | None) -> dict:
    trial = {"id": str(number), "state": state,
             "parameters": [{"parameterId": "hyperparameters__batch_size", "value": batch},
                            {"parameterId": "hyperparameters__learning_rate", "value": lr},
                            {"parameterId": "lora__r", "value": r}],
             "startTime": "2026-01-01T00:00:00Z", "customJob": f"projects/1/locations/us-central1/customJobs/9{number}"}
    if loss is not None:
        trial["measurements"] = [{"stepCount": "10", "metrics": [{"metricId": "eval_loss", "value": loss + 0.5}]}]
        trial["finalMeasurement"] = {"stepCount": "20", "metrics": [{"metricId": "eval_loss", "value": loss}]}
        trial["endTime"] = "2026-01-01T00:10:00Z"
    return trial


def _sweep_spec(tmp_path: Path, max_trials: int):
    write_data(tmp_path)
    return spec_from({"name": "gcp-sweep", "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                      "resources": {"accelerator": "L4:1"},
                      "train": {"model": "gpt2", "lora": {}, "data": {"eval": "eval"}, "hyperparameters": {"eval_every": 10}},
                      "sweep": {"parameters": {"learning_rate": {"loguniform": [1e-5, 1e-3]},
                                               "lora.r": {"choice": [8, 16, 32]}, "batch_size": {"int": [4, 16]}},
                                "max_trials": max_trials}}, tmp_path)


def test_sweep_round_trip(gcs, tmp_path: Path, lock_dir: Path) -> None:
    with FakeVertex() as fake:
        launcher = GcpLauncher(job_client(fake.url), gcs, logging_client(fake.url), policy=FAST, poll_s=0.01,
                               home=tmp_path / "home", lock_dir=lock_dir)
        plan = launcher.plan(_sweep_spec(tmp_path, max_trials=3), settings(), suffix=SUFFIX)
        ref = launcher.submit(plan)
        [(_, path, body)] = [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/hyperparameterTuningJobs")]
        assert path == f"/v1/{plan.request['parent']}/hyperparameterTuningJobs"
        # the body Vertex AI received is the planned one (the REST transport writes enums as numbers: compare as protos)
        assert _proto(body) == _proto(plan.request["hyperparameterTuningJob"])
        assert ref.extra["kind"] == "sweep" and "/hyperparameterTuningJobs/" in ref.native_id
        assert any(b.name.startswith("ct/bundles/") for b in gcs.list_blobs(BUCKET))
        assert launcher.find(plan).native_id == ref.native_id  # found again by its launch label

        assert launcher.status(ref).state == "pending"
        fake.set_state(ref.native_id, "JOB_STATE_RUNNING")
        fake.add_trial(ref.native_id, _trial(1, "SUCCEEDED", 0.0003, 16.0, 8.0, 1.5))
        fake.add_trial(ref.native_id, _trial(2, "SUCCEEDED", 1e-5, 32.0, 16.0, 2.25))
        fake.add_trial(ref.native_id, _trial(3, "ACTIVE", 0.0001, 8.0, 4.0, None))
        status = launcher.status(ref)
        assert status.state == "running" and "2 of 3 trials ended" in status.detail
        trials = launcher.sweep_trials(ref)
        assert [t.number for t in trials] == [1, 2, 3]
        assert trials[0].parameters == {"hyperparameters.batch_size": 8, "hyperparameters.learning_rate": 0.0003,
                                        "lora.r": 16}
        assert type(trials[0].parameters["hyperparameters.batch_size"]) is int  # sent back by Vertex AI as 8.0
        assert type(trials[0].parameters["lora.r"]) is int
        assert [t.state for t in trials] == ["succeeded", "succeeded", "running"]
        assert trials[0].objective == 1.5 and trials[0].intermediate == [[10.0, 2.0]] and trials[0].duration_s == 600
        base = plan.request["hyperparameterTuningJob"]["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
        assert trials[0].model_uri == f"{base}/1/model/" and trials[2].model_uri is None
        assert best(trials, "minimize").number == 1

        launcher.cancel(ref)
        assert launcher.status(ref).state == "cancelled"
        assert [r for r in fake.requests if r[1].endswith(":cancel")] == [("POST", f"/v1/{ref.native_id}:cancel", {})]
        launcher.cancel(ref)  # an ended tuning job: no second cancel call
        assert len([r for r in fake.requests if r[1].endswith(":cancel")]) == 1


def test_download_of_a_vertex_sweep_fetches_its_best_trials_model(gcs, tmp_path: Path, lock_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`cloudtune download SWEEP`: the model under the best trial's output dir (`<base>/<trial id>/model/`, as
    Vertex AI lays out a tuning job's trials), not another trial's."""
    from cloudtune import api
    from cloudtune.store import JobStore

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    with FakeVertex() as fake:
        launcher = GcpLauncher(job_client(fake.url), gcs, logging_client(fake.url), policy=FAST, poll_s=0.01,
                               home=tmp_path / "home", lock_dir=lock_dir)
        plan = launcher.plan(_sweep_spec(tmp_path, max_trials=2), settings(), suffix=SUFFIX)
        sweep = api.submit(plan, launcher=launcher, store=JobStore())
        fake.add_trial(sweep.ref().native_id, _trial(1, "SUCCEEDED", 0.0003, 16.0, 8.0, 2.5))
        fake.add_trial(sweep.ref().native_id, _trial(2, "SUCCEEDED", 1e-5, 32.0, 16.0, 1.25))
        fake.set_state(sweep.ref().native_id, "JOB_STATE_SUCCEEDED")
        base = plan.request["hyperparameterTuningJob"]["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
        prefix = base.removeprefix(f"gs://{BUCKET}/")
        for trial in (1, 2):
            gcs.bucket(BUCKET).blob(f"{prefix}/{trial}/model/config.json").upload_from_string(f'{{"trial": {trial}}}')
        target = api.get_job(sweep.job_id, launcher=launcher).download(tmp_path / "best")
    assert json.loads((target / "config.json").read_text()) == {"trial": 2}  # trial 2 has the lower eval_loss
