"""The report's validation-sample grid: one row per evaluation (the base first), images embedded as data URIs."""

from __future__ import annotations

import json
from pathlib import Path

from cloudtune.report.samples import read_samples, samples_html


def test_grid_embeds_every_sample_base_first(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "model" / "samples"
    steps = []
    for step in (0, 20):
        (folder / f"step-{step:06d}").mkdir(parents=True)
        files = []
        for p in range(2):
            name = f"step-{step:06d}/prompt{p}-seed0.png"
            Image.new("RGB", (8, 8), (step * 5, 100, 50 * p)).save(folder / name)
            files.append(name)
        steps.append({"step": step, "files": files, "distance": 0.2 - step / 1000, "val_loss": 1.0 - step / 100})
    (folder / "samples.json").write_text(json.dumps({"prompts": ["a <red> square", "b"], "seeds": [0],
                                                     "steps": steps}))
    html = samples_html(read_samples(str(tmp_path / "model")))
    assert html.count('<img src="data:image/png;base64,') == 4
    assert html.index("step 0 (base model)") < html.index("step 20")
    assert "a &lt;red&gt; square" in html and "val_loss 0.8000" in html
    assert read_samples(str(tmp_path / "nowhere")) is None and samples_html(None) == ""
