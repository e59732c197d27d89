"""Registry.pol ("PReg") codec: the file format of Group Policy registry settings ([MS-GPREG]).

Layout, little-endian::

    b"PReg"  u32 version (1)
    then per entry, every character UTF-16LE:
    [ key NUL ; value-name NUL ; u32 type ; u32 size ; data(size) ]

A GPO's ``User\\Registry.pol`` is read from SYSVOL, where anybody who can edit the GPO can put
anything, so :func:`decode` is strict: every length is checked against the buffer and any
malformation raises :class:`PolFormatError` with the byte offset at fault -- never another
exception. Entries keep their raw ``data`` bytes, so a file round-trips exactly, and
:meth:`PolEntry.value` gives the typed view (int, str, list of str, bytes).

Special value names tell the client to delete things instead of setting a value:
``**del.<name>`` (delete one value), ``**delvals.`` (delete every value of the key),
``**DeleteValues`` (data: ``name;name;``), ``**DeleteKeys`` (data: ``subkey;subkey;``).
Matching of these prefixes, like registry names, is case-insensitive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from ..errors import CredroamError

__all__ = [
    "DELETE_ALL_VALUES",
    "DELETE_KEYS",
    "DELETE_VALUES",
    "DELETE_VALUE_PREFIX",
    "SIGNATURE",
    "PolEntry",
    "PolFormatError",
    "PolValueError",
    "RegType",
    "decode",
    "delete_all_values_entry",
    "delete_keys_entry",
    "delete_value_entry",
    "delete_values_entry",
    "encode",
    "make_entry",
    "reg_type",
]

SIGNATURE = b"PReg"
VERSION = 1
DELETE_VALUE_PREFIX = "**del."
DELETE_ALL_VALUES = "**delvals."  # lower case, as Windows writes it and Samba matches
DELETE_VALUES = "**DeleteValues"
DELETE_KEYS = "**DeleteKeys"

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U32_MAX = 0xFFFFFFFF
_NUL = b"\x00\x00"
_OPEN, _SEP, _CLOSE = "[".encode("utf-16-le"), ";".encode("utf-16-le"), "]".encode("utf-16-le")


class RegType(IntEnum):
    """Registry value types (winnt.h). Unknown type numbers are still carried as plain ints."""

    REG_NONE = 0
    REG_SZ = 1
    REG_EXPAND_SZ = 2
    REG_BINARY = 3
    REG_DWORD = 4
    REG_DWORD_BIG_ENDIAN = 5
    REG_LINK = 6
    REG_MULTI_SZ = 7
    REG_QWORD = 11


_STRING_TYPES = (RegType.REG_SZ, RegType.REG_EXPAND_SZ, RegType.REG_LINK)
_FIXED_SIZES = {RegType.REG_DWORD: 4, RegType.REG_DWORD_BIG_ENDIAN: 4, RegType.REG_QWORD: 8}


class PolFormatError(CredroamError, ValueError):
    """A Registry.pol buffer is malformed; ``offset`` is the byte where reading failed."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"malformed Registry.pol at byte {offset}: {reason}")
        self.reason = reason
        self.offset = offset


class PolValueError(CredroamError, ValueError):
    """A registry value given to :func:`make_entry` cannot be represented (names the value)."""


def reg_type(name_or_number: str | int) -> RegType:
    """``"REG_DWORD"`` / ``"dword"`` / ``4`` -> :class:`RegType`; anything else is refused."""
    if isinstance(name_or_number, int):
        try:
            return RegType(name_or_number)
        except ValueError:
            raise PolValueError(f"unknown registry type number {name_or_number}") from None
    upper = name_or_number.strip().upper()
    if not upper.startswith("REG_"):
        upper = "REG_" + upper
    try:
        return RegType[upper]
    except KeyError:
        known = ", ".join(t.name for t in RegType)
        raise PolValueError(f"unknown registry type {name_or_number!r} (known: {known})") from None


@dataclass(frozen=True)
class PolEntry:
    """One ``[key;name;type;size;data]`` record. ``data`` is raw (the size is ``len(data)``)."""

    key: str
    name: str
    type: int
    data: bytes

    @property
    def type_name(self) -> str:
        try:
            return RegType(self.type).name
        except ValueError:
            return f"REG_UNKNOWN_{self.type}"

    @property
    def is_delete_value(self) -> bool:
        return self.name.lower().startswith(DELETE_VALUE_PREFIX)

    @property
    def target(self) -> str:
        """The value this entry is about: ``X`` for both ``X`` and ``**del.X``."""
        if self.is_delete_value:
            return self.name[len(DELETE_VALUE_PREFIX) :]
        return self.name

    @property
    def identity(self) -> tuple[str, str]:
        """What an entry sets or deletes, case-insensitively: a later entry with the same
        identity supersedes this one (setting ``X`` and ``**del.X`` are mutually exclusive)."""
        return (self.key.lower().strip("\\"), self.target.lower())

    def value(self) -> int | str | list[str] | bytes | None:
        """The data in the form its type implies (bytes for binary and unknown types)."""
        return _decode_data(self.type, self.data)

    def describe(self) -> dict:
        """A JSON-friendly view for diffs and module results."""
        value = self.value()
        if isinstance(value, bytes):
            value = value.hex()
        if self.is_delete_value:
            return {"key": self.key, "value": self.target, "state": "absent"}
        return {"key": self.key, "value": self.name, "type": self.type_name, "data": value}


