"""Inside the job: a data, model or template problem is one line naming the user's own file (the path or URI in
the spec, not the container's copy) and the fix, printed once, never a traceback; an unreachable Hub fails at once."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cloudtune.errors import JobInputError
from cloudtune.entrypoint import check_model_dir, main
from cloudtune.train.models import load_pretrained
from cloudtune.train.data import encode_input

from .conftest import CHAT_TEMPLATE, make_ctx, make_train, write_records

GEMMA_STYLE = (  # no system role: raises, as the official Gemma templates do
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% if m['role'] == 'assistant' %}{% set r = 'model' %}{% else %}{% set r = m['role'] "
    "%}{% endif %}{{ '<start_of_turn>' + r + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
MISTRAL_STYLE = (  # roles must alternate, as the Mistral / Llama-2 templates demand
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)
SYSTEM_CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "entry 0?"},
                            {"role": "assistant", "content": "a debit"}]}
CP1252_CSV = b'text,label\r\n"Caf\xe9 invoice paid \x96 thanks",paid\r\n"Payment overdue: \x80120",overdue\r\n'


def _chat_data(template: str | None) -> Any:
    return make_train("m", data={"format": "chat", "chat_template": template}).data


@pytest.mark.parametrize("template, records, expected", [
    (GEMMA_STYLE, [SYSTEM_CHAT],
     "chat.jsonl, line 1: the chat template (train.data.chat_template) refused this conversation: System role not "
     "supported; merge the system message into the first user turn, or use a template that supports a system role "
     "(train.data.chat_template)"),
    (MISTRAL_STYLE, [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
                     {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "again"},
                                   {"role": "assistant", "content": "b"}]}],
     "chat.jsonl, line 2: the chat template (train.data.chat_template) refused this conversation: Conversation roles "
     "must alternate user/assistant/user/assistant/...; make the turns alternate"),
    ("{% for m in messages %}{{ m['content'] }", [SYSTEM_CHAT],
     "train.data.chat_template: not a valid Jinja template: unexpected '}'"),
])
def test_template_errors_are_one_line(tokenizer: Any, tmp_path: Path, template: str, records: list, expected: str) -> None:
    data = _chat_data(template)
    tokenizer.chat_template = template
    try:
        path = write_records(tmp_path / "chat.jsonl", records)
        with pytest.raises(JobInputError) as err:
            encode_input(path, "chat.jsonl", data, tokenizer, 64)
    finally:
        tokenizer.chat_template = CHAT_TEMPLATE
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_the_models_own_template_is_named_as_such(tokenizer: Any, tmp_path: Path) -> None:
    tokenizer.chat_template = GEMMA_STYLE
    try:
        path = write_records(tmp_path / "c.jsonl", [SYSTEM_CHAT])
        with pytest.raises(JobInputError, match=r"^s3://bucket/chat/c.jsonl, line 1: the chat template \(the model's "
                                                r"own chat template\) refused"):
            encode_input(path, "s3://bucket/chat/c.jsonl", _chat_data(None), tokenizer, 64)
    finally:
        tokenizer.chat_template = CHAT_TEMPLATE


@pytest.mark.parametrize("source, layout, expected", [
    ("s3://bucket/data/train.csv", {"train.csv": CP1252_CSV}, "s3://bucket/data/train.csv: not UTF-8 text (byte 0xe9 "
                                                             "at offset 16, line 2"),
    ("gs://bucket/train/", {"part-0.csv": b"text,label\na,x\n", "part-1.csv": CP1252_CSV},
     "gs://bucket/train/part-1.csv: not UTF-8 text"),
    ("/home/me/proj/data/train.csv", {"train.csv": b"text,lbl\na,x\n"},
     "/home/me/proj/data/train.csv, line 2: record has no field 'label' (train.data.label_field)"),
])
def test_errors_in_the_job_name_the_users_source(tiny_gpt2: Path, tmp_path: Path, capsys: Any, source: str,
                                                 layout: dict[str, bytes], expected: str) -> None:
    """The whole entrypoint, as a container runs it: one error line naming the source, no traceback, the same
    line as the job's failure reason."""
    container = tmp_path / "container/data/train"
    container.mkdir(parents=True)
    for name, raw in layout.items():
        (container / name).write_bytes(raw)
    train = make_train(tiny_gpt2, task="seq-classification", eval_name=None, max_steps=1)
    job = {"name": "t", "inputs": {"train": str(container)}, "sources": {"train": source},
           "train": train.model_dump(mode="json"), "checkpoint": {"every_steps": 10, "keep": 1}}
    code = main(["--job-json", json.dumps(job), "--model-dir", str(tmp_path / "model"),
                 "--checkpoint-dir", str(tmp_path / "ckpt"), "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr()
    errors = [ln for ln in (out.out + out.err).splitlines() if "error:" in ln.lower()]
    assert code != 0 and "Traceback" not in out.out + out.err
    assert len(errors) == 1 and errors[0].startswith(f"[cloudtune] error: {expected}"), errors
    assert str(container) not in errors[0]


def test_model_dir_without_tokenizer_fails_in_the_job(tiny_gpt2: Path, tmp_path: Path) -> None:
    """The reported case (a save_model() output: config + weights, no tokenizer) no longer trains on EOS alone."""
    import shutil

    ckpt = tmp_path / "ckpt-no-tokenizer"
    ckpt.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_gpt2 / name, ckpt / name)
    with pytest.raises(JobInputError, match=r"^train.model: models/ckpt has no tokenizer files"):
        load_pretrained(str(ckpt), shown="models/ckpt")


@pytest.mark.parametrize("damage", ["truncated weights", "unknown architecture"])
def test_a_model_transformers_cannot_load_is_one_line(tiny_gpt2: Path, tmp_path: Path, damage: str) -> None:
    import shutil

    model = shutil.copytree(tiny_gpt2, tmp_path / "m")
    if damage == "truncated weights":  # a partial copy or download
        (model / "model.safetensors").write_bytes((tiny_gpt2 / "model.safetensors").read_bytes()[:1000])
        expected = r"^train.model: models/m/model.safetensors is damaged or cut short \(no valid safetensors header\)"
    else:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "not-a-known-model"}))
        expected = r"^train.model: cannot load the model of models/m: .*`not-a-known-model`"
    with pytest.raises(JobInputError, match=expected) as err:
        load_pretrained(str(model), shown="models/m")
    assert str(err.value).endswith(("check that its files are complete (copy them again), or point train.model at "
                                    "another model", "copy or download the model again"))


