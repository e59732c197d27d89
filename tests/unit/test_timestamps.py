"""FILETIME conversions and msPKIRoamingTimeStamp."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credroam.timestamps import (
    FILETIME_MAX,
    RoamingTimestamp,
    TimestampError,
    advance_roaming_timestamp,
    decode_roaming_timestamp,
    encode_roaming_timestamp,
    from_filetime,
    to_filetime,
)

UNIX_EPOCH_FILETIME = 116444736000000000  # documented offset between 1601 and 1970


def test_unix_epoch_has_the_documented_filetime() -> None:
    assert to_filetime(datetime(1970, 1, 1, tzinfo=UTC)) == UNIX_EPOCH_FILETIME
    assert from_filetime(UNIX_EPOCH_FILETIME) == datetime(1970, 1, 1, tzinfo=UTC)


def test_filetime_zero_is_1601() -> None:
    assert from_filetime(0) == datetime(1601, 1, 1, tzinfo=UTC)


def test_token_time_of_the_dsinternals_certificate() -> None:
    # 2017-03-13 08:58:31.7781044 UTC: the last 100 ns tick is below datetime's resolution.
    moment = from_filetime(131338691117781044)
    assert moment == datetime(2017, 3, 13, 8, 58, 31, 778104, tzinfo=UTC)
    assert to_filetime(moment) == 131338691117781040


def test_other_time_zones_convert_to_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert to_filetime(datetime(1970, 1, 1, 2, tzinfo=plus_two)) == UNIX_EPOCH_FILETIME


def test_result_is_aware_utc() -> None:
    assert from_filetime(UNIX_EPOCH_FILETIME).utcoffset() == timedelta(0)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(TimestampError, match="naive"):
        to_filetime(datetime(2024, 1, 1))


def test_time_before_1601_is_refused() -> None:
    with pytest.raises(TimestampError, match="before the FILETIME epoch"):
        to_filetime(datetime(1600, 12, 31, 23, 59, tzinfo=UTC))


@pytest.mark.parametrize("value", [-1, FILETIME_MAX + 1, True, 1.5, "0"])
def test_invalid_filetime_is_refused(value: object) -> None:
    with pytest.raises(TimestampError):
        from_filetime(value)  # type: ignore[arg-type]


def test_filetime_after_year_9999_is_refused_clearly() -> None:
    with pytest.raises(TimestampError, match="9999"):
        from_filetime(FILETIME_MAX)


@given(st.datetimes(min_value=datetime(1601, 1, 1), timezones=st.just(UTC)))
def test_datetime_round_trip(moment: datetime) -> None:
    assert from_filetime(to_filetime(moment)) == moment


@given(st.integers(0, to_filetime(datetime(9999, 12, 31, tzinfo=UTC))))
def test_filetime_round_trip_to_the_microsecond(filetime: int) -> None:
    assert to_filetime(from_filetime(filetime)) == filetime - filetime % 10


# --- msPKIRoamingTimeStamp --------------------------------------------------------------------


def test_roaming_timestamp_is_two_little_endian_filetimes() -> None:
    value = struct.pack("<QQ", 1, UNIX_EPOCH_FILETIME)
    stamp = decode_roaming_timestamp(value)
    assert stamp == RoamingTimestamp(first=1, last_change=UNIX_EPOCH_FILETIME)
    assert stamp.last_change_datetime == datetime(1970, 1, 1, tzinfo=UTC)
    assert encode_roaming_timestamp(stamp) == value


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_roaming_timestamp_of_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(TimestampError, match=f"16 bytes, got {size}"):
        decode_roaming_timestamp(b"\0" * size)


def test_roaming_timestamp_must_be_bytes() -> None:
    with pytest.raises(TimestampError, match="bytes"):
        decode_roaming_timestamp("0" * 16)  # type: ignore[arg-type]


@given(st.binary(min_size=16, max_size=16))
def test_roaming_timestamp_round_trip(value: bytes) -> None:
    assert encode_roaming_timestamp(decode_roaming_timestamp(value)) == value


def test_advance_starts_a_new_value_with_both_times_now() -> None:
    assert advance_roaming_timestamp(None, 500) == RoamingTimestamp(500, 500)


def test_advance_keeps_first_and_moves_last_change_to_now() -> None:
    assert advance_roaming_timestamp(RoamingTimestamp(7, 100), 500) == RoamingTimestamp(7, 500)


def test_advance_moves_forward_even_when_this_clock_is_behind() -> None:
    # Another host with a faster clock wrote 1000; this host thinks it is 500.
    assert advance_roaming_timestamp(RoamingTimestamp(7, 1000), 500) == RoamingTimestamp(7, 1001)


def test_advance_refuses_an_invalid_now() -> None:
    with pytest.raises(TimestampError):
        advance_roaming_timestamp(None, -5)
