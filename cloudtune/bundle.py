"""The source bundle of a job's `code` dir: a deterministic, secret-free `.tar.gz`.

Contracts:
- Deterministic: the same files (paths, bytes, executable bit) give the same archive bytes and sha256,
  whatever their mtimes, owners or the order the filesystem lists them in.
- Secret-free by design (cloudtune.secretfiles): credential stores by name and path, and files whose content holds a
  secret by detect-secrets' rules or a credential store's format, are left out and listed by name, never by
  content, in `Bundle.left_out`.
- What git ignores is left out (cloudtune.ignores: pathspec's implementation of git's rules; the code dir's own
  `.gitignore` files, and the work tree's above it when the code dir is in one). Secret rules and `_NOT_SOURCE`
  apply first and cannot be re-included by a `!` line; only `include` (the spec's `include:`) takes a path in on
  purpose.
- Symlinks are followed only when they resolve inside the code dir (and their target is not excluded).
- Fails early and clearly: a code dir at / or in /proc, /sys or /dev, a file or directory it cannot read, and a
  scan past its budget are refused with the path named, never walked to the end or dropped without a word.
- The CLI imports this module: pathspec and detect-secrets are imported when a scan starts.

Over ~500 lines on purpose: one contract (what a job's code bundle holds), whose walk, exclusion reasons and archive
writer share private types (`_Entry`, `_Matcher`, `_Budget`); split apart, each half would import the other's internals.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Union

from cloudtune.errors import InvalidInput
from cloudtune.hashing import open_regular
from cloudtune.ignores import GITIGNORE, GitIgnores
from cloudtune.units import beside
from cloudtune.secretfiles import (ALLOW_MARKER, CREDENTIAL_FORMATS, CREDENTIAL_STORES, content_reason,  # noqa: F401
                                   content_scanner, name_reason)

__all__ = [
    "Bundle",
    "EXCLUDED_ALWAYS",
    "MAX_BUNDLE_BYTES",
    "MAX_BUNDLE_FILES",
    "MAX_SCAN_ENTRIES",
    "SECRET_CONTENT",
    "SECRET_NAMES",
    "build_bundle",
    "explain_exclusion",
    "iter_bundle_files",
    "left_out_note",
    "secret_content",
]

# Budgets, read at call time (tests monkeypatch them). The scan stops as soon as one is passed, so a code dir
# that is far too large (a home directory, a data lake mount) fails in moments instead of being walked to the end.
MAX_BUNDLE_BYTES: int = 500 * 1000 * 1000  # total uncompressed bytes of the files bundled
MAX_BUNDLE_FILES: int = 50_000  # files bundled
MAX_SCAN_ENTRIES: int = 200_000  # directory entries looked at, excluded ones included

# Secret files by name, and secret content: the rules shared with uploaded input directories.
SECRET_NAMES: tuple[str, ...] = CREDENTIAL_STORES
SECRET_CONTENT = CREDENTIAL_FORMATS

# Never bundled either, but not secrets: VCS metadata, virtualenvs, caches and earlier bundles. `.git` has no
# trailing slash so that a worktree's `.git` file is left out too.
_NOT_SOURCE: tuple[str, ...] = (
    ".git", "__pycache__/", "*.pyc", ".venv/", "venv/", "node_modules/", "/.cloudtune/", "*.tar.gz",
)

# gitignore-syntax patterns (relative to the code dir) that never go into a bundle, unless named in `include`.
EXCLUDED_ALWAYS: tuple[str, ...] = _NOT_SOURCE + SECRET_NAMES

SECRET_NAME_REASON = "always excluded (secret file name)"
SECRET_CONTENT_REASON = "always excluded (secret content)"
_NOT_SOURCE_REASON = "always excluded (VCS data, virtualenvs, caches, bundles)"
_GITIGNORE = GITIGNORE


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
    # what the scan left out that a user may have meant to send, as "path: reason" (secret files, special files,
    # symlinks not followed) -- names only, never content; gitignored files and caches are not listed here
    left_out: tuple[str, ...] = field(default=(), compare=False)
    # what git ignores, as "path: reason" (a walk stops at an ignored directory: it is listed once)
    ignored: tuple[str, ...] = field(default=(), compare=False)
    # the paths `include` took in although a rule leaves them out, as "path: the rule"
    included: tuple[str, ...] = field(default=(), compare=False)
    include: tuple[str, ...] = field(default=(), compare=False)  # the `include` it was built with

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


def left_out_note(bundle: Bundle, shown: int = 20) -> str | None:
    """The plan note naming what the bundle left out and why (names and reasons, never content), what git ignores
    (a count and the first few), and what `include:` took in on purpose; None when there is nothing to say."""
    parts: list[str] = []
    if bundle.left_out:
        items = list(bundle.left_out[:shown])
        if len(bundle.left_out) > shown:
            items.append(f"and {len(bundle.left_out) - shown} more")
        parts.append(f"the code bundle left out {len(bundle.left_out)} path(s) of {bundle.root or 'the code dir'}: "
                     + "; ".join(items) + ". Secret files never travel with the code: pass them as `secrets` (a file "
                     "that only looks like a secret goes with a line `# pragma: allowlist secret`, or name it in "
                     "`include:` to send it on purpose)")
    if bundle.ignored:
        first = ", ".join(item.split(": ", 1)[0] for item in bundle.ignored[:5])
        more = f" and {len(bundle.ignored) - 5} more" if len(bundle.ignored) > 5 else ""
        parts.append(f"{len(bundle.ignored)} path(s) ignored by git's rules stay home ({first}{more}); name one in "
                     "`include:` to send it")
    if bundle.included:
        parts.append("`include:` sends on purpose: " + "; ".join(bundle.included))
    return " | ".join(parts) or None


# --------------------------------------------------------------------------- exclusion rules


def _not_source_spec() -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines([p.lower() for p in _NOT_SOURCE])


class _Matcher:
    """Decides exclusion of one path at a time: secret names, not-source paths, then what git ignores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._git = GitIgnores(root)
        self._not_source = _not_source_spec()

    @staticmethod
    def secret_reason(rel: str, is_dir: bool) -> str | None:
        """Why `rel` is a secret file by its name, or None."""
        why = name_reason(rel, is_dir)
        return None if why is None else f"{SECRET_NAME_REASON}: {why}"

    def always_reason(self, rel: str, is_dir: bool) -> str | None:
        """Why `rel` is never bundled (a secret name, VCS data, a cache), or None."""
        secret = self.secret_reason(rel, is_dir)
        if secret is not None:
            return secret
        result = self._not_source.check_file(rel.lower() + ("/" if is_dir else ""))
        if result.include:
            return f"{_NOT_SOURCE_REASON}: matches `{_NOT_SOURCE[result.index]}`"
        return None

    def reason(self, rel: str, is_dir: bool) -> str | None:
        """Why `rel` itself is excluded (its ancestors are not checked), or None."""
        return self.always_reason(rel, is_dir) or self._git.reason(rel, is_dir)