def test_an_empty_tokenizer_is_refused(tiny_gpt2: Path) -> None:
    from transformers import GPT2Tokenizer

    from cloudtune.data.modeldir import check_tokenizer

    vocab = tiny_gpt2.parent / "empty-vocab.json"
    merges = tiny_gpt2.parent / "empty-merges.txt"
    vocab.write_text(json.dumps({"<|endoftext|>": 0}))
    merges.write_text("#version: 0.2\n")
    with pytest.raises(JobInputError, match="tokenizer of hub/model is empty"):
        check_tokenizer(GPT2Tokenizer(str(vocab), str(merges)), "hub/model")


def test_max_seq_len_past_the_models_positions_fails_before_training(tiny_gpt2: Path) -> None:
    with pytest.raises(JobInputError, match=r"^train.hyperparameters.max_seq_len: 512 exceeds this model's maximum "
                                            r"positions 128 \(n_positions in the config of my-model\); set max_seq_len <= 128$"):
        load_pretrained(str(tiny_gpt2), shown="my-model", max_seq_len=512)


HUB_PROBE = """
import sys, time
import huggingface_hub, transformers  # imported first: the clock times the Hub's calls, not a loaded disk's imports
from cloudtune.errors import JobInputError
from cloudtune.train.models import load_pretrained
t = time.monotonic()
try:
    load_pretrained("someorg/some-model")
except JobInputError as exc:
    print("ERR", exc)
print("SECONDS", round(time.monotonic() - t, 1))
"""


