"""Spec parsing: every error class names its field path (and line), and valid specs round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudtune.errors import SpecError
from cloudtune.spec import JobSpec, apply_overrides, json_schema, load_spec, parse_accelerator, validate_spec
from cloudtune.units import parse_duration

GOOD = """\
name: quickstart
resources:
  accelerator: L4:1
  max_runtime: 2h
inputs:
  train: data/train.jsonl
  eval: data/eval.jsonl
train:
  task: causal-lm
  model: ./models/tiny-gpt2
  data: {train: train, eval: eval, text_field: text}
  hyperparameters: {epochs: 1, learning_rate: 5.0e-4, batch_size: 8, max_seq_len: 128, seed: 42}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_good_spec_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "models/tiny-gpt2").mkdir(parents=True)
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.inputs["train"] == str(tmp_path / "data/train.jsonl")
    assert spec.train is not None and spec.train.model == str(tmp_path / "models/tiny-gpt2")
    assert spec.code == str(tmp_path)
    assert spec.resources.max_runtime_seconds == 7200
    assert spec.processes_per_node() == 1


def test_hub_id_and_input_name_are_left_alone(tmp_path: Path) -> None:
    text = GOOD.replace("./models/tiny-gpt2", "gpt2")
    assert load_spec(write(tmp_path, text)).train.model == "gpt2"
    text = GOOD.replace("./models/tiny-gpt2", "base").replace("  eval: data/eval.jsonl\n", "  eval: data/eval.jsonl\n  base: s3://b/m\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.train.model == "base" and spec.inputs["base"] == "s3://b/m"


BAD = [
    # (replace what, with what, expected field path, expected line, text in message)
    ("name: quickstart", "name: Quick_Start", "name", 1, "not a valid job name"),
    ("name: quickstart", "name: " + "a" * 41, "name", 1, "not a valid job name"),
    ("name: quickstart\n", "", "name", None, "required"),
    ("  accelerator: L4:1", "  acelerator: L4:1", "resources.acelerator", 3, "did you mean 'accelerator'"),
    ("  accelerator: L4:1", "  accelerator: L4:zero", "resources.accelerator", 3, "positive integer"),
    ("  max_runtime: 2h", "  max_runtime: two hours", "resources.max_runtime", 4, "not a duration"),
    ("  max_runtime: 2h", "  max_runtime: 2h\n  nodes: 0", "resources.nodes", 5, "greater than or equal to 1"),
    ("  task: causal-lm", "  task: translation", "train.task", 9, "causal-lm"),
    ("  data: {train: train", "  data: {train: missing", "train.data.train", 11, "train.data.train names input 'missing'"),
    ("batch_size: 8", "batch_size: eight", "train.hyperparameters.batch_size", 12, "integer"),
    ("learning_rate: 5.0e-4", "learning_rte: 5.0e-4", "train.hyperparameters.learning_rte", 12, "did you mean 'learning_rate'"),
    ("train:\n  task", "command: python x.py\ntrain:\n  task", "<spec>", None, "exactly one of `train`"),
    ("name: quickstart", "name: quickstart\nsecrets: {HF_TOKEN: hf_abc123}", "secrets", 2, "must be a reference"),
    ("name: quickstart", "name: quickstart\nretries: -1", "retries", 2, "greater than or equal to 0"),
    ("name: quickstart", "name: quickstart\nproviders: {local: {emulate: k8s}}", "providers.local.emulate", 2, "'aws', 'gcp' or 'azure'"),
    ("name: quickstart", "name: quickstart\nresources2: {}", "resources2", 2, "did you mean 'resources'"),
]


@pytest.mark.parametrize("old,new,path,line,text", BAD, ids=[b[2] + ":" + b[4][:20] for b in BAD])
def test_bad_spec_names_field_and_line(tmp_path: Path, old: str, new: str, path: str, line: int | None, text: str) -> None:
    assert old in GOOD
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD.replace(old, new, 1)))
    issue = next(i for i in info.value.issues if i.path == path)
    assert text in issue.message + " " + issue.hint
    if line is not None:
        assert issue.line == line
    assert str(tmp_path / "job.yaml") in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "name: [unclosed\n"))
    assert info.value.issues[0].path == "<yaml>"
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(write(tmp_path, "- a list\n"))


