"""Multi-node emulation on the local launcher: 2 nodes x 1 process x batch 4 must train the same model as
1 process x batch 8 (same seed, same data order), every rank must hold the same weights, and only rank 0 writes.

Why this holds: the Trainer draws one seeded permutation (accelerate's SeedableRandomSampler, seeded with
`data_seed`) and shards it batch by batch, so step k sees examples [8k, 8k+8) either way (rank r takes
[8k+4r, 8k+4r+4)); the loss is normalised by the number of label tokens across all ranks
(`average_tokens_across_devices`), so the all-reduced gradient is the gradient of the one big batch; right padding
changes nothing for a causal model. What remains is float summation order (~1e-6 after 8 Adam steps).
The tiny model has dropout off: dropout draws different masks for one batch of 8 than for two batches of 4.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from tests.distributed.helpers import make_deterministic_gpt2, max_abs_diff, weights, write_data, write_spec  # noqa: E402

pytestmark = pytest.mark.slow
HP = {"epochs": 1, "max_steps": 8, "learning_rate": 3e-3, "max_seq_len": 32, "seed": 7}
CHECKPOINT = {"every_steps": 4, "keep": 2}
TOLERANCE = 1e-4  # measured: ~3e-6

@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("multinode")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        yield {"root": root, "home": root / "home", "model": make_deterministic_gpt2(root / "tiny-gpt2-nodrop"),
               "inputs": write_data(root)}


def run(spec: Path) -> api.Job:
    job = api.launch(spec)
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    return job


@pytest.fixture(scope="module")
def reference(env) -> dict:
    """1 node x 1 process x batch 8, with an eval set (in one process the eval before training changes nothing)."""
    spec = write_spec(env["root"] / "ref.yaml", env["model"], env["inputs"], hp=HP | {"batch_size": 8},
                      name="ref", checkpoint=CHECKPOINT)
    job = run(spec)
    metrics = json.loads((Path(job.model_uri) / "metrics.json").read_text())
    return {"weights": weights(Path(job.model_uri)), "metrics": metrics}


@pytest.mark.parametrize("emulate", ["aws", "gcp", "azure"])
def test_two_nodes_match_one_process_with_the_same_global_batch(env, reference, emulate: str) -> None:
    spec = write_spec(env["root"] / f"two-{emulate}.yaml", env["model"], env["inputs"], hp=HP | {"batch_size": 4},
                      name=f"two-{emulate}", resources={"nodes": 2}, checkpoint=CHECKPOINT,
                      providers={"local": {"emulate": emulate}}, eval_set=False)  # no eval set: see test_ranks_agree
    job = run(spec)
    log = "\n".join(job.logs())
    assert log.count("torchrun: 2 node(s) x 1 process(es)") == 2
    model_dir = Path(job.model_uri)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["global_step"] == reference["metrics"]["global_step"] == 8

    diff = max_abs_diff(weights(model_dir), reference["weights"])
    print(f"[{emulate}] 2 nodes x batch 4 vs 1 process x batch 8: max abs weight diff {diff:.3g}")
    assert diff < TOLERANCE

    # only rank 0 writes the model and the checkpoints
    assert len(re.findall(r"\[cloudtune\] model\b.*metrics\.json.* written to ", log)) == 1  # rank 0 only
    job_dir = env["home"] / "jobs" / job.job_id
    if emulate == "aws":  # each host has its own /opt/ml: the second host's must stay empty
        other = job_dir / "hosts/algo-2/opt/ml"
        assert not any((other / "model").iterdir())
        assert not list((other / "checkpoints").glob("checkpoint-*"))
        assert [c.name for c in sorted((model_dir.parent / "checkpoints").glob("checkpoint-*"))] == ["checkpoint-4", "checkpoint-8"]
    else:  # Vertex: one shared bucket mount, one writer
        assert sorted(p.name for p in (model_dir.parent / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8",
                                                                                     "cloudtune-status.json"]  # one writer: rank 0


PROBE = Path(__file__).parent / "rank_probe.py"


@pytest.mark.parametrize("emulate, with_eval", [
    pytest.param("gcp", False, id="gcp-no-eval"),
    pytest.param("aws", True, id="aws-eval-before-train"),
])
def test_ranks_agree(env, reference, emulate: str, with_eval: bool) -> None:
    """A command job running the same recipe saves every rank's weights (tests/distributed/rank_probe.py)."""
    name = f"probe-{emulate}-{int(with_eval)}"
    code = env["root"] / name / "code"
    code.mkdir(parents=True)
    shutil.copy(PROBE, code / "rank_probe.py")
    (code / "train.json").write_text(json.dumps({
        "train": {"model": str(env["model"]), "data": {"train": "train", "eval": "eval" if with_eval else None},
                  "hyperparameters": HP | {"batch_size": 4}},
        "checkpoint": CHECKPOINT,
    }))
    out = env["root"] / name / "ranks"
    spec = env["root"] / name / "job.yaml"
    import yaml

    spec.write_text(yaml.safe_dump({
        "name": name, "inputs": env["inputs"], "command": f"{sys.executable} rank_probe.py", "code": str(code),
        "env": {"PROBE_OUT": str(out)},
        "resources": {"nodes": 2}, "checkpoint": CHECKPOINT, "providers": {"local": {"emulate": emulate}},
    }))
    run(spec)
    info = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    ranks = [weights_file(out / f"rank-{r}.safetensors") for r in (0, 1)]
    between = max_abs_diff(ranks[0], ranks[1])
    ref = {k: v for k, v in reference["weights"].items() if k in ranks[0]}
    vs_ref = max_abs_diff(ranks[0], ref)
    print(f"[{name}] rank 0 vs rank 1: {between:.3g}; rank 0 vs 1 process x batch 8: {vs_ref:.3g}; {info}")
    assert [i["global_step"] for i in info] == [8, 8]
    assert between == 0.0, "ranks hold different weights"
    assert [i["ddp_wrapped"] for i in info] == ["DistributedDataParallel"] * 2
    assert vs_ref < TOLERANCE


def weights_file(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
