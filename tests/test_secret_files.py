"""Secrets by design (issue 12, kind 6): every kind of credential file named in the issue and its cases, and more,
stays out of the code bundle AND out of a local input directory's upload and local copy; the plan says what was
left out and why; `include:` takes one path in on purpose; what git ignores stays home; plain `env:` values that
look like credentials are warned about by name, never printed.

Secrets are made up at test time (random material in the providers' formats); none is real."""

# pragma: allowlist secret  (fixtures that look like keys; none is real)
from __future__ import annotations

import base64
import json
import secrets
import string
import subprocess
import tarfile
from pathlib import Path

import pytest

from cloudtune.bundle import build_bundle, explain_exclusion, left_out_note
from cloudtune.errors import InvalidInput
from cloudtune.hashing import digest
from cloudtune.local.copies import copy_tree
from cloudtune.secretfiles import env_credential_warnings, input_files, secret_notes

MARK = "LEAKMARK" + secrets.token_hex(8)  # in every secret file: a leak is found by grepping the bytes


def rnd(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def hexs(n: int) -> str:
    return rnd(n, "0123456789abcdef")


def lower(n: int) -> str:
    return rnd(n, string.ascii_lowercase + string.digits)


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)


# ----------------------------------------------------------------------------- the kinds
def issue_kinds() -> dict[str, str]:
    """Case 26's files and the other kinds issue 12 names (`.env`, `id_rsa`, `.aws/credentials`)."""
    return {
        ".kaggle/kaggle.json": json.dumps({"username": "ada", "key": hexs(32), "n": MARK}),
        "kaggle.json": json.dumps({"username": "ada", "key": hexs(32), "n": MARK}),
        "token.json": json.dumps({"token": "ya29." + rnd(40), "refresh_token": "1//" + rnd(40),
                                  "client_id": "1.apps.googleusercontent.com", "client_secret": "GOCSPX-" + rnd(28),
                                  "n": MARK}),
        ".databrickscfg": f"[DEFAULT]\nhost = https://adb-1.azuredatabricks.net\ntoken = dapi{hexs(32)}\n# {MARK}\n",
        ".config/rclone/rclone.conf": f"[s3]\ntype = s3\naccess_key_id = AKIA{rnd(16, string.ascii_uppercase)}\n"
                                      f"secret_access_key = {rnd(40)}\n# {MARK}\n",
        ".yarnrc.yml": f'npmRegistryServer: "https://npm.example.com"\nnpmAuthToken: "npm_{rnd(36)}"\n# {MARK}\n',
        "pip.conf": f"[global]\nindex-url = https://ada:{rnd(12)}@pypi.example.com/simple\n# {MARK}\n",
        ".env": f"API_TOKEN={rnd(30)}\n# {MARK}\n",
        "id_rsa": f"{MARK}\n",
        ".aws/credentials": f"[default]\naws_access_key_id = AKIA{rnd(16, string.ascii_uppercase)}\n# {MARK}\n",
    }


