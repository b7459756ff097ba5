"""The tiny MusicGen and sine-tone clips of examples/music-style/make_tiny_model.py, for tests (built, never
downloaded): the example's own builder, so the example and the tests train the same model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "music-style" / "make_tiny_model.py"
_spec = importlib.util.spec_from_file_location("music_style_make_tiny_model", _SCRIPT)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

make_tiny_musicgen = _module.make_tiny_musicgen
make_clips = _module.make_clips
sine = _module.sine
SAMPLING_RATE = _module.SAMPLING_RATE
PITCHES = _module.PITCHES

__all__ = ["PITCHES", "SAMPLING_RATE", "make_clips", "make_tiny_musicgen", "sine"]
