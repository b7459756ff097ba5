"""The plan-time preflight (cloudtune.preflight): local data and model dirs checked without torch.

Each kind is tested with the input that was reported and with the other members of the kind: encodings
(cp1252, Latin-1, UTF-16 with and without a byte-order mark, gzip, a bad byte deep in a file or in the second file
of a directory), formats and fields, labels, model-dir layouts (no tokenizer, a partial tokenizer, no weights,
missing shards, a broken config) and position limits (n_positions, max_position_embeddings, RoBERTa's offset,
n_ctx, nested configs; rotary models only warn). Errors must be one line naming the file and the fix, exit 2 from
the CLI, no traceback; the dry run must import no torch.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.tiny_models import PLACEHOLDER_TOKENIZER, placeholder_weights
from click.testing import CliRunner

from cloudtune.cli import main
from cloudtune.preflight import PreflightError, check_spec_inputs
from cloudtune.data.modeldir import model_dir_problems, position_limit
from cloudtune.spec import validate_spec
from cloudtune.data.records import sample_file_records

CP1252_CSV = (b'text,label\r\n"Caf\xe9 invoice paid \x96 thanks",paid\r\n'
              b'"Payment overdue: \x80120 outstanding",overdue\r\n')


def model_dir(path: Path, config: dict[str, Any] | None = None, files: tuple[str, ...] = ("tokenizer.json",),
              weights: tuple[str, ...] = ("model.safetensors",)) -> Path:
    """A saved-model layout: config.json, the smallest weight and tokenizer files the preflight takes for them."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config if config is not None else {"model_type": "gpt2", "n_positions": 256}))
    for name in weights + files:
        (path / name).write_bytes(placeholder(name))
    return path


def placeholder(name: str) -> bytes:
    """The smallest content of a model-dir file of this name that is what its name says."""
    if name.endswith(".safetensors"):
        return placeholder_weights()
    if name == "tokenizer.json":
        return PLACEHOLDER_TOKENIZER.encode()
    if name.endswith(".json"):
        return b"{}"
    if name.endswith(".bin"):
        return b"PK\x03\x04 a torch.save zip"
    if name.endswith((".model",)):
        return b"\x0a\x05\x0a\x01a"  # a SentencePiece ModelProto's first piece
    return b"a\nb\n"  # vocab.txt, merges.txt


def spec_for(tmp: Path, train: dict[str, Any], inputs: dict[str, str] | None = None, model: str = "models/m"):
    from cloudtune.jobinputs import with_model_input

    data = {"name": "pf", "inputs": inputs or {"train": "data/train.jsonl"},
            "train": {"model": f"./{model}", **train}}
    return with_model_input(validate_spec(data, base_dir=tmp))


