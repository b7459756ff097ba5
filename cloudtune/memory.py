"""Training memory per GPU, estimated from the model's shape and the training setup (pure arithmetic).

No torch, no transformers: the dry run prints this estimate and refuses a job clearly beyond its GPU with it
(`cloudtune.memory_check`), and the recipe asks `wants_gradient_checkpointing` at run time.

Sources of the accounting (all figures in bytes, per training process = per GPU):

* Weights, gradients and optimizer states: the standard mixed-precision AdamW accounting, 16 bytes per trained
  parameter (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", §3.1:
  2 + 2 + 12 in fp16 with fp32 master weights; in PyTorch AMP, as the Trainer runs it, 4 fp32 weights + 4 fp32
  gradients + 8 for Adam's two fp32 moments). A frozen parameter costs only its weight: 4 bytes (fp32), 2 (bf16),
  or 4.127 bits under NF4 with double quantization (Dettmers et al. 2023, "QLoRA", §3: 4 bits + 0.127 bits of
  quantization constants at block size 64). LoRA adapters are kept in fp32 by peft (autocast_adapter_dtype) and
  trained with AdamW (16 bytes each).
* DistributedDataParallel keeps a second copy of the trained gradients in its all-reduce buckets
  (torch.nn.parallel.DistributedDataParallel, gradient_as_bucket_view=False); FSDP full shard divides weights,
  gradients and optimizer states by the number of processes and holds two gathered decoder layers (the one
  computed and the one prefetched) plus the unsharded root (embeddings, head) at a time (Zhao et al. 2023,
  "PyTorch FSDP", §3).
* Activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", §4.1:
  per layer s*b*h*(34 + 5*a*s/h) bytes with 16-bit activations when the attention matrix is materialised, where the
  34 counts the tensors autograd keeps (QKV input, Q, K, V, attention output, MLP input, the two 4h MLP tensors,
  LayerNorm inputs, dropout masks). `_layer_bytes` spells that sum out for the model at hand: the MLP width and
  gating (SwiGLU keeps 4 tensors of width I, GELU 2), grouped-query K/V, rotary embeddings (pre-rotation Q/K
  copies), RMSNorm in fp32 as transformers computes it, LoRA dropout copies; the 5*a*s/h attention-matrix term only
  for eager attention (SDPA/flash attention keeps the output and a log-sum-exp, not the s x s matrix). Full
  recomputation (gradient checkpointing) keeps each layer's input (their "2*s*b*h*L") plus one layer recomputed at
  a time. The causal-LM head keeps the fp32 log-softmax of the logits (4*s*b*V bytes).
  Checked against the tensors autograd saves for tiny models on CPU: benchmarks/memory_estimate.py.

Not counted: the CUDA context and kernels' workspace (~0.5-1 GB per GPU) and allocator fragmentation; the plan-time
refusal allows `MARGIN` over the device's memory for the error of the estimate, and the run-time decision keeps
`HEADROOM` free for what is not counted.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

GB = 1_000_000_000
"""Accelerator memory in the catalog is in GB as vendors state it (an 80 GB H100 has 80e9 bytes, roughly)."""
GiB = 1024 ** 3
MARGIN = 0.20
"""The plan refuses an estimate over the device memory x (1 + MARGIN): only jobs clearly beyond their GPU."""
HEADROOM = 0.10
"""At run time the estimate must fit in the device memory x (1 - HEADROOM) (CUDA context, fragmentation)."""
NF4_BYTES = 4.127 / 8
"""Bytes per parameter of an NF4 weight with double quantization (QLoRA paper, §3)."""
ADAM_STATE_BYTES = 8
"""AdamW's first and second moments, fp32 each (torch.optim.AdamW, the Trainer's adamw_torch)."""

EMBEDDING_NAMES = frozenset({"wte", "wpe", "embed_tokens", "embed_positions", "word_embeddings", "position_embeddings",
                             "token_type_embeddings", "shared", "embed_in", "tok_embeddings"})
HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier", "output"})
GATED_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "gemma", "gemma2", "gemma3_text",
                         "olmo", "olmo2", "granite", "smollm3", "phi3", "cohere", "deepseek_v3", "starcoder2_gated"})
ROTARY_TYPES = GATED_TYPES | {"gpt_neox", "falcon", "phi", "gptj", "starcoder2", "modernbert"}
PYTHON_GELU = frozenset({"gelu_new", "gelu_fast", "gelu_pytorch_tanh_python"})
"""Activations transformers computes in Python ops: autograd keeps about four more tensors of width I."""


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs to know of a model. Counts are parameters; `linears` lists every Linear-like module
    of the decoder layers as (leaf name, in features, out features), one entry per module."""

    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    model_type: str
    linears: tuple[tuple[str, int, int], ...]
    source: str
    gated_mlp: bool = False
    rotary: bool = False
    rms_norm: bool = False
    python_gelu: bool = False
    eager_attention: bool = False
    dropout: bool = False
    frozen_params: int = 0  # never trained, even in a full fine-tune (MusicGen's text encoder and codec)
    codebooks: int = 1  # output heads over `vocab` per position (MusicGen: one per codebook)
    cross_attention: bool = False  # each layer also attends to encoder states (keeps its input, Q and output)

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' Linear modules: what bitsandbytes quantizes (the head stays unquantized)."""
        return sum(i * o for _, i, o in self.linears)

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (its Linear weights; norms and biases are negligible)."""
        return self.linear_params // max(self.layers, 1)


@dataclass(frozen=True)
class Setup:
    """How one process trains. `lora_r` None = full fine-tune; `precision` is resolved (bf16, fp16 or fp32);
    `batch_size` is per process; `world_size` counts all processes (GPUs) of the job."""

    task: str = "causal-lm"
    lora_r: int | None = None
    lora_targets: tuple[str, ...] | Literal["auto"] = "auto"
    lora_dropout: float = 0.05
    quantize: str | None = None
    precision: str = "bf16"
    batch_size: int = 8
    seq_len: int = 128
    gradient_checkpointing: bool = False
    packing: bool = False
    distributed: str = "ddp"
    world_size: int = 1
    reference_copy: bool = False
    """Preference tuning (dpo, kto) with a frozen reference copy in memory: TRL's ref_model, loaded like the policy."""

    @property
    def weight_bytes(self) -> float:
        """Bytes per frozen base weight as the model is loaded (cloudtune.train.loading): bf16 for LoRA trained in
        bf16, else fp32; NF4 for the quantized part under QLoRA (see `_weights`)."""
        return 2 if self.lora_r is not None and self.precision == "bf16" else 4

    @property
    def activation_bytes(self) -> int:
        """Bytes per activation element: 2 under bf16/fp16 autocast or a bf16 model, 4 in fp32."""
        return 4 if self.precision == "fp32" and self.quantize is None else 2

    @property
    def residual_bytes(self) -> int:
        """Bytes per element of the residual stream: fp32 unless the weights themselves are 16-bit (under autocast
        an fp32 model adds fp32 residuals; prepare_model_for_kbit_training keeps norms in fp32)."""
        return 2 if self.weight_bytes == 2 else 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU. `activations` is for the setup's gradient checkpointing; both variants are given."""

    weights: int
    gradients: int
    optimizer: int
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    gradient_checkpointing: bool
    trainable_params: int

    @property
    def activations(self) -> int:
        return self.activations_with_checkpointing if self.gradient_checkpointing else self.activations_without_checkpointing

    @property
    def states(self) -> int:
        """Weights + gradients + optimizer states (what does not depend on the batch)."""
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.states + self.activations

    def total_for(self, checkpointing: bool) -> int:
        return self.states + (self.activations_with_checkpointing if checkpointing else self.activations_without_checkpointing)

    def to_dict(self) -> dict[str, int | bool]:
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations, "total": self.total,
                "activations_without_checkpointing": self.activations_without_checkpointing,
                "activations_with_checkpointing": self.activations_with_checkpointing,
                "gradient_checkpointing": self.gradient_checkpointing, "trainable_params": self.trainable_params}


