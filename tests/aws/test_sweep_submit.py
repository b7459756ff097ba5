"""A SageMaker sweep through the real boto3 call path: moto's server creates and describes the tuning job; the loopback
fake in front of it (tests/aws/tuning_fake.py) answers what moto lacks: the tuning job's training jobs and stopping it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloudtune.kit.retry import RetryPolicy
from cloudtune.sweeptrials import best, ranked
from tests.aws.conftest import SUFFIX, clients, settings, spec_from, write_data
from tests.aws.tuning_fake import TuningFake, summary

from cloudtune_aws.launcher import LOG_GROUP, AwsLauncher

pytest.importorskip("boto3")
BUCKET = "moto-sweep"


def _sweep_spec(tmp_path: Path):
    write_data(tmp_path)
    return spec_from({"name": "moto-sweep", "resources": {"accelerator": "L4:1"},
                      "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                      "train": {"model": "./model", "lora": {}, "data": {"eval": "eval"},
                                "hyperparameters": {"eval_every": 10}},
                      "sweep": {"parameters": {"learning_rate": {"loguniform": [1e-5, 1e-3]},
                                               "lora.r": {"choice": [8, 16, 32]}, "batch_size": {"int": [4, 16]},
                                               "lora.merge": {"choice": [True, False]}},
                                "max_trials": 4, "parallel_trials": 2}}, tmp_path)


def test_sweep_round_trip(moto_server: str, tmp_path: Path, lock_dir: Path) -> None:
    with TuningFake(moto_server) as fake:
        c = clients(fake.url, max_attempts=3)
        c["s3_client"].create_bucket(Bucket=BUCKET)
        launcher = AwsLauncher(**c, home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01),
                               lock_dir=lock_dir)
        plan = launcher.plan(_sweep_spec(tmp_path), settings(bucket=BUCKET), suffix=SUFFIX)
        ref = launcher.submit(plan)
        name = plan.request["HyperParameterTuningJobName"]
        assert ref.job_id == name and ref.extra["kind"] == "sweep" and ref.native_id.endswith(f"/{name}")
        created = [body for target, body in fake.calls if target == "CreateHyperParameterTuningJob"]
        assert created == [plan.request]  # the plan's request, sent as it is (local inputs already in S3 URIs)
        keys = {o["Key"] for o in c["s3_client"].list_objects_v2(Bucket=BUCKET)["Contents"]}
        assert any(k.startswith("bundles/") for k in keys)  # the trials' code channel was uploaded

        assert launcher.status(ref).state == "succeeded"  # moto ends a tuning job at once
        assert launcher.find(plan) == ref.__class__(**{**ref.__dict__, "extra": {**ref.extra, "uploaded_bytes": 0}})

        fake.status[name] = "InProgress"
        fake.trials[name] = [
            summary(name, 1, {"hyperparameters__learning_rate": "0.0003", "lora__r": "16",
                              "hyperparameters__batch_size": "8", "lora__merge": "true"}, "Completed", 1.25),
            summary(name, 2, {"hyperparameters__learning_rate": "1.2e-05", "lora__r": "8",
                              "hyperparameters__batch_size": "16", "lora__merge": "false"}, "Completed", 2.5),
            summary(name, 3, {"hyperparameters__learning_rate": "0.0009", "lora__r": "32",
                              "hyperparameters__batch_size": "4", "lora__merge": "false"}, "Stopped", 3.1),
            summary(name, 4, {"hyperparameters__learning_rate": "5e-05", "lora__r": "16",
                              "hyperparameters__batch_size": "12", "lora__merge": "true"}, "InProgress", None),
        ]
        trials = launcher.sweep_trials(ref)
        assert [t.number for t in trials] == [1, 2, 3, 4]
        assert trials[0].parameters == {"hyperparameters.learning_rate": 0.0003, "lora.r": 16,
                                        "hyperparameters.batch_size": 8, "lora.merge": True}
        assert type(trials[0].parameters["lora.r"]) is int and type(trials[0].parameters["lora.merge"]) is bool
        assert [t.state for t in trials] == ["succeeded", "succeeded", "pruned", "running"]
        assert trials[0].objective == 1.25 and trials[3].objective is None and trials[0].duration_s == 600
        assert trials[0].model_uri == f"s3://{BUCKET}/output/{trials[0].job_id}/output/model.tar.gz"
        assert trials[2].model_uri is None
        assert [t.number for t in ranked(trials, "minimize")] == [1, 2, 3, 4]
        assert best(trials, "minimize").job_id == trials[0].job_id

        # `logs` of a sweep: its trials' streams, each line led by its trial's job name
        logs = c["logs_client"]
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        now_ms = int(time.time() * 1000)  # CloudWatch Logs refuses events older than 14 days
        for number, (text, at) in enumerate([("trial one starts", now_ms), ("trial two starts", now_ms + 1)], start=1):
            stream = f"{trials[number - 1].job_id}/algo-1-1765000000"
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[{"timestamp": at, "message": text}])
        assert list(launcher.logs(ref)) == [f"[{trials[0].job_id}] trial one starts",
                                            f"[{trials[1].job_id}] trial two starts"]

        assert launcher.status(ref).state == "running"
        launcher.cancel(ref)
        assert ("StopHyperParameterTuningJob", {"HyperParameterTuningJobName": name}) in fake.calls
        assert fake.status[name] == "Stopping" and launcher.status(ref).native == "Stopping"
        fake.status[name] = "Stopped"
        launcher.cancel(ref)  # stopping a stopped tuning job is no error for `cancel`
        assert launcher.status(ref).state == "cancelled"


def _api_sweep(c: dict, tmp_path: Path, lock_dir: Path, bucket: str):
    """A launcher on the fakes' clients `c` and the sweep spec for the Python API, its outputs in `bucket`."""
    c["s3_client"].create_bucket(Bucket=bucket)
    launcher = AwsLauncher(**c, home=tmp_path / "home", policy=RetryPolicy(base_s=0.01, cap_s=0.01), lock_dir=lock_dir)
    spec = _sweep_spec(tmp_path)
    return launcher, spec.model_copy(update={"providers": spec.providers.model_copy(
        update={"aws": settings(bucket=bucket)})})


