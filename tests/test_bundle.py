"""cloudtune.bundle: determinism, .gitignore semantics, always-excluded secrets, symlinks, size limit."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from cloudtune import bundle as bundle_mod
from cloudtune.bundle import EXCLUDED_ALWAYS, build_bundle, explain_exclusion, iter_bundle_files
from cloudtune.errors import InvalidInput


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    return home


def sample(root: Path) -> Path:
    write(root, {
        "train.py": "print('hi')\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "X = 1\n",
        "scripts/run.sh": "#!/bin/sh\necho run\n",
        "README.md": "# readme\n",
    })
    (root / "scripts/run.sh").chmod(0o755)
    return root


def test_deterministic_across_builds_mtimes_and_paths(tmp_path: Path, _home: Path) -> None:
    a = sample(tmp_path / "a" / "code")
    b1 = build_bundle(a)
    b2 = build_bundle(a)
    assert b1 == b2
    assert b1.path is None and not (_home / "bundles").exists()  # computing a bundle writes nothing
    path = b1.write(_home / "bundles")
    assert path == _home / "bundles" / f"{b1.sha256}.tar.gz"
    assert b1.size == path.stat().st_size
    data1 = path.read_bytes()

    for p in a.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    b3 = build_bundle(a, dest=tmp_path / "out" / "x.tar.gz")
    assert b3.sha256 == b1.sha256
    assert b3.path.read_bytes() == data1

    other = tmp_path / "elsewhere" / "deeper" / "src"
    shutil.copytree(a, other)
    b4 = build_bundle(other, dest=tmp_path / "y.tar.gz")
    assert b4.sha256 == b1.sha256 and b4.path.read_bytes() == data1

    (other / "train.py").write_text("print('changed')\n")
    assert build_bundle(other, dest=tmp_path / "z.tar.gz").sha256 != b1.sha256
    assert not list((_home / "bundles").glob(".bundle-*"))  # no temp files left


def test_archive_metadata(tmp_path: Path) -> None:
    b = build_bundle(sample(tmp_path / "code"), dest=tmp_path)
    raw = b.path.read_bytes()
    assert raw[3] & 0x08 == 0  # gzip FNAME flag unset
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert b.files == ("README.md", "pkg/__init__.py", "pkg/mod.py", "scripts/run.sh", "train.py")
    with tarfile.open(b.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(b.files)
        for m in members:
            assert m.isfile() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
        modes = {m.name: m.mode for m in members}
    assert modes["scripts/run.sh"] == 0o755
    assert modes["train.py"] == 0o644
    assert gzip.decompress(raw)  # valid gzip


def test_reuses_existing_bundle(tmp_path: Path) -> None:
    code = sample(tmp_path / "code")
    b1 = build_bundle(code, dest=tmp_path)
    ino = b1.path.stat().st_ino
    b2 = build_bundle(code, dest=tmp_path)
    assert b2.path.stat().st_ino == ino


def test_write_refuses_changed_files(tmp_path: Path) -> None:
    """A bundle computed at plan time and written at submit: edited code is refused, never stored under the old hash."""
    code = sample(tmp_path / "code")
    planned = build_bundle(code)
    (code / "train.py").write_text("print('edited after the plan')\n")
    with pytest.raises(InvalidInput) as exc:
        planned.write(tmp_path / "out")
    assert "changed since the plan" in exc.value.message
    assert not list((tmp_path / "out").iterdir())


def test_extra_files(tmp_path: Path) -> None:
    code = sample(tmp_path / "code")
    b = build_bundle(code, dest=tmp_path, extra_files={"cloudtune/job.json": b'{"a": 1}', "train.py": b"override\n"})
    assert "cloudtune/job.json" in b.files
    with tarfile.open(b.path) as tar:
        assert tar.extractfile("cloudtune/job.json").read() == b'{"a": 1}'  # type: ignore[union-attr]
        assert tar.extractfile("train.py").read() == b"override\n"  # type: ignore[union-attr]
    with pytest.raises(InvalidInput):
        build_bundle(code, extra_files={"../escape": b"x"})


def test_gitignore_semantics(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {
        ".gitignore": "\n".join([
            "# comment",
            "",
            "*.log",
            "!keep.log",
            "build/",
            "/top.txt",
            "data/**/*.bin",
            "**/cache",
            "a?c.txt",
            "docs/*.tmp",
            "\\#hash.txt",
            "trailing.txt   ",
        ]) + "\n",
        "x.log": "", "keep.log": "", "sub/y.log": "", "sub/keep.log": "",
        "build/out.o": "", "sub/build/out.o": "", "build.txt": "",
        "top.txt": "", "sub/top.txt": "",
        "data/a.bin": "", "data/x/y/z.bin": "", "data/a.txt": "", "other/a.bin": "",
        "cache/c": "", "deep/er/cache": "",
        "abc.txt": "", "abbc.txt": "",
        "docs/a.tmp": "", "docs/sub/b.tmp": "",
        "#hash.txt": "", "trailing.txt": "",
        "nested/.gitignore": "*.csv\n!important.csv\n/local.txt\nsecret_dir/\n",
        "nested/a.csv": "", "nested/important.csv": "", "nested/local.txt": "", "nested/deep/local.txt": "",
        "nested/secret_dir/f": "", "a.csv": "",
        "ignored_dir/.gitignore": "", "ignored_dir/f": "",
    })
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + "ignored_dir/\n!ignored_dir/f\n")
    files = set(iter_bundle_files(root))
    expected_in = {".gitignore", "keep.log", "sub/keep.log", "sub/top.txt", "build.txt", "data/a.txt",
                   "other/a.bin", "abbc.txt", "docs/sub/b.tmp", "nested/.gitignore", "nested/important.csv",
                   "nested/deep/local.txt", "a.csv"}
    expected_out = {"x.log", "sub/y.log", "build/out.o", "sub/build/out.o", "top.txt", "data/a.bin",
                    "data/x/y/z.bin", "cache/c", "deep/er/cache", "abc.txt", "docs/a.tmp", "#hash.txt",
                    "trailing.txt", "nested/a.csv", "nested/local.txt", "nested/secret_dir/f", "ignored_dir/f"}
    assert expected_in <= files
    assert not (expected_out & files)
    assert files == expected_in

    assert explain_exclusion(root, "keep.log") is None
    assert "*.log" in (explain_exclusion(root, "x.log") or "")
    assert ".gitignore:3" in (explain_exclusion(root, "x.log") or "")
    assert "build" in (explain_exclusion(root, "sub/build/out.o") or "")
    assert "nested/.gitignore" in (explain_exclusion(root, "nested/a.csv") or "")
    assert "does not exist" in (explain_exclusion(root, "nope.txt") or "")
    # a parent dir excluded: a negation can't re-include the file (git semantics)
    assert "ignored_dir" in (explain_exclusion(root, "ignored_dir/f") or "")


SECRETS = [
    ".git/config", ".aws/credentials_file", ".azure/x", ".config/gcloud/adc.json", ".ssh/known",
    "__pycache__/m.cpython-311.pyc", "pkg/__pycache__/x", "m.pyc", ".env", ".env.local", "sub/.env",
    "tls.pem", "k.key", "c.p12", "c.pfx", "id_rsa", "id_rsa.pub", "id_ed25519", "sub/id_ed25519.pub",
    "credentials", "credentials.json", "gcp-credentials-prod.json", "service-account-x.json", ".netrc",
    ".pypirc", ".venv/bin/python", "venv/lib/x.py", "node_modules/a/index.js", ".cloudtune/jobs.db",
    "old.tar.gz", "deep/dir/.ssh/id", "deep/.config/gcloud/creds",
]


def test_always_excluded_secrets(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {p: "secret" for p in SECRETS})
    write(root, {"ok.py": "", ".config/other/x": "", "key.txt": "", "environment.py": ""})
    # a .gitignore negation does not bring secrets back
    write(root, {".gitignore": "!.env\n!*.pem\n!credentials.json\n"})
    b = build_bundle(root)
    assert set(b.files) == {".gitignore", "ok.py", ".config/other/x", "key.txt", "environment.py"}
    for p in SECRETS:
        reason = explain_exclusion(root, p)
        assert reason is not None and "always excluded" in reason, p
    assert len(EXCLUDED_ALWAYS) >= 26


def test_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": "outside", "d/f.txt": "outside"})
    root = tmp_path / "code"
    write(root, {"real.txt": "inside", "realdir/g.txt": "g"})
    (root / "link_out.txt").symlink_to(outside / "secret.txt")
    (root / "link_out_dir").symlink_to(outside / "d")
    (root / "link_in.txt").symlink_to(root / "real.txt")
    (root / "link_in_dir").symlink_to("realdir")
    (root / "loop").symlink_to(".")
    (root / "broken").symlink_to(root / "nothing")
    files = iter_bundle_files(root)
    assert "link_out.txt" not in files and not any(f.startswith("link_out_dir") for f in files)
    assert "link_in.txt" in files and "real.txt" in files
    assert "realdir/g.txt" in files
    assert "broken" not in files
    assert "outside" in (explain_exclusion(root, "link_out.txt") or "")
    b = build_bundle(root, dest=tmp_path)
    with tarfile.open(b.path) as tar:
        assert tar.extractfile("link_in.txt").read() == b"inside"  # type: ignore[union-attr]


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "code"
    write(root, {"big.bin": b"x" * 5000, "small.py": "pass\n"})
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(InvalidInput) as exc:
        build_bundle(root)
    assert "big.bin" in exc.value.message
    assert exc.value.fix and ".gitignore" in exc.value.fix and "inputs" in exc.value.fix
    assert exc.value.exit_code == 2


def test_missing_code_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InvalidInput) as exc:
        build_bundle(missing)
    assert str(missing) in exc.value.message
    assert exc.value.fix == "set `code:` to your source directory"