# ----------------------------------------------------------------------------------------------- model facts
def _first(config: dict[str, Any], *keys: str) -> Any:
    return next((config[k] for k in keys if isinstance(config.get(k), int) and not isinstance(config.get(k), bool)), None)


def _shape(config: dict[str, Any]) -> dict[str, int] | None:
    """hidden, layers, heads, kv_heads, head_dim, intermediate, vocab from a config.json dict, or None."""
    hidden = _first(config, "hidden_size", "n_embd", "d_model", "dim")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
    vocab = _first(config, "vocab_size")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, heads, vocab)):
        return None
    kv = _first(config, "num_key_value_heads", "n_head_kv", "num_kv_heads") or (1 if config.get("multi_query") else heads)
    head_dim = _first(config, "head_dim") or hidden // heads
    inter = _first(config, "intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "ffn_hidden_size") or 4 * hidden
    return {"hidden": hidden, "layers": layers, "heads": heads, "kv_heads": kv, "head_dim": head_dim,
            "intermediate": inter, "vocab": vocab}


def _layer_linears(model_type: str, dims: dict[str, int], gated: bool) -> list[tuple[str, int, int]]:
    """One decoder layer's Linear modules (name, in, out) under the architecture's module names."""
    h, i = dims["hidden"], dims["intermediate"]
    q, kv = dims["heads"] * dims["head_dim"], dims["kv_heads"] * dims["head_dim"]
    if model_type in ("gpt2", "gpt_bigcode"):
        return [("c_attn", h, q + 2 * kv), ("c_proj", q, h), ("c_fc", h, i), ("c_proj", i, h)]
    if model_type in ("gpt_neox", "falcon", "bloom"):
        return [("query_key_value", h, q + 2 * kv), ("dense", q, h), ("dense_h_to_4h", h, i), ("dense_4h_to_h", i, h)]
    if model_type == "phi3":
        return [("qkv_proj", h, q + 2 * kv), ("o_proj", q, h), ("gate_up_proj", h, 2 * i), ("down_proj", i, h)]
    attn = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h)]
    mlp = [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)] if gated else [("fc1", h, i), ("fc2", i, h)]
    return attn + mlp


