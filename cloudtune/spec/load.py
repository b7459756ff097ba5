"""Loading a job spec: read the file, apply `--set` overrides, validate, resolve paths; and the JSON Schema.

What needs more than the spec itself (provider names, `job:` models, the inputs' content) is checked on the plan
side, before planning: `cloudtune.specchecks`.

Contract: `load_spec(path)` returns a validated, path-resolved `JobSpec` or raises `SpecError`, whose
issues each name the field path, the YAML line (when known) and how to fix it. Everything downstream
trusts a `JobSpec`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloudtune.errors import SpecError, SpecIssue
from cloudtune.spec.base import NAME_RULES, shown
from cloudtune.spec.issues import issues_from, overridden_keys, text_issues
from cloudtune.spec.origin import SpecOrigin, longest_prefix
from cloudtune.spec.job import JobSpec
from cloudtune.spec.paths import resolve_paths
from cloudtune.spec.yamlload import (
    MAX_BYTES, MAX_DEPTH, YamlSyntaxError, ambiguous_numbers, compose, gc_paused, inexact_env, load_yaml,
)

class CodeJobSpec(JobSpec):
    """`cloudtune.JobSpec`: a JobSpec built in code (`cloudtune.JobSpec(name=..., command=...)`), whose mistakes are a
    SpecError (InvalidInput, exit 2 in the CLI) naming each field by its YAML path, with did-you-mean for an unknown
    key, as `cloudtune validate` reports a job.yaml; instances are JobSpecs. (A subclass: pydantic runs a model's
    own __init__ inside model_validate too, where the loader needs pydantic's error with its locations.)"""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(CODE_SOURCE, issues_from(exc, {}, {})) from None
        self._origin = SpecOrigin(CODE_SOURCE)


CODE_SOURCE = "JobSpec(...)"
"""How errors name a spec built in code."""


CodeJobSpec.__name__ = CodeJobSpec.__qualname__ = "JobSpec"


def validate_spec(data: Any, *, source: str = "<spec>", text: str | None = None, base_dir: Path | None = None,
                  overrides: list[str] | None = None, lines: dict[tuple[str, ...], int] | None = None,
                  known_issues: list[SpecIssue] | tuple[SpecIssue, ...] = ()) -> JobSpec:
    """Validate a mapping as a JobSpec, check and resolve its local paths against `base_dir`.

    `overrides` are the `--set` items already applied to `data`; errors in their values name them. `lines` maps key
    paths to YAML lines (else they are taken from `text`, when given). `known_issues` (found in the YAML itself) are
    reported together with the validation errors. Raises SpecError listing every problem found."""
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("<spec>", "the spec must be a YAML mapping of keys to values", None, "start from `cloudtune init`")])
    if lines is None:
        lines = compose(text, source)[1] if text else {}
    overridden = overridden_keys(overrides)
    issues = list(known_issues) + text_issues(data, lines, overridden)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        reported = {i.path for i in issues}
        issues += [i for i in issues_from(exc, lines, overridden) if i.path not in reported]
    except RecursionError:  # a mapping that contains itself, built in Python
        issues.append(SpecIssue("<spec>", "the spec contains itself (a cyclic reference)", None, "give plain nested values"))
    if issues:
        raise SpecError(source, issues)
    resolved = resolve_paths(spec, base_dir or Path.cwd(), source=source, lines=lines)
    return resolved.with_origin(SpecOrigin(source, lines, overridden))


def _read_text(path: Path, source: str) -> str:
    """The spec file's text, or SpecError: missing, not a file, unreadable, too large, not UTF-8."""
    def fail(message: str, hint: str) -> SpecError:
        return SpecError(source, [SpecIssue("<file>", message, None, hint)])

    try:
        if not path.exists():
            raise fail(f"no such file: {path}", "check the path, or create one with `cloudtune init`")
        if not path.is_file():
            raise fail(f"{path} is not a file", "give the path of a job.yaml")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise fail(f"the file is {size:,} bytes; a job spec may be at most {MAX_BYTES:,}",
                       "a job spec is small: keep data and long values in files it names")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})", "save the file as UTF-8") from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    except ValueError as exc:  # e.g. a NUL byte in the path given to the API
        raise fail(f"cannot read {shown(str(path))}: {exc}", "check the path") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override (`K=V` strings) and validate a job.yaml. The YAML is parsed once (see cloudtune.spec.yamlload)."""
    p = Path(path)
    source = str(path)
    text = _read_text(p, source)
    with gc_paused():
        loaded = load_yaml(text, source)
        data = {} if loaded.data is None else loaded.data
        issues = inexact_env(loaded.root) + ambiguous_numbers(loaded.root)
        if overrides and isinstance(data, dict):
            data = apply_overrides(data, overrides)
            overridden = overridden_keys(overrides)
            issues = [i for i in issues if longest_prefix(tuple(i.path.split(".")), overridden) is None]
        return validate_spec(data, source=source, base_dir=p.resolve().parent, overrides=overrides,
                             lines=loaded.lines, known_issues=issues)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a copy of `data`. A value is parsed as YAML (text that is not YAML stays
    text) under the same limits as a job.yaml; an `env.NAME` value is taken exactly as written."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not key.strip():
            raise SpecError("--set", [SpecIssue(item, "an override must look like KEY=VALUE", None, "e.g. --set resources.nodes=2")])
        if len(parts) > MAX_DEPTH:
            raise SpecError("--set", [SpecIssue(shown(key), f"the key nests deeper than {MAX_DEPTH} levels", None,
                                                "name a field of the spec, e.g. resources.nodes")])
        value = raw if parts[0] == "env" and len(parts) == 2 else _override_value(key.strip(), raw)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _override_value(key: str, raw: str) -> Any:
    """A `--set` value: YAML when it parses (within the limits), else the text itself."""
    if raw == "":
        return ""
    source = f"--set {shown(key)[1:-1]}"
    try:
        loaded = load_yaml(raw, source)
    except YamlSyntaxError:
        return raw
    except SpecError as exc:  # a limit passed: name the key the value was given for
        raise SpecError("--set", [SpecIssue(key, i.message, None, i.hint) for i in exc.issues]) from None
    issues = ambiguous_numbers(loaded.root, skip=())
    if issues:
        raise SpecError(source, [SpecIssue(key, issues[0].message, None, issues[0].hint)])
    return loaded.data


def json_schema() -> dict[str, Any]:
    """The JSON Schema of job.yaml (for editors)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cloudtune job spec v1"
    for field_name, kind in (("inputs", "input"), ("env", "environment variable"), ("secrets", "secret")):
        # (?!\n): Python's $ also matches before a final newline; ECMA-262's does not; both read this the same
        schema["properties"][field_name]["propertyNames"] = {"pattern": "^" + NAME_RULES[kind][0] + r"(?!\n)$"}
    return schema
