"""The data rules of the recipes, torch-free, shared by the plan-time checks (`cloudtune.preflight`) and the recipes
(`cloudtune.train`), so a problem is found with the same line before upload and in the job.

* `records`: reading records (JSONL, JSON, CSV, Parquet, Arrow, text, `save_to_disk` dirs) with file and line;
* `chat`: chat roles, tools, templates and which spans are trained (the assistant turns);
* `encode`: records -> token ids and labels (TRL's `text`, `prompt`/`completion`, `messages` shapes), given a tokenizer;
* `labels`: seq-classification label names and ids;
* `lora`: the modules LoRA adapts (`auto` per architecture);
* `modeldir`, `modelfiles`: what a saved model dir must hold (config, weights, tokenizer files) and its position limit;
* `hub`: a Hugging Face Hub model reachable, or one clear line;
* `images`: the text-to-image data (image files and their captions).

Bottom layer: imports only `cloudtune.errors` (and, lazily, jinja2, huggingface_hub, pyarrow, Pillow); never torch.
"""