def facts_from_config(config: dict[str, Any], source: str,
                      tensors: dict[str, tuple[int, ...]] | None = None) -> ModelFacts | None:
    """ModelFacts from a config.json dict; `tensors` (name -> shape, from the weight files' headers) makes the
    parameter count and the Linear list exact. None when the config lacks the basic sizes."""
    for nested in ("text_config", "llm_config", "language_config"):
        if isinstance(config.get(nested), dict) and _shape(config) is None:
            return facts_from_config(config[nested], source, tensors)
    dims = _shape(config)
    if dims is None:
        return None
    model_type = str(config.get("model_type") or "")
    act = str(config.get("hidden_act") or config.get("activation_function") or "")
    gated = model_type in GATED_TYPES or (act in ("silu", "swiglu") and model_type not in ("gpt_neox", "phi"))
    linears, params = _linears_and_params(config, dims, model_type, gated, tensors)
    dropouts = [config.get(k) for k in ("attn_pdrop", "resid_pdrop", "attention_dropout", "hidden_dropout",
                                        "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout")]
    return ModelFacts(
        params=params, linears=tuple(linears), model_type=model_type, source=source, gated_mlp=gated,
        rotary=model_type in ROTARY_TYPES, rms_norm="rms_norm_eps" in config, python_gelu=act in PYTHON_GELU,
        eager_attention=config.get("_attn_implementation", config.get("attn_implementation")) == "eager",
        dropout=any(isinstance(d, (int, float)) and d > 0 for d in dropouts), **dims)


def _linears_and_params(config: dict[str, Any], dims: dict[str, int], model_type: str, gated: bool,
                        tensors: dict[str, tuple[int, ...]] | None) -> tuple[list[tuple[str, int, int]], int]:
    """(the Linear modules of the decoder layers, the total parameter count): exact from the tensor shapes when
    given, else computed from the config (embeddings, learned positions, an untied head, layers, norms)."""
    if tensors:
        linears = [(name.split(".")[-2], shape[1], shape[0]) for name, shape in sorted(tensors.items())
                   if len(shape) == 2 and name.endswith(".weight") and len(name.split(".")) >= 2
                   and name.split(".")[-2] not in EMBEDDING_NAMES | HEAD_NAMES]
        return linears, sum(math.prod(shape) for shape in tensors.values())
    h, layers, vocab = dims["hidden"], dims["layers"], dims["vocab"]
    linears = _layer_linears(model_type, dims, gated) * layers
    positions = _first(config, "n_positions") if model_type in ("gpt2", "gpt_bigcode") else 0
    tied = bool(config.get("tie_word_embeddings", True))
    params = vocab * h * (1 if tied else 2) + (positions or 0) * h + sum(i * o for _, i, o in linears) + (2 * layers + 1) * h
    return linears, params


