"""`cloudtune report JOB`: the log parser on the log of a real tiny fine-tune and on lines with fields not known yet,
the page's escaping of user data, the CLI (path printed, unknown job), a failed command job, and the page rendered
in headless Chromium with its charts drawn (SVG paths with length in the DOM, series colours in the screenshot).

The browser test skips when no `chromium`/`chromium-browser` is installed, unless CLOUDTUNE_REQUIRE_BROWSER=1
(set by .ci/run, which installs it): then it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from cloudtune import api
from cloudtune.report import write_report
from cloudtune.report.facts import Facts
from cloudtune.report.figures import figures
from cloudtune.report.history import parse_log
from cloudtune.report.html import render, verdict
from cloudtune.report.svg import COLORS
from tests.tiny_models import make_tiny_gpt2

SENTENCES = ["the kettle sings when the water is hot", "a sail fills with wind and the boat moves",
             "roast the beans until the first crack", "the river runs to the sea in spring"]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


# ---------------------------------------------------------------------------------------------- helpers
def cli(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLOUDTUNE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "cloudtune.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


class _Home:
    """CLOUDTUNE_HOME pointed at `path` for a module-scoped fixture (monkeypatch is function-scoped)."""

    def __init__(self, path: Path) -> None:
        self.path, self.old = path, os.environ.get("CLOUDTUNE_HOME")

    def __enter__(self) -> Path:
        os.environ["CLOUDTUNE_HOME"] = str(self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.old is None:
            os.environ.pop("CLOUDTUNE_HOME", None)
        else:
            os.environ["CLOUDTUNE_HOME"] = self.old


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(CLOUDTUNE_HOME, job id) of a finished tiny fine-tune on the local launcher: 30 steps, eval every 10 (a step line every 10)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("report")
    model = make_tiny_gpt2(root / "tiny-gpt2")
    (root / "data").mkdir()
    (root / "data/train.jsonl").write_text("".join(json.dumps({"text": SENTENCES[i % 4]}) + "\n" for i in range(64)))
    (root / "data/eval.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    hp = {"epochs": 1, "max_steps": 30, "learning_rate": 3e-3, "batch_size": 4, "max_seq_len": 32, "seed": 7,
          "eval_every": 10}
    spec = {"name": "report-e2e", "inputs": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"},
            "train": {"model": str(model), "hyperparameters": hp}, "checkpoint": {"every_steps": 100, "keep": 1}}
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    with _Home(root / "home") as home:
        job = api.launch(root / "job.yaml")
        assert job.wait(timeout=300) == "succeeded", "\n".join(job.logs())
        return home, job.job_id


# ------------------------------------------------------------------------------------------------ parser
@pytest.mark.slow
def test_parser_reads_the_log_of_a_real_fine_tune(trained: tuple[Path, str]) -> None:
    home, job_id = trained
    with _Home(home):
        hist = parse_log(api.get_job(job_id).logs())
    loss = hist.steps["loss"]
    assert [p[0] for p in loss] == [1, 10, 20, 30] and len(loss) >= 3 and all(v > 0 for _, v in loss)
    lr = [v for _, v in hist.steps["learning_rate"]]
    assert lr == sorted(lr, reverse=True) and lr[0] > lr[-1]  # linear decay
    evals = hist.evals["eval_loss"]
    assert [p[0] for p in evals] == [0, 10, 20, 30]  # before at 0, every 10 steps, `after` merged into step 30
    assert evals[-1][1] < evals[0][1]
    assert hist.done["global_step"] == 30 and hist.done["tokens_per_second"] > 0
    assert hist.metrics["global_step"] == 30 and hist.data and hist.data[0].startswith("data: text format")
    assert hist.notices == [] and hist.errors == [] and hist.non_finite() == []


def test_parser_takes_new_step_fields_and_skips_what_it_does_not_know() -> None:
    lines = [
        "2026-11-29T10:00:00Z algo-1 [cloudtune] step=10/200 loss=2.5 learning_rate=4e-05 epoch=0.10 "
        "tokens_per_second=1234.5 grad_norm=0.9 eta=0:05:00",
        "[cloudtune] step 20/200 loss=nan learning_rate=3e-05 tokens/s=1300",
        "noise without the prefix step=99 loss=1",
        "[cloudtune] step=x loss=1",
        "[cloudtune] eval step20: eval_loss=2.2 accuracy=0.75 f1=0.7",
        "[cloudtune] eval after: eval_loss=2.1 accuracy=0.8 f1=0.72",
        "[cloudtune] warning: 3 training example(s) dropped",
        "[cloudtune] health: eval loss rose for 3 evaluations while train loss fell",
        "[cloudtune] error: RuntimeError: boom",
        "[cloudtune] metrics {not json",
        "[cloudtune] early stopping at step 20: eval_loss did not improve on 2.1000 for 3 evaluations",
    ]
    hist = parse_log(lines)
    assert hist.total_steps == 200 and hist.last_step == 20
    assert hist.steps["tokens_per_second"] == [(10, 1234.5)] and hist.steps["tokens/s"] == [(20, 1300.0)]
    assert hist.steps["grad_norm"] == [(10, 0.9)] and "eta" not in hist.steps  # not a plain number
    assert [p[0] for p in hist.steps["loss"]] == [10, 20] and hist.non_finite()[0][0] == 20
    assert hist.evals["accuracy"] == [(20, 0.8)]  # `after` at the last step replaces that step's eval
    assert len(hist.notices) == 2 and hist.errors == ["error: RuntimeError: boom"] and hist.metrics == {}
    assert hist.events[0].startswith("early stopping")
    names = [f.name for f in figures(hist)]
    assert names[:3] == ["loss", "learning_rate", "throughput"] and "eval_metrics" in names and "step_grad_norm" in names
    loss_svg = figures(hist)[0].svg or ""
    assert loss_svg.count('class="non-finite"') == 1 and ">nan</text>" in loss_svg  # marked at step 20, not drawn
    throughput = next(f for f in figures(hist) if f.name == "throughput")
    assert throughput.svg and throughput.svg.count('class="series"') == 2


def test_a_run_resumed_from_another_says_where_its_loss_change_starts() -> None:
    """`cloudtune launch --resume`: the job's log starts at the resumed step, so its loss change is since that step,
    not since the base model; a retry inside one job keeps its first attempt's steps and compares from step 1."""
    resumed = parse_log(["[cloudtune] resuming from checkpoint /opt/ml/checkpoints/checkpoint-30 (step 30)",
                         "[cloudtune] step=30/40 loss=4.107 learning_rate=0.1 epoch=1.50",
                         "[cloudtune] step=40/40 loss=4.108 learning_rate=0.1 epoch=2.00"])
    assert resumed.resumed_at == 30
    facts = Facts(job_id="j", name="j", provider="local", state="succeeded", created_at=0.0, history=resumed)
    assert verdict(facts)[1].startswith("finished: train loss 4.107 -> 4.108 (+0%) since step 30 in steps 30-40 "
                                        "(resumed at step 30)")
    retried = parse_log(["[cloudtune] step=1/40 loss=5.0 learning_rate=0.1 epoch=0.05",
                         "[cloudtune] step=20/40 loss=4.5 learning_rate=0.1 epoch=1.00",
                         "[cloudtune] resuming from checkpoint /opt/ml/checkpoints/checkpoint-20 (step 20)",
                         "[cloudtune] step=40/40 loss=4.1 learning_rate=0.1 epoch=2.00"])
    assert retried.resumed_at is None
    facts = Facts(job_id="j", name="j", provider="local", state="succeeded", created_at=0.0, history=retried)
    assert verdict(facts)[1].startswith("finished: train loss 5 -> 4.1 (-18%) in 40 steps")