def problems(tmp: Path, train: dict[str, Any] | None = None, inputs: dict[str, str] | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> list[str]:
    if monkeypatch is not None:
        monkeypatch.chdir(tmp)
    if not (tmp / "models/m").exists():
        model_dir(tmp / "models/m")
    try:
        check_spec_inputs(spec_for(tmp, train or {}, inputs))
    except PreflightError as exc:
        assert all("\n" not in p for p in exc.problems)
        return exc.problems
    return []


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------------- encodings
ENCODINGS = {
    "cp1252-csv": ("train.csv", CP1252_CSV, "byte 0xe9 at offset 16, line 2; it looks like Windows-1252"),
    "latin1-jsonl": ("train.jsonl", '{"text": "ok"}\n{"text": "na\u00efve caf\u00e9"}\n'.encode("latin-1"),
                     "byte 0xef at offset 27, line 2"),
    "utf16-bom-csv": ("train.csv", "text,label\r\nhello,a\r\n".encode("utf-16"), "UTF-16 text, not UTF-8"),
    "utf16-no-bom": ("train.jsonl", '{"text": "hi"}\n'.encode("utf-16-le"), "a NUL byte at offset 1, line 1"),
    "gzip-jsonl": ("train.jsonl", gzip.compress(b'{"text": "hi"}\n'), "gzip-compressed"),
    "bad-byte-deep": ("train.jsonl", b'{"text": "fine"}\n' * 500 + b'{"text": "bad \xff"}\n',
                      "byte 0xff at offset 8514, line 501"),
}


@pytest.mark.parametrize("member", sorted(ENCODINGS))
def test_encoding_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    name, raw, expected = ENCODINGS[member]
    write(tmp_path / "data" / name, raw)
    task = {"task": "seq-classification"} if name.endswith(".csv") else {}
    found = problems(tmp_path, task, {"train": f"data/{name}"}, monkeypatch)
    assert len(found) == 1, found
    assert found[0].startswith(f"data/{name}: ") and expected in found[0]
    assert "save it as UTF-8" in found[0] or "decompress" in found[0]


def test_bad_file_in_a_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/train/part-0.jsonl", '{"text": "good"}\n')
    write(tmp_path / "data/train/part-1.jsonl", b'{"text": "\xe9"}\n')
    found = problems(tmp_path, {}, {"train": "data/train"}, monkeypatch)
    assert found == [found[0]] and found[0].startswith("data/train/part-1.jsonl: not UTF-8 text (byte 0xe9 at offset 10, line 1")


def test_utf8_with_bom_and_a_character_cut_by_the_read_budget_pass(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", b"\xef\xbb\xbf" + '{"text": "caf\u00e9"}\n'.encode() * 3)
    records, complete = sample_file_records(path, "text", "t.jsonl", max_bytes=10_000, max_records=100)
    assert complete and [r["text"] for _, r in records] == ["caf\u00e9"] * 3
    cut = 3 + len('{"text": "caf\u00e9"}\n'.encode()) + len(b'{"text": "caf') + 1  # inside the second record's e-acute
    records, complete = sample_file_records(path, "text", "t.jsonl", max_bytes=cut, max_records=100)
    assert not complete and [r["text"] for _, r in records] == ["caf\u00e9"]


# ------------------------------------------------------------------------------------------------- formats and fields
FIELDS = {
    "text-field-missing": ("train.jsonl", '{"body": "x"}\n', {"data": {"format": "text"}},
                           "no field 'text' (train.data.text_field)"),
    "instruction-no-completion": ("train.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n',
                                  {}, "line 2: record has no field 'completion' (train.data.completion_field)"),
    "chat-not-a-list": ("train.jsonl", '{"messages": "hello"}\n', {}, "field 'messages' must be a list"),
    "chat-no-assistant": ("train.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n', {},
                          "no 'assistant' message"),
    "format-undetectable": ("train.jsonl", '{"question": "q", "answer": "a"}\n', {}, "cannot tell the data format"),
    "invalid-json-line": ("train.jsonl", '{"text": "a"}\n{"text": \n', {}, "line 2: invalid JSON"),
    "json-not-a-list": ("train.json", '"just a string"', {}, "must hold a list of records"),
    "json-one-pretty-object": ("train.json", '{\n  "text": "a"\n}\n', {}, "line 1: invalid JSON: Expecting property "
                               "name enclosed in double quotes; a .json data file holds a list of records"),
    "csv-extra-values": ("train.csv", "text,label\na,b,c\n", {"task": "seq-classification"}, "more values than the header"),
    "csv-semicolons": ("train.csv", "text;label\na;x\n", {"task": "seq-classification"},
                       "line 1: the header 'text;label' is ';'-separated; a .csv data file is comma-separated"),
    "csv-tabs": ("train.csv", "text\tlabel\na\tx\n", {"task": "seq-classification"}, "is '\\t'-separated"),
    "cls-empty-text": ("train.csv", "text,label\na,x\n,y\n", {"task": "seq-classification"},
                       "line 3: field 'text' is empty (train.data.text_field)"),
    "cls-no-label": ("train.csv", "text,lbl\na,x\n", {"task": "seq-classification"}, "no field 'label' (train.data.label_field)"),
    "forced-format-mismatch": ("train.jsonl", '{"text": "a"}\n', {"data": {"format": "chat"}},
                               "no field 'messages' (train.data.messages_field)"),
}


@pytest.mark.parametrize("member", sorted(FIELDS))
def test_format_and_field_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    name, text, train, expected = FIELDS[member]
    write(tmp_path / "data" / name, text)
    found = problems(tmp_path, train, {"train": f"data/{name}"}, monkeypatch)
    assert len(found) == 1 and found[0].startswith(f"data/{name}") and expected in found[0], found


def test_eval_must_have_the_training_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/train.jsonl", '{"prompt": "a", "completion": "b"}\n')
    write(tmp_path / "data/eval.jsonl", '{"text": "plain"}\n')
    found = problems(tmp_path, {}, {"train": "data/train.jsonl", "eval": "data/eval.jsonl"}, monkeypatch)
    assert found == ["data/eval.jsonl, line 1: record has no field 'prompt' (train.data.prompt_field); fields present: text. "
                     "To fix: add it, or name the field that holds it in train.data.prompt_field"]


def test_good_data_of_every_format_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/text.txt", "one line\nanother\n")
    write(tmp_path / "data/ins.json", json.dumps([{"prompt": "p", "completion": "c"}] * 3))
    write(tmp_path / "data/lines.json", '{"text": "a"}\n{"text": "b"}\n')  # JSON Lines under .json (datasets' to_json)
    write(tmp_path / "data/chat.jsonl", json.dumps({"messages": [{"role": "user", "content": "u"},
                                                                 {"role": "assistant", "content": "a"}]}) + "\n")
    for name in ("text.txt", "ins.json", "lines.json", "chat.jsonl"):
        train = {"data": {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}} if name == "chat.jsonl" else {}
        assert problems(tmp_path, train, {"train": f"data/{name}"}, monkeypatch) == []


def test_parquet_is_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([{"body": "x"}] * 3), str(tmp_path / "data/train.parquet"))
    found = problems(tmp_path, {}, {"train": "data/train.parquet"}, monkeypatch)
    assert found and found[0].startswith("data/train.parquet, row 1: cannot tell the data format")


# ------------------------------------------------------------------------------------------------- labels
LABELS = {
    "one-label": ("text,label\na,x\nb,x\n", None, {}, "at least two labels"),
    "mixed-ids-and-names": ('[{"text": "a", "label": 1}, {"text": "b", "label": "x"}]', None, {}, "mixes with named labels"),
    "negative-id": ("text,label\na,-1\nb,1\n", None, {}, "must be an id >= 0"),
    "eval-label-unknown": ("text,label\na,x\nb,y\n", "text,label\nc,z\n", {}, "label 'z' (field 'label') is not one of the labels ['x', 'y']"),
    "label-outside-the-list": ("text,label\na,x\nb,w\n", None, {"data": {"labels": ["x", "y"]}}, "label 'w'"),
    "empty-label": ("text,label\na,x\nb,y\nc,\n", None, {}, "line 4: the label is empty"),
    "blank-label": ("text,label\na,x\nb,y\nc,  \n", None, {}, "line 4: the label is empty"),
    "digits-among-names": ("text,label\na,0\nb,1\nc,defect\n", None, {}, "label '0' is a number among named labels"),
}


@pytest.mark.parametrize("member", sorted(LABELS))
def test_label_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    train_text, eval_text, train, expected = LABELS[member]
    suffix = ".json" if train_text.startswith("[") else ".csv"
    write(tmp_path / f"data/train{suffix}", train_text)
    inputs = {"train": f"data/train{suffix}"}
    if eval_text:
        write(tmp_path / "data/eval.csv", eval_text)
        inputs["eval"] = "data/eval.csv"
    found = problems(tmp_path, {"task": "seq-classification", **train}, inputs, monkeypatch)
    assert len(found) == 1 and expected in found[0], found


def test_digits_named_in_the_label_list_pass(tmp_path: Path) -> None:
    write(tmp_path / "data/train.csv", "text,label\na,0\nb,1\nc,defect\n")
    assert problems(tmp_path, {"task": "seq-classification", "data": {"labels": ["0", "1", "defect"]}},
                    {"train": "data/train.csv"}) == []


@pytest.mark.parametrize("n", [2, 3, 7])
def test_n_labels_pass(tmp_path: Path, n: int) -> None:
    write(tmp_path / "data/train.csv", "text,label\n" + "".join(f"t{i},l{i % n}\n" for i in range(3 * n)))
    assert problems(tmp_path, {"task": "seq-classification"}, {"train": "data/train.csv"}) == []


# ------------------------------------------------------------------------------------------------- model dirs
MODEL_DIRS = {
    "no-tokenizer (save_model output)": ({}, (), ("model.safetensors",), "has no tokenizer files"),
    "tokenizer_config only": ({}, ("tokenizer_config.json", "special_tokens_map.json"), ("model.safetensors",),
                              "has only special_tokens_map.json, tokenizer_config.json, no vocabulary"),
    "bpe vocab without merges": ({}, ("vocab.json", "tokenizer_config.json"), ("model.safetensors",),
                                 "has vocab.json but no merges.txt"),
    "no weights": ({}, ("tokenizer.json",), (), "has config.json but no weights"),
    "no model_type": ({"config": {"n_positions": 64}}, ("tokenizer.json",), ("model.safetensors",), "has no model_type"),
}


@pytest.mark.parametrize("member", sorted(MODEL_DIRS))
def test_model_dir_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str) -> None:
    opts, files, weights, expected = MODEL_DIRS[member]
    model_dir(tmp_path / "models/m", opts.get("config"), files, weights)
    write(tmp_path / "data/train.jsonl", '{"text": "a"}\n')
    found = problems(tmp_path, {}, None, monkeypatch)
    assert len(found) == 1 and found[0].startswith("train.model: models/m") and expected in found[0], found
    assert "save" in found[0] or "point train.model" in found[0]


