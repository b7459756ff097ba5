"""The text-to-audio preflight (cloudtune.data.audio through cloudtune.preflight): each clip's header read with
soundfile, never decoded; unreadable, empty and too-short files and missing descriptions refused with the file and
the fix; the CLI exits 2 without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cloudtune.cli import main
from cloudtune.data.audio import clip_pieces, find_clips
from tests.test_preflight import model_dir, problems

RATE = 8000


def tone(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * np.sin(np.arange(int(seconds * RATE)) * 0.2)).astype(np.float32), RATE)
    return path


def audio_job(tmp: Path, rows: list[dict], monkeypatch: pytest.MonkeyPatch, **train: object) -> list[str]:
    (tmp / "clips").mkdir(parents=True, exist_ok=True)
    (tmp / "clips" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not (tmp / "models/m").exists():
        model_dir(tmp / "models/m", {"model_type": "musicgen"})
    return problems(tmp, {"task": "text-to-audio", **train}, {"train": "clips"}, monkeypatch)


def test_a_base_model_that_is_not_musicgen_is_refused_before_the_deep_check(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A local model dir's config.json names its model_type: a GPT-2 dir is refused by validate and every dry run
    (no transformers needed), with the fix."""
    tone(tmp_path / "clips/a.wav", 2.0)
    model_dir(tmp_path / "models/m", {"model_type": "gpt2", "n_positions": 256})
    found = audio_job(tmp_path, [{"file_name": "a.wav", "text": "calm piano"}], monkeypatch)
    assert found == ["train.model: models/m is a 'gpt2' model; task text-to-audio trains MusicGen (model_type "
                     "musicgen). To fix: name a MusicGen checkpoint, e.g. facebook/musicgen-small, or a directory it "
                     "was saved to"], found


def test_good_clips_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tone(tmp_path / "clips/a.wav", 2.0)
    assert audio_job(tmp_path, [{"file_name": "a.wav", "text": "calm piano"}], monkeypatch) == []


def test_each_bad_clip_is_named_with_its_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tone(tmp_path / "clips/short.wav", 0.5)
    tone(tmp_path / "clips/nodesc.wav", 2.0)
    sf.write(str(tmp_path / "clips/empty.wav"), np.zeros(0, dtype=np.float32), RATE)
    (tmp_path / "clips/garbage.wav").write_bytes(b"not audio at all" * 10)
    rows = [{"file_name": "short.wav", "text": "a"}, {"file_name": "nodesc.wav"},
            {"file_name": "empty.wav", "text": "b"}, {"file_name": "garbage.wav", "text": "c"},
            {"file_name": "missing.wav", "text": "d"}]
    found = audio_job(tmp_path, rows, monkeypatch)
    assert len(found) == 5, found
    text = "\n".join(found)
    assert "clips/short.wav (clips/metadata.jsonl, line 1): 0.50 s long, under train.audio.min_seconds (1 s)" in text
    assert "clips/nodesc.wav (clips/metadata.jsonl, line 2): no description. To fix: give it a non-empty `text`" in text
    assert "clips/empty.wav (clips/metadata.jsonl, line 3): empty (0 samples)" in text
    assert "clips/garbage.wav (clips/metadata.jsonl, line 4): not a readable audio file" in text
    assert "clips/missing.wav (clips/metadata.jsonl, line 5): no such file" in text


def test_min_seconds_and_text_field_are_read_from_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tone(tmp_path / "clips/a.wav", 0.5)
    rows = [{"file_name": "a.wav", "caption": "soft"}]
    assert audio_job(tmp_path, rows, monkeypatch, audio={"min_seconds": 0.25}, data={"text_field": "caption"}) == []


def test_txt_sidecars_and_csv_metadata(tmp_path: Path) -> None:
    tone(tmp_path / "side/one.flac", 1.0)
    (tmp_path / "side/one.txt").write_text("warm synth pad\n")
    clips = find_clips(tmp_path / "side", shown="side")
    assert [(c.path.name, c.text) for c in clips] == [("one.flac", "warm synth pad")]
    tone(tmp_path / "csv/x.wav", 1.0)
    (tmp_path / "csv/metadata.csv").write_text("file_name,text\nx.wav,bright bells\n")
    assert [c.text for c in find_clips(tmp_path / "csv")] == ["bright bells"]


def test_pieces_cut_long_clips_and_drop_a_short_tail() -> None:
    assert clip_pieces(25 * RATE, RATE, 10, 1) == [(0, 80000), (80000, 160000), (160000, 200000)]
    assert clip_pieces(int(20.5 * RATE), RATE, 10, 1) == [(0, 80000), (80000, 160000)]
    assert clip_pieces(RATE // 2, RATE, 10, 1) == [(0, RATE // 2)]


def test_cli_exits_2_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir(tmp_path / "models/m")
    tone(tmp_path / "clips/short.wav", 0.2)
    (tmp_path / "clips/metadata.jsonl").write_text('{"file_name": "short.wav", "text": "x"}\n')
    (tmp_path / "job.yaml").write_text("name: music\ninputs: {train: clips}\n"
                                       "train: {task: text-to-audio, model: ./models/m}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["launch", "job.yaml", "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "clips/short.wav" in result.output and "min_seconds" in result.output
