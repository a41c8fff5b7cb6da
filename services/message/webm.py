"""The little of WebM (Matroska/EBML) the message service reads: whether a file has a video track,
and its duration.

A browser's MediaRecorder writes WebM as a live stream: the Segment and its Clusters have unknown
sizes and the Info has no Duration (it is not known while recording). So the duration is the
container's Duration when it states one, and otherwise the timestamp of its last block (cluster
timecode plus the block's relative timecode), which the container does state. The reader walks the
elements flat, descending into the few masters that matter and skipping the rest by size, so it is
O(elements) and never recurses on attacker-chosen nesting. Blocking: called in a thread.
"""

from __future__ import annotations

import struct
from pathlib import Path

_SEGMENT, _INFO, _TRACKS, _TRACK_ENTRY, _CLUSTER, _BLOCK_GROUP = (
    0x18538067,
    0x1549A966,
    0x1654AE6B,
    0xAE,
    0x1F43B675,
    0xA0,
)
_MASTERS = frozenset({_SEGMENT, _INFO, _TRACKS, _TRACK_ENTRY, _CLUSTER, _BLOCK_GROUP})
_TIMECODE_SCALE, _DURATION, _TRACK_TYPE, _CLUSTER_TIMECODE, _SIMPLE_BLOCK, _BLOCK = (
    0x2AD7B1,
    0x4489,
    0x83,
    0xE7,
    0xA3,
    0xA1,
)
_VIDEO_TRACK = 1
_MAX_ELEMENTS = 2_000_000  # a 25 MiB file holds far fewer; bounds the walk whatever the input


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, next position, all-ones) of the variable-length integer at `pos`."""
    first = data[pos]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        mask >>= 1
        length += 1
    if length > 8 or pos + length > len(data):
        raise ValueError("bad EBML integer")
    value = first if keep_marker else first & (mask - 1)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, pos + length, unknown


def _walk(data: bytes) -> dict[str, float | bool]:
    found: dict[str, float | bool] = {"scale": 1_000_000.0, "duration": 0.0, "last": 0.0, "video": False}
    pos, cluster_time, seen = 0, 0, 0
    while pos < len(data) and seen < _MAX_ELEMENTS:
        seen += 1
        try:
            element, pos, _ = _vint(data, pos, keep_marker=True)
            size, pos, unknown = _vint(data, pos, keep_marker=False)
        except (ValueError, IndexError):
            break
        if element in _MASTERS:
            continue  # descend: its children follow (an unknown size, as MediaRecorder writes, is fine)
        if unknown:
            break
        body = data[pos : pos + size]
        pos += size
        if element == _TIMECODE_SCALE and body:
            found["scale"] = float(int.from_bytes(body, "big")) or 1_000_000.0
        elif element == _DURATION and len(body) in (4, 8):
            found["duration"] = struct.unpack(">f" if len(body) == 4 else ">d", body)[0]
        elif element == _TRACK_TYPE and body and body[-1] == _VIDEO_TRACK:
            found["video"] = True
        elif element == _CLUSTER_TIMECODE and body:
            cluster_time = int.from_bytes(body, "big")
        elif element in (_SIMPLE_BLOCK, _BLOCK) and body:
            try:
                _, at, _ = _vint(body, 0, keep_marker=False)  # the track number
                relative = struct.unpack(">h", body[at : at + 2])[0]
            except (ValueError, IndexError, struct.error):
                continue
            found["last"] = max(float(found["last"]), float(cluster_time + relative))
    return found


def _read(path: Path) -> dict[str, float | bool]:
    return _walk(path.read_bytes())


def has_video(path: Path) -> bool:
    return bool(_read(path)["video"])


def duration_ms(path: Path) -> int:
    found = _read(path)
    ticks = float(found["duration"]) or float(found["last"])
    if ticks <= 0 or ticks != ticks:  # NaN from a malformed float
        return 0
    return round(ticks * float(found["scale"]) / 1_000_000)
