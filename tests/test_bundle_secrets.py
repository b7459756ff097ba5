"""cloudtune.bundle: secret files are left out by name and by content and named (never quoted) in `left_out`;
unreadable, special and endless layouts are refused early with the path named, or skipped and named.

Secrets are made up at test time (random key material), so no real key is ever in the repository."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudtune import bundle as bundle_mod
from cloudtune.bundle import build_bundle, explain_exclusion, iter_bundle_files
from cloudtune.errors import InvalidInput


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


def pem(kind: str = "RSA PRIVATE KEY") -> str:
    body = b64(600)
    return f"-----BEGIN {kind}-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + f"\n-----END {kind}-----\n"


MARK = "SECRETMARK" + secrets.token_hex(8)  # in every secret file, so a leak is found by grepping the bytes


# ----------------------------------------------------------------------------------------- by name
NAMED_IN_ISSUE = [
    ".npmrc", ".git-credentials", ".envrc", "terraform.tfstate", "terraform.tfstate.backup", "prod.tfvars",
    ".kube/config", ".docker/config.json", ".pgpass", "prod.env", "server.PEM", "my-project-3f2a1b9c8d7e.json",
    "keys/sa-key.json",
]
NAMED_MORE = [
    ".netrc", "_netrc", ".pypirc", "id_ed25519", "ssh/ID_RSA", "keys/deploy.ppk", "AuthKey_ABC123.p8", "release.jks",
    "app.keystore", ".aws/credentials", ".azure/azureProfile.json", "home/.config/gcloud/application_default_credentials.json",
    "azure-credentials.json", "client_secret_1234.apps.googleusercontent.com.json", "kubeconfig", "kubeconfig.prod",
    "prod.kubeconfig", ".terraform/terraform.tfstate", "vars.auto.tfvars.json", ".my.cnf", ".s3cfg", ".boto",
    ".vault-token", ".streamlit/secrets.toml", ".cache/huggingface/token", "Prod.ENV", ".ENV", ".env.production",
    "deploy/staging.env", "gcp-key.json", "api_key.json", "service_account_prod.json", ".oci/config", ".gnupg/secring.gpg",
    "CREDENTIALS", "creds/credentials.toml", "tls.Key",
]


def test_secret_names_left_out_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {p: f"{MARK} not a real secret\n" for p in NAMED_IN_ISSUE + NAMED_MORE})
    write(root, {"train.py": "print('hi')\n"})
    b = build_bundle(root)
    assert b.files == ("train.py",)
    listed = {item.split(": ", 1)[0].rstrip("/") for item in b.left_out}
    for p in NAMED_IN_ISSUE + NAMED_MORE:
        assert p in listed or any(p.startswith(d + "/") for d in listed), p
        reason = explain_exclusion(root, p)
        assert reason is not None and "secret file name" in reason, (p, reason)
    assert all(MARK not in item for item in b.left_out)
    out = b.write(tmp_path / "out")
    assert MARK.encode() not in _tar_bytes(out)


# ----------------------------------------------------------------------------------------- by content
def secret_contents() -> dict[str, str]:
    """Innocently named files, each holding one kind of secret."""
    sa = {"type": "service_account", "project_id": "p", "private_key_id": secrets.token_hex(20),
          "private_key": pem("PRIVATE KEY"), "client_email": "x@p.iam.gserviceaccount.com", "note": MARK}
    user = {"client_id": "1.apps.googleusercontent.com", "client_secret": secrets.token_hex(12),
            "refresh_token": "1//" + secrets.token_hex(30), "type": "authorized_user", "note": MARK}
    docker = {"auths": {"registry.example.com": {"auth": b64(24)}}, "note": MARK}
    azure = {"clientId": "00000000-0000-0000-0000-000000000000", "clientSecret": secrets.token_urlsafe(30),
             "tenantId": "t", "note": MARK}
    aws_secret = base64.b64encode(secrets.token_bytes(30)).decode()[:40]
    return {
        "notes.txt": f"my key, {MARK}\n{pem()}",
        "docs/keys.md": f"# ops {MARK}\n\n```\n{pem('OPENSSH PRIVATE KEY')}```\n",
        "conf/ec.txt": MARK + pem("EC PRIVATE KEY"),
        "conf/enc.txt": MARK + pem("ENCRYPTED PRIVATE KEY"),
        "conf/pgp.asc": MARK + pem("PGP PRIVATE KEY BLOCK"),
        "conf/app.json": json.dumps(sa, indent=2),
        "conf/app_compact.json": json.dumps({k: v for k, v in sa.items() if k != "private_key"}),
        "conf/embedded.py": f"# {MARK}\nKEY = {json.dumps(pem('PRIVATE KEY'))}\n",
        "conf/adc.json": json.dumps(user),
        "settings.ini": f"[default]\naws_access_key_id = AKIA{secrets.token_hex(8).upper()}\n"
                        f"aws_secret_access_key = {aws_secret}\n# {MARK}\n",
        "deploy.sh": f"#!/bin/sh\n# {MARK}\nexport AWS_SECRET_ACCESS_KEY=\"{aws_secret}\"\n",
        "sp.json": json.dumps(azure),
        "storage.txt": f"{MARK} DefaultEndpointsProtocol=https;AccountName=a;AccountKey={b64(64)};\n",
        "cluster.yaml": f"apiVersion: v1\nclusters: []\nkind: Config\n# {MARK}\nusers:\n- name: u\n  user:\n"
                        f"    token: {secrets.token_hex(24)}\n",
        "auth.json": json.dumps(docker),
        "machines": f"# {MARK}\nmachine api.example.com login me password {secrets.token_hex(8)}\n",
        "registry.cfg": f"# {MARK}\n//registry.npmjs.org/:_authToken={secrets.token_hex(18)}\n",
        "remotes.txt": f"https://me:{secrets.token_hex(10)}@github.com\n# {MARK}\n",
        "putty.txt": f"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: {MARK}\n",
        "gh.txt": f"{MARK} token ghp_{secrets.token_hex(18)}\n",
        "hf.txt": f"{MARK} hf_{''.join(secrets.choice('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ') for _ in range(34))}\n",
        "data/blob.bin": os.urandom(3000).hex() + MARK + pem() + os.urandom(3000).hex(),
    }


# Code that names the formats without holding a secret stays in the bundle.
INNOCENT = {
    "check.py": 'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    raise ValueError("a key")\n',
    "aws.py": 'import os\nAWS_SECRET_ACCESS_KEY = os.environ["AWS_SECRET_ACCESS_KEY"]\n',
    "README.md": "# machine learning\nmachine translation models, login with your password\n",
    "auth.py": 'TYPE = {"type": "service_account"}\n',
    "k8s.yaml": "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n",
    "docker.py": 'cfg = {"auths": {}}\n',
    "environment.py": "X = 1\n", "key.txt": "", "tokenizer.json": "{}", "monkey.json": "{}", "credentials.py": "",
    "hf.md": "use hf_hub_download(...) and an hf_ token from your settings\n",
}


def test_secret_content_left_out_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "code"
    contents = secret_contents()
    write(root, contents)
    write(root, INNOCENT)
    b = build_bundle(root)
    assert set(b.files) == set(INNOCENT)
    listed = {item.split(": ", 1)[0]: item.split(": ", 1)[1] for item in b.left_out}
    for p in contents:
        assert p in listed and listed[p].startswith("holds "), (p, listed.get(p))
        reason = explain_exclusion(root, p)
        assert reason is not None and "secret content" in reason, (p, reason)
    assert all(MARK not in item for item in b.left_out)
    assert MARK.encode() not in _tar_bytes(b.write(tmp_path / "out"))
    assert explain_exclusion(root, "check.py") is None


def test_tried_and_leaked_count(tmp_path: Path) -> None:
    """Every secret member above in one code dir: all tried, none in the archive's bytes."""
    root = tmp_path / "code"
    tried = {**{p: f"{MARK}\n" for p in NAMED_IN_ISSUE + NAMED_MORE}, **secret_contents()}
    write(root, tried)
    write(root, {"train.py": "print('hi')\n"})
    data = _tar_bytes(build_bundle(root, dest=tmp_path / "out").path)  # type: ignore[arg-type]
    leaked = [p for p in tried if MARK.encode() in data]  # any one leak shows the mark
    assert len(tried) >= 70 and leaked == []


