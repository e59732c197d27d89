"""Native credential-roaming tokens, as Windows writes them, and the DN-Binary wrapper.

A token is one value of msPKIAccountCredentials / msPKIDPAPIMasterKeys (and of credroam's own
token attributes). Layout, little-endian (spec section 3)::

    0    '%'    1    type digit    2    '\\'
    3    identifier, 93 bytes, NUL-padded
    96   FILETIME last modified (u64)
    104  flags (u16)            106  provider-data size P (u16)
    108  SHA-1 of data (20)     128  data size N (u32)
    132  data (N)               132+N  provider data (P)

Everything read from the directory is attacker-controlled (every user writes their own tokens,
CVE-2022-30170), so decoding checks every length against the buffer, the SHA-1, the limits and,
above all, the identifier against the pattern of its type. ``validate_identifier`` is the one
place that decides whether an identifier is safe; ``Token`` calls it on construction, so no
``Token`` with an unsafe identifier can exist anywhere in the program.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from .errors import CredroamError

__all__ = [
    "DEFAULT_LIMITS",
    "HEADER_SIZE",
    "IDENTIFIER_FIELD_SIZE",
    "Token",
    "TokenError",
    "TokenFlags",
    "TokenLimits",
    "TokenType",
    "decode_token",
    "encode_token",
    "format_dn_binary",
    "parse_dn_binary",
    "parse_key",
    "validate_identifier",
]

IDENTIFIER_FIELD_SIZE = 93
HEADER_SIZE = 132
_HEADER = struct.Struct("<3s93sQHH20sI")  # marker+type+separator, identifier, ..., data size
assert _HEADER.size == HEADER_SIZE
_EMPTY_DATA_HASH = bytes(20)  # Windows writes zeros, not SHA-1(b""), for a token without data
# What a token without data may carry: Windows' zeros, or the SHA-1 other writers compute.
_EMPTY_DATA_HASHES = frozenset({_EMPTY_DATA_HASH, hashlib.sha1(b"").digest()})
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


class TokenType(IntEnum):
    """Token type: the ASCII digit at offset 1."""

    DPAPI_MASTER_KEY = 0
    CAPI_RSA_KEY = 1
    CAPI_DSA_KEY = 2
    CERTIFICATE = 3
    REQUEST = 4
    UNKNOWN_5 = 5
    UNKNOWN_6 = 6
    CNG_CERTIFICATE = 7
    CNG_REQUEST = 8
    CNG_KEY = 9


class TokenFlags(IntFlag):
    """Token flags (u16). Unknown bits are kept as they are, so a token round-trips exactly."""

    TOMBSTONE = 0x1
    UNREADABLE = 0x2
    UNWRITABLE = 0x4
    UNROAMABLE = 0x8
    KNOWN_TYPE = 0x10
    ENCRYPTION_KEY = 0x20


class TokenError(CredroamError, ValueError):
    """A token, identifier or DN-Binary value failed a check.

    ``check`` is a short machine name of the failed check: "marker", "type", "identifier",
    "length", "sha1", "size-limit", "field" (a value out of its field's range on encode),
    "dn-binary", or "element" (certificate store element, see certelement).
    The message names the check and the offending value, escaped and truncated.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"token check '{check}' failed: {message}")
        self.check = check


def parse_key(key: str) -> tuple[TokenType, str]:
    """(type, identifier) of an item key ``%<type>\\<identifier>`` (see ``Token.key``), checked."""
    if not isinstance(key, str) or len(key) < 4 or key[0] != "%" or key[2] != "\\":
        raise TokenError("key", f"item key {key!r:.80} is not %<type>\\<identifier>")
    try:
        token_type = TokenType(int(key[1]))
    except ValueError as exc:
        raise TokenError("key", f"item key {key!r:.80} has an unknown token type") from exc
    return token_type, validate_identifier(token_type, key[3:])


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """Count and size limits (policy DIMSRoamingMaxTokenSize, DIMSRoamingMaxNumTokens).

    ``max_token_size`` bounds the encoded token (header + data + provider data) in bytes and is
    enforced by ``decode_token``/``encode_token``. ``max_tokens`` bounds the number of tokens per
    user; the codec does not see a user's whole set, so reconciliation enforces it.
    """

    max_token_size: int = 65535
    max_tokens: int = 2000

    def __post_init__(self) -> None:
        if self.max_token_size < HEADER_SIZE:
            raise ValueError(f"max_token_size must be at least {HEADER_SIZE}")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


