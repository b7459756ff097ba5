"""Audio clips with descriptions (text-to-audio data), read and checked without torch and without decoding.

Layouts (🤗 Datasets' `audiofolder` names):

* a folder of audio files with `metadata.jsonl` or `metadata.csv` whose rows hold `file_name` (a path relative to
  that folder) and the description column (`train.data.text_field`, default `text`);
* audio files each with a same-name `.txt` file holding its description (`song.wav` + `song.txt`).

`find_clips` lists (file, description) pairs; `clip_problems` reads each file's header with soundfile
(`sf.info`: format, sample rate, channels, frames; libsndfile reads no audio data for it) and returns one line per
clip with problems, naming all of them (missing, unreadable, empty or shorter than the minimum, and no
description) with the file and the fix.
`clip_pieces` is how a long clip is cut into pieces of at most `max_seconds` (the recipe decodes only those spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudtune.data.folder_metadata import Problem, file_under, metadata_file, metadata_rows, one_line, outside_problem
from cloudtune.errors import JobInputError
from cloudtune.units import beside

EXAMPLE_ROW = '{"file_name": "a.wav", "text": "calm piano"}'  # in the fix of a bad metadata.jsonl line

# the containers soundfile (libsndfile >= 1.1) reads; MP3 needs libsndfile 1.1+, which soundfile's wheels ship
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


@dataclass(frozen=True)
class Clip:
    """One audio file and its description; `where` names it for messages (the user's path, and the metadata row)."""

    path: Path
    text: str | None
    where: str


@dataclass(frozen=True)
class ClipInfo:
    """A clip's header: sample rate (Hz), channels, frames (samples per channel) and format (e.g. WAV)."""

    rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate else 0.0


def _shown(path: Path, root: Path, shown_root: str) -> str:
    try:
        return f"{shown_root}/{path.relative_to(root).as_posix()}"
    except ValueError:
        return str(path)


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def find_clips(root: Path, text_field: str = "text", shown: str | None = None) -> list[Clip]:
    """The clips of the input folder `root` (see the module docstring), sorted by path. JobInputError when the
    folder holds no audio file, its metadata file no row, a metadata row names no `file_name` (or one outside the
    folder), or an audio file has no metadata row."""
    root = Path(root)
    shown_root = shown or str(root)
    if root.is_file():
        raise JobInputError(f"{shown_root}: task text-to-audio reads a folder of audio files, not one file. To fix: "
                            f"name a folder holding the audio files and metadata.jsonl (file_name, {text_field})")
    meta = metadata_file(root, shown_root)
    if meta is not None:
        clips = [_row_clip(root, where, row, text_field, shown_root)
                 for where, row in metadata_rows(meta, _shown(meta, root, shown_root), EXAMPLE_ROW)]
        named = {c.path.resolve() for c in clips}
        unnamed = [p for p in _audio_files(root) if p.resolve() not in named]
        if not clips or unnamed:
            shown_meta = _shown(meta, root, shown_root)
            what = (f"{_shown(unnamed[0], root, shown_root)}"
                    f"{f' (and {len(unnamed) - 1} more)' if len(unnamed) > 1 else ''}: no row in {shown_meta}, so "
                    f"it would not be trained on" if unnamed else f"{shown_meta} holds no rows")
            raise JobInputError(f"{what}. To fix: give each clip a row ({EXAMPLE_ROW}), or move the files without "
                                f"one out of {shown_root}")
        return sorted(clips, key=lambda c: str(c.path))
    files = _audio_files(root)
    if not files:
        raise JobInputError(f"{shown_root}: no audio file ({', '.join(AUDIO_EXTENSIONS)}) and no metadata.jsonl. "
                            f"To fix: put the clips there with metadata.jsonl (file_name, {text_field}) or a same-name "
                            f".txt description beside each")
    clips = []
    for path in files:
        side = path.with_suffix(".txt")
        text = side.read_text(encoding="utf-8-sig", errors="replace").strip() if side.is_file() else None
        clips.append(Clip(path, text, _shown(path, root, shown_root)))
    return clips


def _row_clip(root: Path, where: str, row: dict, text_field: str, shown_root: str) -> Clip:
    """The clip a metadata row names. JobInputError for a row without a usable `file_name` (none, or one outside the
    folder), naming in the one line its missing description too."""
    name, text = row.get("file_name"), row.get(text_field)
    text = text if isinstance(text, str) else None
    if not isinstance(name, str) or not name.strip():
        problem: Problem | None = Problem(where, "no file_name", f"give each row the audio file's path relative to "
                                                                 f"{shown_root} in file_name")
    else:
        problem = outside_problem(name, where, shown_root)
    if problem is not None:
        problems = [problem]
        if text is None or not text.strip():
            problems.append(_no_description(where, text_field))
        raise JobInputError(one_line(problems))
    path = file_under(root, str(name), where, shown_root)
    return Clip(path, text, f"{_shown(path, root, shown_root)} ({where})")


def _no_description(where: str, text_field: str) -> Problem:
    return Problem(where, "no description", f"give it a non-empty `{text_field}` in the metadata (or a same-name .txt "
                                            f"file)")


def read_info(path: Path) -> ClipInfo:
    """The clip's header through soundfile (no audio decoded). RuntimeError/OSError from libsndfile when unreadable."""
    import soundfile as sf

    info = sf.info(str(path))
    return ClipInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def clip_problems(clips: list[Clip], min_seconds: float, text_field: str = "text", limit: int = 20) -> list[str]:
    """One line per clip with problems (at most `limit` lines, then a count), naming all of that clip's problems:
    a missing, unreadable or empty file or one shorter than `min_seconds` (the length shown never rounds onto the
    limit), and no description."""
    problems: list[str] = []
    for clip in clips:
        problem = _file_problem(clip, min_seconds)
        found = [problem] if problem is not None else []
        if clip.text is None or not clip.text.strip():
            found.append(_no_description(clip.where, text_field))
        if found:
            problems.append(one_line(found))
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more clips with problems"]
    return problems


def _file_problem(clip: Clip, min_seconds: float) -> Problem | None:
    """What is wrong with the clip's file (missing, unreadable, empty, too short), from its header; None if nothing."""
    if not clip.path.is_file():
        return Problem(clip.where, "no such file", "correct file_name or add the file")
    try:
        info = read_info(clip.path)
    except Exception as exc:  # noqa: BLE001 (libsndfile raises RuntimeError / LibsndfileError / TypeError)
        return Problem(clip.where, f"not a readable audio file ({str(exc).splitlines()[0][:120]})",
                       "convert it to WAV or FLAC (e.g. ffmpeg -i IN OUT.wav) or remove it")
    if info.frames == 0:
        return Problem(clip.where, "empty (0 samples)", "remove it or replace it with the real recording")
    if info.seconds < min_seconds:
        seconds, limit = beside(info.seconds, min_seconds, 2)
        return Problem(clip.where, f"{seconds} s long, under train.audio.min_seconds ({limit} s)",
                       "remove it, or lower train.audio.min_seconds")
    return None


def clip_pieces(frames: int, rate: int, max_seconds: float, min_seconds: float) -> list[tuple[int, int]]:
    """(start, stop) sample spans cutting a clip of `frames` samples at `rate` Hz into consecutive pieces of at most
    `max_seconds`; a last piece shorter than `min_seconds` is dropped (unless it is the whole clip)."""
    size = max(1, int(max_seconds * rate))
    spans = [(start, min(start + size, frames)) for start in range(0, frames, size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_seconds * rate:
        spans.pop()
    return spans
