"""The source bundle of a job's `code` dir: a deterministic, secret-free `.tar.gz`.

Contracts:
- Deterministic: the same files (paths, bytes, executable bit) give the same archive bytes and sha256,
  whatever their mtimes, owners or the order the filesystem lists them in.
- `.gitignore` files (root and nested) are honoured with git's semantics; `EXCLUDED_ALWAYS` is applied
  first and cannot be re-included by a `!` pattern.
- Symlinks are followed only when they resolve inside the code dir (and their target is not excluded).
- Only stdlib: the CLI imports this module.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Union

from cloudtune.errors import InvalidInput

__all__ = [
    "Bundle",
    "EXCLUDED_ALWAYS",
    "MAX_BUNDLE_BYTES",
    "build_bundle",
    "explain_exclusion",
    "iter_bundle_files",
]

# Total uncompressed bytes a bundle may hold. Read at call time (tests monkeypatch it).
MAX_BUNDLE_BYTES: int = 500 * 1000 * 1000

# gitignore-syntax patterns (relative to the code dir) that never go into a bundle: VCS metadata,
# cloud credentials, private keys, virtualenvs and earlier bundles. `.git` has no trailing slash so
# that a worktree's `.git` file is left out too.
EXCLUDED_ALWAYS: tuple[str, ...] = (
    ".git",
    ".aws/",
    ".azure/",
    "**/.config/gcloud/",
    ".ssh/",
    "__pycache__/",
    "*.pyc",
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials",
    "credentials.json",
    "*credentials*.json",
    "service-account*.json",
    ".netrc",
    ".pypirc",
    ".venv/",
    "venv/",
    "node_modules/",
    "/.cloudtune/",
    "*.tar.gz",
)

_GITIGNORE = ".gitignore"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    """A bundle: `sha256` and `size` are those of its deterministic `.tar.gz` bytes, `files` the sorted relative
    POSIX paths it holds (extra files included). `path` is where those bytes were written, or None while the
    bundle is only computed (a plan writes nothing); `write()` writes them later and checks they still hash
    to `sha256`."""

    path: Path | None
    sha256: str
    size: int
    files: tuple[str, ...]
    items: dict[str, tuple[int, int, "Source"]] = field(default_factory=dict, repr=False, compare=False)
    root: str | None = field(default=None, compare=False)  # the code dir it was built from, if any

    def write(self, out_dir: Path) -> Path:
        """Write the archive to `<out_dir>/<sha256>.tar.gz` (created when missing), atomically; returns that path.

        Raises InvalidInput when the files changed since the bundle was computed (the bytes no longer hash to
        `sha256`): nothing is stored under a hash its content does not have."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        written = _write_archive(self.items, Path(out_dir))
        if written.sha256 != self.sha256:
            assert written.path is not None
            written.path.unlink(missing_ok=True)
            raise InvalidInput(f"the code bundle changed since the plan was made (sha256 {self.sha256[:12]} planned, "
                               f"{written.sha256[:12]} now)", fix="launch again: the new plan carries the new hash")
        return written.path  # type: ignore[return-value]


# --------------------------------------------------------------------------- gitignore matching


def _translate_segment(seg: str) -> str:
    """Regex for one glob path segment: `*` and `?` never match `/`; `[...]` classes; `\\x` escapes."""
    out: list[str] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        if c == "*":
            while i < n and seg[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(seg[i]))
        elif c == "[":
            j = i + 1
            if j < n and seg[j] in "!^":
                j += 1
            if j < n and seg[j] == "]":
                j += 1
            while j < n and seg[j] != "]":
                j += 2 if seg[j] == "\\" else 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : j]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                parts: list[str] = []
                k = 0
                while k < len(body):
                    ch = body[k]
                    if ch == "\\" and k + 1 < len(body):
                        k += 1
                        parts.append(re.escape(body[k]))
                    elif ch in "[]^\\":
                        parts.append("\\" + ch)
                    else:
                        parts.append(ch)
                    k += 1
                out.append(("[^/" if negate else "[") + "".join(parts) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate(pattern: str, anchored: bool) -> re.Pattern[str]:
    """Compile a gitignore pattern (no `!`, no trailing `/`, no leading `/`) to a full-match regex."""
    segs = pattern.split("/")
    parts: list[str] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:.*/)?")
        else:
            parts.append(_translate_segment(seg) + ("" if last else "/"))
    regex = "".join(parts)
    if not anchored:
        regex = "(?:.*/)?" + regex
    return re.compile(regex, re.DOTALL)


