"""The code channel's tarball: the user's code bundle (if any) plus cloudtune's own files under `.cloudtune/`."""

from __future__ import annotations

from pathlib import Path

from cloudtune.bundle import Bundle, extend_bundle

CLOUDTUNE_DIR = ".cloudtune"


def compose_bundle(base: Bundle | None, extra: dict[str, bytes], out_dir: Path) -> Bundle:
    """`base`'s files plus `extra` (archive path -> bytes), content-addressed under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return extend_bundle(base, extra, out_dir)
