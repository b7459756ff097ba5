"""The memory estimate (cloudtune.memory): its parts against hand computations, the dry run's memory lines on every
provider, the plan-time refusal and its override, QLoRA's refusals, and the estimate against a CPU training step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudtune.errors import JobInputError, SpecError, UnsupportedSpec
from cloudtune.memory import (
    GB, NF4_BYTES, Setup, activation_bytes, estimate, facts_from_config, hub_model_facts, lora_params,
    local_model_facts, wants_gradient_checkpointing,
)
from cloudtune.spec import TrainSpec, validate_spec

ROOT = Path(__file__).resolve().parents[1]
LLAMA2_7B = 6_738_415_616
"""Llama-2-7b-hf's parameter count (the sum of its safetensors shapes, as published)."""
PROVIDERS = {
    "aws": {"role": "arn:aws:iam::123456789012:role/SageMaker", "bucket": "s3://bucket", "region": "us-east-1"},
    "gcp": {"project": "proj", "region": "us-central1", "bucket": "gs://bucket"},
    "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg", "workspace": "ws"},
}


# ------------------------------------------------------------------------------------------- the arithmetic
def test_a_7b_from_the_table_has_its_published_size() -> None:
    facts = hub_model_facts("meta-llama/Llama-2-7b-hf")
    assert facts is not None and facts.params == LLAMA2_7B
    assert (facts.layers, facts.hidden, facts.intermediate, facts.gated_mlp, facts.rotary) == (32, 4096, 11008, True, True)
    assert hub_model_facts("meta-llama/Llama-2-7b-chat-hf").params == LLAMA2_7B  # a variant shares its base's size
    assert hub_model_facts("someone/unknown-model") is None  # unknown: no estimate, no refusal


def test_full_fine_tune_is_16_bytes_a_parameter() -> None:
    facts = hub_model_facts("meta-llama/Llama-2-7b-hf")
    est = estimate(facts, Setup(precision="bf16", batch_size=1, seq_len=128))
    assert (est.weights, est.gradients, est.optimizer) == (4 * LLAMA2_7B, 4 * LLAMA2_7B, 8 * LLAMA2_7B)
    assert est.total == 16 * LLAMA2_7B + est.activations_without_checkpointing
    ddp = estimate(facts, Setup(world_size=2))
    assert ddp.gradients == 8 * LLAMA2_7B  # DDP's buckets: a second copy of the gradients
    fsdp = estimate(facts, Setup(world_size=8, distributed="fsdp"))
    gathered = 4 * (2 * facts.layer_params + facts.params - facts.linear_params)
    assert fsdp.weights == int(4 * LLAMA2_7B / 8 + gathered) and fsdp.optimizer == 8 * LLAMA2_7B // 8


def test_lora_and_qlora_weights() -> None:
    facts = hub_model_facts("meta-llama/Llama-2-7b-hf")
    h, i, layers = 4096, 11008, 32
    per_layer = 16 * ((h + h) * 4 + (h + i) * 2 + (i + h))  # q k v o: h->h; gate, up: h->i; down: i->h
    adapter = lora_params(facts, 16, "auto")
    assert adapter == layers * per_layer == 39_976_960  # the figure peft prints for r=16 on all 7 projections
    assert lora_params(facts, 8, ("q_proj", "v_proj")) == layers * 8 * 2 * (h + h)
    bf16 = estimate(facts, Setup(lora_r=16, precision="bf16"))
    assert bf16.weights == 2 * LLAMA2_7B + 4 * adapter  # bf16 base + fp32 adapter
    assert (bf16.gradients, bf16.optimizer) == (4 * adapter, 8 * adapter)
    qlora = estimate(facts, Setup(lora_r=16, quantize="4bit"))
    linear = facts.linear_params
    assert qlora.weights == int(NF4_BYTES * linear + 4 * (LLAMA2_7B - linear) + 4 * adapter)
    assert 4.4 * GB < qlora.weights < 4.8 * GB  # 7B in 4 bits + embeddings and head in fp32
    fp32 = estimate(facts, Setup(lora_r=16, precision="fp32"))
    assert fp32.weights == 4 * LLAMA2_7B + 4 * adapter