def test_broken_config_and_missing_shards(tmp_path: Path) -> None:
    broken = model_dir(tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": "gpt2",\n  "n_positions": }')
    assert model_dir_problems(broken, "broken") == [
        "train.model: broken/config.json is not valid JSON (line 2: Expecting value); save it again with save_pretrained"]
    sharded = model_dir(tmp_path / "sharded", weights=("model-00001-of-00002.safetensors",))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert model_dir_problems(sharded, "sharded") == [
        "train.model: sharded/model.safetensors.index.json names 1 shard(s) that are not there: "
        "model-00002-of-00002.safetensors; copy every shard of the model"]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "tokenizer.json").write_text("{}")
    assert "no adapter weights" in model_dir_problems(adapter, "adapter")[0]


def test_safetensors_cut_short_is_named(tmp_path: Path) -> None:
    """A partial copy or download: the header promises more bytes than the file holds."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    whole = len(header).to_bytes(8, "little") + header + bytes(64)
    model = model_dir(tmp_path / "m", weights=())
    (model / "model.safetensors").write_bytes(whole)
    assert model_dir_problems(model, "m") == []
    (model / "model.safetensors").write_bytes(whole[:-10])
    assert model_dir_problems(model, "m") == [
        f"train.model: m/model.safetensors is damaged or cut short (it holds {len(whole) - 10:,} of its "
        f"{len(whole):,} bytes); copy or download the model again"]
    (model / "model.safetensors").write_bytes(b"<html>rate limited</html>")  # an error page saved as weights
    assert "no valid safetensors header" in model_dir_problems(model, "m")[0]


@pytest.mark.parametrize("files", [("tokenizer.json",), ("vocab.json", "merges.txt"), ("vocab.txt",),
                                   ("spiece.model",), ("tokenizer.model",), ("sentencepiece.bpe.model",)])
def test_complete_tokenizer_layouts_pass(tmp_path: Path, files: tuple[str, ...]) -> None:
    assert model_dir_problems(model_dir(tmp_path / "m", files=files), "m") == []


# ------------------------------------------------------------------------------------------------- positions
def test_max_seq_len_over_n_positions_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: max_seq_len 512 on a 256-position GPT-2."""
    write(tmp_path / "data/train.jsonl", '{"text": "a"}\n')
    found = problems(tmp_path, {"hyperparameters": {"max_seq_len": 512}}, None, monkeypatch)
    assert found == ["train.hyperparameters.max_seq_len: 512 exceeds this model's maximum positions 256 "
                     "(n_positions in models/m/config.json); set max_seq_len <= 256"]
    assert problems(tmp_path, {"hyperparameters": {"max_seq_len": 256}}, None, monkeypatch) == []