def test_overrides(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD), ["resources.nodes=2", "train.hyperparameters.learning_rate=1e-3", "env.FOO=bar"])
    assert spec.resources.nodes == 2
    assert spec.train.hyperparameters.learning_rate == 1e-3
    assert spec.env == {"FOO": "bar"}
    with pytest.raises(SpecError, match="KEY=VALUE"):
        apply_overrides({}, ["nodes"])
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD), ["resources.nodez=2"])
    assert info.value.issues[0].path == "resources.nodez"


def test_bad_override_value_is_named_by_its_flag_with_a_typed_hint(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD), ["resources.nodes=abc"])
    issue = info.value.issues[0]
    assert issue.path == "resources.nodes"
    assert issue.line is None  # the bad value is not on any line of the file
    assert "(from --set resources.nodes=abc)" in issue.message
    assert issue.hint == "got 'abc'; give a whole number, e.g. 2"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD), ["train.hyperparameters.learning_rate=fast"])
    assert "give a number" in info.value.issues[0].hint


def test_accelerator_and_duration_parsers() -> None:
    assert str(parse_accelerator("H100:8")) == "H100:8"
    assert parse_accelerator("L4").count == 1
    assert parse_accelerator("CPU").is_cpu
    assert parse_duration("90m") == 5400 and parse_duration("1d") == 86400 and parse_duration(30) == 30
    for bad in ("", "-5", "1w", True):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_spec_in_code_and_json_schema() -> None:
    spec = JobSpec(name="x", command="python train.py")
    assert spec.train is None and spec.resources.accelerator == "cpu"
    schema = json_schema()
    assert schema["title"] == "cloudtune job spec v1"
    assert schema["additionalProperties"] is False
    assert {"name", "resources", "train", "command", "providers"} <= set(schema["properties"])
    json.dumps(schema)


def test_json_schema_accepts_good_and_rejects_bad() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    jsonschema.validate(yaml.safe_load(GOOD), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(GOOD.replace("name: quickstart", "name: q\nbogus: 1")), schema)


def test_validate_spec_does_not_mutate_input() -> None:
    data = {"name": "x", "inputs": {"train": "t.jsonl"}, "train": {"model": "gpt2", "data": {"eval": None}}}
    before = json.dumps(data, sort_keys=True)
    validate_spec(data)
    assert json.dumps(data, sort_keys=True) == before


def test_secret_values_are_never_echoed_in_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD), ["secrets.HF_TOKEN=[hf_value_abc123]"])
    assert "hf_value_abc123" not in str(info.value)
    assert "--set secrets.HF_TOKEN=..." in str(info.value)
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD.replace("name: quickstart", "name: quickstart\nsecrets: {TOKEN: 987654321}", 1)))
    assert "987654321" not in str(info.value)


def test_name_with_trailing_newline_and_empty_command_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a valid job name"):
        load_spec(write(tmp_path, GOOD.replace("name: quickstart", 'name: "quickstart\\n"', 1)))
    with pytest.raises(SpecError, match="command is empty"):
        validate_spec({"name": "x", "command": "   "}, base_dir=tmp_path)


def test_non_utf8_spec_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8") as info:
        load_spec(path)
    assert "save the file as UTF-8" in str(info.value)


@pytest.mark.parametrize("image", ["https://reg.io/train:1", "user:s3cr3t@reg.io/train:1", "user@reg.io/train:1"])
def test_an_image_with_credentials_or_a_scheme_is_refused_without_echoing_it(image: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({"name": "x", "image": image, "command": "python a.py"})
    assert "image" in str(info.value) and "s3cr3t" not in str(info.value) and "user" not in str(info.value).split("image:")[0]


def test_an_image_pinned_by_digest_is_accepted() -> None:
    spec = validate_spec({"name": "x", "image": "reg.io/train@sha256:" + "a" * 64, "command": "python a.py"})
    assert spec.image.endswith("a" * 64)