def test_activations_by_hand() -> None:
    """A GPT-2-like layer without dropout, in bf16 under autocast (fp32 residual stream), SDPA attention."""
    config = {"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 100, "n_positions": 64,
              "activation_function": "gelu", "resid_pdrop": 0, "attn_pdrop": 0, "embd_pdrop": 0}
    facts = facts_from_config(config, "test")
    b, s, h, i, v, layers = 2, 32, 64, 256, 100, 3
    layer = 2 * (h + 2 * h + 2 * h) + 2 * (h + 2 * i) + 2 * 4 * h  # attention, MLP, two LayerNorm inputs (fp32)
    head = 4 * v + 2 * 4 * h  # fp32 log-softmax; final norm and embedding output
    setup = Setup(precision="bf16", batch_size=b, seq_len=s)
    assert activation_bytes(facts, setup, checkpointing=False) == b * s * (layers * layer + head)
    assert activation_bytes(facts, setup, checkpointing=True) == b * s * (layers * 4 * h + layer + head)
    eager = facts_from_config({**config, "_attn_implementation": "eager"}, "test")
    extra = b * s * layers * 4 * s * 2  # Korthikanti's a*s/h term: the s x s probabilities, 2 bytes each
    assert activation_bytes(eager, setup, False) - activation_bytes(facts, setup, False) == extra


def test_local_model_facts_are_exact(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=176))
    model.save_pretrained(str(tmp_path / "m"))
    facts = local_model_facts(tmp_path / "m")
    assert facts is not None and facts.params == sum(p.numel() for p in model.parameters())
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    assert len(facts.linears) == len(linears) and "weight headers" in facts.source
    from cloudtune.train.lora import apply_lora
    from cloudtune.spec import LoraSpec

    peft_model = apply_lora(model, LoraSpec(r=4), "causal-lm")
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_params(facts, 4, "auto") == trainable


def test_the_estimate_holds_against_a_cpu_training_step(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import memory_estimate as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cases = [c for c in bench.CASES if c.name in ("llama full fp32", "llama lora fp32 ckpt")]
    rows = bench.run(cases, tmp_path)
    assert len(rows) == 2 and bench.failures(rows) == []


# ------------------------------------------------------------------------------------------- gradient checkpointing
def test_gradient_checkpointing_decision() -> None:
    facts = hub_model_facts("meta-llama/Llama-2-7b-hf")
    setup = Setup(lora_r=16, precision="bf16", batch_size=4, seq_len=1024)
    assert wants_gradient_checkpointing(facts, setup, 24 * GB, None) is True  # 43 GB of activations without it
    assert wants_gradient_checkpointing(facts, setup, 141 * GB, None) is False  # fits an H200 without
    assert wants_gradient_checkpointing(facts, setup, 141 * GB, True) is True  # the user's choice is obeyed
    assert wants_gradient_checkpointing(facts, setup, 24 * GB, False) is False
    assert wants_gradient_checkpointing(facts, setup, None, None) is False  # CPU / TPU: unknown memory
    assert wants_gradient_checkpointing(None, setup, 24 * GB, None) is False  # unknown model


def test_decide_and_hand_on_a_plain_bool(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from cloudtune.train.loading import decide_gradient_checkpointing, with_gradient_checkpointing

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2))
    train = TrainSpec(model="m", lora={}, hyperparameters={"batch_size": 64, "max_seq_len": 64})
    assert train.hyperparameters.gradient_checkpointing is None
    assert decide_gradient_checkpointing(train, model, "cpu") is False
    assert decide_gradient_checkpointing(train, model, "cuda", device_bytes=10 ** 6) is True  # a 1 MB "GPU"
    assert decide_gradient_checkpointing(train, model, "cuda", device_bytes=10 ** 11) is False
    forced = TrainSpec(model="m", hyperparameters={"gradient_checkpointing": True})
    assert decide_gradient_checkpointing(forced, model, "cpu") is True
    assert with_gradient_checkpointing(train, True).hyperparameters.gradient_checkpointing is True


