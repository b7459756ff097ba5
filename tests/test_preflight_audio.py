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
from cloudtune.errors import JobInputError
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


def test_a_length_just_under_the_minimum_is_never_shown_as_the_minimum(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """0.9986 s under min_seconds 1 once read "1.00 s long, under ... (1 s)": the length shows as many digits as it
    takes to stay under the limit it breaks."""
    path = tmp_path / "clips/edge.wav"
    path.parent.mkdir(parents=True)
    sf.write(str(path), np.full(7989, 0.1, dtype=np.float32), RATE)  # 0.998625 s
    found = audio_job(tmp_path, [{"file_name": "edge.wav", "text": "a"}], monkeypatch)
    assert found == ["clips/edge.wav (clips/metadata.jsonl, line 1): 0.999 s long, under train.audio.min_seconds "
                     "(1 s). To fix: remove it, or lower train.audio.min_seconds"], found
    found = audio_job(tmp_path, [{"file_name": "edge.wav", "text": "a"}], monkeypatch, audio={"min_seconds": 0.9987})
    assert "0.9986 s long, under train.audio.min_seconds (0.9987 s)" in found[0], found


def test_a_row_with_several_problems_names_them_all_in_one_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing (or unreadable, or short) file with an empty description is one line naming both, the file's
    problem first: fixing the description alone would only show the file's problem on the next run."""
    tone(tmp_path / "clips/short.wav", 0.5)
    (tmp_path / "clips/garbage.wav").write_bytes(b"not audio at all" * 10)
    rows = [{"file_name": "missing.wav", "text": ""}, {"file_name": "short.wav"},
            {"file_name": "garbage.wav", "text": "  "}]
    found = {line.split(" ", 1)[0]: line for line in audio_job(tmp_path, rows, monkeypatch)}
    assert found["clips/missing.wav"] == (
        "clips/missing.wav (clips/metadata.jsonl, line 1): no such file; and no description. To fix: correct "
        "file_name or add the file; and give it a non-empty `text` in the metadata (or a same-name .txt file)")
    assert found["clips/short.wav"].startswith("clips/short.wav (clips/metadata.jsonl, line 2): 0.50 s long, under "
                                               "train.audio.min_seconds (1 s); and no description. To fix: remove it")
    assert found["clips/garbage.wav"].startswith("clips/garbage.wav (clips/metadata.jsonl, line 3): not a readable "
                                                 "audio file (")
    assert "; and no description. To fix: convert it to WAV or FLAC" in found["clips/garbage.wav"]
    assert len(found) == 3, found


def test_a_txt_layout_clip_names_its_file_and_its_description_problems_together(tmp_path: Path) -> None:
    from cloudtune.data.audio import clip_problems

    (tmp_path / "side").mkdir()
    (tmp_path / "side/bad.wav").write_bytes(b"RIFF junk")
    tone(tmp_path / "side/fine.wav", 2.0)
    (tmp_path / "side/fine.txt").write_text("soft rain")
    [line] = clip_problems(find_clips(tmp_path / "side", shown="side"), 1.0)
    assert line.startswith("side/bad.wav: not a readable audio file (") and "; and no description. To fix: " in line


@pytest.mark.parametrize("row, first", [
    ({"caption": "x"}, "no file_name"),
    ({"file_name": "../a.wav"}, "file_name '../a.wav' is not inside clips"),
])
def test_a_row_without_a_usable_file_name_also_names_its_missing_description(tmp_path: Path, row: dict,
                                                                              first: str) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips/metadata.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(JobInputError) as err:
        find_clips(tmp_path / "clips", shown="clips")
    assert str(err.value).startswith(f"clips/metadata.jsonl, line 1: {first}")
    assert "; and no description. To fix: " in str(err.value) and "; and give it a non-empty `text`" in str(err.value)
