"""Case 24 (issue 12 kind 3): the same 3 optimizer steps as 2 nodes x batch 2 and as 1 node x batch 4 report the
same train_loss in metrics.json and in the status file (which `status`, `list` and the model card read)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudtune import api  # noqa: E402
from cloudtune.spec import load_spec  # noqa: E402
from tests.distributed.helpers import max_abs_diff, weights  # noqa: E402
from tests.tiny_models import make_tiny_llama  # noqa: E402

pytestmark = pytest.mark.slow
CASE = Path("/work/shared/cases/24-train-loss-layout")
DATA = [f"the boat number {i % 5} sails north at dawn with {i % 3} crew and {i} nets" for i in range(24)]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("case24")
    if (CASE / "job.yaml").is_file():  # the issue's own inputs where this machine has them
        shutil.copytree(CASE, root, dirs_exist_ok=True)
    else:  # the same spec and a data file of the same shape
        (root / "data").mkdir()
        (root / "data" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DATA))
        (root / "job.yaml").write_text(
            "name: ddp-loss\nresources: {accelerator: cpu, nodes: 2}\ninputs:\n  train: ./data/train.jsonl\n"
            "train:\n  model: ./models/tiny-llama\n  data: {eval: null}\n"
            "  hyperparameters: {max_steps: 3, batch_size: 2, max_seq_len: 64, seed: 1}\n"
            "checkpoint: {every_steps: 1000, keep: 1}\nproviders:\n  local: {emulate: gcp}\n")
    make_tiny_llama(root / "models" / "tiny-llama")  # no dropout: both layouts train the same weights
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        yield root


def _run(root: Path, overrides: list[str]) -> tuple[dict, dict, Path]:
    job = api.launch(load_spec(root / "job.yaml", overrides))
    assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
    model_dir = Path(job.model_uri)
    status = json.loads((model_dir.parent / "checkpoints" / "cloudtune-status.json").read_text())
    return json.loads((model_dir / "metrics.json").read_text()), status, model_dir


def test_train_loss_does_not_depend_on_the_layout(case: Path) -> None:
    two, two_status, two_dir = _run(case, [])
    one, one_status, one_dir = _run(case, ["resources.nodes=1", "train.hyperparameters.batch_size=4"])
    assert two["global_step"] == one["global_step"] == 3
    assert max_abs_diff(weights(two_dir), weights(one_dir)) < 1e-4  # the same training
    print(f"train_loss 2 nodes x batch 2: {two['train_loss']:.6f}; 1 node x batch 4: {one['train_loss']:.6f}")
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    for status, metrics in ((two_status, two), (one_status, one)):
        assert status["metrics"]["train_loss"] == pytest.approx(metrics["train_loss"], rel=1e-9)
    assert f"| train_loss | {two['train_loss']:.4g} |" in (two_dir / "README.md").read_text()  # the model card