@dataclass(frozen=True)
class _Pattern:
    text: str  # the line as written, for explanations
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    source: str  # "<always>" or the .gitignore's relative path
    line: int

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(rel) is not None


def _parse_pattern(raw: str, source: str, line: int) -> _Pattern | None:
    """One gitignore line -> pattern, or None for blanks and comments."""
    text = raw.rstrip("\r\n")
    if not text or text.startswith("#"):
        return None
    while text.endswith(" ") and not text.endswith("\\ "):
        text = text[:-1]
    pat = text
    negate = pat.startswith("!")
    if negate:
        pat = pat[1:]
    dir_only = pat.endswith("/")
    pat = pat.rstrip("/")
    anchored = "/" in pat
    pat = pat.lstrip("/")
    if not pat:
        return None
    return _Pattern(text, _translate(pat, anchored), negate, dir_only, source, line)


_ALWAYS: tuple[_Pattern, ...] = tuple(
    p for i, raw in enumerate(EXCLUDED_ALWAYS, 1) if (p := _parse_pattern(raw, "<always>", i)) is not None
)


class _Matcher:
    """Decides exclusion of one path at a time; loads each directory's `.gitignore` once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rules: dict[str, tuple[_Pattern, ...]] = {}

    def _rules_for(self, rel_dir: str) -> tuple[_Pattern, ...]:
        if rel_dir not in self._rules:
            path = self.root / rel_dir / _GITIGNORE if rel_dir else self.root / _GITIGNORE
            rules: list[_Pattern] = []
            source = f"{rel_dir}/{_GITIGNORE}" if rel_dir else _GITIGNORE
            try:
                if path.is_file():
                    text = path.read_bytes().decode("utf-8", "surrogateescape")
                    for n, raw in enumerate(text.splitlines(), 1):
                        p = _parse_pattern(raw, source, n)
                        if p is not None:
                            rules.append(p)
            except OSError:
                pass
            self._rules[rel_dir] = tuple(rules)
        return self._rules[rel_dir]

    def reason(self, rel: str, is_dir: bool) -> str | None:
        """Why `rel` itself is excluded (its ancestors are not checked), or None."""
        for p in _ALWAYS:
            if p.matches(rel, is_dir):
                return f"always excluded (secrets, VCS data, virtualenvs, bundles): matches `{p.text}`"
        verdict: str | None = None
        parts = rel.split("/")
        for depth in range(len(parts)):
            rel_dir = "/".join(parts[:depth])
            sub = "/".join(parts[depth:])
            for p in self._rules_for(rel_dir):
                if p.matches(sub, is_dir):
                    verdict = None if p.negate else f"ignored by {p.source}:{p.line}: `{p.text}`"
        return verdict


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Entry:
    rel: str
    path: Path
    size: int
    mode: int


def _root(code_dir: Path | str) -> Path:
    root = Path(code_dir)
    if not root.exists():
        raise InvalidInput(f"code dir {root} does not exist", fix="set `code:` to your source directory")
    if not root.is_dir():
        raise InvalidInput(f"code dir {root} is not a directory",
                           fix="set `code` in the spec to a directory, not a file")
    return root


def _inside(target: Path, root_real: Path) -> bool:
    return target == root_real or root_real in target.parents


def _symlink_reason(link: Path, root_real: Path, matcher: _Matcher) -> str | None:
    """Why a symlink is not followed, or None when it points inside the code dir at something included."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken or looping symlink"
    if not _inside(target, root_real):
        return f"symlink points outside the code dir (to {target})"
    if target == root_real:
        return "symlink points at the code dir itself"
    target_rel = target.relative_to(root_real).as_posix()
    why = _explain(matcher, root_real, target_rel, check_exists=False)
    if why is not None:
        return f"symlink target {target_rel} is excluded: {why}"
    return None


