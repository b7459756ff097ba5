"""What git ignores in a code dir, matched with `pathspec` (its GitIgnoreSpec implements git's rules).

Sources, lowest precedence first, as git reads them: the work tree's `.git/info/exclude` and the `.gitignore` files
of the directories between the work-tree root and the code dir (both only when the code dir is inside a git work
tree, and only when they do not ignore the code dir itself), then the code dir's own `.gitignore` files, root and
nested (always: a code dir copied out of its repository keeps them). A deeper file overrides a shallower one; within
a file the last matching line wins; a `!` line re-includes. `pathspec` is imported when the first rule is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GITIGNORE = ".gitignore"


@dataclass(frozen=True)
class _Rules:
    spec: Any  # pathspec.GitIgnoreSpec
    lines: tuple[str, ...]
    source: str  # where the rules were read, for explanations: ".gitignore", "sub/.gitignore", "/repo/.gitignore"
    base: str  # the rules' directory relative to the anchor (work-tree root or code dir): "" or ending with "/"

    def check(self, path: str, is_dir: bool) -> str | bool | None:
        """For `path` relative to the anchor: a reason when these rules ignore it, False when a `!` line
        re-includes it, None when no line matches (or the path is not under the rules' directory)."""
        if not path.startswith(self.base):
            return None
        result = self.spec.check_file(path[len(self.base):] + ("/" if is_dir else ""))
        if result.include is None:
            return None
        if not result.include:
            return False
        return f"ignored by {self.source}:{result.index + 1}: `{self.lines[result.index].strip()}`"


def _read(path: Path, source: str, base: str) -> _Rules | None:
    try:
        if not path.is_file():
            return None
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    import pathspec

    lines = tuple(text.splitlines())
    # a blank line as a comment: pathspec keeps one pattern per line then, so a match's index is its line
    spec = pathspec.GitIgnoreSpec.from_lines([line if line.strip() else "#" for line in lines])
    return _Rules(spec, lines, source, base)


def work_tree(root: Path) -> Path | None:
    """The root of the git work tree holding `root` (a directory with a `.git` dir or file), or None."""
    real = root.resolve()
    for d in (real, *real.parents):
        if (d / ".git").exists():
            return d
    return None


def _verdict(rules: list[_Rules], path: str, is_dir: bool) -> str | None:
    verdict: str | None = None
    for r in rules:
        hit = r.check(path, is_dir)
        if hit is not None:
            verdict = hit or None
    return verdict


class GitIgnores:
    """Decides whether one path of a code dir is ignored; reads each directory's `.gitignore` once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        real = root.resolve()
        top = work_tree(root)
        self.in_work_tree = top is not None
        self.prefix = "" if top is None or top == real else real.relative_to(top).as_posix() + "/"
        outer: list[_Rules] = []
        if top is not None:
            found = [_read(top / ".git" / "info" / "exclude", f"{top}/.git/info/exclude", "")]
            parts = self.prefix.rstrip("/").split("/") if self.prefix else []
            for depth in range(len(parts)):
                base = "/".join(parts[:depth]) + ("/" if depth else "")
                found.append(_read(top.joinpath(*parts[:depth]) / GITIGNORE, str(top.joinpath(*parts[:depth], GITIGNORE)), base))
            outer = [r for r in found if r is not None]
            # rules that ignore the code dir itself (or a directory above it) are not applied to it
            if any(_verdict(outer, "/".join(parts[: i + 1]), True) for i in range(len(parts))):
                outer = []
        self._outer = outer
        self._own: dict[str, _Rules | None] = {}

    def _rules_for(self, rel_dir: str) -> _Rules | None:
        if rel_dir not in self._own:
            path = self.root / rel_dir / GITIGNORE if rel_dir else self.root / GITIGNORE
            source = f"{rel_dir}/{GITIGNORE}" if rel_dir else GITIGNORE
            self._own[rel_dir] = _read(path, source, self.prefix + (rel_dir + "/" if rel_dir else ""))
        return self._own[rel_dir]

    def reason(self, rel: str, is_dir: bool) -> str | None:
        """Why `rel` (relative to the code dir) itself is ignored, or None. Its ancestors are not checked: a walk
        stops at an ignored directory."""
        parts = rel.split("/")
        rules = list(self._outer)
        for depth in range(len(parts)):
            own = self._rules_for("/".join(parts[:depth]))
            if own is not None:
                rules.append(own)
        return _verdict(rules, self.prefix + rel, is_dir)
