"""The report's audio samples section (cloudtune.report.audio): a text-to-audio job's WAV samples embedded as audio
players (data URIs: one self-contained page) with a spectrogram each, base model first; the page plays its audio
in headless Chromium (the browser harness of tests/test_report.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from cloudtune.report.facts import Facts
from cloudtune.report.history import parse_log
from cloudtune.report.html import render
from tests.test_report import _browser, run_browser

RATE = 8000


def model_dir_with_samples(root: Path) -> Path:
    """A model dir laid out as the recipe writes it: samples/<label>/p<i>-s<seed>.wav and samples/index.json."""
    entries = []
    for label, step in (("step-000010", 10), ("base", 0)):
        for i, freq in enumerate((220.0, 880.0)):
            name = f"{label}/p{i}-s0.wav"
            (root / "samples" / label).mkdir(parents=True, exist_ok=True)
            tone = 0.4 * np.sin(2 * np.pi * freq * np.arange(RATE) / RATE).astype(np.float32)
            sf.write(str(root / "samples" / name), tone, RATE, subtype="PCM_16")
            entries.append({"label": label, "step": step, "prompt": f"tone {freq:g} Hz", "prompt_index": i, "seed": 0,
                            "file": name, "rms": 0.28, "seconds": 1.0, "rate": RATE})
    (root / "samples" / "index.json").write_text(json.dumps({"entries": entries}))
    return root


def page(tmp_path: Path) -> str:
    model = model_dir_with_samples(tmp_path / "model")
    facts = Facts(job_id="j1", name="music", provider="local", state="succeeded", created_at=0.0,
                  history=parse_log([]), model_uri=str(model))
    return render(facts, [])


def test_samples_are_embedded_base_first_with_spectrograms(tmp_path: Path) -> None:
    html = page(tmp_path)
    assert html.count('<audio controls') == 4 and html.count('src="data:audio/wav;base64,') == 4
    assert html.count('<img alt="spectrogram" src="data:image/png;base64,') == 4
    assert html.index("base model (before training)") < html.index("step 10")
    assert "file://" not in html and "samples/" not in html.split('<div id="audio-samples">')[1].split("data:")[0]


PLAY = """<script>
document.body.setAttribute("data-audio", "waiting");
const players = [...document.querySelectorAll("audio")];
Promise.all(players.map(a => a.play().then(() => [a.duration, a.readyState, a.paused ? 0 : 1])))
  .then(r => document.body.setAttribute("data-audio", JSON.stringify(r)),
        e => document.body.setAttribute("data-audio", "error " + e));
</script>"""


def test_page_plays_its_audio_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser()
    probe = tmp_path / "probe.html"
    probe.write_text(page(tmp_path).replace("</body>", PLAY + "</body>"))
    dom = run_browser(browser, tmp_path / "profile", "--autoplay-policy=no-user-gesture-required",
                      "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'data-audio="([^"]*)"', dom)
    assert found and found.group(1).startswith("[["), (found.group(1) if found else dom[:500])
    played = json.loads(found.group(1).replace("&quot;", '"'))
    # each player decoded its WAV (1 s long, data available) and started playing (play() resolved, not paused)
    assert len(played) == 4 and all(abs(d - 1.0) < 0.05 and ready >= 2 and playing for d, ready, playing in played), played
