"""Seeded fuzz of job specs through `cloudtune validate` and the local dry run.

    python benchmarks/fuzz_spec.py [--cases 5000] [--seed 0] [--save DIR] [--case N]

Each case starts from one of three valid specs (a command job, a causal-LM LoRA job, a classification job, all with
real local inputs) and applies 1-4 seeded mutations: values replaced by hostile ones (infinities, NaN, 400-digit
and octal numbers, NUL bytes, lone surrogates, long names and paths, unicode, YAML tags, deep nesting, recursive
aliases, alias bombs), keys renamed, removed or added (many at once), types swapped, anchors and merges, and on
some cases the text itself cut or spliced with stray characters and bytes. Each case runs in this process through
`cloudtune validate` (click's test runner) and `cloudtune.api.plan(..., provider="local")`.

Counted: tracebacks (any exception that is not a CloudtuneError: the CLI exits with something other than a clean
exit code, or plan() raises something else), internal errors (validate ends in the CLI's last-resort line, "...
report it", which is for cloudtune's own bugs, never for the user's input), cases over 2 s (either step; wall time, and CPU time of this process,
which a busy machine does not inflate), cases where validate says ok and the
dry run refuses (they must agree; a refusal by a capability of the local launcher, such as remote inputs, is
counted apart: only the chosen provider can know it), and the process's peak memory (ru_maxrss). Prints one JSON object. Case N is
reproducible on its own with `--case N` (same seed); `--save DIR` keeps the spec and traceback of every failure.
Targets: 0 tracebacks, 0 internal errors, 0 cases over 2 s, 0 disagreements.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLOW_S = 2.0
HANG_S = 30
Tree = dict[str, Any]  # keys and leaves are raw YAML text

COMMAND_BASE: Tree = {
    "name": "fuzz-command",
    "command": '"python train.py --lr 3e-4"',
    "code": "src",
    "resources": {"accelerator": "cpu", "nodes": "1", "processes_per_node": "auto", "spot": "false", "disk_gb": "100",
                  "max_runtime": "2h", "instance_type": {"aws": "ml.g5.xlarge"}},
    "inputs": {"train": "data/train.jsonl"},
    "env": {"HF_HOME": "/tmp/hf", "MODE": '"fast"', "WORKERS": "4"},
    "secrets": {"HF_TOKEN": '"arn:aws:secretsmanager:us-east-1:123456789012:secret:tok"'},
    "checkpoint": {"every_steps": "50", "keep": "2"},
    "retries": "0",
    "providers": {"local": {"emulate": "aws"}},
}
LORA_BASE: Tree = {
    "name": "fuzz-lora",
    "resources": {"accelerator": "cpu", "max_runtime": "90m"},
    "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
    "train": {
        "task": "causal-lm",
        "model": "./model",
        "data": {"train": "train", "eval": "eval", "text_field": "text", "format": "text", "packing": "false"},
        "lora": {"r": "8", "alpha": "16", "dropout": "0.05", "target_modules": "auto", "merge": "false"},
        "hyperparameters": {"epochs": "1", "learning_rate": "5.0e-4", "batch_size": "8", "max_seq_len": "64",
                            "seed": "42", "warmup_ratio": "0.1", "weight_decay": "0.0", "eval_every": "10"},
    },
    "checkpoint": {"every_steps": "20", "keep": "1"},
    "providers": {"local": {"emulate": "gcp"}},
}
CLASSIFY_BASE: Tree = {
    "name": "fuzz-classify",
    "inputs": {"train": "data/labels.jsonl"},
    "train": {
        "task": "seq-classification",
        "model": "./model",
        "data": {"train": "train", "eval": "null", "text_field": "text", "label_field": "label", "labels": "[neg, pos]"},
        "hyperparameters": {"epochs": "2", "learning_rate": "1.0e-3", "max_steps": "5"},
    },
    "providers": {"local": {"emulate": "azure", "jobs_dir": "jobs"}},
}
BASES = (COMMAND_BASE, LORA_BASE, CLASSIFY_BASE)

FIELDS = [  # every field path of the spec, including ones the bases leave out
    "name", "image", "outputs", "command", "code", "retries", "resources.accelerator", "resources.nodes",
    "resources.processes_per_node", "resources.spot", "resources.disk_gb", "resources.max_runtime",
    "resources.instance_type.aws", "resources.instance_type.gcp", "inputs.train", "inputs.eval", "inputs.extra",
    "env.EXTRA", "secrets.TOKEN", "checkpoint.every_steps", "checkpoint.keep", "train.task", "train.model",
    "train.distributed", "train.data.train", "train.data.eval", "train.data.format", "train.data.text_field",
    "train.data.prompt_field", "train.data.chat_template", "train.data.labels", "train.data.packing",
    "train.lora.r", "train.lora.alpha", "train.lora.dropout", "train.lora.target_modules", "train.lora.merge",
    "train.hyperparameters.epochs", "train.hyperparameters.max_steps", "train.hyperparameters.learning_rate",
    "train.hyperparameters.batch_size", "train.hyperparameters.gradient_accumulation_steps",
    "train.hyperparameters.max_seq_len", "train.hyperparameters.warmup_ratio", "train.hyperparameters.weight_decay",
    "train.hyperparameters.seed", "train.hyperparameters.precision", "train.hyperparameters.eval_every",
    "train.hyperparameters.early_stopping_patience", "providers.local.emulate", "providers.local.jobs_dir",
    "providers.aws.role", "providers.aws.region", "providers.gcp.project", "providers.azure.workspace",
]


def _deep(rng: random.Random, open_: str, close: str) -> str:
    depth = rng.choice([5, 31, 32, 33, 100, 600, 3000, 20000])
    return open_ * depth + close * depth


def _laughs(rng: random.Random) -> str:
    levels = rng.randint(2, 12)
    parts = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _merge_bomb(rng: random.Random) -> str:
    n = rng.randint(3, 30)
    parts = ["&m0 {a: 1, b: 2}"] + [f"&m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, n)]
    return "[" + ", ".join(parts) + "]"


def nasty(rng: random.Random) -> str:
    """One hostile value, as raw YAML text (single line)."""
    pick = rng.randrange(12)
    if pick == 0:
        return rng.choice([".inf", "-.inf", ".nan", ".NaN", "1.0e+400", "-1.0e+400", "1e400", "0", "-1", "1.5",
                           "2147483648", "4294967296", "9" * 400, "-" + "9" * 40, "1" + "0" * 30, "0.0", "-0.0",
                           "9" * 4301, "-" + "9" * 5000, "1" + "0" * 4300 + ".5", '"' + "9" * 5000 + '"'])
    if pick == 1:
        return rng.choice(["012", "0123456701", "012345670123", "02134", "00", "07", "08", "0x1F", "0o17", "0b101",
                           "1:30", "190:20:30.15", "1_000", "+5", "1.10", "3.", ".5"])
    if pick == 2:
        return rng.choice(["yes", "no", "on", "off", "Yes", "OFF", "y", "n", "true", "True", "FALSE", "~", "null",
                           "", '""', "''", "[]", "{}", "[1, 2]", "{a: 1}", "[[]]", "- a", "? a"])
    if pick == 3:
        return rng.choice(['"\\0"', '"a\\0b"', '"\\x00"', '"data/\\0/x"', '"\\ud800"', '"\\udcff"', '"\\t\\n"',
                           '"x\\n"', '"\\x1b[31m"', '"\\u202e"', '"\\U0001F600"', "é", '"名前"', '"\\u0085"',
                           '"\\ufeff"', '" "', "'  '", '"\\r"'])
    if pick == 4:
        n = rng.choice([64, 65, 255, 256, 300, 4096, 5000, 100_000])
        return rng.choice(["a" * n, '"' + "x" * n + '"', "/".join(["d" * min(n, 300)] * rng.randint(1, 20)),
                           "./" + "é" * (n // 2), "s3://bucket/" + "k" * n])
    if pick == 5:
        return rng.choice(["~nosuchuser/x", "~", "/", ".", "..", "../../../../etc", "/proc/self", "/dev/null",
                           "data", "data/", "data/train.jsonl/x", "s3://bucket/x", "gs://b", "https://x/y",
                           "azureml://x", "file:///etc/passwd", "model", "train", "eval"])
    if pick == 6:
        return rng.choice(["!!binary aGk=", "!!python/object:os.system x", "!!python/name:os.system ''",
                           "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2024-01-01", "!!str 012", "!!int 12",
                           "!!float 1", "!custom x", "! 012", "2024-01-05", "2024-01-05T10:00:00Z", "!!null ''"])
    if pick == 7:
        return rng.choice(["&a [1, *a]", "&a {x: *a}", "*undefined", "&a x", _laughs(rng), _merge_bomb(rng)])
    if pick == 8:
        return rng.choice([_deep(rng, "[", "]"), _deep(rng, "{a: ", "}"), "[" + ", ".join(["1"] * rng.choice([10, 5000, 50_000])) + "]"])
    if pick == 9:
        return rng.choice(["H100:8", "L4", "l4:1", "L4:99999999", "L4:0", "L4:-1", "L4:²", "L4:1.5", "TPU-v5e:8",
                           "L5:1", "cpu:0", "CPU", ":1", "A100-80GB:16", "h100-80gb", '"L4 :1"', "v5e"])
    if pick == 10:
        return rng.choice(["90m", "1d", "400d", "0s", "-5m", "1.5h", "2 h", "1w", "99999999999999999999h",
                           "365d", "1e3", "auto", "fsdp", "zero3", "bf16", "fp8", "chat", "seq-classification",
                           "translation", "gcp", "k8s"])
    return rng.choice(['"python x.py"', '"   "', '"rm -rf /; echo"', '"$(whoami)"', '"a\\nb"', "'x'",
                       '"' + "\\\\" * 10 + '"', "x" * 41, "my-job-1", "My_Job", "-job", "job-"])


def nasty_key(rng: random.Random, siblings: list[str]) -> str:
    """A key to insert, as raw YAML text."""
    typo = ""
    if siblings:
        word = rng.choice(siblings)
        i = rng.randrange(max(len(word), 1))
        typo = word[:i] + word[i + 1:] if rng.random() < 0.5 else word[:i] + "x" + word[i:]
    return rng.choice([typo or "extra", '"name\\n"', "ÉNV", "a" * 300, '"\\0"', "1", "yes", "~", "<<", "? [a, b]",
                       '"a b"', "x-custom", "A_VALID_NAME", "_", "0A", "K" * 256, '"FOO\\n"', "foo.bar", "-", '"\\ud800"'])


def leaf_paths(tree: Tree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in tree.items():
        path = (*prefix, key)
        out.append(path)
        if isinstance(value, dict):
            out += leaf_paths(value, path)
    return out


def dict_paths(tree: Tree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for key, value in tree.items():
        if isinstance(value, dict):
            out += dict_paths(value, (*prefix, key))
    return out


def get(tree: Tree, path: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in path:
        node = node[part]
    return node


def set_path(tree: Tree, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def flow(value: Any) -> str:
    """A subtree as one line of flow YAML."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    return value