@pytest.mark.parametrize("config, limit, key, hard", [
    ({"model_type": "gpt2", "n_positions": 1024}, 1024, "n_positions", True),
    ({"model_type": "gpt2", "n_ctx": 512}, 512, "n_ctx", True),
    ({"model_type": "bert", "max_position_embeddings": 512}, 512, "max_position_embeddings", True),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512, "max_position_embeddings", True),
    ({"model_type": "opt", "max_position_embeddings": 2048}, 2048, "max_position_embeddings", True),
    ({"model_type": "distilbert", "max_position_embeddings": 512}, 512, "max_position_embeddings", True),
    ({"model_type": "llama", "max_position_embeddings": 4096, "rope_theta": 1e4}, 4096, "max_position_embeddings", False),
    ({"model_type": "deberta-v2", "max_position_embeddings": 512}, 512, "max_position_embeddings", False),
    ({"model_type": "newarch", "max_position_embeddings": 128, "position_embedding_type": "absolute"}, 128,
     "max_position_embeddings", True),
    ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "max_position_embeddings": 8192}}, 8192,
     "max_position_embeddings", False),
])
def test_position_limit_members(config: dict[str, Any], limit: int, key: str, hard: bool) -> None:
    found = position_limit(config)
    assert found is not None and (found.limit, found.key, found.hard) == (limit, key, hard)


