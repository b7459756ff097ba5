"""The validation samples of a text-to-image job in the report: one row per evaluation (the base model, step 0,
first), one column per prompt and seed, each image embedded as a `data:image/png;base64` URI so the page stays one
self-contained file. Read from the model dir's `samples/samples.json` (cloudtune.train.image_validation)."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

MAX_ROWS = 12  # evaluations shown: the base, then evenly spread, always the last
MAX_IMAGE_BYTES = 2 << 20  # a larger PNG is linked by name instead of embedded


def read_samples(model_uri: str | None) -> dict[str, Any] | None:
    """The samples index of a model dir on this machine, each entry's files read as data URIs; None without one."""
    if not model_uri or "://" in model_uri:
        return None
    folder = Path(model_uri) / "samples"
    try:
        index = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    steps = list(index.get("steps") or [])
    if len(steps) > MAX_ROWS:
        picks = {round(i * (len(steps) - 1) / (MAX_ROWS - 1)) for i in range(MAX_ROWS)}
        steps = [s for i, s in enumerate(steps) if i in picks]
    for entry in steps:
        entry["uris"] = [_data_uri(folder / name) for name in entry.get("files", [])]
    return {"prompts": index.get("prompts") or [], "seeds": index.get("seeds") or [], "steps": steps}


def _data_uri(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) > MAX_IMAGE_BYTES:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def samples_html(samples: dict[str, Any] | None) -> str:
    """The grid as an HTML table (empty string without samples)."""
    if not samples or not samples["steps"]:
        return ""
    heads = [f"{escape(p)}<br><span class=\"sub\">seed {s}</span>" for p in samples["prompts"] for s in samples["seeds"]]
    rows = []
    for entry in samples["steps"]:
        label = "step 0 (base model)" if entry["step"] == 0 else f"step {entry['step']}"
        extra = []
        if entry.get("val_loss") is not None:
            extra.append(f"val_loss {entry['val_loss']:.4f}")
        if entry.get("distance") is not None:
            extra.append(f"distance {entry['distance']:.4f}")
        cells = [f"<th>{label}<br><span class=\"sub\">{'<br>'.join(extra)}</span></th>"]
        for name, uri in zip(entry.get("files", []), entry["uris"]):
            cells.append(f'<td><img src="{uri}" alt="{escape(name)}" width="128"></td>' if uri else
                         f"<td>{escape(name)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table class="samples"><tr><th></th>' + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
            + "".join(rows) + "</table>")