def more_kinds() -> dict[str, str]:
    """50 further kinds: credential stores by name, and innocently named files by content."""
    by_name = [
        "rclone.conf", "token.pickle", ".gem/credentials", ".cargo/credentials.toml", ".cargo/credentials",
        ".composer/auth.json", ".config/gh/hosts.yml", ".config/hub", ".m2/settings-security.xml",
        ".gradle/gradle.properties", ".pulumi/credentials.json", ".terraform.d/credentials.tfrc.json",
        ".mc/config.json", ".snowsql/config", ".config/doctl/config.yaml", ".config/hcloud/cli.toml",
        ".dbt/profiles.yml", ".config/ngrok/ngrok.yml", ".ngrok2/ngrok.yml", "vault.kdbx", "login.keychain-db",
        "application_default_credentials.json", ".cache/huggingface/stored_tokens", "sub/.env.staging",
        "home/.azure/msal_token_cache.json", "id_ecdsa", "deploy/id_dsa", "certs/client.p12", "certs/server.pfx",
    ]
    named = {p: f"{MARK}\n" for p in by_name}
    jwt = ".".join(base64.urlsafe_b64encode(json.dumps(x).encode()).decode().rstrip("=")
                   for x in ({"alg": "HS256", "typ": "JWT"}, {"sub": lower(12)})) + "." + rnd(43)
    by_content = {
        "conf/settings.yaml": f"db:\n  host: db.example.com\n  password: {rnd(20)}\n# {MARK}\n",
        "conf/db.ini": f"[db]\nuser = ada\npasswd = {rnd(18)}\n; {MARK}\n",
        "conf/app.toml": f'secret_key = "{rnd(32)}"\n# {MARK}\n',
        "conf/service.json": json.dumps({"api_key": rnd(32), "n": MARK}),
        "notes/slack.md": f"{MARK} bot xoxb-{rnd(12, string.digits)}-{rnd(12, string.digits)}-{lower(24)}\n",
        "notes/stripe.txt": f"{MARK} sk_live_{rnd(24)}\n",
        "scripts/gitlab.sh": f"#!/bin/sh\n# {MARK}\nexport T=glpat-{rnd(20)}\n",
        "notes/jwt.txt": f"{MARK} Authorization: Bearer {jwt}\n",
        "notes/openai.txt": f"{MARK} sk-{rnd(20)}T3BlbkFJ{rnd(20)}\n",
        "notes/sendgrid.txt": f"{MARK} SG.{rnd(22)}.{rnd(43)}\n",
        "notes/twilio.txt": f"{MARK} SK{lower(32)}\n",
        "notes/pypi.txt": f"{MARK} pypi-AgEIcHlwaS5vcmc{rnd(80)}\n",
        "conf/npm.cfg": f"# {MARK}\n//registry.npmjs.org/:_authToken=npm_{rnd(36)}\n",
        "notes/mailchimp.txt": f"{MARK} key {lower(32)}-us12\n",
        "notes/square.txt": f"{MARK} sq0csp-{rnd(43)}\n",
        "notes/telegram.txt": f"{MARK} bot {rnd(9, string.digits)}:{rnd(35)}\n",
        "notes/github.txt": f"{MARK} ghp_{rnd(36)}\n",
        "notes/hf.txt": f"{MARK} hf_{rnd(34, string.ascii_letters)}\n",
        "notes/databricks.txt": f"{MARK} dapi{hexs(32)}\n",
        "conf/oauth.json": json.dumps({"refresh_token": "1//" + rnd(40), "client_secret": rnd(24), "n": MARK}),
        "conf/remote.cfg": f"[remote]\nurl = https://ada:{rnd(14)}@git.example.com/repo.git\n# {MARK}\n",
    }
    return {**named, **by_content}


INNOCENT = {  # code and data that name the formats without holding a secret stay in
    "main.py": "import os\nTOKEN = os.environ['HF_TOKEN']\nprint('training')\n",
    "parse.py": 'if line.startswith("-----BEGIN PRIVATE KEY-----"):\n    raise ValueError("a key")\n',
    "README.md": "Set HF_TOKEN as a secret; never put a password in a config file.\n",
    "config.yaml": "model: gpt2\nlearning_rate: 0.0001\n",
    "data/train.jsonl": '{"text": "my password is in a drawer"}\n' * 5,
    "tokens.json": json.dumps({"pad": 0, "eos": 1}),
    # a lock file and a golden request: every sha256 stays (detect-secrets' entropy rules are not used)
    "locks/lock.json": json.dumps({"wheels": [{"name": f"w{i}", "sha256": hexs(64)} for i in range(5)]}, indent=1),
    "golden/request.yml": f"secret_names: []\nsecrets: {{}}\nbundle_sha256: {hexs(64)}\nauth: none\n",
}


def all_kinds() -> dict[str, str]:
    return {**issue_kinds(), **more_kinds()}


def _tar_bytes(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]


def _tree_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _case(name: str) -> Path:
    """A folder of the shared failing inputs (../shared/cases beside the checkout), or skip."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "cases" / name).is_dir():
            return parent / "shared" / "cases" / name
    pytest.skip("the shared cases are not beside this checkout")


def test_the_kinds_are_many() -> None:
    assert len(issue_kinds()) == 10 and len(more_kinds()) >= 40


# ----------------------------------------------------------------------------- code bundle
def test_every_kind_is_left_out_of_the_bundle_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "code"
    kinds = all_kinds()
    write(root, kinds)
    write(root, INNOCENT)
    b = build_bundle(root)
    assert set(b.files) == set(INNOCENT)
    data = _tar_bytes(b.write(tmp_path / "out"))
    assert MARK.encode() not in data
    listed = [item.split(": ", 1)[0].rstrip("/") for item in b.left_out]
    for p in kinds:
        assert any(p == d or p.startswith(d + "/") for d in listed), p
        assert explain_exclusion(root, p) is not None, p
    note = left_out_note(b, shown=100) or ""
    assert MARK not in note and "pip.conf: holds Basic Auth Credentials" in note and "`include:`" in note


def test_case_26_left_out_and_named(tmp_path: Path) -> None:
    case = _case("26-secret-files") / "src"
    b = build_bundle(case)
    assert b.files == ("main.py",)
    named = {item.split(": ", 1)[0].rstrip("/") for item in b.left_out}
    assert named == {".config/rclone", ".databrickscfg", ".kaggle", ".yarnrc.yml", "kaggle.json", "pip.conf",
                     "token.json"}


def test_include_takes_one_path_in_on_purpose(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, issue_kinds())
    write(root, {"main.py": "print(1)\n"})
    b = build_bundle(root, include=["pip.conf", str(root / ".kaggle" / "kaggle.json")])
    assert set(b.files) == {"main.py", "pip.conf", ".kaggle/kaggle.json"}
    assert any(item.startswith("pip.conf: ") for item in b.included)
    assert "`include:` sends on purpose" in (left_out_note(b) or "")
    assert not any(item.startswith("pip.conf") for item in b.left_out)
    with pytest.raises(InvalidInput, match="include: .*nope.txt does not exist"):
        build_bundle(root, include=["nope.txt"])


def test_include_through_the_spec_and_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`include:` is written as `code` is (relative to the spec); the plan's recipe rebuilds the same bytes."""
    from cloudtune.api import plan
    from cloudtune.kit.staging import stage

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    write(tmp_path / "src", {"main.py": "print(1)\n", **issue_kinds()})
    spec = {"name": "inc", "command": "python main.py", "code": str(tmp_path / "src"),
            "include": [str(tmp_path / "src" / "pip.conf")], "resources": {"accelerator": "cpu"}}
    p = plan(spec, "local")
    bundle_up = next(u for u in p.uploads if u.build is not None)
    assert bundle_up.build["include"] == [str(tmp_path / "src" / "pip.conf")]
    stage(bundle_up)  # rebuilt from the recipe: the same hash, or InvalidInput
    with tarfile.open(bundle_up.source) as tar:
        assert "pip.conf" in tar.getnames() and "kaggle.json" not in tar.getnames()


