"""`train.push_to_hub`: publish the model dir (model or adapter, tokenizer, metrics.json and the README.md model card)
to a Hugging Face Hub model repository at the end of a successful job, from rank 0, through huggingface_hub's
`HfApi` (create_repo, create_branch, upload_folder: one commit). The Hub's address is huggingface_hub's
(`HF_ENDPOINT`, default https://huggingface.co).

The token is the secret named by `push_to_hub.token_secret`, which `cloudtune-run` resolved into this process's
environment (cloudtune.runtime.secrets); it is passed to HfApi and never printed. A push that fails leaves the model
dir as written and the job successful: one `[cloudtune] warning:` line says what failed and how to push it later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cloudtune.contracts.logfmt import say

PUSH_LOG_FORMAT = "pushed to the Hub: {url} ({files} files, commit {commit})"
PUSH_FAILED_LOG_FORMAT = ("warning: push to the Hub failed ({reason}); nothing is lost: the model stays in {model_dir}. "
                          "To push it later: hf upload {repo} {model_dir}")


def push_model_dir(model_dir: Path, push: Any, environ: Any = None) -> str:
    """Upload `model_dir` to `push.repo` (created, private as `push.private` says, when missing; branch
    `push.revision` created from main when missing); returns the commit URL. Raises what huggingface_hub raises."""
    from huggingface_hub import HfApi

    env = os.environ if environ is None else environ
    token = env.get(push.token_secret) or None
    if token is None:
        raise RuntimeError(f"no Hub token: the secret {push.token_secret} is not set in the job")
    api = HfApi(token=token)
    api.create_repo(push.repo, private=push.private, repo_type="model", exist_ok=True)
    if push.revision:
        api.create_branch(push.repo, branch=push.revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(folder_path=str(model_dir), repo_id=push.repo, repo_type="model", revision=push.revision,
                             commit_message="Upload model trained with cloudtune")
    files = sum(1 for p in Path(model_dir).rglob("*") if p.is_file())
    say(PUSH_LOG_FORMAT.format(url=info.commit_url, files=files, commit=str(info.oid)[:12]))
    return str(info.commit_url)


def publish(model_dir: Path, push: Any) -> bool:
    """`push_model_dir`, with any failure said in one warning line (the job stays successful). Returns whether the
    push succeeded."""
    try:
        push_model_dir(model_dir, push)
        return True
    except Exception as exc:  # noqa: BLE001 - network, HTTP and auth errors come in many types; none fails the job
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        say(PUSH_FAILED_LOG_FORMAT.format(reason=reason[:300], model_dir=model_dir, repo=push.repo))
        return False


__all__ = ["PUSH_FAILED_LOG_FORMAT", "PUSH_LOG_FORMAT", "publish", "push_model_dir"]
