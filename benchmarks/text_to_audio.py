"""Training speed and peak memory of cloudtune's text-to-audio recipe against a plain Trainer + peft script.

    python benchmarks/text_to_audio.py [--rounds 3] [--steps 30] [--batch-size 4] [--clips-per-pitch 4] [--seconds 2]

Both sides fine-tune the same tiny MusicGen (examples/music-style/make_tiny_model.py: built from configs, never
downloaded) with the same LoRA (r=8 on the decoder's q/k/v/out_proj and fc1/fc2), sine-tone clips, batch size,
learning rate, seed and number of optimizer steps, each in a fresh subprocess:

* cloudtune: `cloudtune.train.run_recipe` (task text-to-audio, no samples, a checkpoint every 500 steps like the
  Trainer's default `save_steps`), exactly what `cloudtune-run` runs in the container; its encoding cache is
  emptied first, so encoding is paid (it is outside the timed loop on both sides);
* plain: the community approach (ylacombe/musicgen-dreamboothing) written the documented way: clips decoded and
  encoded by EnCodec once into delay-pattern labels, the descriptions tokenised, and a `Trainer` over a peft model
  whose forward runs the frozen T5 text encoder on every batch.

Timing is each side's `train_runtime` (the Trainer's clock around its training loop); steps/s = steps / that.
Peak memory: on CUDA `torch.cuda.max_memory_allocated()` of the child; on CPU the child process tree's peak RSS
(benchmarks/measure.py). Sides alternate order every round; medians are compared.

Prints one JSON object: per-round figures, medians, and ratios cloudtune / plain (targets: steps/s >= 1.0, peak
memory <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

LEARNING_RATE = 1e-2
SEED = 7
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def _peak_cuda() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def run_cloudtune(model: Path, clips: Path, work: Path, steps: int, batch: int) -> dict[str, Any]:
    from cloudtune.runtime.types import RuntimeContext
    from cloudtune.spec import CheckpointSpec, TrainSpec
    from cloudtune.train import run_recipe

    os.environ["CLOUDTUNE_AUDIO_CACHE"] = str(work / "cache")
    train = TrainSpec.model_validate({
        "task": "text-to-audio", "model": str(model), "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "audio": {"description_dropout": 0.0}, "report_to": "none",
        "hyperparameters": {"max_steps": steps, "batch_size": batch, "learning_rate": LEARNING_RATE, "seed": SEED}})
    metrics = run_recipe(RuntimeContext.single_process(work, {"train": clips}), train, CheckpointSpec(every_steps=500))
    return {"train_runtime_s": metrics["train_runtime_s"], "steps": int(metrics["global_step"]),
            "train_loss": metrics["train_loss"]}


def run_plain(model_dir: Path, clips: Path, work: Path, steps: int, batch: int) -> dict[str, Any]:
    """The community script's shape: preprocess once (EnCodec codes -> delay-pattern labels, tokenised text), then
    a plain Trainer over a peft model; the text encoder runs inside every forward."""
    import numpy as np
    import soundfile as sf
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, MusicgenForConditionalGeneration, Trainer, TrainingArguments, set_seed

    set_seed(SEED)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = MusicgenForConditionalGeneration.from_pretrained(str(model_dir))
    model.freeze_text_encoder()
    model.freeze_audio_encoder()
    config = model.config.decoder
    rows = [json.loads(line) for line in (clips / "metadata.jsonl").read_text().splitlines() if line.strip()]
    examples = []
    for row in rows:
        audio, rate = sf.read(str(clips / row["file_name"]), dtype="float32")
        features = processor.feature_extractor(audio, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            codes = model.audio_encoder.encode(features["input_values"]).audio_codes[0, 0]  # (K, T)
        k, t = codes.shape
        bos = torch.full((k, 1), config.decoder_start_token_id)
        _, pattern = model.decoder.build_delay_pattern_mask(torch.cat([bos, codes], 1), config.pad_token_id, t + k)
        labels = pattern.reshape(k, t + k)[:, 1:].T  # the first column is all BOS: dropped, as the script does
        text = processor.tokenizer(row["text"])
        examples.append({"labels": labels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]})

    def collate(batch_rows: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(r["labels"].shape[0] for r in batch_rows)
        labels = torch.full((len(batch_rows), longest, batch_rows[0]["labels"].shape[1]), -100, dtype=torch.long)
        for i, r in enumerate(batch_rows):
            labels[i, : r["labels"].shape[0]] = r["labels"]
        text = processor.tokenizer.pad([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]}
                                        for r in batch_rows], return_tensors="pt")
        return {"labels": labels, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}

    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=r"^decoder\..*\.(" + "|".join(TARGETS) + r")$"))
    args = TrainingArguments(output_dir=str(work / "out"), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=LEARNING_RATE, seed=SEED, report_to="none", logging_steps=10,
                             save_steps=500, remove_unused_columns=False, label_names=["labels"],
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
    output = trainer.train()
    return {"train_runtime_s": float(output.metrics["train_runtime"]), "steps": int(trainer.state.global_step),
            "train_loss": float(output.training_loss), "lengths": int(np.mean([e["labels"].shape[0] for e in examples]))}


def child(args: argparse.Namespace) -> None:
    from measure import child_rusage

    work = Path(tempfile.mkdtemp(prefix=f"t2a-{args.child}-"))
    run = run_cloudtune if args.child == "cloudtune" else run_plain
    result = run(Path(args.model), Path(args.clips), work, args.steps, args.batch_size)
    result.update(child_rusage())
    result["cuda_peak_mb"] = _peak_cuda()
    Path(args.out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--clips-per-pitch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--child", choices=["cloudtune", "plain"])
    parser.add_argument("--model")
    parser.add_argument("--clips")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args)
    from measure import run_child
    from tests.tiny_musicgen import make_clips, make_tiny_musicgen

    root = Path(tempfile.mkdtemp(prefix="t2a-bench-"))
    model = make_tiny_musicgen(root / "tiny-musicgen")
    clips = make_clips(root / "clips", per_pitch=args.clips_per_pitch, seconds=args.seconds)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = ["cloudtune", "plain"] if r % 2 == 0 else ["plain", "cloudtune"]
        got: dict[str, Any] = {}
        for side in order:
            out = root / f"{side}-{r}.json"
            res = run_child([sys.executable, __file__, "--child", side, "--model", str(model), "--clips", str(clips),
                             "--out", str(out), "--steps", str(args.steps), "--batch-size", str(args.batch_size)],
                            out, env=env, time_limit_s=1800, log=root / f"{side}-{r}.log")
            if res.get("returncode") != 0:
                raise SystemExit(f"{side} failed: see {root / f'{side}-{r}.log'}")
            res["steps_per_s"] = res["steps"] / res["train_runtime_s"]
            res["peak_mb"] = res["cuda_peak_mb"] if res.get("cuda_peak_mb") is not None else res["peak_rss_mb"]
            got[side] = {k: res.get(k) for k in ("steps_per_s", "peak_mb", "train_runtime_s", "train_loss", "steps")}
        rounds.append(got)
    med = {side: {k: statistics.median(r[side][k] for r in rounds) for k in ("steps_per_s", "peak_mb")}
           for side in ("cloudtune", "plain")}
    import torch

    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cpus": os.cpu_count(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "settings": vars(args) | {"learning_rate": LEARNING_RATE}, "rounds": rounds, "median": med,
        "ratio": {"steps_per_s": med["cloudtune"]["steps_per_s"] / med["plain"]["steps_per_s"],
                  "peak_memory": med["cloudtune"]["peak_mb"] / med["plain"]["peak_mb"]},
    }, indent=1))


if __name__ == "__main__":
    main()