def test_status_of_a_cloud_sweep_lists_its_trials(moto_server: str, tmp_path: Path, lock_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Python API (what `cloudtune status SWEEP --json` prints): the sweep's record is a sweep, and its
    trials come back from SageMaker best first, each with parameters, state and objective."""
    from cloudtune import api

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct-home"))
    with TuningFake(moto_server) as fake:
        c = clients(fake.url, max_attempts=3)
        launcher, spec = _api_sweep(c, tmp_path, lock_dir, BUCKET + "-api")
        job = api.launch(spec, provider="aws", launcher=launcher)
        assert job.is_sweep
        name = job.job_id
        fake.status[name] = "InProgress"
        fake.trials[name] = [
            summary(name, 1, {"hyperparameters__learning_rate": "0.0003", "lora__r": "16",
                              "hyperparameters__batch_size": "8", "lora__merge": "true"}, "Completed", 2.5),
            summary(name, 2, {"hyperparameters__learning_rate": "1e-05", "lora__r": "8",
                              "hyperparameters__batch_size": "16", "lora__merge": "false"}, "Completed", 1.75),
            summary(name, 3, {"hyperparameters__learning_rate": "0.0001", "lora__r": "32",
                              "hyperparameters__batch_size": "4", "lora__merge": "false"}, "Failed", None),
        ]
        info = api.get_job(name, launcher=launcher).info()
        assert info["state"] == "running" and info["kind"] == "sweep"
        assert [t["number"] for t in info["trials"]] == [2, 1, 3]  # best first: minimize eval_loss
        assert info["trials"][0]["parameters"] == {"hyperparameters.learning_rate": 1e-05, "lora.r": 8,
                                                   "hyperparameters.batch_size": 16, "lora.merge": False}
        assert info["trials"][0]["state"] == "succeeded" and info["trials"][0]["objective"] == 1.75
        assert info["best_trial"]["number"] == 2 and info["trial_counts"] == {"succeeded": 2, "failed": 1}
        api.get_job(name, launcher=launcher).cancel()
        assert fake.status[name] == "Stopping"


def test_download_of_a_sagemaker_sweep_fetches_its_best_trials_model(moto_server: str, tmp_path: Path,
                                                                     lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cloudtune download SWEEP`: the best trial's model.tar.gz, unpacked, not another trial's."""
    import io
    import json
    import tarfile

    from cloudtune import api

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "ct-home"))
    with TuningFake(moto_server) as fake:
        c = clients(fake.url, max_attempts=3)
        launcher, spec = _api_sweep(c, tmp_path, lock_dir, BUCKET + "-dl")
        name = api.launch(spec, provider="aws", launcher=launcher).job_id
        fake.status[name] = "Completed"
        fake.trials[name] = [
            summary(name, 1, {"hyperparameters__learning_rate": "0.0003", "lora__r": "16",
                              "hyperparameters__batch_size": "8", "lora__merge": "true"}, "Completed", 2.5),
            summary(name, 2, {"hyperparameters__learning_rate": "1e-05", "lora__r": "8",
                              "hyperparameters__batch_size": "16", "lora__merge": "false"}, "Completed", 1.75),
        ]
        for trial in api.get_job(name, launcher=launcher).trials():
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w:gz") as tar:
                data = json.dumps({"trial": trial.number}).encode()
                info = tarfile.TarInfo("config.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            bucket, key = trial.model_uri.removeprefix("s3://").split("/", 1)
            c["s3_client"].put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
        target = api.get_job(name, launcher=launcher).download(tmp_path / "best")
    assert json.loads((target / "config.json").read_text()) == {"trial": 2}  # trial 2 has the lower eval_loss
