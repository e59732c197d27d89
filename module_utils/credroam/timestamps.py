"""FILETIME conversions and the msPKIRoamingTimeStamp value.

A FILETIME counts 100 ns ticks since 1601-01-01 00:00 UTC in an unsigned 64-bit integer.
Python datetimes resolve microseconds, so ``from_filetime`` drops the last decimal digit of a
FILETIME (sub-microsecond ticks); ``to_filetime(from_filetime(ft))`` equals ``ft - ft % 10``.
All functions are pure: the caller passes "now" in, which keeps reconciliation testable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from .errors import CredroamError

__all__ = [
    "FILETIME_EPOCH",
    "FILETIME_MAX",
    "FILETIME_UNIX_EPOCH",
    "ROAMING_TIMESTAMP_SIZE",
    "TICKS_PER_DAY",
    "TICKS_PER_SECOND",
    "RoamingTimestamp",
    "TimestampError",
    "advance_roaming_timestamp",
    "decode_roaming_timestamp",
    "encode_roaming_timestamp",
    "filetime_from_unix_ns",
    "filetime_now",
    "from_filetime",
    "to_filetime",
]

FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
FILETIME_MAX = 0xFFFFFFFFFFFFFFFF
ROAMING_TIMESTAMP_SIZE = 16
TICKS_PER_SECOND = 10_000_000
TICKS_PER_DAY = 24 * 60 * 60 * TICKS_PER_SECOND
# 1970-01-01 as a FILETIME: the distance between the Unix and the FILETIME epochs.
FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
_TICKS_PER_MICROSECOND = 10
_NS_PER_TICK = 100
_TWO_FILETIMES = struct.Struct("<QQ")


class TimestampError(CredroamError, ValueError):
    """A FILETIME or msPKIRoamingTimeStamp value is out of range or malformed."""


def _check_filetime(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TimestampError(f"{what} must be an int FILETIME, not {type(value).__name__}")
    if not 0 <= value <= FILETIME_MAX:
        raise TimestampError(f"{what} {value} is outside the unsigned 64-bit FILETIME range")
    return value


def to_filetime(moment: datetime) -> int:
    """FILETIME of an aware datetime. Naive datetimes are refused: their zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimestampError(f"naive datetime {moment.isoformat()} has no time zone")
    delta = moment - FILETIME_EPOCH
    ticks = (delta.days * 86400 + delta.seconds) * TICKS_PER_SECOND
    ticks += delta.microseconds * _TICKS_PER_MICROSECOND
    if ticks < 0:
        raise TimestampError(f"{moment.isoformat()} is before the FILETIME epoch 1601-01-01")
    return ticks  # datetime.max (year 9999) is far below FILETIME_MAX


def filetime_now() -> int:
    """The system clock as FILETIME: the clock a real sync passes to ``sync.sync_user``."""
    return to_filetime(datetime.now(UTC))


def filetime_from_unix_ns(unix_ns: int) -> int:
    """FILETIME of a Unix time in nanoseconds (``os.stat_result.st_mtime_ns``, ``time.time_ns``)."""
    return FILETIME_UNIX_EPOCH + unix_ns // _NS_PER_TICK


def from_filetime(filetime: int) -> datetime:
    """Aware UTC datetime of a FILETIME (sub-microsecond ticks are dropped)."""
    _check_filetime(filetime, "FILETIME")
    try:
        return FILETIME_EPOCH + timedelta(microseconds=filetime // _TICKS_PER_MICROSECOND)
    except OverflowError:
        raise TimestampError(
            f"FILETIME {filetime} is after the last date Python represents (9999-12-31)"
        ) from None


@dataclass(frozen=True, slots=True)
class RoamingTimestamp:
    """msPKIRoamingTimeStamp: two little-endian FILETIMEs.

    ``last_change`` (the second) is the time of the latest change to the user's tokens; clients
    compare it with the value they saw at their last sync to tell whether the directory moved.
    The meaning of ``first`` is unverified; it is kept as read so that rewriting the value does
    not disturb Windows clients.
    """

    first: int
    last_change: int

    def __post_init__(self) -> None:
        _check_filetime(self.first, "first FILETIME")
        _check_filetime(self.last_change, "last_change FILETIME")

    @property
    def last_change_datetime(self) -> datetime:
        return from_filetime(self.last_change)


def decode_roaming_timestamp(value: bytes) -> RoamingTimestamp:
    """Decode the 16-byte attribute value; any other length is refused."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TimestampError(f"msPKIRoamingTimeStamp must be bytes, not {type(value).__name__}")
    if len(value) != ROAMING_TIMESTAMP_SIZE:
        raise TimestampError(
            f"msPKIRoamingTimeStamp must be {ROAMING_TIMESTAMP_SIZE} bytes, got {len(value)}"
        )
    first, last_change = _TWO_FILETIMES.unpack(value)
    return RoamingTimestamp(first=first, last_change=last_change)


def encode_roaming_timestamp(timestamp: RoamingTimestamp) -> bytes:
    return _TWO_FILETIMES.pack(timestamp.first, timestamp.last_change)


def advance_roaming_timestamp(previous: RoamingTimestamp | None, now: int) -> RoamingTimestamp:
    """The value to write after changing the tokens at FILETIME ``now``.

    ``last_change`` strictly increases even when this host's clock is behind the writer of
    ``previous``, so every other client sees that something changed. ``first`` is kept; a new
    value starts with ``first == last_change``.
    """
    _check_filetime(now, "now")
    if previous is None:
        return RoamingTimestamp(first=now, last_change=now)
    if previous.last_change >= FILETIME_MAX:
        raise TimestampError("last_change is already the largest FILETIME")
    return replace(previous, last_change=max(now, previous.last_change + 1))
