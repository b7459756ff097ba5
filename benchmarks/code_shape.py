"""The shape of the code: lines per cloud plugin, the largest files and functions, and how many are over the
project's limits (files ~500 lines, functions ~60), for one or more checkouts side by side.

    python benchmarks/code_shape.py [--tree PATH ...] [--top 5]

Counts every line of every .py file under cloudtune/ and launchers/<cloud>/cloudtune_<cloud>/ (as
`find ... -name '*.py' | xargs cat | wc -l` does); a function's length is its `def` line to its last line (ast).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOUDS = ("aws", "gcp", "azure")


def sources(tree: Path) -> list[Path]:
    found = sorted((tree / "cloudtune").rglob("*.py"))
    for cloud in CLOUDS:
        found += sorted((tree / "launchers" / cloud / f"cloudtune_{cloud}").rglob("*.py"))
    return [p for p in found if "__pycache__" not in p.parts]


def functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in the file."""
    out: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((f"{prefix}{child.name}", (child.end_lineno or child.lineno) - child.lineno + 1))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return out


def shape(tree: Path, top: int) -> dict[str, object]:
    files = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in sources(tree)}
    funcs = [(f"{p.relative_to(tree)}:{name}", n) for p in files for name, n in functions(p)]
    per_cloud = {cloud: sum(n for p, n in files.items() if f"cloudtune_{cloud}" in p.parts) for cloud in CLOUDS}
    lengths = sorted(n for _, n in funcs)
    return {
        "plugin_lines": per_cloud,
        "core_lines": sum(n for p, n in files.items() if p.is_relative_to(tree / "cloudtune")),
        "largest_files": [[str(p.relative_to(tree)), n] for p, n in sorted(files.items(), key=lambda i: -i[1])[:top]],
        "files_over_500": sum(1 for n in files.values() if n > 500),
        "largest_functions": [[name, n] for name, n in sorted(funcs, key=lambda i: -i[1])[:top]],
        "functions": len(funcs),
        "functions_over_60": sum(1 for n in lengths if n > 60),
        "median_function_lines": lengths[len(lengths) // 2] if lengths else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable; default: this one)")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    print(json.dumps({str(t): shape(t, args.top) for t in trees}, indent=2))


if __name__ == "__main__":
    main()