# ----------------------------------------------------------------------------- git's ignore rules
def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_code_dir_in_a_git_work_tree_leaves_out_what_git_ignores(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, {".gitignore": "*.log\n/outputs/\n", "proj/.gitignore": "scratch/\n!keep.log\n",
                 "proj/src/main.py": "print(1)\n", "proj/src/run.log": "x", "proj/src/keep.log": "kept",
                 "proj/src/scratch/a.txt": "x", "proj/src/local.tmp": "x", "outputs/x": "x"})
    try:
        _git("init", "-q", cwd=repo)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("*.tmp\n")
    b = build_bundle(repo / "proj" / "src")
    assert b.files == ("keep.log", "main.py")
    reasons = dict(item.split(": ", 1) for item in b.ignored)
    assert reasons["run.log"].startswith(f"ignored by {repo / '.gitignore'}:1")
    assert reasons["scratch/"].startswith(f"ignored by {repo / 'proj' / '.gitignore'}:1")
    assert reasons["local.tmp"].startswith(f"ignored by {repo}/.git/info/exclude:1")
    assert "3 path(s) ignored by git's rules" in (left_out_note(b) or "")
    # `include:` takes an ignored path in on purpose
    assert "run.log" in build_bundle(repo / "proj" / "src", include=["run.log"]).files


def test_a_code_dir_that_git_ignores_as_a_whole_is_still_bundled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, {".gitignore": "experiments/\n", "experiments/e1/main.py": "print(1)\n", "experiments/e1/x.log": ""})
    (repo / ".git").mkdir()
    assert build_bundle(repo / "experiments" / "e1").files == ("main.py", "x.log")