VALID = {  # plausible values, so that many cases stay valid and reach the dry run's later steps
    "resources.accelerator": ["L4:1", "H100:8", "a100-80gb:4", "T4", "cpu"], "resources.nodes": ["2", "3"],
    "resources.processes_per_node": ["2", "auto"], "resources.max_runtime": ["1d", "3600", "30m", "1.5h"],
    "resources.spot": ["true"], "resources.disk_gb": ["500"], "image": ["repo/img:1", "null"],
    "outputs": ["s3://bucket/out", "gs://b/o"], "retries": ["3"], "env.EXTRA": ['"x y"', "8", "true", '"012"'],
    "secrets.TOKEN": ['"projects/p/secrets/s/versions/1"'], "checkpoint.keep": ["5"],
    "train.hyperparameters.max_steps": ["3"], "train.hyperparameters.learning_rate": ["1.0e-5", "0.1"],
    "train.hyperparameters.precision": ["bf16", "fp32"], "train.hyperparameters.seed": ["0", "4294967295"],
    "train.lora.target_modules": ["[c_attn]"], "train.distributed": ["fsdp"], "providers.local.emulate": ["azure"],
    "providers.aws.role": ['"arn:aws:iam::123456789012:role/R"'], "inputs.extra": ["data/eval.jsonl"],
}


