"""The front page and the documentation site: short, linked, and generated where it could drift.

`.ci/run` also builds the site with `mkdocs build --strict` (broken links and anchors fail); these tests check what
mkdocs does not: the README's own links, its length, that its quickstart commands are the ones the quickstart
benchmark measures and CI runs, and that the generated spec reference names every field of the spec.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from cloudtune.spec import json_schema

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _spec_reference_module():
    spec = importlib.util.spec_from_file_location("spec_reference", ROOT / "docs/hooks/spec_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move reference material to docs/"
    assert not re.search(r"\b(fixed in|measured at) [0-9a-f]{7}\b", README.read_text()), "no commit hashes on the front page"


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the front page links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_quickstart_commands_are_the_measured_and_ci_ones() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(commands) == 2
    first, second = commands
    assert second == "bash .ci/run" and (ROOT / ".ci/run").is_file()
    bench = (ROOT / "benchmarks/quickstart.py").read_text(encoding="utf-8")
    for part in ("examples/quickstart/prepare.py", "examples/quickstart/job.yaml"):
        assert part in first and part in bench, part
    assert "pip install torch==2.13.0" in first and "torch==2.13.0" in (ROOT / ".ci/run").read_text()


def test_spec_reference_names_every_field() -> None:
    schema = json_schema()
    text = _spec_reference_module().reference(schema)
    sections = {"JobSpec": schema, **schema["$defs"]}
    for title, model in sections.items():
        assert f"### {title}" in text
        for name in model.get("properties", {}):
            assert f"| `{name}` |" in text, f"{title}.{name} missing from the generated reference"


def test_docs_pages_are_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    assert pages and all(page in nav for page in pages), [p for p in pages if p not in nav]
