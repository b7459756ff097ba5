"""`train.push_to_hub` against a loopback fake of the Hub's HTTP API (tests/hubfake.py; `HF_ENDPOINT` points
huggingface_hub at it): the files and the card arrive in the repository and branch asked for; a failed push leaves
the model dir as it was and says so in one line; a wrong token is refused by the Hub and reported the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudtune.spec.preference import PushToHubSpec

from tests.hubfake import FakeHub

ROOT = Path(__file__).resolve().parents[2]
PUSH = """
import json, sys
from pathlib import Path
from cloudtune.spec.preference import PushToHubSpec
from cloudtune.train.publish import publish
ok = publish(Path(sys.argv[1]), PushToHubSpec.model_validate(json.loads(sys.argv[2])))
print("RESULT", ok)
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    out = tmp_path / "model"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    (out / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (out / "README.md").write_text("---\nbase_model: tiny\n---\n# Fine-tuned with cloudtune\n")
    (out / "metrics.json").write_text("{}")
    return out


def _push(hub: FakeHub, model_dir: Path, push: dict, token: str) -> str:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN_SECRET": token, "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", PUSH, str(model_dir), json.dumps(push)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_push_creates_the_repo_and_branch_and_uploads_files_and_card(model_dir: Path) -> None:
    hub = FakeHub(token="hf_write").start()
    try:
        out = _push(hub, model_dir, {"repo": "acme/tiny-dpo", "revision": "dpo-v1", "token_secret": "HF_TOKEN_SECRET"},
                    "hf_write")
    finally:
        hub.stop()
    assert "RESULT True" in out and "[cloudtune] pushed to the Hub: " in out and "(4 files" in out
    repo = hub.repos["acme/tiny-dpo"]
    assert repo["private"] is True
    files = repo["branches"]["dpo-v1"]
    assert files["adapter_model.safetensors"] == (model_dir / "adapter_model.safetensors").read_bytes()
    assert files["README.md"].decode().startswith("---\nbase_model: tiny")
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json", "README.md", "metrics.json"}
    assert repo["branches"]["main"] == {}
    assert hub.validated == [files["README.md"].decode()]  # the card's metadata was checked by the Hub
    assert "hf_write" not in out


@pytest.mark.parametrize("token, fail", [("hf_write", True), ("hf_wrong", False)])
def test_a_failed_push_loses_nothing_and_says_so_in_one_line(model_dir: Path, token: str, fail: bool) -> None:
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    hub = FakeHub(token="hf_write", fail_commits=fail).start()
    try:
        out = _push(hub, model_dir, {"repo": "acme/tiny-dpo", "token_secret": "HF_TOKEN_SECRET"}, token)
    finally:
        hub.stop()
    warnings = [line for line in out.splitlines() if "push to the Hub failed" in line]
    assert "RESULT False" in out and len(warnings) == 1
    assert f"the model stays in {model_dir}" in warnings[0] and "hf upload acme/tiny-dpo" in warnings[0]
    assert ("500" in warnings[0]) if fail else ("401" in warnings[0])
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before


def test_push_spec_refuses_what_is_not_a_repo_or_branch() -> None:
    with pytest.raises(ValueError, match="not a Hub repository id"):
        PushToHubSpec(repo="no-org")
    with pytest.raises(ValueError, match="not a branch name"):
        PushToHubSpec(repo="a/b", revision="bad..name")


GATED = """
import sys
from cloudtune.data.hub import gated_problem
print("RESULT", gated_problem(sys.argv[1], {"HF_TOKEN": "arn:x"} if len(sys.argv) > 2 else {}))
"""


def test_a_gated_hub_model_without_a_token_secret_is_refused() -> None:
    hub = FakeHub(token="hf_write", gated={"meta-llama/Llama-3.1-8B": "manual"}).start()
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "hf_local",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def ask(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", GATED, *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    try:
        gated, with_secret, open_model = ask("meta-llama/Llama-3.1-8B"), ask("meta-llama/Llama-3.1-8B", "x"), ask("gpt2")
    finally:
        hub.stop()
    assert "is a gated model on the Hugging Face Hub (manual approval)" in gated and "secrets: {HF_TOKEN:" in gated
    assert "RESULT None" in with_secret and "RESULT None" in open_model
    assert ("GET", "/api/models/meta-llama/Llama-3.1-8B") in hub.requests
