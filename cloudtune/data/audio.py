"""Audio clips with descriptions (text-to-audio data), read and checked without torch and without decoding.

Layouts (🤗 Datasets' `audiofolder` names):

* a folder of audio files with `metadata.jsonl` or `metadata.csv` whose rows hold `file_name` (a path relative to
  that folder) and the description column (`train.data.text_field`, default `text`);
* audio files each with a same-name `.txt` file holding its description (`song.wav` + `song.txt`).

`find_clips` lists (file, description) pairs; `clip_problems` reads each file's header with soundfile
(`sf.info`: format, sample rate, channels, frames; libsndfile reads no audio data for it) and returns one line per
problem: unreadable, empty, shorter than the minimum, or with no description, each with the file and the fix.
`clip_pieces` is how a long clip is cut into pieces of at most `max_seconds` (the recipe decodes only those spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudtune.data.folder_metadata import file_under, metadata_file, metadata_rows
from cloudtune.errors import JobInputError

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
        clips = []
        for where, row in metadata_rows(meta, _shown(meta, root, shown_root), EXAMPLE_ROW):
            name = row.get("file_name")
            if not isinstance(name, str) or not name.strip():
                raise JobInputError(f"{where}: no file_name. To fix: give each row the audio file's path relative to "
                                    f"{shown_root} in file_name")
            text, path = row.get(text_field), file_under(root, name, where, shown_root)
            clips.append(Clip(path, text if isinstance(text, str) else None,
                              f"{_shown(path, root, shown_root)} ({where})"))
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


def read_info(path: Path) -> ClipInfo:
    """The clip's header through soundfile (no audio decoded). RuntimeError/OSError from libsndfile when unreadable."""
    import soundfile as sf

    info = sf.info(str(path))
    return ClipInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def clip_problems(clips: list[Clip], min_seconds: float, text_field: str = "text", limit: int = 20) -> list[str]:
    """One line per problem (at most `limit`, then a count): missing, unreadable or empty files, clips shorter than
    `min_seconds`, and clips without a description."""
    problems: list[str] = []
    for clip in clips:
        if clip.text is None or not clip.text.strip():
            problems.append(f"{clip.where}: no description. To fix: give it a non-empty `{text_field}` in the metadata "
                            f"(or a same-name .txt file)")
            continue
        if not clip.path.is_file():
            problems.append(f"{clip.where}: no such file. To fix: correct file_name or add the file")
            continue
        try:
            info = read_info(clip.path)
        except Exception as exc:  # noqa: BLE001 (libsndfile raises RuntimeError / LibsndfileError / TypeError)
            problems.append(f"{clip.where}: not a readable audio file ({str(exc).splitlines()[0][:120]}). To fix: "
                            f"convert it to WAV or FLAC (e.g. ffmpeg -i IN OUT.wav) or remove it")
            continue
        if info.frames == 0:
            problems.append(f"{clip.where}: empty (0 samples). To fix: remove it or replace it with the real recording")
        elif info.seconds < min_seconds:
            problems.append(f"{clip.where}: {info.seconds:.2f} s long, under train.audio.min_seconds ({min_seconds:g} s). "
                            f"To fix: remove it, or lower train.audio.min_seconds")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more clips with problems"]
    return problems


def clip_pieces(frames: int, rate: int, max_seconds: float, min_seconds: float) -> list[tuple[int, int]]:
    """(start, stop) sample spans cutting a clip of `frames` samples at `rate` Hz into consecutive pieces of at most
    `max_seconds`; a last piece shorter than `min_seconds` is dropped (unless it is the whole clip)."""
    size = max(1, int(max_seconds * rate))
    spans = [(start, min(start + size, frames)) for start in range(0, frames, size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_seconds * rate:
        spans.pop()
    return spans