def _tar_bytes(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]


def test_left_out_survives_extension(tmp_path: Path) -> None:
    from cloudtune.bundle import extend_bundle

    root = tmp_path / "code"
    write(root, {"a.py": "", ".npmrc": MARK})
    b = extend_bundle(build_bundle(root), {".cloudtune/x": b"1"})
    assert b.left_out == (".npmrc: secret file name (matches `.npmrc`)",)


# ----------------------------------------------------------------------------------------- layouts
def test_fifo_and_socket_are_skipped_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {"a.py": "x = 1\n"})
    os.mkfifo(root / "pipe")
    (root / "outside").symlink_to(tmp_path)
    monkeypatch.chdir(root)  # AF_UNIX paths are short: bind by a relative name
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind("app.sock")
        started = time.monotonic()
        b = build_bundle(root)
        assert time.monotonic() - started < 5  # a FIFO is never opened (it would block)
    assert b.files == ("a.py",)
    assert "pipe: a named pipe" in b.left_out and "app.sock: a socket" in b.left_out
    assert any(item.startswith("outside: symlink points outside") for item in b.left_out)


@pytest.mark.parametrize("code", ["/", "/proc", "/proc/self", "/sys", "/dev"])
def test_system_code_dirs_refused(code: str) -> None:
    started = time.process_time()  # CPU time: a walk of the system dir would spend it, other load on the machine not
    with pytest.raises(InvalidInput) as exc:
        build_bundle(code)
    assert time.process_time() - started < 1
    assert code in exc.value.message and exc.value.exit_code == 2 and exc.value.fix