def _scan(root: Path) -> list[_Entry]:
    root_real = root.resolve()
    matcher = _Matcher(root)
    found: list[_Entry] = []

    def walk(rel_dir: str, abs_dir: Path, stack: frozenset[Path]) -> None:
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            path = abs_dir / e.name
            try:
                if e.is_symlink():
                    if _symlink_reason(path, root_real, matcher) is not None:
                        continue
                    st = path.stat()
                else:
                    st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if not is_dir and not stat.S_ISREG(st.st_mode):
                continue  # fifos, sockets, devices
            if matcher.reason(rel, is_dir) is not None:
                continue
            if is_dir:
                real = path.resolve()
                if real in stack:
                    continue  # a symlink loop back to an ancestor
                walk(rel, path, stack | {real})
            else:
                found.append(_Entry(rel, path, st.st_size, st.st_mode))

    walk("", root, frozenset({root_real}))
    found.sort(key=lambda x: x.rel)
    return found


def _explain(matcher: _Matcher, root: Path, rel: str, *, check_exists: bool = True) -> str | None:
    root_real = root.resolve()
    parts = [p for p in PurePosixPath(rel).parts if p not in (".", "")]
    if not parts or ".." in parts or PurePosixPath(rel).is_absolute():
        return "not a path inside the code dir"
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        last = depth == len(parts)
        path = root / sub
        is_dir = not last or path.is_dir()
        why = matcher.reason(sub, is_dir)
        if why is None and path.is_symlink():
            why = _symlink_reason(path, root_real, matcher)
        if why is not None:
            return why if last else f"inside excluded directory {sub}/: {why}"
    if check_exists:
        path = root / "/".join(parts)
        if not path.exists():
            return "does not exist in the code dir"
        if not (path.is_file() or path.is_dir()):
            return "not a regular file"
    return None


def iter_bundle_files(code_dir: Path | str) -> list[str]:
    """The sorted relative POSIX paths of the files `build_bundle(code_dir)` would include (no extras).

    Raises InvalidInput when code_dir is missing or not a directory."""
    return [e.rel for e in _scan(_root(code_dir))]


def explain_exclusion(code_dir: Path | str, rel_path: str | os.PathLike[str]) -> str | None:
    """Why `rel_path` (relative to code_dir) is left out of the bundle, or None if it is included.

    The reason names the always-excluded pattern, or the `.gitignore` file, line and pattern, or the
    excluded parent directory, or the symlink problem."""
    root = _root(code_dir)
    rel = Path(rel_path).as_posix() if not isinstance(rel_path, str) else rel_path.replace(os.sep, "/")
    return _explain(_Matcher(root), root, rel)


# --------------------------------------------------------------------------- building


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _check_size(root: Path, entries: list[_Entry], extra: dict[str, bytes]) -> None:
    total = sum(e.size for e in entries) + sum(len(b) for b in extra.values())
    limit = MAX_BUNDLE_BYTES
    if total <= limit:
        return
    largest = sorted(entries, key=lambda e: (-e.size, e.rel))[:5]
    listed = ", ".join(f"{e.rel} ({_human(e.size)})" for e in largest)
    top = largest[0].rel if largest else ""
    suggestion = f"/{top.split('/', 1)[0]}/" if "/" in top else f"/{top}"
    raise InvalidInput(
        f"code dir {root} holds {_human(total)} of files, over the {_human(limit)} bundle limit; largest: {listed}",
        fix=f"add an entry such as `{suggestion}` to {root / _GITIGNORE}, or move data to the spec's `inputs` "
            "(uploaded separately, not bundled)",
    )