# ---------------------------------------------------------------------------------------------- escaping
class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def test_page_escapes_names_log_text_and_spec_values() -> None:
    hist = parse_log([f"[cloudtune] step=1 loss=2.0 {HOSTILE}=3 learning_rate=0.1", f"[cloudtune] warning: {HOSTILE}",
                      f"[cloudtune] data: {HOSTILE}", "[cloudtune] step=2 loss=1.5 learning_rate=0.05"])
    facts = Facts(job_id=f"job-{HOSTILE}", name=HOSTILE, provider="aws", state="failed", created_at=0.0, history=hist,
                  failure_reason=HOSTILE, spec={"inputs": {HOSTILE: HOSTILE},
                                                "train": {"task": HOSTILE, "hyperparameters": {HOSTILE: HOSTILE}}},
                  instance_type=HOSTILE, usd_per_hour=4.0, duration_s=1800.0, card_data=[HOSTILE])
    page = render(facts, figures(hist))
    parsed = _Elements()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags and "onerror" not in parsed.attrs
    assert "&lt;script&gt;" in page and "<script" not in page
    assert verdict(facts)[0] == "bad" and "about $2.00" in page  # half an hour at $4/h


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_writes_a_self_contained_page_and_prints_its_path(trained: tuple[Path, str], tmp_path: Path) -> None:
    home, job_id = trained
    res = cli("report", job_id[:12], home=home, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page = tmp_path / f"{job_id}-report.html"
    assert res.stdout.strip() == str(page) and page.is_file()
    assert res.stderr.startswith("finished: eval loss") and "(-" in res.stderr
    text = page.read_text()
    assert not re.search(r"<(script|link|img|iframe)\b", text) and not re.search(r"(src|href)=", text)
    assert re.findall(r'data-series="([^"]+)"', text)[:3] == ["train loss", "eval loss", "learning rate"]
    assert "none raised" in text and "report-e2e" in text and "no cloud cost" in text
    assert sorted(p.name for p in (tmp_path / f"{job_id}-report-plots").iterdir()) == ["learning_rate.svg", "loss.svg",
                                                                                    "throughput.svg"]
    out = tmp_path / "sub" / "r.html"
    assert cli("report", job_id, "-o", str(out), home=home).stdout.strip() == str(out) and out.is_file()


def test_cli_unknown_job_is_one_line_exit_2(tmp_path: Path) -> None:
    res = cli("report", "no-such-job", home=tmp_path / "home", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "no-such-job" in res.stderr
    assert list(tmp_path.glob("*.html")) == []


FAILING = """\
import sys
print("[cloudtune] step=1 loss=3.0 learning_rate=0.001 tokens_per_second=500", flush=True)
print("[cloudtune] step=2 loss=inf learning_rate=0.001 tokens_per_second=510", flush=True)
print("[cloudtune] health: divergence: the loss is infinite at step 2", flush=True)
sys.exit(3)
"""


def test_report_of_a_failed_command_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (command) job on the local launcher that logs a diverging loss and exits 3."""
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src/train.py").write_text(FAILING)
    (tmp_path / "job.yaml").write_text("name: diverges\ncommand: python train.py\ncode: src\n")
    job = api.launch(tmp_path / "job.yaml")
    assert job.wait(timeout=120) == "failed"
    files = write_report(job, tmp_path / "r.html")
    assert files.verdict.startswith("failed at step 2") and "NaN or infinite at step 2" in files.verdict
    text = files.html.read_text()
    assert "health: divergence" in text and 'data-series="tokens_per_second"' in text
    assert 'class="verdict bad"' in text and "no built-in recipe" in text


# ---------------------------------------------------------------------------------------------- browser
def _browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CLOUDTUNE_REQUIRE_BROWSER") == "1":
        pytest.fail("CLOUDTUNE_REQUIRE_BROWSER=1 but neither `chromium` nor `chromium-browser` is on PATH "
                    "(.ci/run installs Debian's chromium)")
    pytest.skip("no headless browser: install Debian's `chromium` (apt-get install chromium) to render the report")


WINDOW = (1280, 2000)  # the same layout for the DOM dump and the screenshot


def run_browser(browser: str, profile: Path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium once; its whole process group is stopped however it ends. Returns stdout."""
    argv = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--mute-audio",
            "--no-first-run", "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


PROBE = """<script>
for (const svg of document.querySelectorAll("svg.chart")) {
  const r = svg.getBoundingClientRect();
  svg.setAttribute("data-rect", [r.left, r.top, r.width, r.height].map(Math.round).join(","));
  for (const p of svg.querySelectorAll("path.series")) p.setAttribute("data-length", Math.round(p.getTotalLength()));
}
</script>"""


def read_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, b"", b""
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(chunks), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if kind == 2:  # up: no dependency within the row
            line = bytes((x + b) & 0xFF for x, b in zip(line, prev))
        elif kind != 0:
            out = bytearray(line)
            for i in range(stride):
                a = out[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                out[i] = (out[i] + (a if kind == 1 else (a + b) // 2 if kind == 3 else _paeth(a, b, c))) & 0xFF
            line = bytes(out)
        rows.append(line)
        prev = line
    return width, height, bpp, rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def count_colour(png: tuple[int, int, int, list[bytes]], rect: tuple[int, int, int, int], hex_colour: str,
                 tol: int = 40) -> int:
    """Pixels of a decoded PNG inside rect (x, y, w, h) within `tol` of the colour on every channel."""
    width, _, bpp, rows = png
    want = bytes.fromhex(hex_colour.lstrip("#"))
    x0, y0, w, h = rect
    hits = 0
    for y in range(max(y0, 0), min(y0 + h, len(rows))):
        row = rows[y]
        for x in range(max(x0, 0), min(x0 + w, width)):
            if all(abs(row[bpp * x + k] - want[k]) <= tol for k in range(3)):
                hits += 1
    return hits


@pytest.mark.slow
def test_page_renders_in_headless_chromium_with_its_charts_drawn(trained: tuple[Path, str], tmp_path: Path) -> None:
    browser = _browser()
    home, job_id = trained
    with _Home(home):
        page = write_report(api.get_job(job_id), tmp_path / "report.html").html
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_browser(browser, tmp_path / "profile", "--dump-dom", probe.as_uri())
    rects = {m.group(1): tuple(int(v) for v in m.group(2).split(",")) for m in re.finditer(
        r'<svg[^>]*data-chart="([^"]+)"[^>]*data-rect="([^"]+)"', dom)}
    assert set(rects) == {"loss", "learning_rate", "throughput"}, dom[:2000]
    lengths = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-series="([^"]+)"[^>]*data-length="(\d+)"', dom)}
    assert lengths.keys() == {"train loss", "eval loss", "learning rate", "tokens_per_second"}, lengths
    assert min(lengths.values()) > 100, lengths
    shot = tmp_path / "shot.png"
    run_browser(browser, tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
    png = read_png(shot.read_bytes())
    width, height = png[:2]
    assert (width, height) == WINDOW
    for chart, colours in {"loss": COLORS[:2], "learning_rate": COLORS[2:3], "throughput": COLORS[3:4]}.items():
        x, y, w, h = rects[chart]
        assert y + h <= height, f"chart {chart} below the screenshot"
        for colour in colours:
            assert count_colour(png, (x, y, w, h), colour) > 150, (chart, colour)
    # the series colours appear nowhere outside the charts (so the counts above are the drawn lines)
    assert count_colour(png, (0, 0, width, min(r[1] for r in rects.values())), COLORS[0]) == 0
