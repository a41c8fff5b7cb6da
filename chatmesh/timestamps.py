"""Times between Python, protobuf and JSON: the one place each conversion is written.

The fast forms are measured: `stamp` is Timestamp.FromDatetime's result by timedelta arithmetic at a
third of its CPU (FromDatetime goes through utctimetuple() and calendar.timegm() for every timestamp
of a history page), and `rfc3339` is Timestamp.ToJsonString's text at half its cost (the edge renders
every timestamp of every response). tests/test_timestamps.py holds each equal to protobuf's own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_SECONDS_MIN, _SECONDS_MAX = -62135596800, 253402300799  # 0001-01-01 to 9999-12-31, as protobuf allows
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAYS: dict[int, str] = {}  # day since the epoch -> "YYYY-MM-DD": a page's messages share a few days


def stamp(ts: Timestamp, value: datetime) -> None:
    """Set `ts` to `value` (naive means UTC), as Timestamp.FromDatetime does."""
    delta = value - (_NAIVE_EPOCH if value.tzinfo is None else _UTC_EPOCH)
    ts.seconds = delta.days * 86_400 + delta.seconds
    ts.nanos = delta.microseconds * 1_000


def timestamp(value: datetime | None) -> Timestamp | None:
    """A Timestamp of `value`, or None (the field left unset) for None."""
    if value is None:
        return None
    ts = Timestamp()
    stamp(ts, value)
    return ts


def from_millis(ms: int) -> Timestamp | None:
    """A Timestamp of milliseconds since the epoch; None (unset) for 0 or less, which means never."""
    if ms <= 0:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def to_datetime(ts: Timestamp) -> datetime:
    """An aware UTC datetime (PostgreSQL's timestamptz takes it as it is)."""
    return ts.ToDatetime(tzinfo=UTC)


def rfc3339(ts: Timestamp) -> str:
    """Timestamp.ToJsonString's text: RFC 3339 in UTC with Z and 0, 3, 6 or 9 fractional digits."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_SECONDS_MIN <= seconds <= _SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return str(ts.ToJsonString())  # raises, as json_format does
    days, seconds = divmod(seconds, 86_400)
    day = _DAYS.get(days)
    if day is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        day = _DAYS[days] = date.fromordinal(_UNIX_EPOCH_ORDINAL + days).isoformat()
    hours, seconds = divmod(seconds, 3600)
    # %-formatting: about a third of the f-string's time here (format specs per field), on every timestamp.
    text = "%sT%02d:%02d:%02d" % (day, hours, seconds // 60, seconds % 60)
    if not nanos:
        return text + "Z"
    if not nanos % 1_000_000:
        return "%s.%03dZ" % (text, nanos // 1_000_000)
    if not nanos % 1_000:
        return "%s.%06dZ" % (text, nanos // 1_000)
    return "%s.%09dZ" % (text, nanos)