def mutate(rng: random.Random, tree: Tree) -> list[str]:
    """Apply 1-4 mutations (most often one) in place; returns their names."""
    done = []
    for _ in range(rng.choices([1, 2, 3, 4], weights=[50, 30, 15, 5])[0]):
        op = rng.choice(["leaf", "leaf", "field", "field", "valid", "valid", "key", "delete", "env", "many", "type",
                         "anchor", "merge"])
        done.append(op)
        leaves = leaf_paths(tree)
        if op == "valid":
            where = rng.choice(sorted(VALID))
            set_path(tree, tuple(where.split(".")), rng.choice(VALID[where]))
        elif op == "leaf" and leaves:
            set_path(tree, rng.choice(leaves), nasty(rng))
        elif op == "field":
            set_path(tree, tuple(rng.choice(FIELDS).split(".")), nasty(rng))
        elif op == "key":
            parent = get(tree, rng.choice(dict_paths(tree)))
            parent[nasty_key(rng, list(parent))] = nasty(rng) if rng.random() < 0.7 else "1"
        elif op == "delete" and leaves:
            path = rng.choice(leaves)
            get(tree, path[:-1]).pop(path[-1], None)
        elif op == "env":
            env = tree.setdefault("env", {}) if isinstance(tree.get("env"), dict) else {}
            for _ in range(rng.randint(1, 5)):
                env[rng.choice(["AWS_ACCOUNT_ID", "VERSION", "ZIP", "FLAG", "X", nasty_key(rng, [])])] = nasty(rng)
            tree["env"] = env
        elif op == "many":
            where = rng.choice(["env", "inputs", "secrets", "train.hyperparameters", "resources.instance_type"])
            n = rng.choices([10, 100, 1000, 20_000, 60_000, 160_000], weights=[30, 30, 20, 10, 6, 4])[0]
            set_path(tree, tuple(where.split(".")), {f"K{i}": f"v{i}" for i in range(n)})
        elif op == "type" and leaves:
            path = rng.choice(leaves)
            old = get(tree, path)
            set_path(tree, path, rng.choice([f"[{flow(old)}]", "{k: v}", "[]", "null", flow(old) if isinstance(old, dict) else {"x": "1"}]))
        elif op == "anchor" and len(leaves) > 1:
            src, dst = rng.sample(leaves, 2)
            value = get(tree, src)
            if src[: len(dst)] == dst or dst[: len(src)] == src:
                continue
            set_path(tree, src, f"&x {flow(value)}")
            set_path(tree, dst, "*x")
        elif op == "merge":
            parent = get(tree, rng.choice(dict_paths(tree)))
            parent["<<"] = rng.choice(["{extra: 1}", "[{a: 1}, {b: 2}]", "*nothing", "1", "{name: other}", "[1]"])
    return done