DEFAULT_LIMITS = TokenLimits()


def _shown(value: str | bytes, limit: int = 48) -> str:
    """An escaped, truncated rendering of untrusted input for error messages."""
    total = len(value)
    head = value[:limit]
    text = ascii(head.decode("latin-1") if isinstance(head, bytes) else head)
    if total > limit:
        text += f"... ({total} {'bytes' if isinstance(value, bytes) else 'chars'} in all)"
    return text


# --- identifiers ----------------------------------------------------------------------------

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_THUMBPRINT = re.compile(r"[0-9A-F]{40}")
_CAPI_KEY = re.compile(r"[0-9a-fA-F]{32}_" + _GUID)
_CNG_KEY = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{32}_" + _GUID)
_MASTER_KEY = re.compile(_GUID + r"|Preferred")
_OPAQUE = re.compile(r"[A-Za-z0-9_{}-][A-Za-z0-9_.{}-]*")  # '..' is refused before matching
_OPAQUE_DESCRIPTION = "letters, digits, '_', '.', '{', '}' or '-', not starting with '.'"

# Pattern per type and the human description used in messages.
_IDENTIFIER_PATTERNS: dict[TokenType, tuple[re.Pattern[str], str]] = {
    TokenType.DPAPI_MASTER_KEY: (_MASTER_KEY, "a GUID or 'Preferred'"),
    TokenType.CAPI_RSA_KEY: (_CAPI_KEY, "32 hex digits, '_' and a GUID"),
    TokenType.CAPI_DSA_KEY: (_CAPI_KEY, "32 hex digits, '_' and a GUID"),
    TokenType.CERTIFICATE: (_THUMBPRINT, "a SHA-1 thumbprint (40 upper-case hex digits)"),
    TokenType.REQUEST: (_THUMBPRINT, "a SHA-1 thumbprint (40 upper-case hex digits)"),
    TokenType.UNKNOWN_5: (_OPAQUE, _OPAQUE_DESCRIPTION),
    TokenType.UNKNOWN_6: (_OPAQUE, _OPAQUE_DESCRIPTION),
    TokenType.CNG_CERTIFICATE: (_THUMBPRINT, "a SHA-1 thumbprint (40 upper-case hex digits)"),
    TokenType.CNG_REQUEST: (_THUMBPRINT, "a SHA-1 thumbprint (40 upper-case hex digits)"),
    TokenType.CNG_KEY: (_CNG_KEY, "40 hex digits, or 32 hex digits, '_' and a GUID"),
}


def validate_identifier(token_type: int, identifier: str) -> str:
    """Return ``identifier`` unchanged if it is safe and matches the pattern of its type.

    This is the single gate for identifiers: the local store calls it before building any path
    from one. Patterns (from Windows' own stores and the DSInternals test tokens):

    - certificates and requests (3, 4, 7, 8): the SHA-1 thumbprint, 40 upper-case hex digits
      (the name Windows gives the element file in SystemCertificates\\My|Request\\Certificates);
    - DPAPI master keys (0): the key GUID, or ``Preferred``;
    - CAPI keys (1, 2): the key file name ``<32 hex>_<machine GUID>``;
    - CNG keys (9): 40 hex digits (as in the DSInternals token), or the ``<32 hex>_<GUID>`` key
      file name form;
    - unknown types 5 and 6: opaque, only ``[A-Za-z0-9_.{}-]``, no ``..``, not starting with '.'.

    Whatever the type, an identifier is refused when empty, longer than 93 bytes, or holding a
    control character, NUL, '/', '\\', ':' or '..'. Raises TokenError(check="identifier").
    """
    try:
        kind = TokenType(token_type)
    except ValueError:
        raise TokenError("type", f"unknown token type {token_type!r}") from None
    if not isinstance(identifier, str):
        raise TokenError("identifier", f"identifier must be str, not {type(identifier).__name__}")
    if not identifier:
        raise TokenError("identifier", f"empty identifier for type {kind.value}")
    if not identifier.isascii():
        raise TokenError("identifier", f"non-ASCII identifier {_shown(identifier)}")
    if len(identifier) > IDENTIFIER_FIELD_SIZE:
        raise TokenError(
            "identifier",
            f"identifier of {len(identifier)} bytes exceeds {IDENTIFIER_FIELD_SIZE}: "
            f"{_shown(identifier)}",
        )
    if not identifier.isprintable():
        raise TokenError("identifier", f"control character in identifier {_shown(identifier)}")
    for forbidden in ("/", "\\", ":", ".."):
        if forbidden in identifier:
            raise TokenError(
                "identifier", f"{forbidden!r} in identifier {_shown(identifier)} (path escape)"
            )
    pattern, description = _IDENTIFIER_PATTERNS[kind]
    if pattern.fullmatch(identifier) is None:
        raise TokenError(
            "identifier",
            f"identifier {_shown(identifier)} of type {kind.value} ({kind.name}) "
            f"is not {description}",
        )
    return identifier


