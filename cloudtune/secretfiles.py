"""Which files are credentials: one set of rules for the code bundle and for local input directories uploaded to a
bucket, and the plain `env:` values that look like credentials.

A file is a credential when
1. its name or path is that of a usual credential store (`CREDENTIAL_STORES`, gitignore syntax matched with
   `pathspec`, case-insensitively: `~/.aws`, `.kaggle/kaggle.json`, `.databrickscfg`, `rclone.conf`, keys, ...), or
2. its content holds a secret by the rules of Yelp's detect-secrets (its plugins and false-positive filters, the
   scanner pre-commit hooks use): known credential formats (AWS, Azure, GitHub, GitLab, Slack, Stripe, npm, PyPI,
   OpenAI, JWT, private keys, passwords in URLs, ...) in every file; its keyword rule only in small configuration
   files (YAML, INI, TOML, JSON, dotfiles), where a `password = ...` is a credential and not source code or data
   (its high-entropy rules are not used: every sha256 in a lock or manifest file would count); or
3. its content has the format of a credential store detect-secrets has no plugin for (`CREDENTIAL_FORMATS`:
   service-account keys, OAuth user tokens, kubeconfig users, docker auths, netrc, Hugging Face and Databricks
   tokens, yarn's `npmAuthToken`, PuTTY keys).
A file holding `pragma: allowlist secret` (detect-secrets' own marker) is not a credential by content; its name is
still checked. detect-secrets is imported only when a file's content is scanned (it costs ~0.5 s to import).
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "ALLOW_MARKER",
    "CREDENTIAL_FORMATS",
    "CREDENTIAL_STORES",
    "content_reason",
    "content_scanner",
    "env_credential_warnings",
    "input_files",
    "input_left_out_note",
    "name_reason",
    "secret_notes",
]

# Credential stores by name and path (gitignore syntax, matched case-insensitively; a directory pattern leaves out
# the whole directory). Sources: each tool's documentation of where it keeps its credentials.
CREDENTIAL_STORES: tuple[str, ...] = (
    # cloud and cluster credentials
    ".aws/", ".azure/", "**/.config/gcloud/", "application_default_credentials.json", ".oci/", ".kube/",
    "kubeconfig", "kubeconfig.*", "*.kubeconfig", ".docker/", ".dockercfg", "credentials", "credentials.json",
    "credentials.toml", "*credentials*.json", "client_secret*.json", "service-account*.json",
    "service_account*.json", "*sa-key*.json", "*sa_key*.json", "*-key.json", "*_key.json",
    "*-" + "[0-9a-f]" * 12 + ".json",  # gcloud's key file name: <project>-<12 hex>.json
    ".boto", ".s3cfg", ".passwd-s3fs", ".vault-token", ".config/doctl/", ".config/hcloud/", ".pulumi/credentials.json",
    ".terraform.d/credentials.tfrc.json", ".terraformrc", "terraform.rc", ".mc/config.json", ".snowsql/",
    # ML and data services
    ".kaggle/", "kaggle.json", ".databrickscfg", "**/.config/rclone/", "rclone.conf", "**/huggingface/token",
    "**/huggingface/stored_tokens", ".netrc", "_netrc", "token.json", "token.pickle", ".dbt/profiles.yml",
    ".config/ngrok/", ".ngrok2/",
    # private keys and key stores
    ".ssh/", ".gnupg/", "*.pem", "*.key", "*.p12", "*.pfx", "*.ppk", "*.p8", "*.jks", "*.keystore", "*.kdbx",
    "*.keychain", "*.keychain-db", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    # tokens and passwords of developer tools
    ".pypirc", ".npmrc", ".git-credentials", ".pgpass", ".my.cnf", ".htpasswd", ".gem/credentials",
    ".cargo/credentials", ".cargo/credentials.toml", ".composer/auth.json", ".config/gh/hosts.yml", ".config/hub",
    ".m2/settings-security.xml", ".gradle/gradle.properties",
    # infrastructure state and variables
    "*.tfstate", "*.tfstate.*", "*.tfvars", "*.tfvars.json", ".terraform/",
    # environment and secrets files
    ".env", ".env.*", "*.env", ".envrc", ".envrc.*", "secrets.toml", "secrets.yaml", "secrets.yml", "secrets.json",
    ".secrets",
)

_B64 = rb"[A-Za-z0-9+/=]"


def _all(*patterns: bytes) -> tuple[re.Pattern[bytes], ...]:
    return tuple(re.compile(p) for p in patterns)


# Credential-store formats detect-secrets has no plugin for: (description, patterns that must all be found). Each is
# precise enough not to match code that merely mentions the format (a PEM header must be followed by key material).
CREDENTIAL_FORMATS: tuple[tuple[str, tuple[re.Pattern[bytes], ...]], ...] = (
    ("a PEM private key", _all(rb"-----BEGIN (?:[A-Z0-9]+ )?(?:[A-Z0-9]+ )?PRIVATE KEY(?: BLOCK)?-----"
                               rb"(?:\\[rn]|[ \t\r\n]){0,8}(?:Proc-Type|Version|Comment|" + _B64 + rb"{16})")),
    ("a PuTTY private key", _all(rb"PuTTY-User-Key-File-\d+:")),
    ("a service-account key", _all(rb'"type"[ \t]*:[ \t]*"service_account"', rb'"private_key(?:_id)?"[ \t]*:[ \t]*"')),
    ("Google user credentials", _all(rb'"type"[ \t]*:[ \t]*"authorized_user"', rb'"refresh_token"[ \t]*:')),
    ("an OAuth user token (refresh token and client secret)",
     _all(rb'"refresh_token"[ \t]*:[ \t]*"[^"\s]{8,}"', rb'"client_secret"[ \t]*:[ \t]*"[^"\s]{8,}"')),
    ("an AWS secret access key", _all(rb"(?i)aws_secret_access_key[\"']?[ \t]*[=:][ \t]*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")),
    ("an Azure client secret or storage key", _all(rb'"clientSecret"[ \t]*:[ \t]*"[^"\s]{8,}"|AccountKey=' + _B64 + rb"{40,}")),
    ("a kubeconfig with credentials", _all(rb"(?m)^kind:[ \t]*Config\b",
                                           rb"(?m)^[ \t]*(?:client-key-data|token|password)[ \t]*:[ \t]*\S{8,}")),
    ("registry credentials (docker auths)", _all(rb'"auths"[ \t]*:', rb'"auth"[ \t]*:[ \t]*"' + _B64 + rb'{8,}"')),
    ("a netrc password", _all(rb"(?m)^[ \t]*machine[ \t\r\n]+\S+[ \t\r\n]+login[ \t\r\n]+\S+[ \t\r\n]+password[ \t\r\n]+\S")),
    ("a registry token (npm/yarn)", _all(rb"(?m)_authToken[ \t]*=[ \t]*[^\s$]{8}|^[ \t]*npmAuthToken[ \t]*:[ \t]*[\"']?[^\s\"'$]{8}")),
    ("a URL with a password (git credentials)", _all(rb"(?m)^https?://[^\s:/@]{1,256}:[^\s@]{6,256}@\S+[ \t\r]*$")),
    ("a Hugging Face token", _all(rb"\bhf_[A-Za-z0-9]{34,40}\b")),
    ("a Databricks token", _all(rb"\bdapi[0-9a-f]{32}(?:-\d)?\b")),
)

# A file holding this text is never left out for its content (detect-secrets' marker for a false positive).
ALLOW_MARKER = b"pragma: allowlist secret"
# A code file up to this size is read for the byte-level formats above; larger files (weights, archives) are not.
MAX_CONTENT_SCAN_BYTES: int = 64 * 1000 * 1000
# An input dir's file up to this size is read for content: credential files are small (a service-account key is
# ~2.3 KB, a kubeconfig a few KB); data shards are large, and reading each for content would double a plan's time.
MAX_INPUT_SCAN_BYTES: int = 64 * 1000
# detect-secrets reads line by line in Python: text files up to this size go through it.
MAX_SCANNER_BYTES: int = 1000 * 1000
# Its keyword and high-entropy rules apply to configuration files up to this size only.
MAX_CONFIG_BYTES: int = 64 * 1000

# detect-secrets' secret types whose rule is a word, an entropy or a bare PEM header (which a key parser's source
# holds too; CREDENTIAL_FORMATS' PEM rule wants key material after it), not a format: counted in config files only.
_LOOSE_TYPES = frozenset({"Secret Keyword", "Base64 High Entropy String", "Hex High Entropy String", "Private Key"})
_CONFIG_SUFFIXES = frozenset({".yaml", ".yml", ".eyaml", ".cfg", ".conf", ".cnf", ".cf", ".ini", ".properties",
                              ".toml", ".json", ".xml", ".config", ".rc"})
# detect-secrets' own plugin settings (its defaults, without the public-IP rule, which is not a secret).
_SCANNER_CONFIG: dict[str, Any] = {"plugins_used": [
    {"name": name} for name in (
        "ArtifactoryDetector", "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "CloudantDetector",
        "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "IbmCloudIamDetector",
        "IbmCosHmacDetector", "JwtTokenDetector", "KeywordDetector", "MailchimpDetector", "NpmDetector",
        "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
        "SoftlayerDetector", "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
    )]}
# (Its high-entropy rules are not used: in a code dir they flag every sha256 of a lock file, golden file or manifest.)
# Plugins whose patterns are anchored on a keyword (`cloudant_password = ...`) and start with look-behinds, slow to
# search a whole file: they are not in the one-pass search that picks the files detect-secrets reads; they run
# when it reads one (and what they find in a config file is a Secret Keyword as well).
_NOT_PREFILTERED = frozenset({"CloudantDetector", "IbmCloudIamDetector", "IbmCosHmacDetector", "SoftlayerDetector"})


@functools.lru_cache(maxsize=1)
def _format_regexes() -> tuple[re.Pattern[str], ...]:
    """The patterns of detect-secrets' format plugins (all regex-based), made multi-line: one pass of each over a
    whole file or all env values finds the lines that may hold a secret; detect-secrets then decides on those."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    used = {entry["name"] for entry in _SCANNER_CONFIG["plugins_used"]} - _NOT_PREFILTERED
    out: list[re.Pattern[str]] = []
    for secret_type, cls in get_mapping_from_secret_type_to_class().items():
        if cls.__name__ in used and secret_type not in _LOOSE_TYPES:
            out += [re.compile(r.pattern, r.flags | re.MULTILINE) for r in cls().denylist]
    return tuple(out)