@pytest.mark.parametrize("env, expected", [
    ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "train.model: cannot reach the Hugging Face Hub (http://127.0.0.1:9) to "
                                            "download 'someorg/some-model'"),
    ({"HF_HUB_OFFLINE": "1"}, "train.model: 'someorg/some-model' is not in the local Hugging Face cache and "
                              "HF_HUB_OFFLINE is set"),
])
def test_unreachable_hub_model_fails_at_once(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """Port 9 on loopback is closed: the Hub is unreachable; nothing leaves this machine."""
    full = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}
    out = subprocess.run([sys.executable, "-c", HUB_PROBE], env=full, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ERR " + expected), out.stdout + out.stderr
    assert "Traceback" not in out.stderr and float(lines[-1].split()[1]) < 15


def test_recipe_without_a_model_fails_command_gets_a_warning(tmp_path: Path, capsys: Any) -> None:
    ctx = make_ctx(tmp_path, {})
    ctx.model_dir.mkdir(parents=True)
    with pytest.raises(JobInputError, match="the recipe wrote no model to the model dir"):
        check_model_dir(dataclasses.replace(ctx, job={"train": {"model": "m"}}))
    assert check_model_dir(dataclasses.replace(ctx, job={"command": "python train.py"})) == 0
    assert "[cloudtune] warning: nothing was written to the model dir" in capsys.readouterr().out
    (ctx.model_dir / "model.safetensors").write_bytes(b"")
    assert check_model_dir(dataclasses.replace(ctx, job={"train": {"model": "m"}})) == 0


@pytest.mark.slow
def test_input_error_under_torchrun_is_printed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes meet the same bad input: one error line in the log, no torchrun traceback."""
    from cloudtune import api

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the model is not cached: an input error found inside the job
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "train.jsonl").write_text('{"text": "hello world"}\n' * 4)
    (tmp_path / "job.yaml").write_text("name: twice\ninputs: {train: train.jsonl}\nresources: {processes_per_node: 2}\n"
                                       "train: {model: someorg/not-cached, hyperparameters: {max_steps: 1}}\n")
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=180) == "failed"
    log = list(job.logs())
    errors = [ln for ln in log if ln.startswith("[cloudtune] error:")]
    assert errors == ["[cloudtune] error: train.model: 'someorg/not-cached' is not in the local Hugging Face cache and "
                      "HF_HUB_OFFLINE is set; download it first (hf download someorg/not-cached) or unset HF_HUB_OFFLINE"]
    assert not any("Traceback" in ln or "ChildFailedError" in ln for ln in log), "\n".join(log)
    # the node names the first rank that failed (cloudtune.runtime.torchrun); the other failed alike, or was stopped
    assert re.search(r"^\[cloudtune\] torchrun: first failure: rank [01] exited 65 \(input\)", "\n".join(log), re.M), \
        "\n".join(log)


HUB_FAKE = """
import http.server, sys, threading, time
class Hub(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        code, error = {"gated": (403, "GatedRepo"), "gguf": (404, "EntryNotFound")}.get(
            next((k for k in ("gated", "gguf") if k in self.path), ""), (404, "RepoNotFound"))
        self.send_response(code)
        self.send_header("X-Error-Code", error)
        self.send_header("X-Error-Message", error)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_HEAD
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
threading.Thread(target=server.serve_forever, daemon=True).start()
import os
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
from cloudtune.errors import JobInputError
from cloudtune.data.hub import hub_access
for model in ("someorg/missing", "someorg/gated-model", "someorg/model-gguf"):
    try:
        hub_access(model)
    except JobInputError as exc:
        print(exc)
"""


def test_hub_answers_are_one_line(tmp_path: Path) -> None:
    """A loopback fake of the Hub's HTTP answers (404 RepoNotFound, 403 GatedRepo, 404 EntryNotFound for a repo
    without config.json): one line each, with the fix."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run([sys.executable, "-c", HUB_FAKE], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == [
        "train.model: no model 'someorg/missing' on the Hugging Face Hub (or it is private: give a token as the "
        "HF_TOKEN secret); check the id, or give a local directory",
        "train.model: 'someorg/gated-model' is a gated model; accept its terms on the Hub and give a token "
        "(secrets: {HF_TOKEN: ...})",
        "train.model: 'someorg/model-gguf' on the Hugging Face Hub has no config.json, so it is not a transformers "
        "model; pick the repository of the transformers weights"], out.stdout + out.stderr