def test_roberta_offset_and_rotary_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir(tmp_path / "models/m", {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
              files=("vocab.json", "merges.txt"))
    write(tmp_path / "data/train.jsonl", '{"text": "a"}\n')
    found = problems(tmp_path, {"hyperparameters": {"max_seq_len": 514}}, None, monkeypatch)
    assert found and "maximum positions 512" in found[0]
    model_dir(tmp_path / "models/m", {"model_type": "llama", "max_position_embeddings": 64, "rope_theta": 1e4})
    warnings = check_spec_inputs(spec_for(tmp_path, {"hyperparameters": {"max_seq_len": 128}}))
    assert len(warnings) == 1 and "exceeds this model's maximum positions 64" in warnings[0]


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_dry_run_exit_2_one_line_no_torch(tmp_path: Path) -> None:
    """The reported cp1252 CSV through a real dry run in a fresh interpreter: exit 2, one error line, no torch."""
    model_dir(tmp_path / "models/m")
    write(tmp_path / "data/train.csv", CP1252_CSV)
    (tmp_path / "job.yaml").write_text("name: cls\ninputs: {train: data/train.csv}\n"
                                       "train: {task: seq-classification, model: ./models/m}\n")
    code = ("import sys; from cloudtune.cli import main\n"
            "try:\n    main(['launch', 'job.yaml', '--dry-run'])\nexcept SystemExit as e:\n"
            "    heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "    print('EXIT', e.code, 'HEAVY', heavy, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == "EXIT 2 HEAVY []", out.stderr
    assert lines[:-1] == ["error: data/train.csv: not UTF-8 text (byte 0xe9 at offset 16, line 2; it looks like "
                          "Windows-1252 (cp1252) text). To fix: save it as UTF-8 (e.g. Excel: CSV UTF-8; Notepad: Save as > UTF-8)"]


def test_cli_lists_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir(tmp_path / "models/m", files=())
    write(tmp_path / "data/train.jsonl", '{"body": "x"}\n')
    (tmp_path / "job.yaml").write_text("name: two\ninputs: {train: data/train.jsonl}\ntrain: {model: ./models/m}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["launch", "job.yaml", "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "2 problems with the job's inputs" in result.output
    assert "models/m has no tokenizer files" in result.output and "data/train.jsonl, line 1: cannot tell" in result.output


# ------------------------------------------------------------------------------------------------- chat templates
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
ALTERNATE = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
             "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ m['content'] }}"
             "{% endfor %}")


def chat_lines(*conversations: tuple[str, ...]) -> str:
    return "".join(json.dumps({"messages": [{"role": r, "content": "hi"} for r in roles]}) + "\n"
                   for roles in conversations)


@pytest.mark.parametrize("where, template, conversations, expected", [
    ("spec", NO_SYSTEM, [("system", "user", "assistant")],
     "data/train.jsonl, line 1: the chat template (train.data.chat_template) refused this conversation: System role "
     "not supported; merge the system message into the first user turn"),
    ("spec", ALTERNATE, [("user", "assistant")] * 2 + [("user", "user", "assistant")],
     "data/train.jsonl, line 3: the chat template (train.data.chat_template) refused this conversation: Conversation "
     "roles must alternate"),
    ("spec", "{% for m in messages %}{{ m['content'] }", [("user", "assistant")],
     "train.data.chat_template: not a valid Jinja template: unexpected '}' (template line 1)"),
    ("tokenizer_config.json", NO_SYSTEM, [("user", "assistant"), ("system", "user", "assistant")],
     "data/train.jsonl, line 2: the chat template (the model's own chat template) refused this conversation"),
    ("chat_template.jinja", NO_SYSTEM, [("system", "user", "assistant")],
     "data/train.jsonl, line 1: the chat template (the model's own chat template) refused"),
])
def test_chat_template_kind_at_plan_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, template: str,
                                         conversations: list, expected: str) -> None:
    model = model_dir(tmp_path / "models/m")
    data: dict[str, Any] = {"format": "chat"}
    if where == "spec":
        data["chat_template"] = template
    elif where == "tokenizer_config.json":
        (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "</s>"}))
    else:
        (model / "chat_template.jinja").write_text(template)
    write(tmp_path / "data/train.jsonl", chat_lines(*conversations))
    found = problems(tmp_path, {"data": data}, None, monkeypatch)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize("template", [
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}",
    # what a simplified renderer cannot evaluate is left to the deep check, never refused here
    "{{ strftime_now('%Y') }}{% for m in messages %}{{ m['content'] | trim }}{% endfor %}",
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}",
])
def test_valid_or_unknowable_templates_pass(tmp_path: Path, template: str) -> None:
    write(tmp_path / "data/train.jsonl", chat_lines(("system", "user", "assistant"), ("user", "assistant")))
    assert problems(tmp_path, {"data": {"format": "chat", "chat_template": template}}) == []