class _Include:
    """The paths of the code dir named in `include:` (relative POSIX), taken in whatever rule leaves them out."""

    def __init__(self, root: Path, include: tuple[str, ...]) -> None:
        real = root.resolve()
        self.paths: set[str] = set()
        for item in include:
            path = Path(item)
            if not path.is_absolute():
                path = real / path
            try:
                rel = path.resolve().relative_to(real).as_posix()
            except ValueError:
                continue  # not in the code dir (an input dir's path)
            if not path.exists():
                raise InvalidInput(f"include: {item} does not exist in the code dir {root}",
                                   fix="name an existing file or directory of the code dir, or remove the entry")
            if rel != ".":
                self.paths.add(rel)

    def forced(self, rel: str) -> bool:
        """`rel` or a directory above it is named."""
        return any(rel == p or rel.startswith(p + "/") for p in self.paths)

    def leads(self, rel: str) -> bool:
        """A named path lies inside the directory `rel`."""
        return any(p.startswith(rel + "/") for p in self.paths)


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Entry:
    rel: str
    path: Path
    size: int
    mode: int


# Pseudo file systems: walking them never ends (or blocks); a code dir there, or at /, is refused.
_SYSTEM_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _root(code_dir: Path | str) -> Path:
    root = Path(code_dir)
    if not root.exists():
        raise InvalidInput(f"code dir {root} does not exist", fix="set `code:` to your source directory")
    if not root.is_dir():
        raise InvalidInput(f"code dir {root} is not a directory",
                           fix="set `code` in the spec to a directory, not a file")
    real = root.resolve()
    if real == Path(real.anchor):
        raise InvalidInput(f"code dir {root} is the root of the file system: the bundle would hold the whole machine",
                           fix="set `code:` to your project's source directory")
    for system in _SYSTEM_DIRS:
        if real == system or system in real.parents:
            raise InvalidInput(f"code dir {root} is inside {system}, a pseudo file system, not source code",
                               fix="set `code:` to your project's source directory")
    if not os.access(real, os.R_OK | os.X_OK):
        raise _unreadable(root, "", PermissionError(13, "Permission denied"), is_dir=True)
    return root