# --- the token ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """One decoded roaming token. Constructing one validates type, identifier and field ranges."""

    type: TokenType
    identifier: str
    last_modified: int  # FILETIME, 100 ns ticks since 1601-01-01 UTC
    flags: TokenFlags
    data: bytes
    provider_data: bytes = b""

    def __post_init__(self) -> None:
        validate_identifier(self.type, self.identifier)
        object.__setattr__(self, "type", TokenType(self.type))
        if not 0 <= self.flags <= _U16_MAX:
            raise TokenError("field", f"flags {self.flags!r} do not fit in 16 bits")
        object.__setattr__(self, "flags", TokenFlags(self.flags))
        if not isinstance(self.last_modified, int) or not 0 <= self.last_modified <= _U64_MAX:
            raise TokenError("field", f"last_modified {self.last_modified!r} is not a FILETIME")
        if not isinstance(self.data, bytes) or not isinstance(self.provider_data, bytes):
            raise TokenError("field", "data and provider_data must be bytes")
        if len(self.provider_data) > _U16_MAX:
            raise TokenError("field", f"provider data of {len(self.provider_data)} bytes > 65535")
        if len(self.data) > _U32_MAX:
            raise TokenError("field", f"data of {len(self.data)} bytes does not fit in 32 bits")

    @property
    def key(self) -> str:
        """``%<type>\\<identifier>``: unique per attribute, the form of Windows' state file."""
        return f"%{self.type.value}\\{self.identifier}"

    @property
    def is_tombstone(self) -> bool:
        return bool(self.flags & TokenFlags.TOMBSTONE)

    @property
    def encoded_size(self) -> int:
        return HEADER_SIZE + len(self.data) + len(self.provider_data)


def _data_hash(data: bytes | memoryview) -> bytes:
    return hashlib.sha1(data).digest() if len(data) else _EMPTY_DATA_HASH