# ----------------------------------------------------------------------------- uploaded input directories
def test_every_kind_is_left_out_of_an_input_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kinds = all_kinds()
    write(data, kinds)
    write(data, INNOCENT)
    files, left_out = input_files(data)
    assert {rel for _, rel in files} == set(INNOCENT)
    listed = [item.split(": ", 1)[0].rstrip("/") for item in left_out]
    for p in kinds:
        assert any(p == d or p.startswith(d + "/") for d in listed), p
    assert all(MARK not in item for item in left_out)
    # the plan's hash is that of what is uploaded: adding one more secret file changes nothing
    before = digest(data)
    write(data, {"more/.env.prod": f"X={rnd(20)}\n"})
    assert digest(data) == before
    # the local job's copy holds none of them
    copy_tree(data, tmp_path / "copy", uploaded_only=True)
    copied = {p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    assert copied == set(INNOCENT) and MARK.encode() not in _tree_bytes(tmp_path / "copy")


def test_a_single_file_input_is_sent_as_given(tmp_path: Path) -> None:
    write(tmp_path, {"kaggle.json": json.dumps({"username": "a", "key": hexs(32)})})
    assert digest(tmp_path / "kaggle.json")[0] > 0  # named on purpose: not filtered


def test_plan_notes_input_dir_left_out_and_local_job_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudtune.api import plan
    from cloudtune.kit.staging import stage
    from cloudtune.local.supervisor import materialise

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    write(tmp_path / "data", {"train.jsonl": '{"text": "a"}\n', **issue_kinds()})
    write(tmp_path / "src", {"main.py": "print(1)\n"})
    spec = {"name": "inp", "command": "python main.py", "code": str(tmp_path / "src"),
            "inputs": {"data": str(tmp_path / "data")}, "resources": {"accelerator": "cpu"}}
    p = plan(spec, "local")
    note = next(n for n in p.notes if n.startswith("input data:"))
    assert "10 credential file(s)" in note and ".aws/: credential store name" in note and MARK not in note
    for up in p.uploads:
        stage(up)  # the code bundle, as submit() builds it
    materialise({"request": p.request})
    job_dir = Path(p.request["job_dir"])
    copied = [q for q in job_dir.rglob("*") if q.is_file() and "train.jsonl" not in q.name]
    assert not any(MARK.encode() in q.read_bytes() for q in copied)
    assert any(q.name == "train.jsonl" for q in job_dir.rglob("*"))


def test_a_tiny_model_dir_loses_nothing(tmp_path: Path) -> None:
    """A saved model and tokenizer (config, vocab, merges, weights) are not mistaken for credentials."""
    pytest.importorskip("transformers")
    from tests.tiny_models import make_tiny_gpt2

    model = make_tiny_gpt2(tmp_path / "model")
    files, left_out = input_files(Path(model))
    assert left_out == [] and files
    assert build_bundle(Path(model)).left_out == ()


# ----------------------------------------------------------------------------- plain env values
ENV_CREDENTIALS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # case 27
    "HF_TOKEN": "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",  # case 27
    "MY_KEY_ID": "AKIA" + rnd(16, string.ascii_uppercase),
    "GITHUB_VALUE": "ghp_" + rnd(36),
    "SLACK_HOOK": f"https://hooks.slack.com/services/T{rnd(8)}/B{rnd(8)}/{rnd(24)}",
    "PAYMENTS": "sk_live_" + rnd(24),
    "INDEX_URL": f"https://ada:{rnd(12)}@pypi.example.com/simple",
    "DB_PASSWORD": rnd(16),
    "WANDB_API_KEY": hexs(40),
    "OPENAI": f"sk-{rnd(20)}T3BlbkFJ{rnd(20)}",
    "DATABRICKS_HOST_AUTH": "dapi" + hexs(32),
}
ENV_PLAIN = {"TOKENIZERS_PARALLELISM": "false", "MODEL_NAME": "gpt2-medium", "WANDB_PROJECT": "my-project-2026",
             "HF_HOME": "/data/hf-cache", "SEED": "12345678", "PASSWORD_FILE_HINT": "$DB_PASSWORD_FILE",
             "NCCL_DEBUG": "INFO", "RUN_NOTE": "a plain sentence, not a secret"}


def test_env_credentials_warned_by_name_never_by_value() -> None:
    lines = env_credential_warnings({**ENV_CREDENTIALS, **ENV_PLAIN})
    warned = {line.split("env.", 1)[1].split(" ", 1)[0] for line in lines}
    assert warned == set(ENV_CREDENTIALS)
    for line in lines:
        assert "secrets: {" in line and "looks like a credential" in line
        assert not any(v in line for v in ENV_CREDENTIALS.values())


def test_case_27_warns_in_validate_and_every_dry_run(tmp_path: Path) -> None:
    case = _case("27-plain-env-credentials")
    from cloudtune.spec import load_spec
    from cloudtune.specchecks import check_offline
    from cloudtune.store import JobStore

    notes = check_offline(load_spec(case / "job.yaml"), JobStore.lookup)
    assert sum("looks like a credential" in n for n in notes) == 2
    assert not any("wJalr" in n or "hf_aBc" in n for n in notes)


def test_secret_notes_for_env_and_inputs(tmp_path: Path) -> None:
    write(tmp_path / "d", {"a.txt": "x", ".netrc": MARK})
    notes = secret_notes({"HF_TOKEN": "hf_" + rnd(34, string.ascii_letters)}, {"d": str(tmp_path / "d"),
                                                                                "r": "s3://b/k/"})
    assert len(notes) == 2 and notes[1].startswith("input d: 1 credential file(s)")


def test_issue_5_kinds_are_left_out_of_an_input_dir_too(tmp_path: Path) -> None:
    """The 72 kinds the bundle has refused since issue 5 (by name and by content) are not uploaded either."""
    from tests.test_bundle_secrets import MARK as MARK5
    from tests.test_bundle_secrets import NAMED_IN_ISSUE, NAMED_MORE, secret_contents

    data = tmp_path / "data"
    kinds = {**{p: f"{MARK5}\n" for p in NAMED_IN_ISSUE + NAMED_MORE}, **secret_contents()}
    write(data, kinds)
    write(data, {"train.jsonl": '{"text": "a"}\n'})
    files, left_out = input_files(data)
    assert len(kinds) >= 70 and [rel for _, rel in files] == ["train.jsonl"]
    copy_tree(data, tmp_path / "copy", uploaded_only=True)
    assert MARK5.encode() not in _tree_bytes(tmp_path / "copy")