def render(tree: Tree, indent: int = 0) -> str:
    pad = " " * indent
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and len(value) < 50:
            lines.append(f"{pad}{key}:\n{render(value, indent + 2)}")
        else:
            lines.append(f"{pad}{key}: {flow(value) if value != {} else '{}'}")
    return "\n".join(lines)


def splice(rng: random.Random, data: bytes) -> bytes:
    """Damage the text itself: cut it, or insert stray characters or bytes."""
    at = rng.randrange(len(data) + 1)
    pick = rng.randrange(4)
    if pick == 0:
        return data[:at]
    if pick == 1:
        return data[:at] + data[at + rng.randint(1, 20):]
    stray = rng.choice([b"\t", b":", b"- ", b"[", b"{", b'"', b"'", b"&", b"*", b"!", b"%", b"@", b"`", b"\x00",
                        b"\xff\xfe", b"\xc3", b"\xef\xbb\xbf", "\u0085".encode(), b"\r", b"\n  ", b"---\n", b"..."])
    return data[:at] + stray + data[at:]


def overrides(rng: random.Random) -> list[str]:
    """`--set KEY=VALUE` items: known fields or odd keys, hostile values, now and then a non-UTF-8 byte as it
    reaches Python from the command line (a lone surrogate)."""
    items = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(FIELDS) if rng.random() < 0.8 else rng.choice(["", ".", "a..b", "x" * 300, ".".join("a" * 60),
                                                                      "env", "env.A.B", "env.A\udcff", "inputs"])
        value = nasty(rng) if rng.random() < 0.8 else rng.choice(["\udcff", "a=b=c", "[unclosed", "{", "\x00"])
        items.append(f"{key}={value}" if rng.random() < 0.95 else key)
    return items