def _may_hold_format(text: str) -> bool:
    return any(r.search(text) for r in _format_regexes())


@functools.lru_cache(maxsize=1)
def _keyword_regex() -> re.Pattern[str]:
    """detect-secrets' keyword list (`password`, `secret`, `api_key`, ...) followed by an assignment of a value of 4
    characters or more: a config file without one holds nothing its keyword rule finds."""
    from detect_secrets.plugins.keyword import DENYLIST

    return re.compile(r"(?:%s)\w*[\"'\]]{0,2}\s*(?::=|=>|[:=])\s*@?[\"'`]?[^\s\"'`,\]\[{}]{4}" % "|".join(DENYLIST),
                      re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _store_spec() -> Any:
    """CREDENTIAL_STORES as one pathspec GitIgnoreSpec over lower-cased paths."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines([p.lower() for p in CREDENTIAL_STORES])


def name_reason(rel: str, is_dir: bool) -> str | None:
    """Why the path `rel` (POSIX, relative to the scanned root) is a credential store by its name, or None.

    Only `rel` itself is matched (a caller walking a tree stops at an excluded directory)."""
    result = _store_spec().check_file(rel.lower() + ("/" if is_dir else ""))
    if not result.include:
        return None
    return f"credential store name: matches `{CREDENTIAL_STORES[result.index]}`"


def _is_config(name: str) -> bool:
    """A configuration file by its name: a config suffix, or a dotfile or bare name without one (`.databrickscfg`)."""
    stem, suffix = os.path.splitext(name)
    return suffix.lower() in _CONFIG_SUFFIXES or not suffix or (not stem and name.startswith("."))


def _formats(data: bytes) -> str | None:
    for what, patterns in CREDENTIAL_FORMATS:
        if all(p.search(data) for p in patterns):
            return what
    return None


def _scanner_reason(path: Path, loose_ok: bool) -> str | None:
    """What detect-secrets finds in `path` ("AWS Access Key", ...); its looser rules (keyword, bare PEM header)
    count only when `loose_ok` (a small config file). Must run inside `content_scanner()` (its settings)."""
    from detect_secrets.core.scan import scan_file

    for found in scan_file(str(path)):
        if found.type not in _LOOSE_TYPES or loose_ok:
            return f"{found.type} (detect-secrets), line {found.line_number}"
    return None


def _content(path: Path, size: int, limit: int) -> str | None:
    """What `path` holds; see content_scanner."""
    if size == 0 or size > limit:
        with open(path, "rb"):  # readable? (opening a regular file never blocks)
            return None
    with open(path, "rb") as fh:
        data = fh.read(limit)
    if ALLOW_MARKER in data or b"\0" in data[:8192]:  # marked as no secret, or binary: no text secret to read
        return None
    found = _formats(data)
    if found is not None or size > MAX_SCANNER_BYTES:
        return found
    text = data.decode("utf-8", "replace")
    keyword = size <= MAX_CONFIG_BYTES and _is_config(path.name) and _keyword_regex().search(text) is not None
    if not keyword and not _may_hold_format(text):
        return None
    return _scanner_reason(path, keyword)


@contextmanager
def content_scanner(limit: int | None = None) -> Iterator[Callable[[Path, int], str | None]]:
    """A scan of many files under one detect-secrets configuration: yields `scan(path, size) -> what it holds or
    None`. A text file of 1 to `limit` bytes (None: MAX_CONTENT_SCAN_BYTES) is read for CREDENTIAL_FORMATS, and
    up to MAX_SCANNER_BYTES also by detect-secrets; a binary file (a NUL byte in its first 8 KiB) is not read for
    content. Raises OSError (from `scan`) when a file cannot be read."""
    limit = MAX_CONTENT_SCAN_BYTES if limit is None else limit
    from detect_secrets.settings import transient_settings

    with transient_settings(_SCANNER_CONFIG):
        yield lambda path, size: _content(path, size, limit)


def content_reason(path: Path, size: int) -> str | None:
    """What secret the file at `path` (`size` bytes, from stat) holds, or None; see the module doc. Raises OSError
    when the file cannot be read."""
    with content_scanner() as scan:
        return scan(path, size)


# --------------------------------------------------------------------------- local input directories

# content verdicts by (path, size, mtime_ns, inode): a plan and its submit look at the same tree two or three times
_CONTENT_SEEN: dict[tuple[str, int, int, int], str | None] = {}
_CONTENT_SEEN_MAX = 200_000


def _walk(root: Path, rel_dir: str = "") -> Iterator[tuple[str, Path, os.stat_result | None]]:
    """(relative path, path, stat or None for a directory) of a directory tree, sorted by name; symlinked
    directories are not entered, a symlinked file is read as the file it names, special files are skipped."""
    with os.scandir(root / rel_dir if rel_dir else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
        if e.is_dir(follow_symlinks=False):
            yield rel, Path(e.path), None
        elif e.is_file():  # (follows a symlink; a FIFO, socket or device is not a file)
            yield rel, Path(e.path), e.stat()


def _cached_content(scan: Callable[[Path, int], str | None], path: Path, st: os.stat_result) -> str | None:
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if len(_CONTENT_SEEN) >= _CONTENT_SEEN_MAX:  # a long-lived caller (an orchestrator's worker) stays bounded
        _CONTENT_SEEN.clear()
    if key not in _CONTENT_SEEN:
        _CONTENT_SEEN[key] = scan(path, st.st_size)
    return _CONTENT_SEEN[key]


def input_files(root: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """The files of a local input directory that may be uploaded (or copied into a local job), as sorted (path,
    relative POSIX path), and what was left out as "path: reason" (names and reasons, never content).

    The credential rules of the code bundle apply (names, then content); what git ignores does not (data dirs are
    usually ignored by git on purpose). A single file given as an input is the user's explicit choice and is not
    filtered: that is how a credential-looking file goes on purpose. Raises OSError when a file cannot be read."""
    files: list[tuple[Path, str]] = []
    left_out: list[str] = []
    pending = [""]
    with content_scanner(MAX_INPUT_SCAN_BYTES) as scan:
        while pending:
            rel_dir = pending.pop()
            for rel, path, st in _walk(root, rel_dir):
                why = name_reason(rel, st is None)
                if why is not None:
                    left_out.append(f"{rel}{'/' if st is None else ''}: {why}")
                elif st is None:
                    pending.append(rel)
                elif (held := _cached_content(scan, path, st)) is not None:
                    left_out.append(f"{rel}: holds {held}")
                else:
                    files.append((path, rel))
    files.sort(key=lambda f: f[1])
    return files, sorted(left_out)


def input_left_out_note(name: str, root: Path, left_out: list[str], shown: int = 10) -> str:
    """The plan note for an input directory's left-out files."""
    items = left_out[:shown] + ([f"and {len(left_out) - shown} more"] if len(left_out) > shown else [])
    return (f"input {name}: {len(left_out)} credential file(s) of {root} are not uploaded: " + "; ".join(items)
            + ". To send one on purpose, give it as an input of its own (a single file is sent as it is); pass "
              "credentials the job needs as `secrets`")


# --------------------------------------------------------------------------- plain env values

# A variable name that says it holds a credential: one of these words between `_`s (HF_TOKEN, DB_PASSWORD, GH_PAT;
# not TOKENIZERS_PARALLELISM), or a key named for what it opens (WANDB_API_KEY, AWS_SECRET_ACCESS_KEY).
_CREDENTIAL_NAME = re.compile(
    r"(?i)(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|PWD|PAT|APIKEY|CREDENTIALS?|AUTH|PRIVATE)(?:_|$)"
    r"|(?:API|ACCESS|SECRET|PRIVATE|ACCOUNT|AUTH|CLIENT|SERVICE|MASTER|SIGNING|ENCRYPTION)_KEY(?:_|$)")
_PLAIN_VALUE = re.compile(r"(?i)(?:true|false|yes|no|on|off|none|null|[-+.0-9e]+|\$\{?\w+\}?)")


def _name_says(name: str) -> bool:
    return _CREDENTIAL_NAME.search(name) is not None


def _line_format(line: str) -> str | None:
    """The known credential format detect-secrets finds in `line` (its format plugins and filters), or None. Must
    run inside detect-secrets' settings (see env_credential_warnings)."""
    from detect_secrets.core.scan import scan_line

    for secret in scan_line(line):
        if secret.type not in _LOOSE_TYPES:
            return secret.type
    return None


def _candidates(env: dict[str, str]) -> list[str]:
    """The names whose value may be a credential: 8 characters or more, one line, not a number, boolean or `$VAR`."""
    return [name for name in sorted(env) if 8 <= len(env[name]) <= 4096 and "\n" not in env[name]
            and not _PLAIN_VALUE.fullmatch(env[name].strip())]


def env_credential_warnings(env: dict[str, str]) -> list[str]:
    """One warning line per plain `env:` variable whose value has a known credential format or whose name says it
    holds one (for a value that may be one, see `_candidates`). Names only, never the value."""
    names = _candidates(env)
    if not names:
        return []
    from detect_secrets.settings import transient_settings

    # a value of a known credential format is 16 characters or more (the shortest, an AWS key ID, has 20)
    lines = [f'{name} = "{env[name]}"' if len(env[name]) >= 16 else "" for name in names]
    text = "\n".join(lines)  # (a short value's line is empty)
    # the lines a pattern of a format matches, found in one pass per pattern: the rules decide on these only
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    hit: set[int] = set()
    own = [re.compile(p.pattern.decode("utf-8"), p.flags & ~re.ASCII | re.MULTILINE)
           for _, patterns in CREDENTIAL_FORMATS for p in patterns]
    for regex in (*_format_regexes(), *own):
        hit.update(bisect.bisect_right(starts, m.start()) - 1 for m in regex.finditer(text))
    out: list[str] = []
    with transient_settings(_SCANNER_CONFIG):
        for i, name in enumerate(names):
            fmt = (_formats(env[name].encode("utf-8", "surrogatepass")) or _line_format(lines[i])) if i in hit else None
            if fmt is None and not _name_says(name):
                continue
            why = f"has the format of {fmt}" if fmt else "is named like a credential"
            out.append(f"warning: env.{name} looks like a credential (its value {why}): a plain env value is sent in "
                       f"the job request and shown by every dry run. To fix: store it in the cloud's secret manager "
                       f"and give `secrets: {{{name}: <reference>}}` instead (an AWS Secrets Manager ARN, a GCP "
                       f"projects/P/secrets/S/versions/V or an Azure Key Vault secret URI)")
    return out


def secret_notes(env: dict[str, str], inputs: dict[str, str]) -> list[str]:
    """The plan's (and `validate`'s) lines about secrets: one per credential-like plain env value, one per local
    input directory whose credential files are not uploaded. `inputs`: name -> URI or absolute local path."""
    notes = env_credential_warnings(env)
    for name, value in sorted(inputs.items()):
        path = Path(value)
        if "://" in value or not path.is_absolute() or not path.is_dir():
            continue
        try:
            left_out = input_files(path)[1]
        except OSError:
            continue  # unreadable: the input checks name it
        if left_out:
            notes.append(input_left_out_note(name, path, left_out))
    return notes
