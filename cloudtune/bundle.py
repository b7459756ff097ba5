"""The source bundle of a job's `code` dir: a deterministic, secret-free `.tar.gz`.

Contracts:
- Deterministic: the same files (paths, bytes, executable bit) give the same archive bytes and sha256,
  whatever their mtimes, owners or the order the filesystem lists them in.
- `.gitignore` files (root and nested) are honoured with git's semantics; `EXCLUDED_ALWAYS` is applied
  first and cannot be re-included by a `!` pattern.
- Symlinks are followed only when they resolve inside the code dir (and their target is not excluded).
- Secret-free: files named like credentials or keys (`SECRET_NAMES`, case-insensitive) and files whose content is
  a secret (`SECRET_CONTENT`: PEM private keys, service-account keys, ...) are left out and listed by name, never
  by content, in `Bundle.left_out`.
- Fails early and clearly: a code dir at / or in /proc, /sys or /dev, a file or directory it cannot read, and a
  scan past its budget are refused with the path named, never walked to the end or dropped without a word.
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
# A regular file up to this size is read in full for secret content; larger files (weights, archives) are not.
MAX_CONTENT_SCAN_BYTES: int = 64 * 1000 * 1000

# Secret files, by name (gitignore syntax, matched case-insensitively, never re-included by a `!` pattern).
SECRET_NAMES: tuple[str, ...] = (
    # cloud and cluster credentials
    ".aws/", ".azure/", "**/.config/gcloud/", ".oci/", ".kube/", "kubeconfig", "kubeconfig.*", "*.kubeconfig",
    ".docker/", ".dockercfg", "credentials", "credentials.json", "credentials.toml", "*credentials*.json",
    "client_secret*.json", "service-account*.json", "service_account*.json", "*sa-key*.json", "*sa_key*.json",
    "*-key.json", "*_key.json", "*-" + "[0-9a-f]" * 12 + ".json",  # gcloud's key file name: <project>-<12 hex>.json
    ".boto", ".s3cfg", ".passwd-s3fs", ".vault-token", "**/huggingface/token",
    # private keys and key stores
    ".ssh/", ".gnupg/", "*.pem", "*.key", "*.p12", "*.pfx", "*.ppk", "*.p8", "*.jks", "*.keystore",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    # tokens and passwords of tools
    ".netrc", "_netrc", ".pypirc", ".npmrc", ".git-credentials", ".pgpass", ".my.cnf", ".htpasswd",
    ".terraformrc", "terraform.rc", "*.tfstate", "*.tfstate.*", "*.tfvars", "*.tfvars.json", ".terraform/",
    # environment files
    ".env", ".env.*", "*.env", ".envrc", ".envrc.*",
    "secrets.toml", "secrets.yaml", "secrets.yml", "secrets.json", ".secrets",
)

# Never bundled either, but not secrets: VCS metadata, virtualenvs, caches and earlier bundles. `.git` has no
# trailing slash so that a worktree's `.git` file is left out too.
_NOT_SOURCE: tuple[str, ...] = (
    ".git", "__pycache__/", "*.pyc", ".venv/", "venv/", "node_modules/", "/.cloudtune/", "*.tar.gz",
)

# gitignore-syntax patterns (relative to the code dir) that never go into a bundle.
EXCLUDED_ALWAYS: tuple[str, ...] = _NOT_SOURCE + SECRET_NAMES

# Secret content: what a file holds, whatever its name. A rule is a description and patterns that must all be
# found in the file (each searched on its own, so the time stays linear in the file's size). Each is precise enough
# not to match source code that merely mentions the format (a PEM header must be followed by key material, a key
# must have its length).
_B64 = rb"[A-Za-z0-9+/=]"


def _all(*patterns: bytes) -> tuple[re.Pattern[bytes], ...]:
    return tuple(re.compile(p) for p in patterns)


SECRET_CONTENT: tuple[tuple[str, tuple[re.Pattern[bytes], ...]], ...] = (
    ("a PEM private key", _all(rb"-----BEGIN (?:[A-Z0-9]+ )?(?:[A-Z0-9]+ )?PRIVATE KEY(?: BLOCK)?-----"
                               rb"(?:\\[rn]|[ \t\r\n]){0,8}(?:Proc-Type|Version|Comment|" + _B64 + rb"{16})")),
    ("a PuTTY private key", _all(rb"PuTTY-User-Key-File-\d+:")),
    ("a service-account key", _all(rb'"type"[ \t]*:[ \t]*"service_account"', rb'"private_key(?:_id)?"[ \t]*:[ \t]*"')),
    ("Google user credentials", _all(rb'"type"[ \t]*:[ \t]*"authorized_user"', rb'"refresh_token"[ \t]*:')),
    ("an AWS secret access key", _all(rb"(?i)aws_secret_access_key[\"']?[ \t]*[=:][ \t]*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")),
    ("an Azure client secret or storage key", _all(rb'"clientSecret"[ \t]*:[ \t]*"[^"\s]{8,}"|AccountKey=' + _B64 + rb"{40,}")),
    ("a kubeconfig with credentials", _all(rb"(?m)^kind:[ \t]*Config\b",
                                           rb"(?m)^[ \t]*(?:client-key-data|token|password)[ \t]*:[ \t]*\S{8,}")),
    ("registry credentials (docker auths)", _all(rb'"auths"[ \t]*:', rb'"auth"[ \t]*:[ \t]*"' + _B64 + rb'{8,}"')),
    ("a netrc password", _all(rb"(?m)^[ \t]*machine[ \t\r\n]+\S+[ \t\r\n]+login[ \t\r\n]+\S+[ \t\r\n]+password[ \t\r\n]+\S")),
    ("a registry token (npm/yarn)", _all(rb"_authToken[ \t]*=[ \t]*[^\s$]{8}")),
    ("a URL with a password (git credentials)", _all(rb"(?m)^https?://[^\s:/@]{1,256}:[^\s@]{6,256}@\S+[ \t\r]*$")),
    ("a GitHub token", _all(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})\b")),
    ("a Hugging Face token", _all(rb"\bhf_[A-Za-z]{34}\b")),
)

# A file holding this text is never left out for its content (detect-secrets' marker for a false positive); its
# name is still checked. For test fixtures and code that parses keys.
ALLOW_MARKER = b"pragma: allowlist secret"

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
    # what the scan left out that a user may have meant to send, as "path: reason" (secret files, special files,
    # symlinks not followed) -- names only, never content; gitignored files and caches are not listed
    left_out: tuple[str, ...] = field(default=(), compare=False)

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
    """The plan note naming what the bundle left out (names and reasons, never content), or None."""
    if not bundle.left_out:
        return None
    items = list(bundle.left_out[:shown])
    if len(bundle.left_out) > shown:
        items.append(f"and {len(bundle.left_out) - shown} more")
    return (f"the code bundle left out {len(bundle.left_out)} path(s) of {bundle.root or 'the code dir'}: "
            + "; ".join(items) + ". Secret files never travel with the code: pass them as `secrets` (a file that "
            "only looks like a secret goes with a line `# pragma: allowlist secret`)")


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


def _always(patterns: tuple[str, ...]) -> tuple[_Pattern, ...]:
    """The always-excluded patterns, matched case-insensitively (`SERVER.PEM` is a key as much as `server.pem`)."""
    out: list[_Pattern] = []
    for i, raw in enumerate(patterns, 1):
        p = _parse_pattern(raw, "<always>", i)
        if p is not None:
            out.append(replace(p, regex=re.compile(p.regex.pattern, re.DOTALL | re.IGNORECASE)))
    return tuple(out)


_SECRET = _always(SECRET_NAMES)
_NOT_SOURCE_RULES = _always(_NOT_SOURCE)
SECRET_NAME_REASON = "always excluded (secret file name)"
SECRET_CONTENT_REASON = "always excluded (secret content)"


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

    @staticmethod
    def secret_reason(rel: str, is_dir: bool) -> str | None:
        """Why `rel` is a secret file by its name, or None."""
        for p in _SECRET:
            if p.matches(rel, is_dir):
                return f"{SECRET_NAME_REASON}: matches `{p.text}`"
        return None

    def reason(self, rel: str, is_dir: bool) -> str | None:
        """Why `rel` itself is excluded (its ancestors are not checked), or None."""
        secret = self.secret_reason(rel, is_dir)
        if secret is not None:
            return secret
        for p in _NOT_SOURCE_RULES:
            if p.matches(rel, is_dir):
                return f"always excluded (VCS data, virtualenvs, caches, bundles): matches `{p.text}`"
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
    """What secret `path` holds ("a PEM private key", ...), or None. Reads files of 1 to MAX_CONTENT_SCAN_BYTES
    bytes in full (an empty file holds nothing and a pseudo file's reported size is 0); a file that holds
    ALLOW_MARKER is never a secret by content. Raises OSError when the file cannot be read."""
    if size == 0 or size > MAX_CONTENT_SCAN_BYTES:
        with open(path, "rb"):  # readable? (opening a regular file never blocks)
            return None
    with open(path, "rb") as fh:
        data = fh.read(MAX_CONTENT_SCAN_BYTES)
    if ALLOW_MARKER in data:  # a file that only looks like a secret (test fixtures, a key parser), marked so
        return None
    for what, patterns in SECRET_CONTENT:
        if all(p.search(data) for p in patterns):
            return what
    return None


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


def _scan(root: Path) -> tuple[list[_Entry], list[str]]:
    """(the files to bundle, what was left out that a user may have meant to send: "path: reason").

    Raises InvalidInput naming the path for a file or directory that cannot be read, and as soon as a budget
    (MAX_SCAN_ENTRIES, MAX_BUNDLE_FILES, MAX_BUNDLE_BYTES) is passed."""
    root_real = root.resolve()
    matcher = _Matcher(root)
    budget = _Budget(root)
    found: list[_Entry] = []
    left_out: list[str] = []

    def walk(rel_dir: str, abs_dir: Path, stack: frozenset[Path]) -> None:
        for e in _list_dir(abs_dir, rel_dir, budget):
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            path = abs_dir / e.name
            try:
                link = e.is_symlink()
                if link:
                    why = _symlink_reason(path, root_real, matcher)
                    if why is not None:
                        if matcher.reason(rel, False) is None:
                            left_out.append(f"{rel}: {why}")
                        continue
                    st = path.stat()
                else:
                    st = e.stat(follow_symlinks=False)
            except OSError as exc:
                raise _unreadable(path, rel, exc, is_dir=False) from None
            is_dir = stat.S_ISDIR(st.st_mode)
            why = matcher.reason(rel, is_dir)
            if why is not None:
                if why.startswith(SECRET_NAME_REASON):
                    left_out.append(f"{rel}{'/' if is_dir else ''}: secret file name")
                continue
            if not is_dir and not stat.S_ISREG(st.st_mode):
                left_out.append(f"{rel}: {_special_kind(st.st_mode)}")
                continue
            if is_dir:
                real = path.resolve()
                if real in stack:
                    continue  # a symlink loop back to an ancestor
                walk(rel, path, stack | {real})
                continue
            try:
                secret = secret_content(path, st.st_size)
            except OSError as exc:
                raise _unreadable(path, rel, exc, is_dir=False) from None
            if secret is not None:
                left_out.append(f"{rel}: holds {secret}")
                continue
            budget.file(rel, st.st_size)
            found.append(_Entry(rel, path, st.st_size, st.st_mode))

    walk("", root, frozenset({root_real}))
    found.sort(key=lambda x: x.rel)
    return found, sorted(left_out)


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
    return [e.rel for e in _scan(_root(code_dir))[0]]


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
    `.cloudtune/job.json`) to bytes and replace a scanned file of the same path. Secret files (by name or content,
    see SECRET_NAMES and SECRET_CONTENT) are never included; `left_out` names them. Raises InvalidInput, naming
    the path, for a missing code dir, one at / or in a pseudo file system, a file or directory that cannot be read,
    and as soon as the scan passes a budget (MAX_SCAN_ENTRIES, MAX_BUNDLE_FILES, MAX_BUNDLE_BYTES).
    """
    root = _root(code_dir)
    extra = {_check_extra_path(k): bytes(v) for k, v in (extra_files or {}).items()}
    scanned, left_out = _scan(root)
    entries = [e for e in scanned if e.rel not in extra]
    _check_size(root, entries, extra)

    items: dict[str, tuple[int, int, Source]] = {}
    for e in entries:
        items[e.rel] = (e.size, 0o755 if e.mode & 0o111 else 0o644, e.path)
    for name, data in extra.items():
        items[name] = (len(data), 0o644, data)
    return replace(_write_archive(items, dest), root=str(root), left_out=tuple(left_out))


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
            fh = open(src, "rb")
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
    return replace(_write_archive(items, dest), root=base.root if base is not None else None,
                   left_out=base.left_out if base is not None else ())