def make_case(seed: int, index: int) -> tuple[bytes, list[str], list[str]]:
    """Case `index`: the spec (bytes, as written to job.yaml), the mutations applied and the `--set` items."""
    import copy

    rng = random.Random(f"{seed}-{index}")
    tree = copy.deepcopy(rng.choice(BASES))
    ops = mutate(rng, tree)
    data = (render(tree) + "\n").encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:
        data = splice(rng, data)
        ops.append("splice")
    sets = overrides(rng) if rng.random() < 0.2 else []
    if sets:
        ops.append("set")
    return data, ops, sets


def make_workspace(root: Path) -> None:
    """Real local inputs, a model directory the plan-time checks accept, and a code dir."""
    (root / "data").mkdir(parents=True)
    (root / "data/train.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(8)))
    (root / "data/eval.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    (root / "data/labels.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": ["neg", "pos"][i % 2]}) + "\n"
                                                    for i in range(8)))
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    (model / "model.safetensors").write_bytes(b"")
    (model / "tokenizer.json").write_text("{}")
    (root / "src").mkdir()
    (root / "src/train.py").write_text("print('hello')\n")


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case that runs past HANG_S."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout(f"over {HANG_S} s")


@dataclass
class Outcome:
    index: int
    ops: list[str]
    validate_exit: int | None = None
    plan_ok: bool | None = None
    plan_capability: bool = False  # refused by a capability of the local launcher (e.g. remote inputs): no provider
    # -neutral check can know it, so it is not a disagreement with validate
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    traceback: str | None = None
    internal: str | None = None  # the CLI's last-resort line ("... report it"): an input taken for a bug


def run_case(index: int, data: bytes, ops: list[str], spec: Path, sets: list[str]) -> Outcome:
    from click.testing import CliRunner

    from cloudtune import api
    from cloudtune.cli import main
    from cloudtune.errors import CloudtuneError

    spec.write_bytes(data)
    out = Outcome(index, ops)
    start, cpu = time.perf_counter(), time.process_time()
    signal.alarm(HANG_S)
    try:
        args = ["validate", str(spec)] + [arg for item in sets for arg in ("--set", item)]
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    except CaseTimeout:
        out.traceback = f"validate: over {HANG_S} s"
        result = None
    finally:
        signal.alarm(0)
    out.seconds["validate"] = time.perf_counter() - start
    out.cpu_seconds["validate"] = time.process_time() - cpu
    if result is not None:
        out.validate_exit = result.exit_code
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            out.traceback = "validate: " + "".join(traceback.format_exception(*result.exc_info))
        said = result.stderr if hasattr(result, "stderr") else result.output
        if "report it" in said:
            out.internal = "validate: " + said
    start, cpu = time.perf_counter(), time.process_time()
    signal.alarm(HANG_S)
    try:
        api.plan(str(spec), provider="local", suffix="fuzz", overrides=sets)
        out.plan_ok = True
    except CloudtuneError as exc:
        from cloudtune.local.launcher import CAPABILITIES

        out.plan_ok = False
        out.plan_capability = any(not cap.supported and cap.reason in str(exc) for cap in vars(CAPABILITIES).values())
    except (Exception, CaseTimeout):
        out.plan_ok = False
        out.traceback = (out.traceback or "") + "\nplan: " + traceback.format_exc()
    finally:
        signal.alarm(0)
    out.seconds["plan"] = time.perf_counter() - start
    out.cpu_seconds["plan"] = time.process_time() - cpu
    return out