# ------------------------------------------------------------------------------------------- the dry run
def _spec(tmp_path: Path, train: dict[str, Any], accelerator: str = "L4:1", **extra: Any) -> Path:
    (tmp_path / "train.jsonl").write_text('{"text": "hello there"}\n' * 4)  # a local input: every provider uploads it
    spec = {"name": "mem", "resources": {"accelerator": accelerator}, "inputs": {"train": "train.jsonl"},
            "train": train, "providers": PROVIDERS, **extra}
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(spec))
    return path


def _dry_run(path: Path, provider: str, *sets: str, home: Path) -> Any:
    from cloudtune.cli import main

    args = ["launch", str(path), "-p", provider, "--dry-run"] + [x for s in sets for x in ("--set", s)]
    return CliRunner().invoke(main, args, env={"CLOUDTUNE_HOME": str(home)})


LORA_7B = {"model": "meta-llama/Llama-2-7b-hf", "lora": {}, "hyperparameters": {"batch_size": 4, "max_seq_len": 1024}}
# QLoRA needs bitsandbytes in the image: cloudtune's GPU image, pushed to each provider's registry
GPU_IMAGES = {"aws": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtune:0.1.0",
              "gcp": "us-central1-docker.pkg.dev/proj/cloudtune/cloudtune:0.1.0",
              "azure": "myregistry.azurecr.io/cloudtune:0.1.0"}


