"""Spec input that used to crash, hang or change on the way to the job: each is now one clear error (exit 2).

Kinds: YAML that explodes (aliases, nesting, size), numbers out of range or not finite, paths the file system
refuses, names, env values YAML would change, and `validate` agreeing with the dry run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudtune import api
from cloudtune.errors import CloudtuneError, SpecError
from cloudtune.spec import apply_overrides, load_spec, validate_spec
from cloudtune.specchecks import check_offline
from cloudtune.store import JobStore
from cloudtune.spec.yamlload import MAX_BYTES, MAX_DEPTH, MAX_VALUES
from cloudtune.units import parse_duration

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"
COMMAND = "name: t\ncommand: python x.py\n"
TRAIN = "name: t\ninputs: {train: data.jsonl}\ntrain: {model: gpt2}\n"


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str, budget_s: float = 5.0) -> SpecError:
    """Load `text` as a job.yaml: it must be refused with a SpecError within `budget_s` seconds of this process's CPU
    time (a loose bound against a blow-up; CPU time, which other load on the machine does not inflate as it does
    wall time; the fuzz benchmark measures the 2 s target)."""
    path = write(tmp_path, text)
    start = time.process_time()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert time.process_time() - start < budget_s
    assert str(path) in str(info.value)
    return info.value


def issue(error: SpecError, path: str):
    return next(i for i in error.issues if i.path == path)


def run_cli(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


# ------------------------------------------------------------------------------------------- YAML that explodes
def billion_laughs(levels: int = 9) -> str:
    text = 'lol0: &l0 "lol"\n'
    for i in range(1, levels + 1):
        text += f"lol{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
    return COMMAND + text


EXPLODING = {
    "recursive alias in a mapping": (COMMAND + "env: &a {X: *a}\n", "recursive alias", 3),
    "recursive alias in a list": (COMMAND + "inputs: &a [1, [2, *a]]\n", "recursive alias", 3),
    "nesting 600 deep (flow)": (COMMAND + "env: " + "[" * 600 + "]" * 600 + "\n", "nesting deeper than", 3),
    "nesting 600 deep (block)": (COMMAND + "".join("  " * i + f"k{i}:\n" for i in range(600)), "nesting deeper than", None),
    "billion laughs": (billion_laughs(), f"more than {MAX_VALUES:,} values", None),
    "merge-key bomb": (COMMAND + "a: &a {x: 1, y: 2, z: 3}\n" + "".join(
        f"b{i}: &b{i} {{<<: [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}], k{i}: 1}}\n"
        for i in range(40)), "values", None),
    "undefined alias": (COMMAND + "env: *nothing\n", "refers to no anchor", 3),
    "two documents": (COMMAND + "---\nname: u\n", "more than one YAML document", 3),
    "duplicate key": (COMMAND + "name: u\n", "appears twice", 3),
    "duplicate env key": (COMMAND + "env: {A: '1', A: '2'}\n", "appears twice", 3),
    "python tag": (COMMAND + "env: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system", 3),
    "binary tag": (COMMAND + "env: {A: !!binary aGk=}\n", "!!binary", 3),
    "a list as a key": (COMMAND + "env: {? [a, b] : c}\n", "key must be a plain value", 3),
}


@pytest.mark.parametrize("text,needle,line", EXPLODING.values(), ids=list(EXPLODING))
def test_exploding_yaml_is_one_clear_error_in_time(tmp_path: Path, text: str, needle: str, line: int | None) -> None:
    error = refused(tmp_path, text)
    assert len(error.issues) == 1
    assert needle in error.issues[0].message
    if line is not None:
        assert error.issues[0].line == line


@pytest.mark.parametrize("text,needle,line", EXPLODING.values(), ids=list(EXPLODING))
def test_the_pure_python_parser_gets_the_same_limits(text: str, needle: str, line: int | None) -> None:
    import yaml

    from cloudtune.spec.yamlload import load_yaml

    start = time.process_time()  # CPU time: not inflated by other load on the machine
    with pytest.raises(SpecError) as info:
        load_yaml(text, "job.yaml", loader=yaml.SafeLoader)
    assert time.process_time() - start < 5
    assert needle in info.value.issues[0].message or "not valid YAML" in info.value.issues[0].message


def test_both_parsers_build_the_same_value() -> None:
    import yaml

    from cloudtune.spec.yamlload import load_yaml

    text = "a: &x {k: 1, s: '012', t: 2024-01-05}\nb: {<<: *x, j: [1, 2.5, yes, ~]}\nc: ! 012\n"
    fast, pure = load_yaml(text, "j"), load_yaml(text, "j", loader=yaml.SafeLoader)
    assert fast.data == pure.data and fast.lines == pure.lines
    assert fast.data["b"] == {"k": 1, "s": "012", "t": __import__("datetime").date(2024, 1, 5), "j": [1, 2.5, True, None]}
    assert fast.data["c"] == "012"  # `!` (non-specific tag) keeps a scalar text, as the YAML spec says


def test_the_463_byte_billion_laughs_is_refused_fast_and_small(tmp_path: Path) -> None:
    text = ('name: t\ncommand: x\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
            + "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi")))
    assert len(text.encode()) < 500
    code = ("import resource, sys\nfrom cloudtune.spec import load_spec\nfrom cloudtune.errors import SpecError\n"
            "try:\n    load_spec(sys.argv[1])\nexcept SpecError as e:\n    print(e)\n"
            # the peak of this process's own memory map (VmHWM starts afresh at exec; ru_maxrss would also count the
            # forked copy of a large parent such as a test runner with torch loaded)
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    path = write(tmp_path, text)
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start = children_cpu()  # the child's CPU time, which other load on the machine does not inflate
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert children_cpu() - start < 10
    assert "values (each alias use counts" in res.stdout, res.stdout + res.stderr
    assert int(res.stdout.split()[-1]) < 300_000  # KB: well under 300 MB (it took 12 GB)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    with path.open("w") as fh:
        fh.write(COMMAND + "# " + "x" * (MAX_BYTES + 10) + "\n")
    with pytest.raises(SpecError, match="a job spec may be at most"):
        load_spec(path)


def test_depth_limit_allows_what_a_spec_needs(tmp_path: Path) -> None:
    nested = "x: " + "{a: " * (MAX_DEPTH - 2) + "1" + "}" * (MAX_DEPTH - 2) + "\n"
    error = refused(tmp_path, COMMAND + nested)
    assert "unknown key 'x'" in str(error)  # parsed (not refused as too deep), then named as an unknown key


def test_100k_env_keys_load_in_linear_time(tmp_path: Path) -> None:
    text = COMMAND + "env:\n" + "".join(f"  K{i:06d}: v{i}\n" for i in range(100_000))
    path = write(tmp_path, text)
    start = time.process_time()  # CPU time: not inflated by other load on the machine
    spec = load_spec(path)
    elapsed = time.process_time() - start
    assert len(spec.env) == 100_000 and spec.env["K099999"] == "v99999"
    assert elapsed < 10  # about 1.5 s on one core; it took 15 s parsing twice with the pure-Python loader


def test_thousands_of_inputs_are_refused_before_any_is_resolved(tmp_path: Path) -> None:
    text = COMMAND + "inputs:\n" + "".join(f"  in{i}: data/{i}.jsonl\n" for i in range(60_000))
    error = refused(tmp_path, text)
    assert "a job takes at most 100" in issue(error, "inputs").message


def test_aliases_and_merges_still_work(tmp_path: Path) -> None:
    text = COMMAND + "x-common: &common {HF_HOME: /cache, MODE: fast}\nenv: {<<: *common, MODE: slow}\n"
    error = refused(tmp_path, text)  # x-common itself is not a spec key
    assert "unknown key 'x-common'" in str(error)
    path = write(tmp_path, COMMAND + "env: &e {HF_HOME: /cache}\nproviders: {local: {emulate: aws}}\n")
    assert load_spec(path).env == {"HF_HOME": "/cache"}


def test_override_values_get_the_same_limits(tmp_path: Path) -> None:
    path = write(tmp_path, COMMAND)
    with pytest.raises(SpecError, match="recursive alias"):
        load_spec(path, ["env=&a {X: *a}"])
    with pytest.raises(SpecError, match="nesting deeper"):
        load_spec(path, ["env=" + "[" * 100 + "]" * 100])
    with pytest.raises(SpecError, match="nests deeper"):
        apply_overrides({}, [".".join(["a"] * 100) + "=1"])
    # a non-UTF-8 byte on the command line reaches Python as a lone surrogate
    for item in ("command=\udcff", "env.A=\udcff", "env.A\udcff=b", "inputs.train=x\udcff"):
        with pytest.raises(SpecError, match="surrogate"):
            load_spec(path, [item])


# ------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("field,value,needle", [
    ("learning_rate", ".inf", "finite number"),
    ("learning_rate", ".nan", "finite number"),
    ("learning_rate", "-.inf", "finite number"),
    ("epochs", ".inf", "finite number"),
    ("epochs", ".nan", "finite number"),
    ("warmup_ratio", ".nan", "finite number"),
    ("weight_decay", ".inf", "finite number"),
    ("learning_rate", "1.0e+300", "less than or equal to 10"),
    ("epochs", "1.0e+300", "less than or equal to 100000"),
    ("seed", "-1", "greater than or equal to 0"),
    ("seed", str(2**32), "less than or equal to"),
    ("batch_size", "9" * 400, "less than or equal to"),
    ("max_steps", "9" * 400, "less than or equal to"),
    ("max_seq_len", "9" * 40, "less than or equal to"),
    ("gradient_accumulation_steps", "9" * 40, "less than or equal to"),
    ("eval_every", "9" * 40, "less than or equal to"),
])
def test_hyperparameters_are_finite_and_in_range(tmp_path: Path, field: str, value: str, needle: str) -> None:
    text = f"name: t\ninputs: {{train: a, eval: b}}\ntrain:\n  model: gpt2\n  hyperparameters: {{{field}: {value}}}\n"
    error = refused(tmp_path, text)
    found = issue(error, f"train.hyperparameters.{field}")
    assert needle in found.message and found.line == 5


@pytest.mark.parametrize("text,path", [
    ("resources: {max_runtime: " + "9" * 400 + "}", "resources.max_runtime"),
    ("resources: {max_runtime: '" + "9" * 400 + "s'}", "resources.max_runtime"),
    ("resources: {max_runtime: .inf}", "resources.max_runtime"),
    ("resources: {max_runtime: .nan}", "resources.max_runtime"),
    ("resources: {max_runtime: 400d}", "resources.max_runtime"),
    ("resources: {max_runtime: [1]}", "resources.max_runtime"),
    ("resources: {accelerator: 'L4:99999999999999999999'}", "resources.accelerator"),
    ("resources: {accelerator: 'L4:²'}", "resources.accelerator"),
    ("resources: {processes_per_node: " + "9" * 40 + "}", "resources.processes_per_node"),
    ("resources: {nodes: 1.0e+400}", "resources.nodes"),
    ("resources: {disk_gb: " + "9" * 400 + "}", "resources.disk_gb"),
    ("checkpoint: {every_steps: " + "9" * 400 + "}", "checkpoint.every_steps"),
    ("checkpoint: {keep: " + "9" * 40 + "}", "checkpoint.keep"),
    ("retries: " + "9" * 400, "retries"),
])
def test_every_number_is_in_range(tmp_path: Path, text: str, path: str) -> None:
    error = refused(tmp_path, COMMAND + text + "\n")
    assert issue(error, path).line == 3
    assert len(str(error)) < 2000  # a 400-digit value is shown shortened


def test_parse_duration_never_overflows() -> None:
    assert parse_duration("1d") == 86400 and parse_duration(90.5) == 90
    for bad in (float("inf"), float("nan"), 10**400, "9" * 400, "1e400", "365.0001d", True, "1 h 2"):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_lora_numbers_in_range(tmp_path: Path) -> None:
    error = refused(tmp_path, TRAIN.replace("{model: gpt2}", "{model: gpt2, lora: {r: " + "9" * 30 + ", dropout: .nan}}"))
    assert {"train.lora.r", "train.lora.dropout"} <= {i.path for i in error.issues}


# ------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("text,path,needle", [
    ('inputs: {train: "data/a\\0b"}', "inputs.train", "NUL byte"),
    ("inputs: {train: data/" + "a" * 300 + "}", "inputs.train", "300-byte file or directory name"),
    ("inputs: {train: data/" + "é" * 130 + "}", "inputs.train", "260-byte"),
    ("inputs: {train: " + "/".join(["a" * 200] * 30) + "}", "inputs.train", "a path may have at most 4095"),
    ("inputs: {train: ~nosuchuser-cloudtune/x}", "inputs.train", "cannot be resolved"),
    ("code: " + "c" * 300, "code", "300-byte"),
    ('code: "src\\0"', "code", "NUL byte"),
    ("providers: {local: {jobs_dir: " + "j" * 300 + "}}", "providers.local.jobs_dir", "300-byte"),
])
def test_every_local_path_is_checked_when_the_spec_is_validated(tmp_path: Path, text: str, path: str, needle: str) -> None:
    error = refused(tmp_path, COMMAND + text + "\n")
    found = issue(error, path)
    assert needle in found.message and found.line == 3


@pytest.mark.parametrize("value,needle", [
    ("/proc/self", "virtual file system"), ("/sys/kernel", "virtual file system"), ("/dev/zero", "virtual file system"),
    ("/", "root of the file system"), ("../../../../../../../../../..", "root of the file system"),
])
def test_inputs_in_system_directories_are_refused(tmp_path: Path, value: str, needle: str) -> None:
    error = refused(tmp_path, COMMAND + f"inputs: {{train: {value}}}\n")
    assert needle in issue(error, "inputs.train").message
    link = tmp_path / "data-link"
    link.symlink_to("/proc")
    assert "virtual file system" in issue(refused(tmp_path, COMMAND + "inputs: {train: data-link/self}\n"),
                                          "inputs.train").message


def test_a_path_too_long_once_resolved_is_caught(tmp_path: Path) -> None:
    deep = tmp_path / "/".join(["d" * 250] * 15)  # a spec 3,750+ bytes deep: relative paths resolve past 4095
    deep.mkdir(parents=True)
    error = refused(deep, COMMAND + "inputs: {train: " + "/".join(["e" * 200] * 2) + "}\n")
    assert "resolves to a path" in issue(error, "inputs.train").message


def test_train_model_path_is_checked(tmp_path: Path) -> None:
    error = refused(tmp_path, TRAIN.replace("model: gpt2", "model: ./" + "m" * 300))
    assert "300-byte" in issue(error, "train.model").message


def test_validate_and_the_dry_run_agree_on_paths(tmp_path: Path) -> None:
    path = write(tmp_path, COMMAND + "inputs: {train: data/" + "a" * 300 + "}\n")
    with pytest.raises(SpecError) as from_load:
        load_spec(path)
    with pytest.raises(SpecError) as from_plan:
        api.plan(str(path), provider="local")
    assert from_load.value.issues == from_plan.value.issues


@pytest.mark.parametrize("data,path", [
    ({"name": "t", "command": "python x.py\x00"}, "command"),
    ({"name": "t", "command": "x", "env": {"A": "b\x00c"}}, "env.A"),
    ({"name": "t", "command": "x", "env": {"A": "\udcff"}}, "env.A"),
    ({"name": "t", "command": "x", "outputs": "s3://b/\x00"}, "outputs"),
    ({"name": "t", "command": "x", "providers": {"aws": {"role": "r\x00"}}}, "providers.aws.role"),
])
def test_nul_bytes_and_surrogates_are_refused_anywhere(tmp_path: Path, data: dict, path: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(data, base_dir=tmp_path)
    assert any(i.path == path and ("NUL" in i.message or "surrogate" in i.message) for i in info.value.issues)


# ------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("text,path,needle", [
    ('inputs: {"train\\n": a}', "inputs.'train\\n'", "not a valid input name"),
    ('env: {"FOO\\n": a}', "env.'FOO\\n'", "not a valid environment variable name"),
    ('secrets: {"TOK\\n": "arn:aws:secretsmanager:us-east-1:1:secret:x"}', "secrets.'TOK\\n'", "not a valid secret name"),
    ('env: {"1FOO": a}', "env.1FOO", "not a valid environment variable name"),
    ('env: {"FÖO": a}', "env.FÖO", "not a valid environment variable name"),
    ('env: {"A-B": a}', "env.A-B", "not a valid environment variable name"),
    ("inputs: {" + "a" * 65 + ": x}", "inputs." + "a" * 65, "not a valid input name"),
    ('inputs: {"": x}', "inputs", "not a valid input name"),
    ('name: "t\\n"', "name", "not a valid job name"),
])
def test_one_name_rule_for_every_kind_of_name(tmp_path: Path, text: str, path: str, needle: str) -> None:
    error = refused(tmp_path, COMMAND.replace("name: t\n", "") + text + ("\nname: t\n" if "name:" not in text else "\n"))
    found = next(i for i in error.issues if i.path.startswith(path))
    assert needle in found.message and found.line is not None


def test_json_schema_applies_the_same_name_rule() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from cloudtune.spec import json_schema

    schema = json_schema()
    jsonschema.validate({"name": "t", "command": "x", "env": {"HF_HOME": "/c"}, "inputs": {"train-1": "a"}}, schema)
    for field, key in (("env", "A\n"), ("inputs", "train\n"), ("secrets", "1TOKEN"), ("env", "A-B")):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"name": "t", "command": "x", field: {key: "arn:aws:secretsmanager:x"}}, schema)


def test_secret_reference_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, COMMAND + 'secrets: {TOK: "arn:aws:secretsmanager:us-east-1:1:secret:x\\n"}\n')
    assert "no space or control character" in issue(error, "secrets").message


def test_image_with_a_newline_is_refused(tmp_path: Path) -> None:
    assert "not an image URI" in issue(refused(tmp_path, COMMAND + 'image: "img:1\\n"\n'), "image").message


# ------------------------------------------------------------------------------------------- env values
@pytest.mark.parametrize("value,seen", [
    ("012345670123", "1402433619"),
    ("02134", "1116"),
    ("1.10", "1.1"),
    ("yes", "true"),
    ("no", "false"),
    ("on", "true"),
    ("Off", "false"),
    ("True", "true"),
    ("0x1F", "31"),
    ("1_000", "1000"),
    ("+5", "5"),
    (".inf", "inf"),
    ("1:30", "90"),
    ("2024-01-05T10:00:00Z", "2024-01-05 10:00:00+00:00"),
    ("1.0e+3", "1000.0"),
])
def test_env_values_yaml_would_change_are_refused(tmp_path: Path, value: str, seen: str) -> None:
    error = refused(tmp_path, COMMAND + f"env:\n  VALUE: {value}\n")
    found = issue(error, "env.VALUE")
    assert found.line == 4 and f"'{seen}'" in found.message and f'quote it: "{value}"' in found.hint


@pytest.mark.parametrize("text", ["VALUE:", "VALUE: ~", "VALUE: null"])
def test_empty_env_value_is_refused(tmp_path: Path, text: str) -> None:
    assert 'write VALUE: ""' in issue(refused(tmp_path, COMMAND + f"env:\n  {text}\n"), "env.VALUE").hint


def test_env_names_yaml_would_change_are_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, COMMAND + "env:\n  yes: '1'\n  'ON': '2'\n")
    assert issue(error, "env.yes").line == 4 and "quote it" in issue(error, "env.yes").hint


def test_env_values_that_reach_the_job_unchanged_pass(tmp_path: Path) -> None:
    text = COMMAND + ("env:\n  A: 8\n  B: true\n  C: hello world\n  D: '012'\n  E: \"1.10\"\n  F: -5\n  G: 3.14\n"
                      "  H: 2024-01-05\n  I: $HOME;|=é\n  J: false\n  K: 0\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.env == {"A": "8", "B": "true", "C": "hello world", "D": "012", "E": "1.10", "F": "-5", "G": "3.14",
                        "H": "2024-01-05", "I": "$HOME;|=é", "J": "false", "K": "0"}


def test_env_values_merged_from_an_anchor_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ncommand: x\nenv:\n  <<: {ACCOUNT: 0123}\n  B: 'x'\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert issue(info.value, "env.ACCOUNT").line == 4


def test_env_override_is_taken_exactly_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, COMMAND + "env: {ACCOUNT: 012345670123}\n")
    spec = load_spec(path, ["env.ACCOUNT=012345670123", "env.V=1.10", "env.F=yes"])  # the --set replaces the bad value
    assert spec.env == {"ACCOUNT": "012345670123", "V": "1.10", "F": "yes"}


@pytest.mark.parametrize("text,path,reading", [
    ("resources: {nodes: 010}", "resources.nodes", "octal number 8"),
    ("resources: {max_runtime: 1:30}", "resources.max_runtime", "base-60 number 90"),
    ("retries: 07\ncheckpoint: {keep: 010}", "checkpoint.keep", "octal number 8"),
])
def test_numbers_yaml_reads_in_another_base_are_refused(tmp_path: Path, text: str, path: str, reading: str) -> None:
    error = refused(tmp_path, COMMAND + text + "\n")
    assert reading in issue(error, path).message
    assert all(i.path != "retries" for i in error.issues)  # 07 is 7 in any base


def test_ambiguous_override_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="octal number 8"):
        load_spec(write(tmp_path, COMMAND), ["resources.nodes=010"])


def test_shared_case_env_yaml_octal(tmp_path: Path) -> None:
    case = CASES / "13-env-yaml-octal"
    if not case.is_dir():
        pytest.skip("the shared cases are not in this checkout")
    work = tmp_path / "case"
    shutil.copytree(case, work)
    res = run_cli("validate", str(work / "job.yaml"), home=tmp_path / "home")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    for name, line in (("AWS_ACCOUNT_ID", 5), ("DATASET_VERSION", 6), ("OFFICE_ZIP", 7), ("USE_FAST", 8)):
        assert f"job.yaml:{line}: env.{name}:" in res.stderr
    assert res.stderr.count("quote it") == 4
    text = (work / "job.yaml").read_text()
    for raw in ("012345670123", "1.10", "02134", "yes"):
        text = text.replace(f": {raw}", f': "{raw}"', 1)
    (work / "job.yaml").write_text(text)
    plan = api.plan(str(work / "job.yaml"), provider="local")
    env = json.loads(plan.to_json())["spec"]["env"]
    assert {k: env[k] for k in ("AWS_ACCOUNT_ID", "DATASET_VERSION", "OFFICE_ZIP", "USE_FAST")} == {
        "AWS_ACCOUNT_ID": "012345670123", "DATASET_VERSION": "1.10", "OFFICE_ZIP": "02134", "USE_FAST": "yes"}
    assert env["GREETING"] == "héllo $HOME \"quoted\" 'single'" and env["FILTER"] == "a=b;c=d|e"


# ------------------------------------------------------------------------------------------- validate == dry run
def test_unknown_accelerator_is_a_spec_error_with_its_line(tmp_path: Path) -> None:
    error = refused(tmp_path, COMMAND + "resources:\n  accelerator: H101:8\n")
    found = issue(error, "resources.accelerator")
    assert found.line == 4 and "unknown accelerator 'H101'" in found.message and "H100" in found.message


def test_accelerator_spellings_the_catalog_accepts_pass(tmp_path: Path) -> None:
    for name in ("l4", "a100", "h100-80gb", "v5e", "cpu", "CPU"):
        assert load_spec(write(tmp_path, COMMAND + f"resources: {{accelerator: '{name}'}}\n"))


def test_check_offline_finds_missing_inputs_and_code(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, TRAIN))
    with pytest.raises(CloudtuneError, match="inputs not found"):
        check_offline(spec, JobStore.lookup)
    spec = load_spec(write(tmp_path, COMMAND + "code: nowhere\n"))
    with pytest.raises(CloudtuneError, match="does not exist"):
        check_offline(spec, JobStore.lookup)


@pytest.mark.parametrize("text,needle", [
    (TRAIN, "inputs not found"),
    (COMMAND + "resources: {accelerator: 'L5:1'}\n", "unknown accelerator"),
    (COMMAND + "code: nowhere\n", "does not exist"),
])
def test_validate_fails_where_the_dry_run_fails(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    validate = run_cli("validate", str(path), home=tmp_path / "home")
    dry = run_cli("launch", str(path), "--dry-run", home=tmp_path / "home")
    for res in (validate, dry):
        assert res.returncode == 2, res.stdout + res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------- init
def test_init_into_directories(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("init", "fresh/", home=home, cwd=tmp_path).returncode == 0
    assert (tmp_path / "fresh/job.yaml").is_file()
    (tmp_path / "existing").mkdir()
    assert run_cli("init", "existing", home=home, cwd=tmp_path).returncode == 0
    assert (tmp_path / "existing/job.yaml").is_file()
    assert run_cli("init", "sub/dir/job.yaml", home=home, cwd=tmp_path).returncode == 0
    assert (tmp_path / "sub/dir/job.yaml").is_file()
    again = run_cli("init", "existing/", home=home, cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.parametrize("target", ["afile/job.yaml", "x" * 300, "afile/"])
def test_init_to_an_impossible_path_is_a_clear_error(tmp_path: Path, target: str) -> None:
    (tmp_path / "afile").write_text("not a directory")
    res = run_cli("init", target, home=tmp_path / "home", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------- error size
def test_many_problems_are_listed_up_to_a_cap(tmp_path: Path) -> None:
    text = COMMAND + "inputs:\n" + "".join(f"  bad{i}\\n: x\n" for i in range(0)) + "".join(
        f'  "{i}bad": x\n' for i in range(500))
    error = refused(tmp_path, text)
    assert "... and" in str(error) and str(error).count("\n") < 200
