"""chatmesh/timestamps.py's fast forms give exactly protobuf's own results, for the times a client
sees (aware, naive-as-UTC, whole seconds, milli-, micro- and nanosecond fractions, before 1970)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chatmesh import timestamps

TIMES = [
    datetime(2025, 3, 9, 12, 30, 5, tzinfo=UTC),
    datetime(2025, 3, 9, 12, 30, 5, 123000, tzinfo=UTC),
    datetime(2025, 3, 9, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=-7))),
    datetime(2025, 3, 9, 12, 30, 5, 1),  # naive: UTC, as FromDatetime takes it
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_stamp_equals_from_datetime_and_rfc3339_equals_to_json_string(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamps.timestamp(value) == expected
    assert timestamps.rfc3339(expected) == expected.ToJsonString()
    assert timestamps.to_datetime(expected) == (value if value.tzinfo else value.replace(tzinfo=UTC))


def test_nanoseconds_render_with_nine_digits_and_none_means_unset() -> None:
    ts = Timestamp(seconds=1_700_000_000, nanos=5)
    assert timestamps.rfc3339(ts) == ts.ToJsonString() == "2023-11-14T22:13:20.000000005Z"
    assert timestamps.timestamp(None) is None
    assert timestamps.from_millis(0) is None
    assert timestamps.from_millis(1_700_000_000_123) == Timestamp(seconds=1_700_000_000, nanos=123_000_000)


def test_an_out_of_range_timestamp_is_refused_as_protobuf_refuses_it() -> None:
    with pytest.raises(ValueError):
        timestamps.rfc3339(Timestamp(seconds=253402300800))
