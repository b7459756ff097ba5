"""TensorBoard event files, written with the standard library alone.

TensorBoard reads `events.out.tfevents.*` files: TFRecord framing (little-endian length, masked CRC-32C of the
length, the payload, masked CRC-32C of the payload) around `tensorflow.Event` protocol buffers. cloudtune writes
scalars (an Event with `wall_time`, `step` and a `Summary` of `{tag, simple_value}` values), PNG images
(`{tag, image}`: text-to-image validation samples) and audio clips (a `Summary.Value` whose `audio` field, number 6,
is a `Summary.Audio`: sample_rate, num_channels, length_frames, the WAV bytes, content type `audio/wav`;
tensorflow/core/framework/summary.proto; text-to-audio samples), so the messages are encoded here by hand and no
`tensorboard`/`tensorboardX` package is needed in the training image:
the event files are always written, in the directory each cloud serves (RuntimeContext.log_dir: SageMaker's
/opt/ml/output/tensorboard, Vertex AI's AIP_TENSORBOARD_LOG_DIR). `read_scalars` reads them back (for tests and
for people without TensorBoard).
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EventWriter", "crc32c", "read_audio", "read_scalars"]


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord frames use it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, version: str | None = None, scalars: dict[str, float] | None = None) -> bytes:
    body = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if version is not None:
        body += _field(3, version.encode())
    if scalars:
        values = b"".join(_field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", _float32(value)))
                          for tag, value in scalars.items())
        body += _field(5, values)
    return body


def _audio_event(wall_time: float, step: int, tag: str, wav: bytes, rate: float, channels: int, frames: int) -> bytes:
    audio = (b"\x0d" + struct.pack("<f", float(rate)) + b"\x10" + _varint(channels) + b"\x18" + _varint(frames)
             + _field(4, wav) + _field(5, b"audio/wav"))
    value = _field(1, tag.encode()) + _field(6, audio)
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + _field(5, _field(1, value))


def _float32(value: float) -> float:
    """`value` as a 32-bit float can hold it: beyond its range, an infinity of the same sign."""
    value = float(value)
    return math.copysign(math.inf, value) if math.isfinite(value) and abs(value) > _FLOAT32_MAX else value


_FLOAT32_MAX = 3.4028234663852886e38


def _frame(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked(length)) + payload + struct.pack("<I", _masked(payload))


class EventWriter:
    """Append scalar summaries to one new event file in `log_dir` (created when missing).

    Each `scalars` call is flushed to disk at once, so a cloud's sync of the directory sees it."""

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self.path = self.log_dir / name
        self._fh = open(self.path, "ab")
        self._write(_event(time.time(), 0, version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        self._fh.write(_frame(event))
        self._fh.flush()

    def scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        """Record `values` (tag -> number) at optimizer step `step` (wall time in epoch seconds, default now)."""
        if values and not self._fh.closed:
            self._write(_event(time.time() if wall_time is None else wall_time, int(step), scalars=values))

    def images(self, step: int, pngs: dict[str, tuple[int, int, bytes]], wall_time: float | None = None) -> None:
        """Record images (tag -> (width, height, PNG bytes)) at optimizer step `step`: TensorBoard's Summary.Image
        (height = field 1, width = 2, colorspace = 3: RGB, encoded_image_string = 4; Summary.Value.image = 4)."""
        if not pngs or self._fh.closed:
            return
        values = b""
        for tag, (width, height, png) in pngs.items():
            image = (_varint(1 << 3) + _varint(height) + _varint(2 << 3) + _varint(width) + _varint(3 << 3)
                     + _varint(3) + _field(4, png))
            values += _field(1, _field(1, tag.encode()) + _field(4, image))
        body = b"\x09" + struct.pack("<d", time.time() if wall_time is None else wall_time) + b"\x10" + _varint(step)
        self._write(body + _field(5, values))

    def audio(self, step: int, tag: str, wav: bytes, rate: float, channels: int, frames: int) -> None:
        """Record one WAV clip (`wav`: the file's bytes; `rate` Hz, `channels`, `frames` samples per channel) under
        `tag` at optimizer step `step` (TensorBoard's Audio dashboard plays it)."""
        if not self._fh.closed:
            self._write(_audio_event(time.time(), int(step), tag, wav, rate, channels, frames))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _fields(data: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of one protobuf message: varints as int, 64/32-bit as bytes."""
    out, i = [], 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out.append((number, wire, value))
        elif wire == 1:
            out.append((number, wire, data[i:i + 8]))
            i += 8
        elif wire == 5:
            out.append((number, wire, data[i:i + 4]))
            i += 4
        elif wire == 2:
            size, i = _read_varint(data, i)
            out.append((number, wire, data[i:i + size]))
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def read_audio(path: Path | str) -> list[tuple[int, str, float, bytes]]:
    """(step, tag, sample rate, WAV bytes) of every audio summary in one event file, in order."""
    data, out, i = Path(path).read_bytes(), [], 0
    while i + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        payload = data[i + 12:i + 12 + length]
        i += 16 + length
        fields = _fields(payload)
        step = next((v for n, w, v in fields if n == 2 and w == 0), 0)
        for n, w, summary in fields:
            if n == 5 and w == 2:
                for _, _, value in _fields(summary):  # type: ignore[arg-type]
                    parts = {num: v for num, _, v in _fields(value)}  # type: ignore[arg-type]
                    if 6 in parts:
                        audio = {num: v for num, _, v in _fields(parts[6])}  # type: ignore[arg-type]
                        out.append((int(step), parts[1].decode(), struct.unpack("<f", audio[1])[0], audio[4]))  # type: ignore[union-attr,arg-type]
    return out


def read_scalars(path: Path | str) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in one event file, in order. ValueError on a bad frame checksum."""
    data, out, i = Path(path).read_bytes(), [], 0
    while i + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        payload = data[i + 12:i + 12 + length]
        if struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0] != _masked(payload):
            raise ValueError(f"{path}: bad checksum at byte {i}")
        i += 16 + length
        fields = _fields(payload)
        step = next((v for n, w, v in fields if n == 2 and w == 0), 0)
        for n, w, summary in fields:
            if n == 5 and w == 2:
                for _, _, value in _fields(summary):  # type: ignore[arg-type]
                    parts = {num: v for num, _, v in _fields(value)}  # type: ignore[arg-type]
                    if 2 not in parts:  # not a scalar (an audio clip)
                        continue
                    out.append((int(step), parts[1].decode(), struct.unpack("<f", parts[2])[0]))  # type: ignore[union-attr,arg-type]
    return out
