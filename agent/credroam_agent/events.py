"""Events: one line each on stderr (the journal under systemd), with Windows' event IDs.

The IDs are those of Windows' credential roaming client (provider
Microsoft-Windows-CertificateServicesClient-CredentialRoaming), so monitoring rules written for
Windows carry over. A line reads::

    credroam-agent event=1010 level=error user=alice dc=dc1.lab.example: cannot reach ...

Secrets never reach an event: messages are built from item keys, DC names, file paths and the
core's error texts, which name things but never carry passwords or key material.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TextIO

from credroam.roaming.model import LeftAlone, RefusalCause

__all__ = ["EventId", "EventLog", "left_alone_event", "refusal_event"]


class EventId(IntEnum):
    SUCCESS = 1
    SELF_HEAL_DONE = 2
    CONFLICT = 501
    SELF_HEAL_NEEDED = 502
    LOCAL_STORE_READ = 1001
    LOCAL_STORE_WRITE = 1002
    DIRECTORY_READ = 1003
    DIRECTORY_WRITE = 1004
    STATE_READ = 1005
    STATE_WRITE = 1006
    ROAMING_KEY = 1007
    TOO_MANY_TOKENS = 1008
    CANNOT_REACH_AD = 1010
    TOKEN_TOO_LARGE = 1011
    ATTRIBUTE_PROBLEM = 1012


# What each ID means here (the README's events table is this table).
DESCRIPTIONS = {
    EventId.SUCCESS: "sync done",
    EventId.SELF_HEAL_DONE: "sync done after the state file was lost or damaged (rebuilt)",
    EventId.CONFLICT: "an item changed on both sides; the newer version won",
    EventId.SELF_HEAL_NEEDED: "state file lost or damaged: rebuilt from its previous copy or the "
    "directory",
    EventId.LOCAL_STORE_READ: "the local store could not be read",
    EventId.LOCAL_STORE_WRITE: "an item could not be written to the local store",
    EventId.DIRECTORY_READ: "the directory could not be read (user, attributes)",
    EventId.DIRECTORY_WRITE: "the directory could not be written",
    EventId.STATE_READ: "the state file (or its previous copy) could not be read or used",
    EventId.STATE_WRITE: "the state file could not be written",
    EventId.ROAMING_KEY: "the roaming key is unavailable (no cache, password opens no record)",
    EventId.TOO_MANY_TOKENS: "an item was refused: the user would exceed the maximum tokens",
    EventId.CANNOT_REACH_AD: "no domain controller could be reached or bound to",
    EventId.TOKEN_TOO_LARGE: "an item was refused: larger than the maximum token size",
    EventId.ATTRIBUTE_PROBLEM: "a directory value failed a check and was skipped",
}

_ERRORS = frozenset(
    {
        EventId.LOCAL_STORE_READ,
        EventId.LOCAL_STORE_WRITE,
        EventId.DIRECTORY_READ,
        EventId.DIRECTORY_WRITE,
        EventId.STATE_READ,
        EventId.STATE_WRITE,
        EventId.ROAMING_KEY,
        EventId.CANNOT_REACH_AD,
    }
)
_INFO = frozenset({EventId.SUCCESS, EventId.SELF_HEAL_DONE})


def level_of(event: EventId) -> str:
    if event in _INFO:
        return "info"
    return "error" if event in _ERRORS else "warning"


def refusal_event(cause: RefusalCause) -> EventId:
    """The event of an upload that reconcile refused, by its cause. The only uploads sync
    itself refuses (reconcile's caller) are private keys with no roaming key to seal them."""
    return {
        RefusalCause.TOKEN_SIZE: EventId.TOKEN_TOO_LARGE,
        RefusalCause.TOKEN_COUNT: EventId.TOO_MANY_TOKENS,
        RefusalCause.CALLER: EventId.ROAMING_KEY,
    }[cause]


def left_alone_event(left_alone: LeftAlone) -> EventId:
    """The event of an item reconcile left alone on both sides: one there but unusable (R34:
    mostly a directory value that cannot be opened, whose own 1012 names the check; or a key a
    Windows store holds but will not export), else something of the local store it cannot
    roam, such as a key whose certificate is not here (R36)."""
    return EventId.ATTRIBUTE_PROBLEM if left_alone.unusable else EventId.LOCAL_STORE_READ


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Event:
    id: EventId
    message: str
    fields: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        context = "".join(f" {name}={_one_line(value)}" for name, value in self.fields)
        return (
            f"credroam-agent event={int(self.id)} level={level_of(self.id)}{context}: "
            f"{_one_line(self.message)}"
        )

    def as_dict(self) -> dict:
        return {
            "event": int(self.id),
            "level": level_of(self.id),
            **dict(self.fields),
            "message": _one_line(self.message),
        }


@dataclass
class EventLog:
    """Writes events as they happen and keeps them for the exit code and ``--json``."""

    stream: TextIO | None = None
    context: dict[str, str] = field(default_factory=dict)  # e.g. user, dc
    events: list[Event] = field(default_factory=list)

    def emit(self, event: EventId, message: str, **fields: object) -> Event:
        merged = {**self.context, **{k: str(v) for k, v in fields.items() if v is not None}}
        record = Event(event, message, tuple(merged.items()))
        self.events.append(record)
        print(record.line(), file=self.stream or sys.stderr, flush=True)
        return record

    def note(self, message: str) -> None:
        """Something worth a line that is no roaming event (e.g. a GPO's SYSVOL lagging)."""
        context = "".join(f" {name}={_one_line(value)}" for name, value in self.context.items())
        print(
            f"credroam-agent level=warning{context}: {_one_line(message)}",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def config_error(self, message: str) -> None:
        """A configuration error (exit 2): not a roaming event, so it carries no event ID."""
        print(
            f"credroam-agent level=error: configuration error: {_one_line(message)}",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def internal_error(self, exc: BaseException) -> None:
        """An unexpected failure (a bug): its type and the innermost frame, never locals."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        print(
            f"credroam-agent level=error: internal error {type(exc).__name__}{where}: "
            f"{_one_line(str(exc))}",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events]

    @property
    def problems(self) -> list[Event]:
        """Events that make a run "done with problems" (warnings and errors)."""
        return [e for e in self.events if e.id not in _INFO]

    def as_json(self, extra: Iterable[tuple[str, object]] = ()) -> str:
        return json.dumps({**dict(extra), "events": [e.as_dict() for e in self.events]})