def safetensors_shapes(model_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """name -> shape of every tensor in the model dir's safetensors files, read from their JSON headers only (the
    format: 8 bytes little-endian header length, then the header). None when there are none or one is unreadable."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (model_dir / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            return None
        shapes: dict[str, tuple[int, ...]] = {}
        for name in files:
            with open(model_dir / name, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > 100_000_000:
                    return None
                header = json.loads(fh.read(length))
            shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        return shapes
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def local_model_facts(model_dir: Path, shown: str | None = None) -> ModelFacts | None:
    """ModelFacts of a saved model directory (its config.json; the safetensors headers when present), or None."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    tensors = safetensors_shapes(Path(model_dir))
    how = "config.json and weight headers" if tensors else "config.json"
    return facts_from_config(config, f"{how} of {shown or model_dir}", tensors)


def _llama(h: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool, model_type: str = "llama") -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab, "tie_word_embeddings": tied,
            "hidden_act": "silu", "rms_norm_eps": 1e-5}


KNOWN_MODELS: dict[str, dict[str, Any]] = {
    # the config.json sizes of common hub models (as published on the Hugging Face Hub), for hub ids not cached here
    "gpt2": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
             "activation_function": "gelu_new", "resid_pdrop": 0.1, "attn_pdrop": 0.1},
    "meta-llama/Llama-2-7b-hf": _llama(4096, 32, 32, 32, 11008, 32000, False),
    "meta-llama/Llama-2-13b-hf": _llama(5120, 40, 40, 40, 13824, 32000, False),
    "meta-llama/Meta-Llama-3-8B": _llama(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Llama-3.1-8B": _llama(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Llama-3.2-1B": _llama(2048, 16, 32, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-3B": _llama(3072, 28, 24, 8, 8192, 128256, True),
    "mistralai/Mistral-7B-v0.1": _llama(4096, 32, 32, 8, 14336, 32000, False, "mistral"),
    "Qwen/Qwen2.5-0.5B": _llama(896, 24, 14, 2, 4864, 151936, True, "qwen2"),
    "Qwen/Qwen2.5-1.5B": _llama(1536, 28, 12, 2, 8960, 151936, True, "qwen2"),
    "Qwen/Qwen2.5-7B": _llama(3584, 28, 28, 4, 18944, 152064, False, "qwen2"),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": _llama(2048, 22, 32, 4, 5632, 32000, False),
}
_SAME_SIZE = {"-instruct": "", "-chat-hf": "-hf", "-instruct-v0.2": "-v0.1", "-instruct-v0.3": "-v0.1", "-v0.3": "-v0.1"}


def _known(model_id: str) -> dict[str, Any] | None:
    """The table's config for a hub id, case-insensitively; instruct/chat variants share their base's sizes."""
    table = {k.lower(): v for k, v in KNOWN_MODELS.items()}
    key = model_id.lower()
    if key in table:
        return table[key]
    for suffix, base in _SAME_SIZE.items():
        if key.endswith(suffix) and key[: -len(suffix)] + base in table:
            return table[key[: -len(suffix)] + base]
    return None


def hub_cache_dir() -> Path:
    """Where huggingface_hub caches models: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def hub_model_facts(model_id: str) -> ModelFacts | None:
    """ModelFacts of a hub id: its config.json in the local hub cache when there, else the KNOWN_MODELS table, else
    None (the estimate is then unknown and nothing is refused). Reads files only; no network."""
    snapshots = hub_cache_dir() / ("models--" + model_id.replace("/", "--")) / "snapshots"
    try:
        cached = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    except OSError:
        cached = []
    if cached:
        facts = local_model_facts(cached[-1].parent, model_id)
        if facts is not None:
            return replace(facts, source=f"config.json of {model_id} in the hub cache")
    config = _known(model_id)
    return facts_from_config(config, f"cloudtune's table of {model_id}") if config else None


# ----------------------------------------------------------------------------------------------- the estimate
def lora_params(facts: ModelFacts, r: int, targets: tuple[str, ...] | Literal["auto"]) -> int:
    """Adapter parameters: r * (in + out) for every targeted Linear (LoRA's A is r x in, B is out x r; Hu et al.
    2021). `auto` targets every Linear of the decoder layers, as cloudtune's auto lists do for known models."""
    chosen = [(i, o) for name, i, o in facts.linears if targets == "auto" or name in targets]
    return sum(r * (i + o) for i, o in chosen)


def _quantized_share(facts: ModelFacts) -> int:
    """Parameters bitsandbytes quantizes: the decoder layers' Linear weights (embeddings, norms, head stay)."""
    return min(facts.linear_params, facts.params)


def _weights(facts: ModelFacts, setup: Setup, adapter: int) -> float:
    """Weight bytes of the whole model on one process, before any sharding."""
    if setup.lora_r is None:
        return 4 * facts.params  # fp32 master weights (AMP autocasts them per op)
    if setup.quantize == "4bit":  # prepare_model_for_kbit_training casts what is not 4-bit (norms, embeddings, head) to fp32
        quantized = _quantized_share(facts)
        return NF4_BYTES * quantized + 4 * (facts.params - quantized) + 4 * adapter
    return setup.weight_bytes * facts.params + 4 * adapter


def estimate(facts: ModelFacts, setup: Setup) -> MemoryEstimate:
    """The memory one process (one GPU) needs to train `facts`' model as `setup` says; see the module docstring."""
    trained = facts.params - facts.frozen_params if setup.lora_r is None else lora_params(facts, setup.lora_r, setup.lora_targets)
    weights = _weights(facts, setup, 0 if setup.lora_r is None else trained)
    gradients = 4.0 * trained
    optimizer = float(ADAM_STATE_BYTES * trained)
    n = setup.world_size
    if setup.reference_copy:  # a second, frozen model: its weights only (no gradients, no optimizer state)
        weights += setup.weight_bytes * facts.params
    if n > 1 and setup.distributed in ("deepspeed-zero2", "deepspeed-zero3"):
        # ZeRO (Rajbhandari et al. 2020): stage 2 shards gradients and optimizer state, stage 3 the weights too
        gradients, optimizer = gradients / n, optimizer / n
        if setup.distributed == "deepspeed-zero3":
            weights = weights / n
    elif n > 1 and setup.distributed == "fsdp":
        unit = 4 if setup.lora_r is None else setup.weight_bytes
        gathered = unit * (2 * facts.layer_params + max(facts.params - facts.linear_params, 0))
        weights, gradients, optimizer = weights / n + gathered, gradients / n, optimizer / n
    elif n > 1:
        gradients *= 2  # DDP's all-reduce buckets hold a second copy
    return MemoryEstimate(
        weights=int(weights), gradients=int(gradients), optimizer=int(optimizer),
        activations_without_checkpointing=activation_bytes(facts, setup, checkpointing=False),
        activations_with_checkpointing=activation_bytes(facts, setup, checkpointing=True),
        gradient_checkpointing=setup.gradient_checkpointing, trainable_params=trained)


def _layer_bytes(facts: ModelFacts, setup: Setup) -> int:
    """Bytes autograd keeps per token for one decoder layer (Korthikanti et al. §4.1's sum, term by term):
    attention (input, Q, K, V, output; pre-rotary Q/K copies; the s x s probabilities only when eager), MLP (input;
    2 tensors of width I, 4 when gated; Python GELUs keep 4 more), two norms (input and, for RMSNorm in fp32, its
    normalised output), dropout masks (1 byte), and each LoRA dropout's copy of its module's input."""
    a, res = setup.activation_bytes, setup.residual_bytes
    h, i = facts.hidden, facts.intermediate
    q, kv = facts.heads * facts.head_dim, facts.kv_heads * facts.head_dim
    attn = a * (h + 2 * q + 2 * kv) + (a * (q + kv) if facts.rotary else 0) + (a * (h + 2 * q) if facts.cross_attention else 0)
    if facts.eager_attention:
        attn += facts.heads * setup.seq_len * (a + ((1 + a) if facts.dropout else 0))
    mlp = a * (h + (4 if facts.gated_mlp else 2) * i) + (4 * a * i if facts.python_gelu else 0)
    norms = 2 * (2 * 4 * h if facts.rms_norm else res * h)
    masks = 2 * h if facts.dropout else 0
    lora = 0
    if setup.lora_r is not None and setup.lora_dropout > 0:
        per_layer = [(name, i_) for name, i_, _ in facts.linears[: len(facts.linears) // max(facts.layers, 1)]]
        lora = sum((a + 1) * i_ for name, i_ in per_layer if setup.lora_targets == "auto" or name in setup.lora_targets)
    return attn + mlp + norms + masks + lora


def activation_bytes(facts: ModelFacts, setup: Setup, checkpointing: bool) -> int:
    """Activation bytes of one micro-batch (batch_size x seq_len tokens, every row full: packing makes that the
    usual case, padding to the batch's longest row makes it the worst case). With `checkpointing`, each layer keeps
    its input (residual dtype) and one layer is recomputed at a time. The causal-LM head adds the fp32 log-softmax
    of the logits; the final norm and the embedding output two residual-width tensors."""
    tokens = setup.batch_size * setup.seq_len
    layer = _layer_bytes(facts, setup)
    head = (4 * facts.vocab * facts.codebooks if setup.task in ("causal-lm", "text-to-audio") else 0) \
        + 2 * setup.residual_bytes * facts.hidden
    if checkpointing:  # head + one recomputed layer: an upper bound (the head's tensors go before the recompute)
        per_token = facts.layers * setup.residual_bytes * facts.hidden + layer + head
    else:
        per_token = facts.layers * layer + head
    return int(tokens * per_token)


# ----------------------------------------------------------------------------------------------- the spec
def plan_precision(requested: str, accelerator: str | None, bf16: bool) -> str:
    """The precision a job will train in, as cloudtune.train.trainer.resolve_precision decides it on the device:
    `auto` = bf16 on a bf16-capable accelerator (TPUs included), fp16 on an older GPU, fp32 on CPU (None)."""
    if requested != "auto":
        return requested
    if accelerator is None:
        return "fp32"
    return "bf16" if bf16 else "fp16"


def setup_for(train: Any, precision: str, world_size: int, gradient_checkpointing: bool | None = None) -> Setup:
    """The Setup of a spec's `train` section (a cloudtune.spec.TrainSpec) for a resolved precision and world size.
    `gradient_checkpointing` overrides the spec's (needed when the spec leaves it null)."""
    hp, lora = train.hyperparameters, train.lora
    targets = lora.target_modules if lora is not None and lora.target_modules != "auto" else "auto"
    checkpointing = hp.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    pref = getattr(train, "preference", None)
    preference = train.task == "preference"
    method = pref.method if pref is not None else "dpo"
    reference = pref.reference if pref is not None else "auto"
    copy = preference and method in ("dpo", "kto") and (reference == "copy" or (reference == "auto" and lora is None))
    return Setup(reference_copy=copy,
        task=train.task, lora_r=lora.r if lora is not None else None,
        lora_targets=tuple(targets) if targets != "auto" else "auto",
        lora_dropout=lora.dropout if lora is not None else 0.0, quantize=lora.quantize if lora is not None else None,
        # preference pairs: the chosen and the rejected answer of each example go through the model in one batch
        precision=precision, batch_size=hp.batch_size * (2 if preference and method != "kto" else 1),
        seq_len=hp.max_seq_len, gradient_checkpointing=bool(checkpointing),
        packing=bool(getattr(train.data, "packing", False)), distributed=train.distributed, world_size=world_size)


def choose_checkpointing(est: MemoryEstimate, requested: bool | None, budget: float | None) -> bool:
    """Gradient checkpointing on or off: `requested` when the user chose (true/false); for null, on exactly when
    the estimate without it is over `budget` bytes (None: unknown device memory -> off). When even checkpointing
    does not fit, it is still on: it is the job's best chance."""
    if requested is not None:
        return requested
    if budget is None:
        return False
    return est.total_for(False) > budget


def wants_gradient_checkpointing(facts: ModelFacts | None, setup: Setup, device_bytes: int | None,
                                 requested: bool | None) -> bool:
    """The run-time decision for `hyperparameters.gradient_checkpointing`: the user's true/false as given; for null,
    True when the estimate without checkpointing exceeds the device memory less HEADROOM (then, with it, the job
    fits or comes as close as it can). Unknown model facts or device memory (CPU, TPU): False."""
    if requested is not None:
        return requested
    if facts is None or device_bytes is None:
        return False
    return choose_checkpointing(estimate(facts, setup), None, device_bytes * (1 - HEADROOM))


def human(n: float) -> str:
    """Bytes as GB (10^9, as the catalog states accelerator memory) with one decimal; under 0.1 GB in MB, under
    0.1 MB in kB."""
    if n >= 0.1 * GB:
        return f"{n / GB:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def count(params: int) -> str:
    """A parameter count as people say it: 6.74B, 124.4M, 9,216."""
    if params >= 1e9:
        return f"{params / 1e9:.2f}B"
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params:,}"
