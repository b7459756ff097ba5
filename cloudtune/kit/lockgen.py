"""Write the hash-pinned wheel lock of a stock-image target (run by a maintainer, with network; never by a job).

    python -m cloudtune.kit.lockgen sagemaker-pytorch-py312   # or vertex-pytorch-py310, or all

What a job needs beyond the cloud's stock PyTorch image is the closure of `cloudtune[train]` minus torch (the
image has it), resolved by pip for the image's Python and platform. torch is held out by offering pip a
dependency-free placeholder wheel of the image's torch version with a build tag (so pip prefers it to PyPI's);
the placeholder is left out of the lock. The lock records each wheel's name, version, file name, URL, sha256 and
size (pip's own installation report gives URL and hash; a HEAD request the size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from cloudtune.kit.bootstrap import LOCK_DIR, TARGETS, Target
from cloudtune.kit.wheel import cloudtune_wheel


def _placeholder_torch(target: Target, out: Path) -> None:
    tag = f"{target.abi}-{target.abi}-{target.platforms[0]}"
    name = f"torch-{target.torch}-1-{tag}.whl"  # build tag 1: preferred over PyPI's untagged wheel
    info = f"torch-{target.torch}.dist-info"
    with zipfile.ZipFile(out / name, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {target.torch}\n")
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: cloudtune\nRoot-Is-Purelib: false\nTag: {tag}\nBuild: 1\n")
        zf.writestr(f"{info}/RECORD", "")


def _size(url: str) -> int:
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.headers["Content-Length"])


def generate(target: Target) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "links").mkdir()
        _placeholder_torch(target, work / "links")
        wheel = cloudtune_wheel(work / "wheel")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report",
               str(work / "report.json"), "--only-binary=:all:", "--python-version", target.python,
               "--implementation", "cp", "--abi", target.abi, "--target", str(work / "t"), "--find-links",
               str(work / "links"), *[a for p in target.platforms for a in ("--platform", p)],
               f"torch=={target.torch}", f"{wheel.path}[train]", *target.extra]
        # PyPI itself, whatever this machine's pip configuration says (a local mirror's file:// URLs would be useless
        # to anyone else): no config files, the public index only
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"}
        subprocess.run([*cmd[:4], "--index-url", "https://pypi.org/simple", *cmd[4:]], check=True, env=env)
        report = json.loads((work / "report.json").read_text())
    wheels = []
    for item in report["install"]:
        name = item["metadata"]["name"]
        if name.lower() in ("torch", "cloudtune"):
            continue
        url = item["download_info"]["url"]
        if not url.startswith("https://files.pythonhosted.org/"):
            raise SystemExit(f"{name}: resolved to {url}, not a PyPI file URL")
        wheels.append({"name": name, "version": item["metadata"]["version"], "filename": url.rsplit("/", 1)[-1],
                       "url": url, "sha256": item["download_info"]["archive_info"]["hashes"]["sha256"], "size": _size(url)})
    wheels.sort(key=lambda w: w["filename"])
    return {"target": target.name, "python": target.python, "platforms": list(target.platforms),
            "image_torch": target.torch, "wheels": wheels}


def main(argv: list[str]) -> None:
    names = list(TARGETS) if not argv or argv[0] == "all" else argv
    for name in names:
        lock = generate(TARGETS[name])
        path = LOCK_DIR / f"{name}.json"
        path.write_text(json.dumps(lock, indent=1) + "\n")
        print(f"{path}: {len(lock['wheels'])} wheels, {sum(w['size'] for w in lock['wheels']) / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