@pytest.mark.parametrize("provider, accelerator, line, checkpointing", [
    ("aws", "L4:1", "17.1 GB estimated of 24.0 GB (L4; refused above +20%)",
     "on (null: on, the activations would not fit without it; activations 43.3 GB without it)"),
    ("gcp", "L4:1", "17.1 GB estimated of 24.0 GB (L4; refused above +20%)", "on (null: on"),
    # Azure's one-GPU H100 is the 94 GB H100 NVL: the offer's memory, not the catalog's 80 GB
    ("azure", "H100:1", "57.4 GB estimated of 94.0 GB (H100; refused above +20%)",
     "off (null: off, it fits without; activations 3.0 GB with it)"),
])
def test_every_provider_dry_run_shows_the_estimate(tmp_path: Path, provider: str, accelerator: str, line: str,
                                                   checkpointing: str) -> None:
    from cloudtune.cli import main

    path = _spec(tmp_path, LORA_7B, accelerator)
    res = _dry_run(path, provider, home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert f"memory/device:  {line}" in res.output
    assert "weights 13.6 GB, gradients 0.2 GB, optimizer 0.3 GB" in res.output and "bf16, 6.74B parameters" in res.output
    assert f"gradient checkpointing {checkpointing}" in res.output
    plan = json.loads(CliRunner().invoke(main, ["launch", str(path), "-p", provider, "--dry-run", "--json"],
                                         env={"CLOUDTUNE_HOME": str(tmp_path / "home")}).output)
    assert plan["memory"]["estimate"]["total"] > 16 * GB and plan["memory"]["device_memory"] in (24 * GB, 94 * GB)
    qlora = _dry_run(path, provider, "train.lora.quantize=4bit", f"image={GPU_IMAGES[provider]}", home=tmp_path / "home")
    assert qlora.exit_code == 0 and "weights 4.6 GB" in qlora.output, qlora.output
    stock = _dry_run(path, provider, "train.lora.quantize=4bit", home=tmp_path / "home")
    assert stock.exit_code == 2 and "needs bitsandbytes in the image" in stock.output
    assert "To fix: set image: to cloudtune's GPU image" in stock.output


def test_the_local_dry_run_shows_it_unchecked(tmp_path: Path) -> None:
    from tests.tiny_models import make_tiny_gpt2

    make_tiny_gpt2(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_text('{"text": "hello there"}\n' * 4)
    path = tmp_path / "local.yaml"
    path.write_text(json.dumps({"name": "mem", "inputs": {"train": "train.jsonl"}, "train": {"model": "./tiny"}}))
    res = _dry_run(path, "local", home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert "(not checked: a local job uses this machine's devices)" in res.output and "fp32" in res.output
    big = _dry_run(path, "local", "train.hyperparameters.batch_size=100000", home=tmp_path / "home")
    assert big.exit_code == 0  # never refused locally


def test_the_dry_run_imports_no_torch(tmp_path: Path) -> None:
    path = _spec(tmp_path, LORA_7B)
    code = ("import sys; from click.testing import CliRunner; from cloudtune.cli import main; "
            f"r = CliRunner().invoke(main, ['launch', {str(path)!r}, '-p', 'aws', '--dry-run']); "
            "assert r.exit_code == 0, r.output; assert 'memory/device' in r.output; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"CLOUDTUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------- the refusal
@pytest.mark.parametrize("accelerator", ["L4:1", "A10G:1"])
def test_a_7b_full_fine_tune_on_24_gb_is_refused_with_the_fix(tmp_path: Path, accelerator: str) -> None:
    train = {"model": "meta-llama/Llama-2-7b-hf", "hyperparameters": {"batch_size": 4, "max_seq_len": 1024}}
    # a disk for its ~202 GB of checkpoints, model and download: the disk check (preflight) would refuse first
    spec = _spec(tmp_path, train, accelerator)
    spec.write_text(spec.read_text().replace('"accelerator": "', '"disk_gb": 250, "accelerator": "'))
    res = _dry_run(spec, "aws", home=tmp_path / "home")
    assert res.exit_code == 2, res.output
    message, _, fix = res.output.partition("To fix:")
    assert message.startswith(f"error: resources.accelerator {accelerator}: training 6.74B parameters (full fine-tune")
    assert "needs about 111.5 GB per GPU (weights 27.0 GB, gradients 27.0 GB, optimizer 53.9 GB" in message
    assert "refused above 28.8 GB" in message
    assert "add train.lora: {}" in fix and "train.lora: {quantize: 4bit}" in fix
    assert f"{accelerator.split(':')[0]}:8 with train.distributed: fsdp" in fix
    assert "train.memory_check: false" in fix
    over = _dry_run(spec, "aws", "train.memory_check=false", home=tmp_path / "home")
    assert over.exit_code == 0 and "over it, launched anyway (train.memory_check: false)" in over.output


def test_a_tpu_full_fine_tune_needs_fsdp(tmp_path: Path) -> None:
    """Without FSDPv2 every TPU chip holds the whole model: a 1.24B full fine-tune (16 bytes a parameter) is over a
    16 GB v5e chip; sharded over the host's 4 chips it fits."""
    train = {"model": "meta-llama/Llama-3.2-1B"}
    res = _dry_run(_spec(tmp_path, train, "TPU-v5e:4"), "gcp", home=tmp_path / "home")
    assert res.exit_code == 2 and "over the 16 GB of one TPU-v5e" in res.output
    assert "set train.distributed: fsdp" in res.output and "TPU-v6e:4" in res.output
    ok = _dry_run(_spec(tmp_path, train, "TPU-v5e:4"), "gcp", "train.distributed=fsdp", home=tmp_path / "home")
    assert ok.exit_code == 0 and "of 16.0 GB (TPU-v5e" in ok.output


def test_the_smallest_accelerator_that_fits_is_named(tmp_path: Path) -> None:
    train = {"model": "meta-llama/Llama-2-7b-hf", "lora": {}, "hyperparameters": {
        "batch_size": 2, "max_seq_len": 1024, "gradient_checkpointing": False}}  # 35.8 GB, 15.6 GB with checkpointing
    with pytest.raises(UnsupportedSpec) as info:
        from cloudtune import api

        api.plan(str(_spec(tmp_path, train, "L4:1")), provider="gcp")
    fix = info.value.fix or ""
    assert fix.startswith("use resources.accelerator: A100-40GB:1 (about 35.8 GB of its 40 GB)")
    assert "set hyperparameters.gradient_checkpointing: true (or leave it out: null decides): about 15.6 GB" in fix


@pytest.mark.parametrize("train", [
    {**LORA_7B, "lora": {"quantize": "4bit"}},
    {**LORA_7B, "hyperparameters": {**LORA_7B["hyperparameters"], "gradient_checkpointing": True}},
    LORA_7B,  # null checkpointing: on, decided by the estimate
])
def test_a_7b_lora_fits_an_l4(tmp_path: Path, train: dict[str, Any]) -> None:
    extra = {"image": GPU_IMAGES["aws"]} if train["lora"].get("quantize") else {}
    res = _dry_run(_spec(tmp_path, train, **extra), "aws", home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert "gradient checkpointing on" in res.output


def test_an_unknown_model_is_never_refused(tmp_path: Path) -> None:
    train = {"model": "someone/a-model-nobody-knows", "hyperparameters": {"batch_size": 512, "max_seq_len": 8192}}
    res = _dry_run(_spec(tmp_path, train, "T4:1"), "aws", home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert "memory/device:  unknown" in res.output


# ------------------------------------------------------------------------------------------- QLoRA
def test_qlora_is_refused_at_plan_time_where_no_cuda_gpu_will_be(tmp_path: Path) -> None:
    qlora = {**LORA_7B, "lora": {"quantize": "4bit"}}
    tpu = _dry_run(_spec(tmp_path, qlora, "TPU-v5e:4"), "gcp", home=tmp_path / "home")
    assert tpu.exit_code == 2 and "is a TPU" in tpu.output and "To fix:" in tpu.output
    cpu = _dry_run(_spec(tmp_path, qlora, "cpu"), "aws", home=tmp_path / "home")
    assert cpu.exit_code == 2 and "resources.accelerator is cpu" in cpu.output
    from tests.tiny_models import make_tiny_gpt2

    make_tiny_gpt2(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_text('{"text": "hello there"}\n' * 4)
    path = tmp_path / "local.yaml"
    path.write_text(json.dumps({"name": "mem", "inputs": {"train": "train.jsonl"},
                                "train": {"model": "./tiny", "lora": {"quantize": "4bit"}}}))
    local = _dry_run(path, "local", home=tmp_path / "home")  # this machine has no NVIDIA GPU
    assert local.exit_code == 2 and "this machine has none" in local.output and "remove lora.quantize" in local.output
    from cloudtune.cli import main

    # `validate` (no provider) refuses what no provider could run: cpu where this machine has no GPU, and a TPU
    validated = CliRunner().invoke(main, ["validate", str(path)], env={"CLOUDTUNE_HOME": str(tmp_path / "home")})
    assert validated.exit_code == 2 and "train.lora.quantize: 4bit needs a CUDA GPU" in validated.output
    on_tpu = CliRunner().invoke(main, ["validate", str(_spec(tmp_path, qlora, "TPU-v5e:4"))],
                                env={"CLOUDTUNE_HOME": str(tmp_path / "home")})
    assert on_tpu.exit_code == 2 and "is a TPU" in on_tpu.output


@pytest.mark.parametrize("extra, expected", [
    ({"lora": {"quantize": "4bit", "merge": True}}, "quantizing|quantized again"),
    ({"lora": {"quantize": "4bit"}, "distributed": "fsdp"}, "cannot be sharded"),
    ({"lora": {"quantize": "8bit"}}, "4bit"),
])
def test_qlora_spec_refusals(tmp_path: Path, extra: dict[str, Any], expected: str) -> None:
    import re

    with pytest.raises(SpecError) as info:
        validate_spec({"name": "q", "train": {"model": "gpt2", **extra}}, base_dir=tmp_path)
    assert re.search(expected, str(info.value))


def test_qlora_refusals_in_the_job() -> None:
    from cloudtune.train.loading import check_quantize

    train = TrainSpec(model="m", lora={"quantize": "4bit"})
    with pytest.raises(JobInputError, match="needs a CUDA GPU.*cpu only.*To fix"):
        check_quantize(train, "cpu")
    with pytest.raises(JobInputError, match="TPU through PyTorch/XLA"):
        check_quantize(train, "xla")
    with pytest.raises(JobInputError, match="pip install 'bitsandbytes"):  # not installed here
        check_quantize(train, "cuda")
    check_quantize(TrainSpec(model="m", lora={}), "cpu")  # no quantize: nothing to refuse


def test_load_kwargs() -> None:
    import torch

    from cloudtune.train.loading import bnb_config, model_load_kwargs

    lora = TrainSpec(model="m", lora={})
    assert model_load_kwargs(lora, "causal-lm", "cuda", bf16_supported=True) == {"dtype": torch.bfloat16}
    assert model_load_kwargs(lora, "causal-lm", "cuda", bf16_supported=False) == {"dtype": torch.float32}  # fp16 GPU
    assert model_load_kwargs(lora, "causal-lm", "cpu") == {"dtype": torch.float32}
    full = TrainSpec(model="m")
    assert model_load_kwargs(full, "causal-lm", "cuda", bf16_supported=True) == {"dtype": torch.float32}
    fp32 = TrainSpec(model="m", lora={}, hyperparameters={"precision": "fp32"})
    assert model_load_kwargs(fp32, "causal-lm", "cuda", bf16_supported=True) == {"dtype": torch.float32}
    config = bnb_config("causal-lm", bf16=True)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb_config("seq-classification", bf16=False).llm_int8_skip_modules == ["score", "classifier"]


def test_merging_into_a_quantized_base_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from cloudtune.train.lora import check_mergeable

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=1, n_head=2))
    check_mergeable(model)  # a plain model merges
    model.is_loaded_in_4bit = True
    with pytest.raises(JobInputError, match="merge later into the bf16 base"):
        check_mergeable(model)


def test_a_cpu_job_on_a_cloud_is_not_called_local(tmp_path: Path) -> None:
    """accelerator: cpu on a cloud: nothing to check against, and the dry run does not say the job is local."""
    from tests.tiny_models import make_tiny_gpt2

    make_tiny_gpt2(tmp_path / "tiny")
    (tmp_path / "train.jsonl").write_text('{"text": "hello there"}\n' * 4)
    path = tmp_path / "cpu.yaml"
    path.write_text(json.dumps({"name": "mem", "inputs": {"train": "train.jsonl"}, "train": {"model": "./tiny"},
                                "resources": {"accelerator": "cpu"}, "providers": PROVIDERS}))
    res = _dry_run(path, "aws", home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    assert "(not checked: a CPU machine, no GPU memory to check against)" in res.output
    assert "a local job" not in res.output


@pytest.mark.parametrize("total_gb, needs, limit", [(28.81, "28.81", "28.80"), (28.86, "28.9", "28.8"),
                                                    (40.32, "40.3", "28.8")])
def test_an_estimate_just_over_the_limit_never_reads_as_the_limit(tmp_path: Path, total_gb: float, needs: str,
                                                                  limit: str) -> None:
    """24 GB x 1.2 = 28.8 GB: an estimate of 28.81 GB once read "needs about 28.8 GB ... refused above 28.8 GB"."""
    from dataclasses import replace

    from cloudtune.memory import MemoryEstimate, setup_for
    from cloudtune.memory_check import _refusal

    (tmp_path / "train.jsonl").write_text('{"text": "hi"}\n')
    spec = validate_spec({"name": "m", "resources": {"accelerator": "L4:1"}, "inputs": {"train": "train.jsonl"},
                          "train": {"model": "meta-llama/Llama-2-7b-hf"}}, base_dir=tmp_path)
    facts = hub_model_facts("meta-llama/Llama-2-7b-hf")
    assert facts is not None and spec.train is not None
    est = MemoryEstimate(weights=int(total_gb * GB), gradients=0, optimizer=0, activations_without_checkpointing=0,
                         activations_with_checkpointing=0, gradient_checkpointing=False, trainable_params=1)
    error = _refusal(spec, "aws", facts, replace(setup_for(spec.train, "bf16", 1), gradient_checkpointing=False), est,
                     "L4", 24.0)
    assert f"needs about {needs} GB per GPU" in error.message and f"(refused above {limit} GB:" in error.message
