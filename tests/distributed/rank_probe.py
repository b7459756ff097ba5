"""A `command:` job that runs the built-in causal-LM recipe and saves every rank's final weights.

The recipe writes the model from rank 0 only, so a `train:` job cannot show that the ranks agree. This probe runs the
same `run_causal_lm` under the same torchrun launch (cloudtune-run starts it for a command job as well), builds its
RuntimeContext from the neutral CLOUDTUNE_* variables, and saves each rank's unwrapped model to
`$PROBE_OUT/rank-<RANK>.safetensors`. `train.json` next to this file holds the TrainSpec and CheckpointSpec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cloudtune.runtime.types import RuntimeContext
from cloudtune.spec import CheckpointSpec, TrainSpec
from cloudtune.train import causal_lm
from cloudtune.train.trainer import CloudtuneTrainer

OUT = Path(os.environ["PROBE_OUT"])
RANK = int(os.environ.get("RANK", "0"))


def context() -> RuntimeContext:
    env = os.environ
    inputs = {k[len("CLOUDTUNE_INPUT_"):].lower(): Path(v) for k, v in env.items() if k.startswith("CLOUDTUNE_INPUT_")}
    nodes = int(env["CLOUDTUNE_NUM_NODES"])
    return RuntimeContext(
        provider=env["CLOUDTUNE_PROVIDER"], job_name=env["CLOUDTUNE_JOB_NAME"], inputs=inputs,
        model_dir=Path(env["CLOUDTUNE_MODEL_DIR"]), checkpoint_dir=Path(env["CLOUDTUNE_CHECKPOINT_DIR"]),
        log_dir=Path(env["CLOUDTUNE_LOG_DIR"]), code_dir=Path.cwd(), node_rank=int(env["CLOUDTUNE_NODE_RANK"]),
        num_nodes=nodes, processes_per_node=int(env.get("WORLD_SIZE", "1")) // nodes,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=int(env.get("MASTER_PORT", "29500")), hosts=(),
    )


def instrument() -> None:
    """After train(), each rank saves its model's weights and what wrapped it (the trainer class, patched where it is
    defined, so the recipe's own flow runs it)."""
    original = CloudtuneTrainer.train

    def train(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        from safetensors.torch import save_file

        model = self.accelerator.unwrap_model(self.model)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        OUT.mkdir(parents=True, exist_ok=True)
        save_file(state, str(OUT / f"rank-{RANK}.safetensors"))
        (OUT / f"rank-{RANK}.json").write_text(json.dumps({
            "ddp_wrapped": type(self.model_wrapped).__name__, "global_step": self.state.global_step}))
        return out

    CloudtuneTrainer.train = train


def main() -> None:
    config = json.loads((Path(__file__).parent / "train.json").read_text())
    instrument()
    causal_lm.run_causal_lm(context(), TrainSpec.model_validate(config["train"]),
                            CheckpointSpec.model_validate(config["checkpoint"]))


if __name__ == "__main__":
    main()
