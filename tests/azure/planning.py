"""Plans for the Azure ML tests: the scenarios of the golden job YAMLs, built offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
try:  # the plugin is normally installed (pip install -e launchers/azure); a bare checkout works too
    import cloudtune_azure  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "launchers" / "azure"))

from cloudtune.spec import validate_spec  # noqa: E402
from cloudtune_azure.launcher import AzureLauncher  # noqa: E402
from cloudtune_azure.settings import AzureSettings  # noqa: E402

SUFFIX = "20260101-000000-abcd"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
DS_IN = {"train": "azureml://datastores/datasets/paths/sft/train.jsonl",
         "eval": "azureml://datastores/datasets/paths/sft/eval/"}
VAULT = "https://ml-vault.vault.azure.net/secrets"


def settings(**kw: Any) -> AzureSettings:
    return AzureSettings(**{"subscription_id": SUBSCRIPTION, "resource_group": "ml-rg", "workspace": "ml-ws", **kw})


def write_data(base: Path, train_bytes: int = 0) -> None:
    (base / "data/eval").mkdir(parents=True, exist_ok=True)
    line = '{"text": "the quick brown fox"}\n'
    (base / "data/train.jsonl").write_text(line * max(20, train_bytes // len(line)))
    (base / "data/eval/part-0.jsonl").write_text('{"text": "jumps over"}\n' * 5)
    (base / "src").mkdir(exist_ok=True)
    (base / "src/train.py").write_text("print('training')\n")


def scenarios(base: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (spec data, settings overrides)."""
    return {
        "text_to_image": ({"name": "img-style", "resources": {"accelerator": "T4:1", "max_runtime": "3h"},
                           "inputs": {"train": "azureml://datastores/datasets/paths/images/style/"},
                           "train": {"task": "text-to-image", "model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                      "lora": {"r": 16, "alpha": 16},
                                      "hyperparameters": {"resolution": 512, "max_steps": 1500, "batch_size": 4,
                                                          "learning_rate": 1e-4, "snr_gamma": 5.0},
                                      "data": {"random_flip": True, "caption_dropout": 0.05},
                                      "validation": {"prompts": ["a watercolor fox"], "every_steps": 250,
                                                     "seeds": [0, 1]}}}, {}),
        "preference_dpo_lora": ({"name": "dpo-a100", "resources": {"accelerator": "A100-80GB:1"}, "inputs": DS_IN,
                               "train": {"model": "Qwen/Qwen2.5-0.5B", "task": "preference", "lora": {"r": 16},
                                         "preference": {"method": "dpo", "beta": 0.1},
                                         "hyperparameters": {"optimizer": "adamw_torch_fused", "lr_scheduler": "cosine",
                                                             "warmup_steps": 10, "max_grad_norm": 0.5},
                                         "attn_implementation": "sdpa",
                                         "push_to_hub": {"repo": "acme/qwen-dpo", "revision": "dpo-v1"}},
                               "secrets": {"HF_TOKEN": f"{VAULT}/hf-token"}}, {"compute": "gpu-cluster"}),
        "text_to_audio": ({"name": "music-a100", "resources": {"accelerator": "A100-80GB:1", "max_runtime": "2h"},
                           "inputs": {"train": "azureml://datastores/datasets/paths/music/clips/"},
                           "train": {"task": "text-to-audio", "model": "facebook/musicgen-small", "lora": {"r": 16},
                                     "hyperparameters": {"batch_size": 2, "max_steps": 500},
                                     "audio": {"max_seconds": 30},
                                     "validation": {"prompts": ["lo-fi piano with soft drums"], "every_steps": 100,
                                                    "seeds": [0, 1], "seconds": 8}},
                           "checkpoint": {"every_steps": 100}}, {}),
        "single_gpu_named_cluster": ({"name": "sft-t4", "resources": {"accelerator": "T4:1", "max_runtime": "2h"},
                                      "inputs": {"train": "data/train.jsonl", "eval": "data/eval"},
                                      "train": {"model": "gpt2"}}, {"compute": "gpu-cluster"}),
        "serverless_2x8_a100_spot": ({"name": "sft-a100", "resources": {"accelerator": "A100-80GB:8", "nodes": 2,
                                                                        "spot": True},
                                      "inputs": DS_IN, "train": {"model": "meta-llama/Llama-3.2-1B"}}, {}),
        "custom_image_command": ({"name": "custom", "image": "myregistry.azurecr.io/train/trainer:1.2",
                                  "resources": {"accelerator": "A100-80GB:1"},
                                  "inputs": {"data": "https://mldata.blob.core.windows.net/raw/corpus/"},
                                  "command": "python train.py --epochs 1", "code": str(base / "src"),
                                  "env": {"WANDB_MODE": "offline"}}, {"compute": "a100-cluster"}),
        "secrets_identity_tags": ({"name": "secure", "resources": {"accelerator": "H100:1"}, "inputs": DS_IN,
                                   "train": {"model": "gpt2"},
                                   "secrets": {"HF_TOKEN": f"{VAULT}/hf-token", "WANDB_API_KEY": f"{VAULT}/wandb/7"}},
                                  {"identity": "managed", "experiment_name": "secure-runs",
                                   "tags": {"team": "ml", "cost-center": "42"}}),
    }


def build(name: str, tmp_path: Path, home: Path | None = None):
    write_data(tmp_path)
    data, extra = scenarios(tmp_path)[name]
    spec = validate_spec(data, base_dir=tmp_path)
    bundle = None
    if spec.command:
        from cloudtune.bundle import build_bundle

        bundle = build_bundle(Path(spec.code))
    return AzureLauncher(home=home or tmp_path / "home").plan(spec, settings(**extra), suffix=SUFFIX, bundle=bundle)


def normalise(plan, tmp: Path) -> dict[str, Any]:
    """The parts of a plan that must not drift; the code bundle's hash (it carries a wheel of the running
    cloudtune, so it changes with any core edit) and temp paths replaced."""
    code = next(u for u in plan.uploads if "/code/" in u.destination)
    text = json.dumps({
        "request": plan.request,
        "uploads": [{"source": u.source, "destination": u.destination, "bytes": u.bytes if u is not code else "<bytes>",
                     "sha256": u.sha256} for u in plan.uploads],
        "instance_type": plan.instance_type, "instance_count": plan.instance_count,
        "estimated_usd_per_hour": plan.estimated_usd_per_hour, "cost_basis": plan.cost_basis,
        "model_uri": plan.model_uri, "notes": list(plan.notes),
    }, indent=2)
    return json.loads(text.replace(code.sha256, "<bundle-sha256>").replace(code.sha256[:16], "<bundle-sha16>")
                      .replace(str(tmp), "<tmp>"))
