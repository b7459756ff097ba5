"""One restart story on SageMaker (issue 10 point 4), told the same way by the request, the plan note and the local
emulation: RetryStrategy re-runs only SageMaker's own InternalServerError (its API reference), never the container's
exit (AlgorithmError), so bad input (65) and divergence (66) are never run again; a Spot interruption is resumed by
managed spot training within MaxWaitTimeInSeconds. The local supervisor's rule (cloudtune.runtime.exitcodes, run end
to end by tests/test_local_exit_classes.py) agrees on those classes."""

from __future__ import annotations

from pathlib import Path

from cloudtune.runtime.exitcodes import EXIT_DIVERGED, EXIT_INPUT, EXIT_PREEMPTED, classify, retried
from tests.aws.conftest import SUFFIX, settings, spec_from, write_data
from tests.aws.test_plan import S3_IN

from cloudtune_aws.launcher import AwsLauncher


def test_the_multi_node_spot_spec_with_retries_compiles_and_all_three_agree(tmp_path: Path) -> None:
    write_data(tmp_path)
    spec = spec_from({"name": "spot", "resources": {"accelerator": "H100:8", "nodes": 2, "spot": True},
                      "inputs": S3_IN, "train": {"model": "gpt2"}, "retries": 2}, tmp_path)
    plan = AwsLauncher(home=tmp_path / "home").plan(spec, settings(), suffix=SUFFIX)
    request = plan.request
    # the request: SageMaker's retries (InternalServerError only) and managed spot with its wait limit
    assert request["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert request["EnableManagedSpotTraining"] is True and request["ResourceConfig"]["InstanceCount"] == 2
    stop = request["StoppingCondition"]
    assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"]
    assert request["CheckpointConfig"]["S3Uri"].startswith("s3://")  # where a resumed attempt finds its checkpoints
    # the plan note tells the same story
    [note] = [n for n in plan.notes if n.startswith("retries 2:")]
    assert "never after the container's exit" in note and "bad input (65), divergence (66)" in note
    assert "Spot interruption (preemption) is resumed by SageMaker itself" in note
    # the local emulation's rule: never bad input or divergence, always a preemption
    assert not retried(classify(EXIT_INPUT)) and not retried(classify(EXIT_DIVERGED))
    assert retried(classify(EXIT_PREEMPTED))