def decode_token(blob: bytes, limits: TokenLimits = DEFAULT_LIMITS) -> Token:
    """Decode and fully validate one native token. Raises TokenError on any defect.

    Checks, in order: header length, size limit, marker bytes, type digit, identifier (NUL
    padding, pattern of its type), declared sizes against the buffer (exact: no missing and no
    trailing bytes), SHA-1 of the data. A token without data carries an all-zero hash field, as
    Windows writes it (the DSInternals "unreadable key" token), or SHA-1 of the empty string, as
    other writers compute it; both are accepted, and encoding writes zeros.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TokenError("length", f"token must be bytes, not {type(blob).__name__}")
    size = len(blob)
    if size < HEADER_SIZE:
        raise TokenError(
            "length", f"token of {size} bytes is shorter than the header ({HEADER_SIZE})"
        )
    if size > limits.max_token_size:
        raise TokenError(
            "size-limit", f"token of {size} bytes exceeds the limit of {limits.max_token_size}"
        )
    prefix, id_field, last_modified, flags, provider_size, digest, data_size = _HEADER.unpack_from(
        blob
    )
    if prefix[0:1] != b"%" or prefix[2:3] != b"\\":
        raise TokenError("marker", f"token does not start with '%<digit>\\\\': {_shown(prefix)}")
    type_digit = prefix[1]
    if not 0x30 <= type_digit <= 0x39:
        raise TokenError("type", f"type byte {_shown(prefix[1:2])} is not a digit")
    token_type = TokenType(type_digit - 0x30)

    end = id_field.find(b"\0")
    if end == -1:
        end = IDENTIFIER_FIELD_SIZE
    elif id_field.count(0, end) != IDENTIFIER_FIELD_SIZE - end:
        raise TokenError(
            "identifier", f"bytes after the NUL terminator in identifier field {_shown(id_field)}"
        )
    raw_identifier = id_field[:end]
    if not raw_identifier.isascii():
        raise TokenError("identifier", f"non-ASCII identifier {_shown(raw_identifier)}")
    identifier = validate_identifier(token_type, raw_identifier.decode("ascii"))

    expected = HEADER_SIZE + data_size + provider_size
    if expected != size:
        what = "is truncated" if expected > size else "has trailing bytes"
        raise TokenError(
            "length",
            f"token {identifier} {what}: header declares {data_size} data + {provider_size} "
            f"provider bytes ({expected} in all), buffer holds {size}",
        )
    view = memoryview(blob)
    data_end = HEADER_SIZE + data_size
    data = view[HEADER_SIZE:data_end]
    actual = _data_hash(data)
    if actual != digest and not (data_size == 0 and digest in _EMPTY_DATA_HASHES):
        raise TokenError(
            "sha1",
            f"token {identifier}: stored SHA-1 {digest.hex()} does not match data {actual.hex()}",
        )
    return Token(
        type=token_type,
        identifier=identifier,
        last_modified=last_modified,
        flags=TokenFlags(flags),
        data=bytes(data),
        provider_data=bytes(view[data_end:]),
    )


def encode_token(token: Token, limits: TokenLimits = DEFAULT_LIMITS) -> bytes:
    """Encode a token exactly as Windows does; the inverse of ``decode_token``."""
    if token.encoded_size > limits.max_token_size:
        raise TokenError(
            "size-limit",
            f"token {token.key} would be {token.encoded_size} bytes, over the limit of "
            f"{limits.max_token_size}",
        )
    header = _HEADER.pack(
        b"%%%d\\" % token.type.value,
        token.identifier.encode("ascii"),  # struct pads the field with NULs
        token.last_modified,
        int(token.flags),
        len(token.provider_data),
        _data_hash(token.data),
        len(token.data),
    )
    return b"".join((header, token.data, token.provider_data))


# --- DN-Binary ------------------------------------------------------------------------------

_MAX_COUNT_DIGITS = 10


def parse_dn_binary(value: str | bytes, max_blob_size: int | None = None) -> tuple[bytes, str]:
    """Split an LDAP DN-Binary value ``B:<hex digit count>:<hex>:<DN>`` into (blob, DN).

    The count is the number of hex digits and must match; hex may be either case; the DN is the
    rest of the value (it may itself contain ':'). Raises TokenError(check="dn-binary"), or
    check="size-limit" when the declared blob exceeds ``max_blob_size`` (checked before any hex
    is decoded).
    """
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TokenError("dn-binary", f"value is not UTF-8: {_shown(value)}") from exc
    if not isinstance(value, str):
        raise TokenError("dn-binary", f"value must be str or bytes, not {type(value).__name__}")
    if not value.startswith("B:"):
        raise TokenError("dn-binary", f"value does not start with 'B:': {_shown(value)}")
    count_end = value.find(":", 2)
    count_text = value[2:count_end] if count_end != -1 else ""
    if not (0 < len(count_text) <= _MAX_COUNT_DIGITS and count_text.isascii()) or not (
        count_text.isdigit()
    ):
        raise TokenError("dn-binary", f"bad hex digit count in {_shown(value)}")
    count = int(count_text)
    if max_blob_size is not None and count > 2 * max_blob_size:
        raise TokenError(
            "size-limit", f"value declares {count // 2} bytes, over the limit of {max_blob_size}"
        )
    hex_start = count_end + 1
    hex_end = hex_start + count
    if value[hex_end : hex_end + 1] != ":":
        raise TokenError(
            "dn-binary", f"declared {count} hex digits do not end at a ':' in {_shown(value)}"
        )
    if count % 2:
        raise TokenError("dn-binary", f"odd hex digit count {count} in {_shown(value)}")
    hex_text = value[hex_start:hex_end]
    try:
        blob = bytes.fromhex(hex_text)
    except ValueError:
        blob = b""
    if len(blob) * 2 != count:  # also catches the whitespace that bytes.fromhex skips
        raise TokenError("dn-binary", f"binary part is not {count} hex digits: {_shown(hex_text)}")
    dn = value[hex_end + 1 :]
    if not dn:
        raise TokenError("dn-binary", f"empty DN in {_shown(value)}")
    return blob, dn


def format_dn_binary(blob: bytes, dn: str) -> str:
    """``B:<hex digit count>:<HEX>:<DN>``, upper-case hex like AD returns it."""
    if not dn:
        raise TokenError("dn-binary", "empty DN")
    return f"B:{len(blob) * 2}:{blob.hex().upper()}:{dn}"