def test_code_symlinked_to_root_refused(tmp_path: Path) -> None:
    (tmp_path / "code").symlink_to("/")
    with pytest.raises(InvalidInput, match="root of the file system"):
        build_bundle(tmp_path / "code")


def test_many_directories_stop_the_scan_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {"train.py": ""})
    for i in range(3000):
        (root / "cache" / f"d{i:05d}").mkdir(parents=True)
    monkeypatch.setattr(bundle_mod, "MAX_SCAN_ENTRIES", 500)
    with pytest.raises(InvalidInput) as exc:
        build_bundle(root)
    assert "500" in exc.value.message and "cache/" in exc.value.message
    assert "/cache/" in (exc.value.fix or "")


def test_many_files_stop_the_scan_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {f"shards/s{i:04d}.txt": "x" for i in range(400)})
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_FILES", 100)
    with pytest.raises(InvalidInput) as exc:
        iter_bundle_files(root)
    assert "100 files" in exc.value.message and "shards/" in exc.value.message


def test_size_budget_stops_the_scan_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {"a/big.bin": b"x" * 4000, "b/more.bin": b"y" * 10})
    os.mkfifo(root / "b" / "later")  # never reached: the scan stops at a/big.bin
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(InvalidInput) as exc:
        build_bundle(root)
    assert "a/big.bin" in exc.value.message


def test_ignored_directories_are_never_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {".gitignore": "/data/\n", "train.py": ""})
    for i in range(300):
        (root / "data" / f"d{i}").mkdir(parents=True)
    monkeypatch.setattr(bundle_mod, "MAX_SCAN_ENTRIES", 50)
    assert iter_bundle_files(root) == [".gitignore", "train.py"]


# ----------------------------------------------------------------------------------------- unreadable
def as_unprivileged(fn: Callable[[], object]) -> str:
    """Run fn in a child process as an ordinary user (root reads every file) and return 'ok' or 'Type: message'."""
    if os.geteuid() != 0:
        try:
            fn()
            return "ok"
        except Exception as exc:  # noqa: BLE001 - reported to the test as text
            return f"{type(exc).__name__}: {exc}"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
            out = "ok"
        except BaseException as exc:  # noqa: BLE001
            out = f"{type(exc).__name__}: {exc}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


@pytest.fixture()
def shared_dir() -> Iterator[Path]:
    """A directory an ordinary user can reach (pytest's tmp_path is private to its owner)."""
    d = Path(tempfile.mkdtemp(prefix="cloudtune-bundle-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(d)


def _tree(root: Path, files: dict[str, str]) -> None:
    write(root, files)
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("what,mode,is_dir", [
    ("secret.txt", 0o000, False),              # an unreadable file: PermissionError traceback before
    ("private", 0o000, True),                  # an unreadable directory: dropped without a word before
    ("listonly", 0o644, True),                 # readable, not searchable (no x): entries cannot be stat'ed
    ("searchonly", 0o311, True),               # searchable, not readable (no r): cannot be listed
])
def test_unreadable_paths_are_refused_with_the_path(shared_dir: Path, what: str, mode: int, is_dir: bool) -> None:
    root = shared_dir / "code"
    _tree(root, {"train.py": "", f"{what}/x.py" if is_dir else what: "x"})
    (root / what).chmod(mode)
    out = as_unprivileged(lambda: build_bundle(root))
    assert out.startswith("InvalidInput: cannot read"), out
    assert str(root / what) in out and "chmod" in out and f"/{what}" in out, out
    # leaving it out with .gitignore, as the fix says, works
    (root / ".gitignore").write_text(f"/{what}{'/' if is_dir else ''}\n")
    (root / ".gitignore").chmod(0o644)
    assert as_unprivileged(lambda: build_bundle(root)) == "ok"


def test_unreadable_code_dir(shared_dir: Path) -> None:
    root = shared_dir / "code"
    _tree(root, {"train.py": ""})
    root.chmod(0o000)
    out = as_unprivileged(lambda: build_bundle(root))
    assert out.startswith("InvalidInput: cannot read directory") and str(root) in out, out


def test_secret_names_are_never_opened(shared_dir: Path) -> None:
    """A secret file that cannot be read is left out by its name, not refused."""
    root = shared_dir / "code"
    _tree(root, {"train.py": "", ".npmrc": "x", ".kube/config": "x"})
    (root / ".npmrc").chmod(0o000)
    (root / ".kube").chmod(0o000)
    assert as_unprivileged(lambda: build_bundle(root)) == "ok"


def test_mode_bits_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"run.sh": "#!/bin/sh\n"})
    (root / "run.sh").chmod(0o755)
    b = build_bundle(root, dest=tmp_path / "out")
    with tarfile.open(b.path) as tar:  # type: ignore[arg-type]
        assert tar.getmember("run.sh").mode & stat.S_IXUSR