def fuzz(cases: int, seed: int, save: Path | None = None, only: int | None = None) -> dict[str, Any]:
    """Run the cases; returns the summary (see the module docstring). The environment and the SIGALRM handler
    are restored afterwards."""
    saved_env = {k: os.environ.get(k) for k in ("CLOUDTUNE_HOME", "HF_HUB_OFFLINE")}
    saved_alarm = signal.signal(signal.SIGALRM, _alarm)
    try:
        return _fuzz(cases, seed, save, only)
    finally:
        signal.signal(signal.SIGALRM, saved_alarm)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fuzz(cases: int, seed: int, save: Path | None, only: int | None) -> dict[str, Any]:
    indices = [only] if only is not None else list(range(cases))
    tracebacks: list[int] = []
    internal: list[int] = []
    slow: list[int] = []
    disagree: list[int] = []
    exits: dict[str, int] = {}
    capability = 0
    slow_cpu = 0
    slowest_cpu = 0.0
    ops_seen: dict[str, int] = {}
    slowest = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root / "ws")
        os.environ["CLOUDTUNE_HOME"] = str(root / "home")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        spec = root / "ws" / "job.yaml"
        start = time.perf_counter()
        for index in indices:
            data, ops, sets = make_case(seed, index)
            out = run_case(index, data, ops, spec, sets)
            for op in ops:
                ops_seen[op] = ops_seen.get(op, 0) + 1
            exits[str(out.validate_exit)] = exits.get(str(out.validate_exit), 0) + 1
            worst = max(out.seconds.values())
            slowest = max(slowest, worst)
            slowest_cpu = max(slowest_cpu, *out.cpu_seconds.values())
            if max(out.cpu_seconds.values()) > SLOW_S:
                slow_cpu += 1
            failed = out.traceback is not None
            if failed:
                tracebacks.append(index)
            if out.internal is not None:
                internal.append(index)
                failed = True
            if worst > SLOW_S:
                slow.append(index)
            if out.plan_capability:
                capability += 1
            elif out.validate_exit == 0 and out.plan_ok is False and not failed:
                disagree.append(index)
            if save is not None and (failed or worst > SLOW_S or index in disagree[-1:]):
                save.mkdir(parents=True, exist_ok=True)
                (save / f"case-{index}.yaml").write_bytes(data)
                (save / f"case-{index}.txt").write_text(json.dumps({"ops": ops, "sets": sets, "seconds": out.seconds,
                                                                    "cpu_seconds": out.cpu_seconds,
                                                                    "validate_exit": out.validate_exit,
                                                                    "plan_ok": out.plan_ok}) + "\n" + (out.traceback or "")
                                                          + (out.internal or ""))
        elapsed = time.perf_counter() - start
    return {
        "cases": len(indices),
        "seed": seed,
        "tracebacks": len(tracebacks),
        "internal_errors": len(internal),
        "over_2s": len(slow),
        "over_2s_cpu": slow_cpu,
        "validate_ok_dry_run_refused": len(disagree),
        "dry_run_refused_by_a_local_capability": capability,
        "slowest_s": round(slowest, 3),
        "slowest_cpu_s": round(slowest_cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "validate_exit_codes": dict(sorted(exits.items())),
        "mutations": dict(sorted(ops_seen.items())),
        "wall_s": round(elapsed, 1),
        "failing_cases": {"traceback": tracebacks[:20], "internal": internal[:20], "over_2s": slow[:20], "disagree": disagree[:20]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write each failing case's spec and traceback here")
    parser.add_argument("--case", type=int, default=None, help="run only this case (reproduce one failure)")
    args = parser.parse_args()
    summary = fuzz(args.cases, args.seed, args.save, args.case)
    print(json.dumps(summary, indent=2))
    sys.exit(1 if summary["tracebacks"] or summary["internal_errors"] else 0)


if __name__ == "__main__":
    main()
