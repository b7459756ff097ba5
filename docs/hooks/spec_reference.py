"""MkDocs hook: the job spec reference, generated from the pydantic models' JSON Schema at build time.

A page that holds the marker `<!-- spec-reference -->` gets, in its place, one table per section of the spec
(`cloudtune.spec.json_schema()`, the schema `cloudtune schema` prints): each field's path, type, default and
description. The reference therefore cannot drift from the code: a field added to the models appears at the next
build, and `mkdocs build --strict` in CI builds it on every change.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "<!-- spec-reference -->"


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _type(node: dict[str, Any]) -> str:
    """A field's type in words: `string`, `integer >= 1`, `auto | integer`, `mapping of string`, a section name."""
    if "anyOf" in node:
        return " or ".join(dict.fromkeys(_type(n) for n in node["anyOf"]))
    if _ref_name(node):
        return f"[{_ref_name(node)}](#{_ref_name(node).lower()})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        return f"mapping of {_type(node['additionalProperties'])}"
    bounds = [f">= {node['minimum']}" if "minimum" in node else "", f"<= {node['maximum']}" if "maximum" in node else "",
              f"> {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else "",
              f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else ""]
    return " ".join([kind, *[b for b in bounds if b]])


def _default(name: str, node: dict[str, Any], required: list[str]) -> str:
    if name in required:
        return "required"
    if "default" not in node:
        if _ref_name(node):
            return "its fields' defaults"
        return "`{}`" if node.get("type") == "object" else "-"
    return f"`{json.dumps(node['default'])}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(title: str, model: dict[str, Any]) -> list[str]:
    lines = [f"### {title}", ""]
    if model.get("description"):
        lines += [_cell(model["description"].strip().splitlines()[0]), ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    required = model.get("required", [])
    for name, node in model.get("properties", {}).items():
        lines.append(f"| `{name}` | {_type(node)} | {_default(name, node, required)} | "
                     f"{_cell(node.get('description', ''))} |")
    return lines + [""]


def reference(schema: dict[str, Any]) -> str:
    """The whole reference as Markdown: the top level first, then each section in name order."""
    lines = _table("JobSpec", schema)
    for name in sorted(schema.get("$defs", {})):
        lines += _table(name, schema["$defs"][name])
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from cloudtune.spec import json_schema

    return markdown.replace(MARKER, reference(json_schema()))