def test_symlinks_to_secrets_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"train.py": "", ".npmrc": MARK, "notes.txt": MARK + pem(), ".ssh/id": MARK})
    (root / "npm.txt").symlink_to(".npmrc")          # an innocent name for a secret file name
    (root / "readme.txt").symlink_to("notes.txt")    # an innocent name for secret content
    (root / "keys").symlink_to(".ssh")               # a directory of keys under another name
    b = build_bundle(root)
    assert b.files == ("train.py",)
    listed = {item.split(": ", 1)[0] for item in b.left_out}
    assert {"npm.txt", "readme.txt", "keys", ".npmrc", "notes.txt", ".ssh/"} <= listed
    assert MARK.encode() not in _tar_bytes(b.write(tmp_path / "out"))


def test_the_local_job_code_copy_holds_no_secret(tmp_path: Path) -> None:
    """Through the CLI: the dry run names what was left out (never its content) and the local job's code copy
    holds only the code."""
    import subprocess
    import sys

    write(tmp_path / "code", {"train.py": "", ".git-credentials": f"https://me:{MARK}@github.com\n",
                              "prod.env": f"TOKEN={MARK}\n", "k.txt": MARK + pem()})
    (tmp_path / "job.yaml").write_text(
        "name: secrets\ncode: code\ncommand: python -c \"import os; print('FILES', sorted(os.listdir('.')))\"\n")
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / "home")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "cloudtune.cli", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    dry = run("launch", "job.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    note = next(line for line in dry.stdout.splitlines() if "left out" in line)
    assert ".git-credentials: secret file name" in note and "prod.env: secret file name" in note
    assert "k.txt: holds a PEM private key" in note and MARK not in dry.stdout + dry.stderr
    done = run("launch", "job.yaml")
    assert done.returncode == 0, done.stderr
    assert "FILES ['train.py']" in done.stdout + done.stderr and MARK not in done.stdout + done.stderr
    for f in (tmp_path / "home").rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert MARK.encode() not in f.read_bytes(), f  # not in the job store, a log, a copy or a bundle


def test_a_marked_file_that_only_looks_like_a_secret_goes(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"test_keys.py": "# pragma: allowlist secret\nFIXTURE = '''" + pem() + "'''\n",
                 "fixture.pem": "# pragma: allowlist secret\n" + pem()})
    b = build_bundle(root)
    assert b.files == ("test_keys.py",)  # the marker lifts the content rule, never the name rule
    assert b.left_out == ("fixture.pem: secret file name (matches `*.pem`)",)


@pytest.mark.parametrize("unit", [b"  token: abcdefghij\n", b'{"type": "service_account"}\n', b'"refresh_token": 1,\n',
                                  b'"auths": {\n', b"kind: Config\n", b"-----BEGIN PRIVATE KEY-----\n", b"\n", b" \t\r\n",
                                  b"machine a login b ", b"https://a:bbbbbbb", b"QUJD", b'"clientSecret": "'])
def test_content_rules_stay_linear_on_hostile_files(tmp_path: Path, unit: bytes) -> None:
    """Repeated fragments of the secret formats (each rule's patterns are searched on their own: no backtracking
    across the file). A kubeconfig-like file of 2 MB took a minute with one combined pattern."""
    root = tmp_path / "code"
    write(root, {"data.txt": unit * (2_000_000 // len(unit))})
    started = time.process_time()  # CPU time: not inflated by other load on the machine
    build_bundle(root)
    assert time.process_time() - started < 3


def test_files_changed_or_gone_after_the_scan_are_named(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"a.py": "x = 1\n" * 100, "b.py": "y = 2\n"})
    b = build_bundle(root)
    (root / "a.py").write_text("x")  # shrank since the plan's scan
    with pytest.raises(InvalidInput, match="changed while the bundle was made"):
        b.write(tmp_path / "out")
    (root / "a.py").unlink()  # gone since the scan
    with pytest.raises(InvalidInput) as exc:
        b.write(tmp_path / "out")
    assert str(root / "a.py") in exc.value.message
    assert not list((tmp_path / "out").glob("*.part"))  # no partial file left behind