def _check_extra_path(name: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise InvalidInput(f"bundle extra file path {name!r} must be a relative POSIX path inside the bundle")
    return p.as_posix()


class _HashingWriter(io.RawIOBase):
    """Writes through to a file while hashing and counting the bytes."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        data = bytes(b)
        self._fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = mode
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _write(out: BinaryIO, items: Iterator[tuple[str, int, int, BinaryIO | bytes]]) -> None:
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, size, mode, src in items:
                if isinstance(src, bytes):
                    tar.addfile(_tarinfo(name, size, mode), io.BytesIO(src))
                else:
                    with src:
                        tar.addfile(_tarinfo(name, size, mode), src)


def build_bundle(code_dir: Path | str, dest: Path | None = None, extra_files: dict[str, bytes] | None = None) -> Bundle:
    """Bundle code_dir as a deterministic `.tar.gz`: its sha256, size and file list.

    `dest` None -> nothing is written (`path` None; `Bundle.write` writes it later); an existing directory ->
    `<dest>/<sha256>.tar.gz`; else the file path to write, atomically. `extra_files` map archive paths (e.g.
    `.cloudtune/job.json`) to bytes and replace a scanned file of the same path. Raises InvalidInput for a
    missing code dir or a bundle over MAX_BUNDLE_BYTES uncompressed.
    """
    root = _root(code_dir)
    extra = {_check_extra_path(k): bytes(v) for k, v in (extra_files or {}).items()}
    entries = [e for e in _scan(root) if e.rel not in extra]
    _check_size(root, entries, extra)

    items: dict[str, tuple[int, int, Source]] = {}
    for e in entries:
        items[e.rel] = (e.size, 0o755 if e.mode & 0o111 else 0o644, e.path)
    for name, data in extra.items():
        items[name] = (len(data), 0o644, data)
    return replace(_write_archive(items, dest), root=str(root))


Source = Union[Path, bytes]


class _NullSink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return len(b)


def _items_iter(items: dict[str, tuple[int, int, Source]]) -> Iterator[tuple[str, int, int, BinaryIO | bytes]]:
    for name in sorted(items):
        size, mode, src = items[name]
        yield name, size, mode, (src if isinstance(src, bytes) else open(src, "rb"))


def _write_archive(items: dict[str, tuple[int, int, Source]], dest: Path | None) -> Bundle:
    """`items` (archive path -> (size, mode, source)) as a deterministic tar.gz; see build_bundle for `dest`."""
    names = tuple(sorted(items))
    if dest is None:
        writer = _HashingWriter(_NullSink())  # type: ignore[arg-type]
        _write(writer, _items_iter(items))  # type: ignore[arg-type]
        return Bundle(path=None, sha256=writer.sha.hexdigest(), size=writer.size, files=names, items=dict(items))
    if Path(dest).is_dir():
        out_dir, final = Path(dest), None
    else:
        out_dir, final = Path(dest).parent, Path(dest)
    out_dir.mkdir(parents=True, exist_ok=True)

    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".bundle-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh)
            _write(writer, _items_iter(items))  # type: ignore[arg-type]
        sha = writer.sha.hexdigest()
        target = final if final is not None else out_dir / f"{sha}.tar.gz"
        if final is None and target.is_file() and target.stat().st_size == writer.size:
            tmp.unlink()  # content-addressed: an existing file of this name already holds these bytes
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Bundle(path=target, sha256=sha, size=writer.size, files=names, items=dict(items))


def extend_bundle(base: Bundle | None, extra_files: dict[str, bytes], dest: Path | None = None) -> Bundle:
    """A new deterministic bundle: `base`'s files (if any) plus `extra_files`, which replace same-named files.

    Pure when `dest` is None (see build_bundle). Launchers use it to add cloudtune's own files (its wheel, a large
    job config) to the user's code.
    """
    extra = {_check_extra_path(k): bytes(v) for k, v in extra_files.items()}
    items: dict[str, tuple[int, int, Source]] = {}
    if base is not None:
        items.update({k: v for k, v in base.items.items() if k not in extra})
    for name, data in extra.items():
        items[name] = (len(data), 0o644, data)
    return replace(_write_archive(items, dest), root=base.root if base is not None else None)
