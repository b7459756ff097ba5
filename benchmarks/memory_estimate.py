"""The memory estimate (cloudtune.memory) against what a training step really holds, measured on CPU.

    python benchmarks/memory_estimate.py            # the table quoted in the README (Memory)
    python benchmarks/memory_estimate.py --json

For tiny models built from a config (GPT-2 and Llama shapes; full fine-tune and LoRA; fp32 and bf16 autocast;
with and without gradient checkpointing) it trains a few AdamW steps and measures, without CUDA:

* weights, gradients, optimizer states: the bytes of the distinct tensors after a step (parameters, `.grad`,
  `optimizer.state`), storages counted once;
* activations: the bytes of the distinct storages autograd saves for the backward pass during one forward
  (`torch.autograd.graph.saved_tensors_hooks`), parameters excluded. With gradient checkpointing, the recomputed
  layer's tensors are saved again inside the backward: the peak is the forward's saved bytes plus the largest
  recompute, measured the same way (with the reentrant checkpoint, whose tensors pass through these hooks).

Each figure is compared with `cloudtune.memory.estimate`; the run fails when a component is off by more than
TOLERANCE. The GPU path (CUDA kernels, bf16 weights, bitsandbytes) is measured by `--cuda` on a machine with a GPU
(torch.cuda.max_memory_allocated over a step).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 0.25
"""Largest relative error allowed for activations; weights, gradients and optimizer states must be within 2%."""


@dataclass(frozen=True)
class Case:
    name: str
    arch: str  # gpt2 | llama
    lora: bool
    precision: str  # fp32 | bf16
    checkpointing: bool
    batch: int = 4
    seq: int = 128


CASES = [
    Case("llama full fp32", "llama", False, "fp32", False),
    Case("llama full bf16-autocast", "llama", False, "bf16", False),
    Case("llama full fp32 ckpt", "llama", False, "fp32", True),
    Case("llama lora fp32", "llama", True, "fp32", False),
    Case("llama lora bf16-model", "llama", True, "bf16", False),
    Case("gpt2 full fp32", "gpt2", False, "fp32", False),
    Case("gpt2 full bf16-autocast", "gpt2", False, "bf16", False),
    Case("llama lora fp32 ckpt", "llama", True, "fp32", True),
    Case("llama lora bf16-model ckpt", "llama", True, "bf16", True),
    Case("gpt2 lora fp32", "gpt2", True, "fp32", False),
    Case("gpt2 full fp32 ckpt", "gpt2", False, "fp32", True),
    Case("gpt2 lora fp32 ckpt", "gpt2", True, "fp32", True),
]


def build(arch: str, path: Path) -> Path:
    """A tiny model (4 layers, hidden 128) saved to `path`, built from a config (nothing downloaded)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_positions=256, n_embd=128, n_layer=4, n_head=4,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=352,
                                             max_position_embeddings=256))
    model.save_pretrained(str(path))
    return path


def _storages(tensors: Any) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t is not None}


class SavedBytes:
    """The distinct storages autograd saves while active (parameters excluded), and the largest set saved during
    one backward recompute (gradient checkpointing)."""

    def __init__(self, params: set[int]) -> None:
        self.params, self.seen, self.in_backward, self.recompute = params, {}, False, {}
        self.alive: list[Any] = []

    def pack(self, t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.params:
            if self.in_backward:  # kept alive until the step ends, so that no later layer reuses its address
                self.recompute[storage.data_ptr()] = storage.nbytes()
                self.alive.append(storage)
            else:
                self.seen[storage.data_ptr()] = storage.nbytes()
        return t

    @staticmethod
    def unpack(t: Any) -> Any:
        return t


def measure(case: Case, model_dir: Path) -> dict[str, int]:
    """Train 3 steps; return the measured bytes of weights, gradients, optimizer, activations."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if case.lora and case.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    if case.checkpointing:
        # the reentrant form saves each layer's input through save_for_backward and recomputes under our hooks (the
        # non-reentrant form installs hooks of its own, which hide its tensors); both hold the same tensors
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    if case.lora:
        from cloudtune.train.lora import apply_lora
        from cloudtune.spec import LoraSpec

        model = apply_lora(model, LoraSpec(r=8), "causal-lm", case.checkpointing)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, 1000, (case.batch, case.seq), generator=torch.Generator().manual_seed(0))
    autocast = case.precision == "bf16" and not case.lora
    saved = SavedBytes({p.untyped_storage().data_ptr() for p in model.parameters()})
    peak_recompute = 0
    for _ in range(3):
        saved.seen, saved.recompute, saved.alive = {}, {}, []
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, labels=ids).loss
            saved.in_backward = True
            loss.backward()
            saved.in_backward = False
        peak_recompute = max(peak_recompute, sum(saved.recompute.values()) // max(model.config.num_hidden_layers, 1))
        opt.step()
        opt.zero_grad(set_to_none=False)
    states = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {"weights": sum(_storages(model.parameters()).values()),
            "gradients": sum(_storages(p.grad for p in trainable).values()),
            "optimizer": sum(_storages(states).values()),
            "activations": sum(saved.seen.values()) + peak_recompute}


def estimated(case: Case, model_dir: Path) -> dict[str, int]:
    from cloudtune.memory import Setup, estimate, local_model_facts

    facts = local_model_facts(model_dir)
    assert facts is not None
    setup = Setup(lora_r=8 if case.lora else None, lora_dropout=0.05 if case.lora else 0.0, precision=case.precision,
                  batch_size=case.batch, seq_len=case.seq, gradient_checkpointing=case.checkpointing)
    est = estimate(facts, setup)
    return {"weights": est.weights, "gradients": est.gradients, "optimizer": est.optimizer, "activations": est.activations}


def run(cases: list[Case], workdir: Path) -> list[dict[str, Any]]:
    """One row per case: measured and estimated bytes and the relative error of each component."""
    rows = []
    dirs = {arch: build(arch, workdir / arch) for arch in sorted({c.arch for c in cases})}
    for case in cases:
        got, est = measure(case, dirs[case.arch]), estimated(case, dirs[case.arch])
        errors = {k: (est[k] - got[k]) / got[k] if got[k] else 0.0 for k in got}
        rows.append({"case": case.name, "measured": got, "estimated": est, "error": errors})
    return rows


def failures(rows: list[dict[str, Any]]) -> list[str]:
    """The components outside their tolerance, as text."""
    bad = []
    for row in rows:
        for key, err in row["error"].items():
            limit = TOLERANCE if key == "activations" else 0.02
            if abs(err) > limit:
                bad.append(f"{row['case']}: {key} off by {100 * err:+.0f}% (allowed {100 * limit:.0f}%)")
    return bad


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'case':<26} {'weights':>16} {'gradients':>16} {'optimizer':>16} {'activations (MB)':>22}"
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = [f"{row['measured'][k] / 1e6:6.2f}/{row['estimated'][k] / 1e6:6.2f}" for k in
                 ("weights", "gradients", "optimizer")]
        act = f"{row['measured']['activations'] / 1e6:6.1f}/{row['estimated']['activations'] / 1e6:6.1f} " \
              f"({100 * row['error']['activations']:+.0f}%)"
        lines.append(f"{row['case']:<26} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {act:>22}")
    return "\n".join(lines) + "\n(measured/estimated, MB; batch 4 x 128 tokens, 4 layers, hidden 128)"


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(CASES, Path(tmp))
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    bad = failures(rows)
    for line in bad:
        print("FAIL", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
