"""The audio samples section of the report: a text-to-audio job's `samples/` (index.json, written by
cloudtune.train.audio_samples) shown as audio players and spectrograms, grouped by evaluation, base model first
(text-to-image samples are cloudtune.report.samples).

Everything is embedded (WAV files and PNG spectrograms as base64 data URIs), so the page stays one self-contained
file. The spectrogram is matplotlib's `specgram` (256-sample Hann frames, dB scale) of the sample's first channel.
Only a model dir on this machine is read; a cloud job's samples are in its model archive (`cloudtune download`).
"""

from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from typing import Any

MAX_SAMPLES = 96  # beyond this many the page would grow past tens of MB: the newest evaluations are kept


def spectrogram_png(wav: bytes) -> bytes:
    """A 4 x 1.6 inch PNG spectrogram (dB) of a WAV file's first channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    fig, ax = plt.subplots(figsize=(4, 1.6), dpi=80)
    try:
        ax.specgram(audio[:, 0], NFFT=256, Fs=rate, noverlap=128, cmap="magma")
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("Hz", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.tight_layout(pad=0.2)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def read_index(model_dir: Path) -> list[dict[str, Any]]:
    """The entries of `<model_dir>/samples/index.json` whose WAV file exists, base first then by step."""
    index = Path(model_dir) / "samples" / "index.json"
    try:
        entries = json.loads(index.read_text(encoding="utf-8")).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return []
    entries = [e for e in entries if isinstance(e, dict) and (index.parent / str(e.get("file", ""))).is_file()]
    entries.sort(key=lambda e: (e.get("label") != "base", int(e.get("step", 0)), e.get("prompt_index", 0), e.get("seed", 0)))
    return entries[-MAX_SAMPLES:] if len(entries) > MAX_SAMPLES else entries


def audio_samples_html(model_uri: str | None) -> str:
    """The section's HTML ('' when the job has no samples on this machine)."""
    if not model_uri or "://" in model_uri or not Path(model_uri).is_dir():
        return ""
    root = Path(model_uri) / "samples"
    entries = read_index(Path(model_uri))
    if not entries:
        return ""
    parts = ['<h2>Samples</h2><div id="audio-samples">']
    label = None
    for e in entries:
        if e.get("label") != label:
            label = e.get("label")
            title = "base model (before training)" if label == "base" else f"step {int(e.get('step', 0))}"
            parts.append(f"{'</div>' if len(parts) > 1 else ''}<h3>{escape(title)}</h3><div class=\"samples\">")
        wav = (root / str(e["file"])).read_bytes()
        try:
            picture = f'<img alt="spectrogram" src="{_uri("image/png", spectrogram_png(wav))}">'
        except Exception:  # noqa: BLE001 (a sample the plotting cannot read still gets its player)
            picture = ""
        parts.append(f'<figure class="sample"><figcaption>{escape(str(e.get("prompt", "")))} '
                     f'<span class="sub">(seed {int(e.get("seed", 0))}, RMS {float(e.get("rms", 0.0)):.3f})</span>'
                     f'</figcaption><audio controls preload="auto" src="{_uri("audio/wav", wav)}"></audio>'
                     f"{picture}</figure>")
    parts.append("</div></div>")
    return "".join(parts)
