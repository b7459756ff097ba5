"""A Hugging Face Hub model named by id: reachable, or one clear line at once (not a minute of retries).

transformers retries an unreachable Hub five times with back-off (about 50 s) and then raises a long OSError.
`hub_access(model_id)` asks the Hub once for the model's config.json (the first file transformers fetches, from the
same endpoint: HF_ENDPOINT, a mirror or a proxy), with a short timeout and no retries, before anything is loaded.
"""

from __future__ import annotations

import os

from cloudtune.errors import JobInputError

TIMEOUT_S = 10.0


def _cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even parse is simply not cached
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def offline_problem(model_id: str, option: str = "train.model") -> str | None:
    """Without network access: why a job on this machine cannot load hub model `model_id` (HF_HUB_OFFLINE is set
    and the model is not in the local cache), or None. What `hub_access` would raise, asked of the cache alone."""
    if not _offline() or _cached(model_id):
        return None
    return (f"{option}: {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download it "
            f"first (hf download {model_id}) or unset HF_HUB_OFFLINE")


def hub_access(model_id: str, option: str = "train.model", timeout: float = TIMEOUT_S) -> bool:
    """Whether `model_id` must be loaded from the local cache only (True: HF_HUB_OFFLINE is set, or the Hub is
    unreachable and the model is cached) or may be downloaded (False). Raises JobInputError, one line naming
    `option`, when the model is neither reachable nor cached, or the Hub says it does not exist or is gated."""
    cached = _cached(model_id)
    if _offline():
        problem = offline_problem(model_id, option)
        if problem:
            raise JobInputError(problem)
        return True
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:  # the first file transformers asks for, asked the same way, once
        get_hf_file_metadata(hf_hub_url(model_id, "config.json"), timeout=timeout)
        return False
    except EntryNotFoundError:
        raise JobInputError(f"{option}: {model_id!r} on the Hugging Face Hub has no config.json, so it is not a "
                            f"transformers model; pick the repository of the transformers weights") from None
    except GatedRepoError:
        raise JobInputError(f"{option}: {model_id!r} is a gated model; accept its terms on the Hub and give a token "
                            f"(secrets: {{HF_TOKEN: ...}})") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise JobInputError(f"{option}: no model {model_id!r} on the Hugging Face Hub (or it is private: give a "
                            f"token as the HF_TOKEN secret); check the id, or give a local directory") from None
    except Exception as exc:  # noqa: BLE001 - network failures come as several httpx / OS error types
        if cached:
            return True
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise JobInputError(
            f"{option}: cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to download {model_id!r}: {reason}; "
            f"give the job internet access (no network isolation, a VPC with a NAT), or a local copy of the model "
            f"(a path or an input)") from None


def gated_problem(model_id: str, secrets: dict[str, str], timeout: float = TIMEOUT_S) -> str | None:
    """Why a job cannot download the gated Hub model `model_id`: it is gated and the spec gives no `HF_TOKEN` secret
    (a token on this machine does not travel with the job), or None (not gated, a token secret given, or the Hub
    cannot be asked: HF_HUB_OFFLINE, no network; the job's own check then says it). One request to the Hub's model
    API (`HfApi.model_info`, `gated`: false, "auto" or "manual"), anonymous, so the answer is the job's view."""
    if "HF_TOKEN" in secrets or _offline():
        return None
    from huggingface_hub import HfApi

    try:
        gated = HfApi(token=False).model_info(model_id, timeout=timeout).gated
    except Exception:  # noqa: BLE001 - unreachable, unknown or private: other checks name those
        return None
    if not gated:
        return None
    return (f"train.model: {model_id!r} is a gated model on the Hugging Face Hub ({gated} approval), and the job has "
            f"no token to download it with (a token on this machine does not travel with the job). To fix: accept its "
            f"terms on the Hub, then give a token as a secret reference: secrets: {{HF_TOKEN: <secret reference>}}")