def _utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + _NUL


def _decode_utf16(raw: bytes) -> str:
    # surrogatepass: registry strings are arbitrary UTF-16 code units; keep them exactly.
    return raw.decode("utf-16-le", errors="surrogatepass")


def _strip_terminator(text: str) -> str:
    return text[:-1] if text.endswith("\x00") else text


def _decode_data(type_: int, data: bytes) -> int | str | list[str] | bytes | None:
    if type_ == RegType.REG_NONE and not data:
        return None
    if type_ in _STRING_TYPES and len(data) % 2 == 0:
        return _strip_terminator(_decode_utf16(data))
    if type_ == RegType.REG_MULTI_SZ and len(data) % 2 == 0:
        text = _decode_utf16(data).rstrip("\x00")
        return text.split("\x00") if text else []
    if type_ == RegType.REG_DWORD and len(data) == 4:
        return _U32.unpack(data)[0]
    if type_ == RegType.REG_DWORD_BIG_ENDIAN and len(data) == 4:
        return struct.unpack(">I", data)[0]
    if type_ == RegType.REG_QWORD and len(data) == 8:
        return _U64.unpack(data)[0]
    return bytes(data)


def _check_name(what: str, text: str, *, allow_empty: bool) -> None:
    if not isinstance(text, str):
        raise PolValueError(f"{what} must be a string, not {type(text).__name__}")
    if "\x00" in text:
        raise PolValueError(f"{what} {text!r} contains a NUL character")
    if not text and not allow_empty:
        raise PolValueError(f"{what} must not be empty")


def _encode_data(type_: RegType, value: object, where: str) -> bytes:
    if type_ in _STRING_TYPES:
        if not isinstance(value, str) or "\x00" in value:
            raise PolValueError(f"{where}: {type_.name} needs a string without NUL, got {value!r}")
        return _utf16z(value)
    if type_ == RegType.REG_MULTI_SZ:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise PolValueError(f"{where}: REG_MULTI_SZ needs a list of strings, got {value!r}")
        for item in value:
            if not isinstance(item, str) or "\x00" in item or item == "":
                raise PolValueError(
                    f"{where}: REG_MULTI_SZ items must be non-empty strings without NUL, "
                    f"got {item!r}"
                )
        return "".join(f"{item}\x00" for item in value).encode("utf-16-le") + _NUL
    if type_ in _FIXED_SIZES:
        bits = 8 * _FIXED_SIZES[type_]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
            raise PolValueError(
                f"{where}: {type_.name} needs an integer 0..{2**bits - 1}, got {value!r}"
            )
        if type_ == RegType.REG_DWORD_BIG_ENDIAN:
            return struct.pack(">I", value)
        return value.to_bytes(bits // 8, "little")
    if type_ in (RegType.REG_BINARY, RegType.REG_NONE):
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str):
            try:
                return bytes.fromhex(value)
            except ValueError:
                raise PolValueError(f"{where}: {type_.name} data {value!r} is not hex") from None
        if value is None and type_ == RegType.REG_NONE:
            return b""
        raise PolValueError(f"{where}: {type_.name} needs bytes or a hex string, got {value!r}")
    raise PolValueError(f"{where}: cannot encode type {type_!r}")  # pragma: no cover


def make_entry(key: str, name: str, type_: str | int, value: object) -> PolEntry:
    """A typed, validated entry: ``make_entry(KEY, "DIMSRoaming", "REG_DWORD", 1)``."""
    _check_name("registry key", key, allow_empty=False)
    _check_name(f"value name under {key}", name, allow_empty=True)
    if name.startswith("**"):
        raise PolValueError(
            f"value name {name!r} under {key}: names starting with ** are reserved for "
            "delete instructions; use state=absent instead"
        )
    kind = reg_type(type_)
    return PolEntry(key, name, int(kind), _encode_data(kind, value, f"{key}\\{name}"))