def _unreadable(path: Path, rel: str, exc: OSError, *, is_dir: bool) -> InvalidInput:
    """The error for a file or directory of the code dir that cannot be read: the path, why, and the two ways out."""
    why = exc.strerror or type(exc).__name__
    mode = "u+rx" if is_dir else "u+r"
    leave_out = f", or leave it out of the bundle with the line `/{rel}{'/' if is_dir else ''}` in .gitignore" if rel else ""
    return InvalidInput(f"cannot read {'directory' if is_dir else 'file'} {path} of the code dir: {why}",
                        fix=f"make it readable (chmod {mode} '{path}'){leave_out}")


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


def secret_content(path: Path, size: int) -> str | None:
    """What secret `path` holds ("a PEM private key", "AWS Access Key (detect-secrets), line 3", ...), or None; see
    cloudtune.secretfiles. A file that holds ALLOW_MARKER is never a secret by content. Raises OSError when the
    file cannot be read."""
    return content_reason(path, size)


def _special_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


class _Budget:
    """Counts what a scan has seen and stops it (InvalidInput) as soon as a budget is passed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = 0
        self.files = 0
        self.bytes = 0
        self.per_top: dict[str, int] = {}
        self.largest: list[tuple[int, str]] = []

    def _where(self) -> tuple[str, str]:
        top = sorted(self.per_top.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        listed = ", ".join(f"{name}/ ({n})" for name, n in top) or "none"
        suggestion = f"/{top[0][0]}/" if top else "/data/"
        return listed, suggestion

    def _refuse(self, what: str) -> InvalidInput:
        listed, suggestion = self._where()
        return InvalidInput(f"code dir {self.root} {what}; the scan stopped there. Largest directories so far: {listed}",
                            fix=f"set `code:` to the project's source directory only, or add an entry such as "
                                f"`{suggestion}` to {self.root / _GITIGNORE} (data belongs in the spec's `inputs`)")

    def entry(self, rel: str) -> None:
        self.entries += 1
        top = rel.split("/", 1)[0] if "/" in rel else ""
        if top:
            self.per_top[top] = self.per_top.get(top, 0) + 1
        if self.entries > MAX_SCAN_ENTRIES:
            raise self._refuse(f"holds over {MAX_SCAN_ENTRIES} files and directories")

    def file(self, rel: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        self.largest = sorted([*self.largest, (size, rel)], key=lambda x: (-x[0], x[1]))[:5]
        if self.files > MAX_BUNDLE_FILES:
            raise self._refuse(f"holds over {MAX_BUNDLE_FILES} files to bundle")
        if self.bytes > MAX_BUNDLE_BYTES:
            listed = ", ".join(f"{r} ({_human(n)})" for n, r in self.largest)
            top = self.largest[0][1]
            suggestion = f"/{top.split('/', 1)[0]}/" if "/" in top else f"/{top}"
            raise InvalidInput(
                f"code dir {self.root} holds over {_human(MAX_BUNDLE_BYTES)} of files, the bundle limit; largest: {listed}",
                fix=f"add an entry such as `{suggestion}` to {self.root / _GITIGNORE}, or move data to the spec's "
                    "`inputs` (uploaded separately, not bundled)")


def _list_dir(abs_dir: Path, rel_dir: str, budget: _Budget) -> list[os.DirEntry[str]]:
    """The entries of one directory, sorted by name, counted against the budget as they are read."""
    out: list[os.DirEntry[str]] = []
    try:
        with os.scandir(abs_dir) as it:
            for e in it:
                budget.entry(f"{rel_dir}/{e.name}" if rel_dir else e.name)
                out.append(e)
    except OSError as exc:
        raise _unreadable(abs_dir, rel_dir, exc, is_dir=True) from None
    if out and not os.access(abs_dir, os.X_OK):  # listed, but its entries cannot be reached
        raise _unreadable(abs_dir, rel_dir, PermissionError(13, "Permission denied (no x permission)"), is_dir=True)
    return sorted(out, key=lambda e: e.name)


@dataclass
class _ScanResult:
    found: list[_Entry] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # "path: reason" -- secrets, special files, symlinks
    ignored: list[str] = field(default_factory=list)  # "path: reason" -- what git ignores
    included: list[str] = field(default_factory=list)  # "path: the rule `include` overrode"


def _excluded(out: _ScanResult, rel: str, is_dir: bool, why: str) -> None:
    """Record an excluded path: a secret by name is listed, what git ignores is counted apart, caches are not."""
    shown = f"{rel}{'/' if is_dir else ''}"
    if why.startswith(SECRET_NAME_REASON):
        out.left_out.append(f"{shown}: secret file name ({why.rsplit(': ', 1)[1]})")
    elif why.startswith("ignored by"):
        out.ignored.append(f"{shown}: {why}")


def _scan(root: Path, include: tuple[str, ...] = ()) -> _ScanResult:
    """The files to bundle and what was left out, ignored or taken in by `include`.

    Raises InvalidInput naming the path for a file or directory that cannot be read, an `include` entry that does
    not exist, and as soon as a budget (MAX_SCAN_ENTRIES, MAX_BUNDLE_FILES, MAX_BUNDLE_BYTES) is passed."""
    root_real = root.resolve()
    matcher = _Matcher(root)
    forced = _Include(root, include)
    budget = _Budget(root)
    out = _ScanResult()

    def walk(rel_dir: str, abs_dir: Path, stack: frozenset[Path], only_forced: bool, scan: Any) -> None:
        for e in _list_dir(abs_dir, rel_dir, budget):
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            path = abs_dir / e.name
            take = forced.forced(rel)
            if only_forced and not take and not forced.leads(rel):
                continue
            try:
                if e.is_symlink():
                    why = _symlink_reason(path, root_real, matcher)
                    if why is not None and not take:
                        if matcher.reason(rel, False) is None:
                            out.left_out.append(f"{rel}: {why}")
                        continue
                    st = path.stat()
                else:
                    st = e.stat(follow_symlinks=False)
            except OSError as exc:
                raise _unreadable(path, rel, exc, is_dir=False) from None
            is_dir = stat.S_ISDIR(st.st_mode)
            why = matcher.reason(rel, is_dir)
            if why is not None and take:
                out.included.append(f"{rel}{'/' if is_dir else ''}: {why}")
            elif why is not None and not (is_dir and forced.leads(rel)):
                _excluded(out, rel, is_dir, why)
                continue
            if not is_dir and not stat.S_ISREG(st.st_mode):
                out.left_out.append(f"{rel}: {_special_kind(st.st_mode)}")
                continue
            if is_dir:
                real = path.resolve()
                if real not in stack:  # (else a symlink loop back to an ancestor)
                    walk(rel, path, stack | {real}, (only_forced or why is not None) and not take, scan)
                continue
            try:
                secret = scan(path, st.st_size)
            except OSError as exc:
                raise _unreadable(path, rel, exc, is_dir=False) from None
            if secret is not None and take:
                out.included.append(f"{rel}: holds {secret}")
            elif secret is not None:
                out.left_out.append(f"{rel}: holds {secret}")
                continue
            budget.file(rel, st.st_size)
            out.found.append(_Entry(rel, path, st.st_size, st.st_mode))

    with content_scanner() as scan:
        walk("", root, frozenset({root_real}), False, scan)
    out.found.sort(key=lambda x: x.rel)
    for items in (out.left_out, out.ignored, out.included):
        items.sort()
    return out


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
        if path.is_file():
            try:
                secret = secret_content(path, path.stat().st_size)
            except OSError as exc:
                return f"cannot be read: {exc.strerror or exc}"
            if secret is not None:
                return f"{SECRET_CONTENT_REASON}: holds {secret}"
    return None


def iter_bundle_files(code_dir: Path | str) -> list[str]:
    """The sorted relative POSIX paths of the files `build_bundle(code_dir)` would include (no extras).

    Raises InvalidInput when code_dir is missing, not a directory, unreadable in part, or over a budget."""
    return [e.rel for e in _scan(_root(code_dir)).found]


def explain_exclusion(code_dir: Path | str, rel_path: str | os.PathLike[str]) -> str | None:
    """Why `rel_path` (relative to code_dir) is left out of the bundle, or None if it is included.

    The reason names the always-excluded pattern (a secret file name), the secret a file holds, or the
    `.gitignore` file, line and pattern, or the excluded parent directory, or the symlink problem."""
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
    held, most = beside(total / 1e6, limit / 1e6, 1)  # never "500.0 MB of files, over the 500.0 MB limit"
    raise InvalidInput(
        f"code dir {root} holds {held} MB of files, over the {most} MB bundle limit; largest: {listed}",
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


def build_bundle(code_dir: Path | str, dest: Path | None = None, extra_files: dict[str, bytes] | None = None,
                 include: tuple[str, ...] | list[str] = ()) -> Bundle:
    """Bundle code_dir as a deterministic `.tar.gz`: its sha256, size and file list.

    `dest` None -> nothing is written (`path` None; `Bundle.write` writes it later); an existing directory ->
    `<dest>/<sha256>.tar.gz`; else the file path to write, atomically. `extra_files` map archive paths (e.g.
    `.cloudtune/job.json`) to bytes and replace a scanned file of the same path. Secret files (by name or content,
    see cloudtune.secretfiles) and what git ignores are not included (`left_out` and `ignored` name them), except
    the paths in `include` (absolute, or relative to code_dir; a path outside code_dir is not the bundle's).
    Raises InvalidInput, naming the path, for a missing code dir, one at / or in a pseudo file system, a file or
    directory that cannot be read, an `include` entry of the code dir that does not exist, and as soon as the scan
    passes a budget (MAX_SCAN_ENTRIES, MAX_BUNDLE_FILES, MAX_BUNDLE_BYTES).
    """
    root = _root(code_dir)
    extra = {_check_extra_path(k): bytes(v) for k, v in (extra_files or {}).items()}
    scanned = _scan(root, tuple(include))
    entries = [e for e in scanned.found if e.rel not in extra]
    _check_size(root, entries, extra)

    items: dict[str, tuple[int, int, Source]] = {}
    for e in entries:
        items[e.rel] = (e.size, 0o755 if e.mode & 0o111 else 0o644, e.path)
    for name, data in extra.items():
        items[name] = (len(data), 0o644, data)
    return replace(_write_archive(items, dest), root=str(root), left_out=tuple(scanned.left_out),
                   ignored=tuple(scanned.ignored), included=tuple(scanned.included), include=tuple(include))


Source = Union[Path, bytes]


class _NullSink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return len(b)


def _items_iter(items: dict[str, tuple[int, int, Source]]) -> Iterator[tuple[str, int, int, BinaryIO | bytes]]:
    for name in sorted(items):
        size, mode, src = items[name]
        if isinstance(src, bytes):
            yield name, size, mode, src
            continue
        try:
            fh = open_regular(src)  # a FIFO swapped in after the plan never blocks the build
        except OSError as exc:
            raise _unreadable(src, name, exc, is_dir=False) from None
        yield name, size, mode, fh


def _write_checked(writer: "_HashingWriter", items: dict[str, tuple[int, int, Source]]) -> None:
    """`_write`, with a file that shrank since it was scanned (tar copies the scanned size) named, not a traceback."""
    try:
        _write(writer, _items_iter(items))  # type: ignore[arg-type]
    except OSError as exc:
        if "unexpected end of data" not in str(exc):
            raise
        raise InvalidInput(f"a file of the code dir changed while the bundle was made ({exc})",
                           fix="launch again once nothing writes into the code dir") from None


def _write_archive(items: dict[str, tuple[int, int, Source]], dest: Path | None) -> Bundle:
    """`items` (archive path -> (size, mode, source)) as a deterministic tar.gz; see build_bundle for `dest`."""
    names = tuple(sorted(items))
    if dest is None:
        writer = _HashingWriter(_NullSink())  # type: ignore[arg-type]
        _write_checked(writer, items)
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
            _write_checked(writer, items)
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
    if base is None:
        return _write_archive(items, dest)
    return replace(_write_archive(items, dest), root=base.root, left_out=base.left_out, ignored=base.ignored,
                   included=base.included, include=base.include)