def delete_value_entry(key: str, name: str) -> PolEntry:
    """``**del.<name>``: the client deletes the value. Data is a single space, as GPMC writes."""
    _check_name("registry key", key, allow_empty=False)
    _check_name(f"value name under {key}", name, allow_empty=False)
    return PolEntry(key, DELETE_VALUE_PREFIX + name, int(RegType.REG_SZ), _utf16z(" "))


def delete_all_values_entry(key: str) -> PolEntry:
    _check_name("registry key", key, allow_empty=False)
    return PolEntry(key, DELETE_ALL_VALUES, int(RegType.REG_SZ), _utf16z(" "))


def _name_list_entry(key: str, special: str, names: Sequence[str]) -> PolEntry:
    _check_name("registry key", key, allow_empty=False)
    for name in names:
        _check_name(f"name listed in {special} under {key}", name, allow_empty=False)
        if ";" in name:
            raise PolValueError(f"name {name!r} listed in {special} under {key} contains ';'")
    return PolEntry(key, special, int(RegType.REG_SZ), _utf16z("".join(f"{n};" for n in names)))


def delete_values_entry(key: str, names: Sequence[str]) -> PolEntry:
    return _name_list_entry(key, DELETE_VALUES, names)


def delete_keys_entry(key: str, subkeys: Sequence[str]) -> PolEntry:
    return _name_list_entry(key, DELETE_KEYS, subkeys)


def encode(entries: Iterable[PolEntry]) -> bytes:
    """The file bytes for ``entries``, in order (order matters to the client)."""
    out = bytearray(SIGNATURE + _U32.pack(VERSION))
    for entry in entries:
        _check_name("registry key", entry.key, allow_empty=False)
        _check_name(f"value name under {entry.key}", entry.name, allow_empty=True)
        if not 0 <= entry.type <= _U32_MAX or len(entry.data) > _U32_MAX:
            raise PolValueError(f"{entry.key}\\{entry.name}: type or size out of range")
        out += _OPEN + _utf16z(entry.key) + _SEP + _utf16z(entry.name) + _SEP
        out += _U32.pack(entry.type) + _SEP + _U32.pack(len(entry.data)) + _SEP
        out += entry.data + _CLOSE
    return bytes(out)


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.blob):
            raise PolFormatError(
                f"truncated {what}: needs {size} bytes, {len(self.blob) - self.pos} left",
                self.pos,
            )
        chunk = self.blob[self.pos : end]
        self.pos = end
        return chunk

    def expect(self, token: bytes, what: str) -> None:
        start = self.pos
        if self.take(len(token), what) != token:
            raise PolFormatError(f"expected {what}", start)

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def utf16z(self, what: str) -> str:
        start = self.pos
        end = start
        while True:
            if end + 2 > len(self.blob):
                raise PolFormatError(f"{what} has no NUL terminator", start)
            if self.blob[end : end + 2] == _NUL:
                break
            end += 2
        self.pos = end + 2
        try:
            return self.blob[start:end].decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise PolFormatError(f"{what} is not valid UTF-16LE", start + exc.start) from None


def decode(blob: bytes) -> list[PolEntry]:
    """Parse a Registry.pol buffer. An empty buffer is an empty policy.

    Raises only :class:`PolFormatError` (with the byte offset) on malformed input.
    """
    blob = bytes(blob)
    if not blob:
        return []
    reader = _Reader(blob)
    if reader.take(4, "signature") != SIGNATURE:
        raise PolFormatError("bad signature (expected 'PReg')", 0)
    version = reader.u32("version")
    if version != VERSION:
        raise PolFormatError(f"unsupported version {version} (expected {VERSION})", 4)
    entries: list[PolEntry] = []
    while reader.pos < len(blob):
        start = reader.pos
        reader.expect(_OPEN, "'[' opening an entry")
        key = reader.utf16z("key")
        if not key:
            raise PolFormatError("empty key", start + 2)
        reader.expect(_SEP, "';' after the key")
        name = reader.utf16z("value name")
        reader.expect(_SEP, "';' after the value name")
        type_ = reader.u32("type")
        reader.expect(_SEP, "';' after the type")
        size_at = reader.pos
        size = reader.u32("size")
        reader.expect(_SEP, "';' after the size")
        data = reader.take(size, "data")
        reader.expect(_CLOSE, "']' closing the entry")
        _check_data_shape(type_, size, size_at)
        entries.append(PolEntry(key, name, type_, data))
    return entries


def _check_data_shape(type_: int, size: int, offset: int) -> None:
    fixed = _FIXED_SIZES.get(type_)
    if fixed is not None and size != fixed:
        raise PolFormatError(f"{RegType(type_).name} with size {size} (must be {fixed})", offset)
    if (type_ in _STRING_TYPES or type_ == RegType.REG_MULTI_SZ) and size % 2:
        raise PolFormatError(f"{RegType(type_).name} with odd size {size}", offset)
