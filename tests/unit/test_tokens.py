"""Native token codec: the DSInternals tokens Windows wrote, hostile input, round trips."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credroam.tokens import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    Token,
    TokenError,
    TokenFlags,
    TokenLimits,
    TokenType,
    decode_token,
    encode_token,
    format_dn_binary,
    parse_dn_binary,
    validate_identifier,
)

THUMBPRINT = "3B83BFA7037F6A79B3F3D17D229E1BC097F35B51"
USER_DN = "CN=Alice Example,OU=Staff,DC=corp,DC=example"


def raw_token(
    type_digit: bytes = b"3",
    identifier: bytes = THUMBPRINT.encode(),
    data: bytes = b"payload",
    provider_data: bytes = b"",
    *,
    flags: int = 0,
    last_modified: int = 133_000_000_000_000_000,
    digest: bytes | None = None,
    data_size: int | None = None,
    provider_size: int | None = None,
    marker: tuple[bytes, bytes] = (b"%", b"\\"),
) -> bytes:
    """A token laid out by hand, independent of encode_token, so tests can forge bad ones."""
    if digest is None:
        digest = hashlib.sha1(data).digest() if data else bytes(20)
    header = (
        marker[0]
        + type_digit
        + marker[1]
        + identifier.ljust(93, b"\0")
        + struct.pack(
            "<QHH20sI",
            last_modified,
            flags,
            len(provider_data) if provider_size is None else provider_size,
            digest,
            len(data) if data_size is None else data_size,
        )
    )
    assert len(header) == HEADER_SIZE
    return header + data + provider_data


def check_of(excinfo: pytest.ExceptionInfo[TokenError]) -> str:
    return excinfo.value.check


# --- the public tokens Windows wrote ----------------------------------------------------------

# name: (type, identifier, flags, last_modified, data size, provider-data size, total size)
DSINTERNALS_EXPECTED = {
    "RoamedCredential_ParseCAPIPrivateKey": (
        TokenType.CAPI_RSA_KEY,
        "701577141985b6923998dcca035c007a_f8b7bbef-d227-4ac7-badd-3a238a7f741e",
        TokenFlags(0),
        131212939924404621,
        2081,
        0,
        2213,
    ),
    "RoamedCredential_ParseCNGPrivateKey": (
        TokenType.CNG_KEY,
        "B6AF1EF9D302A7332208091CC8C1EFF836F60620",
        TokenFlags(0),
        132088120192733491,
        2205,
        0,
        2337,
    ),
    "RoamedCredential_ParseCertificate": (
        TokenType.CNG_CERTIFICATE,
        THUMBPRINT,
        TokenFlags(0),
        131338691117781044,
        2206,
        0,
        2338,
    ),
    "RoamedCredential_ParseDPAPIMasterKey": (
        TokenType.DPAPI_MASTER_KEY,
        "7fc19508-7b85-4a7c-9e5d-15f9e00e7ce5",
        TokenFlags(0),
        131338680452821995,
        740,
        0,
        872,
    ),
    "RoamedCredential_ParseUnreadablePrivateKeyX": (
        TokenType.CNG_KEY,
        "F606B9A77244FCD95DB5E541A51D397B5BB1F079",
        TokenFlags.UNREADABLE,
        0,
        0,
        0,
        132,
    ),
}


@pytest.mark.parametrize("name", sorted(DSINTERNALS_EXPECTED))
def test_decodes_every_dsinternals_token(dsinternals_blobs: dict[str, bytes], name: str) -> None:
    blob = dsinternals_blobs[name]
    kind, identifier, flags, last_modified, data_size, provider_size, total = DSINTERNALS_EXPECTED[
        name
    ]
    token = decode_token(blob)
    assert token.type is kind
    assert token.identifier == identifier
    assert token.flags == flags
    assert token.last_modified == last_modified
    assert len(token.data) == data_size
    assert len(token.provider_data) == provider_size
    assert len(blob) == total == token.encoded_size
    assert token.key == f"%{kind.value}\\{identifier}"
    assert encode_token(token) == blob


def test_fixture_set_is_the_five_documented_tokens(dsinternals_blobs: dict[str, bytes]) -> None:
    assert set(dsinternals_blobs) == set(DSINTERNALS_EXPECTED)


def test_unreadable_token_keeps_windows_zero_hash(dsinternals_blobs: dict[str, bytes]) -> None:
    blob = dsinternals_blobs["RoamedCredential_ParseUnreadablePrivateKeyX"]
    assert blob[108:128] == bytes(20)
    assert not decode_token(blob).is_tombstone


@pytest.mark.parametrize("name", sorted(DSINTERNALS_EXPECTED))
def test_dsinternals_tokens_round_trip_through_dn_binary(
    dsinternals_blobs: dict[str, bytes], name: str
) -> None:
    token = decode_token(dsinternals_blobs[name])
    value = format_dn_binary(encode_token(token), USER_DN)
    assert value.startswith(f"B:{2 * token.encoded_size}:")
    assert from_dn_binary(value) == (token, USER_DN)
    prefix, count, hex_digits, dn = value.split(":", 3)
    lower_case = ":".join((prefix, count, hex_digits.lower(), dn))
    assert from_dn_binary(lower_case) == (token, USER_DN)


def from_dn_binary(value: str) -> tuple[Token, str]:
    blob, dn = parse_dn_binary(value)
    return decode_token(blob), dn


# --- identifier safety (CVE-2022-30170) -------------------------------------------------------

CVE_IDENTIFIER = "..\\..\\Windows\\Start Menu\\Programs\\Startup\\x.bat"
HOSTILE_IDENTIFIERS = [
    CVE_IDENTIFIER,
    "../../.config/autostart/x.desktop",
    "C:\\Windows\\x.bat",
    "C:x",
    "..",
    "A" * 39 + "\0",
    "AB\0CD",
    "",
    "\x1b[31mred",
    "x" * 94,
    "é" * 10,
]


@pytest.mark.parametrize("token_type", list(TokenType))
@pytest.mark.parametrize("identifier", HOSTILE_IDENTIFIERS)
def test_hostile_identifiers_are_refused_for_every_type(
    token_type: TokenType, identifier: str
) -> None:
    with pytest.raises(TokenError) as excinfo:
        validate_identifier(token_type, identifier)
    assert check_of(excinfo) == "identifier"


@pytest.mark.parametrize(
    "identifier",
    [b"..\\..\\Windows\\Start Menu\\Programs\\Startup\\x.bat", b"../x", b"a:b", b"AB\x01CD"],
)
def test_decode_refuses_hostile_identifier_in_a_forged_token(identifier: bytes) -> None:
    with pytest.raises(TokenError) as excinfo:
        decode_token(raw_token(b"3", identifier))
    assert check_of(excinfo) == "identifier"


def test_decode_refuses_bytes_after_the_identifier_terminator() -> None:
    # "THUMBPRINT\0../x": a reader that stops at NUL sees a good name; the rest must be padding.
    forged = raw_token(b"3", THUMBPRINT.encode() + b"\0../x")
    with pytest.raises(TokenError) as excinfo:
        decode_token(forged)
    assert check_of(excinfo) == "identifier"


def test_decode_refuses_non_ascii_identifier() -> None:
    with pytest.raises(TokenError) as excinfo:
        decode_token(raw_token(b"5", "caf\u00e9".encode()))
    assert check_of(excinfo) == "identifier"


@pytest.mark.parametrize(
    ("token_type", "identifier"),
    [
        (TokenType.CERTIFICATE, THUMBPRINT),
        (TokenType.REQUEST, THUMBPRINT),
        (TokenType.CNG_CERTIFICATE, THUMBPRINT),
        (TokenType.CNG_REQUEST, THUMBPRINT),
        (TokenType.DPAPI_MASTER_KEY, "7fc19508-7b85-4a7c-9e5d-15f9e00e7ce5"),
        (TokenType.DPAPI_MASTER_KEY, "Preferred"),
        (
            TokenType.CAPI_RSA_KEY,
            "701577141985b6923998dcca035c007a_f8b7bbef-d227-4ac7-badd-3a238a7f741e",
        ),
        (
            TokenType.CAPI_DSA_KEY,
            "701577141985b6923998dcca035c007a_f8b7bbef-d227-4ac7-badd-3a238a7f741e",
        ),
        (TokenType.CNG_KEY, "B6AF1EF9D302A7332208091CC8C1EFF836F60620"),
        (
            TokenType.CNG_KEY,
            "701577141985b6923998dcca035c007a_f8b7bbef-d227-4ac7-badd-3a238a7f741e",
        ),
        (TokenType.UNKNOWN_5, "some-opaque_name.v1"),
        (TokenType.UNKNOWN_6, "{7fc19508-7b85-4a7c-9e5d-15f9e00e7ce5}"),
    ],
)
def test_identifiers_of_the_right_form_pass(token_type: TokenType, identifier: str) -> None:
    assert validate_identifier(token_type, identifier) == identifier


@pytest.mark.parametrize(
    ("token_type", "identifier"),
    [
        (TokenType.CERTIFICATE, THUMBPRINT.lower()),  # Windows names certificates upper-case
        (TokenType.CERTIFICATE, THUMBPRINT[:-1]),
        (TokenType.REQUEST, "Preferred"),
        (TokenType.DPAPI_MASTER_KEY, THUMBPRINT),
        (TokenType.DPAPI_MASTER_KEY, "preferred"),
        (TokenType.CAPI_RSA_KEY, THUMBPRINT),
        (TokenType.CNG_KEY, "te-SWSmartcardLogon-3462dcbf"),
        (TokenType.UNKNOWN_5, "has space"),
        (TokenType.UNKNOWN_6, ".hidden"),
    ],
)
def test_identifiers_of_the_wrong_form_for_their_type_are_refused(
    token_type: TokenType, identifier: str
) -> None:
    with pytest.raises(TokenError, match=f"type {token_type.value}") as excinfo:
        validate_identifier(token_type, identifier)
    assert check_of(excinfo) == "identifier"


def test_unsafe_token_cannot_be_constructed() -> None:
    with pytest.raises(TokenError) as excinfo:
        Token(TokenType.CERTIFICATE, CVE_IDENTIFIER, 0, TokenFlags(0), b"")
    assert check_of(excinfo) == "identifier"


def test_error_message_escapes_control_bytes_and_truncates() -> None:
    hostile = "\x1b]0;owned\x07" + "A" * 500
    with pytest.raises(TokenError) as excinfo:
        validate_identifier(TokenType.UNKNOWN_5, hostile)
    message = str(excinfo.value)
    assert "identifier" in message
    assert "\\x1b" in message
    assert all(ch.isprintable() for ch in message)
    assert len(message) < 300


def test_validate_identifier_refuses_unknown_type_number() -> None:
    with pytest.raises(TokenError) as excinfo:
        validate_identifier(10, THUMBPRINT)
    assert check_of(excinfo) == "type"


# --- structural checks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RoamedCredential_ParseDPAPIMasterKey"])
def test_every_truncation_is_refused_as_length(
    dsinternals_blobs: dict[str, bytes], name: str
) -> None:
    blob = dsinternals_blobs[name]
    for cut in range(len(blob)):
        with pytest.raises(TokenError) as excinfo:
            decode_token(blob[:cut])
        assert check_of(excinfo) == "length", cut


def test_trailing_bytes_are_refused_as_length() -> None:
    with pytest.raises(TokenError, match="trailing") as excinfo:
        decode_token(raw_token() + b"\0")
    assert check_of(excinfo) == "length"


@pytest.mark.parametrize(
    "overrides",
    [{"data_size": 8}, {"data_size": 0xFFFFFFFF}, {"provider_size": 1}, {"provider_size": 0xFFFF}],
)
def test_size_fields_pointing_past_the_buffer_are_refused(overrides: dict[str, int]) -> None:
    with pytest.raises(TokenError, match="truncated") as excinfo:
        decode_token(raw_token(data=b"payload", **overrides))
    assert check_of(excinfo) == "length"


def test_data_that_does_not_match_its_sha1_is_refused() -> None:
    with pytest.raises(TokenError, match="SHA-1") as excinfo:
        decode_token(raw_token(data=b"payload", digest=hashlib.sha1(b"other").digest()))
    assert check_of(excinfo) == "sha1"


def test_flipped_data_byte_of_a_real_token_is_refused(dsinternals_blobs: dict[str, bytes]) -> None:
    blob = bytearray(dsinternals_blobs["RoamedCredential_ParseCAPIPrivateKey"])
    blob[500] ^= 0x40
    with pytest.raises(TokenError) as excinfo:
        decode_token(bytes(blob))
    assert check_of(excinfo) == "sha1"


@pytest.mark.parametrize("digest", [bytes(20), hashlib.sha1(b"").digest()])
def test_an_empty_token_may_carry_zeros_or_the_sha1_of_nothing(digest: bytes) -> None:
    # Windows writes zeros; other writers compute SHA-1 of the empty data. Both are honest.
    token = decode_token(raw_token(data=b"", digest=digest))
    assert token.data == b""
    assert encode_token(token)[108:128] == bytes(20)  # written back as Windows writes it


@pytest.mark.parametrize(("data", "digest"), [(b"", b"\x01" * 20), (b"x", bytes(20))])
def test_zero_hash_means_no_data_and_nothing_else(data: bytes, digest: bytes) -> None:
    with pytest.raises(TokenError) as excinfo:
        decode_token(raw_token(data=data, digest=digest))
    assert check_of(excinfo) == "sha1"


@pytest.mark.parametrize("marker", [(b"#", b"\\"), (b"%", b"/"), (b"\0", b"\0")])
def test_bad_marker_bytes_are_refused(marker: tuple[bytes, bytes]) -> None:
    with pytest.raises(TokenError) as excinfo:
        decode_token(raw_token(marker=marker))
    assert check_of(excinfo) == "marker"


@pytest.mark.parametrize("type_byte", [b"A", b"/", b":", b"\xff"])
def test_non_digit_type_is_refused(type_byte: bytes) -> None:
    with pytest.raises(TokenError) as excinfo:
        decode_token(raw_token(type_byte))
    assert check_of(excinfo) == "type"


def test_unknown_types_decode_as_opaque() -> None:
    token = decode_token(raw_token(b"6", b"opaque.item", data=b"\x00\x01"))
    assert token.type is TokenType.UNKNOWN_6
    assert token.data == b"\x00\x01"


def test_unknown_flag_bits_survive_a_round_trip() -> None:
    blob = raw_token(flags=0x8011)
    token = decode_token(blob)
    assert token.is_tombstone
    assert token.flags & TokenFlags.KNOWN_TYPE
    assert encode_token(token) == blob


def test_provider_data_round_trips() -> None:
    blob = raw_token(data=b"element", provider_data=b"\x01\x02\x03\x04")
    token = decode_token(blob)
    assert token.provider_data == b"\x01\x02\x03\x04"
    assert encode_token(token) == blob


def test_size_limit_is_enforced_on_decode_and_encode(dsinternals_blobs: dict[str, bytes]) -> None:
    blob = dsinternals_blobs["RoamedCredential_ParseCAPIPrivateKey"]
    small = TokenLimits(max_token_size=len(blob) - 1)
    with pytest.raises(TokenError, match=str(len(blob))) as excinfo:
        decode_token(blob, small)
    assert check_of(excinfo) == "size-limit"
    token = decode_token(blob, TokenLimits(max_token_size=len(blob)))
    with pytest.raises(TokenError) as excinfo:
        encode_token(token, small)
    assert check_of(excinfo) == "size-limit"


def test_default_limits_follow_the_windows_policy_defaults() -> None:
    assert TokenLimits(max_token_size=65535, max_tokens=2000) == DEFAULT_LIMITS


@pytest.mark.parametrize("kwargs", [{"max_token_size": 131}, {"max_tokens": 0}])
def test_limits_below_what_any_token_needs_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TokenLimits(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flags": 0x10000},
        {"flags": -1},
        {"last_modified": -1},
        {"last_modified": 2**64},
        {"provider_data": b"x" * 65536},
        {"data": "text"},
    ],
)
def test_token_fields_out_of_range_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "type": TokenType.CERTIFICATE,
        "identifier": THUMBPRINT,
        "last_modified": 0,
        "flags": 0,
        "data": b"",
    }
    fields.update(kwargs)
    with pytest.raises(TokenError) as excinfo:
        Token(**fields)  # type: ignore[arg-type]
    assert check_of(excinfo) == "field"


def test_token_properties() -> None:
    token = Token(3, THUMBPRINT, 5, 1, b"abc")
    assert token.type is TokenType.CERTIFICATE
    assert token.flags is TokenFlags.TOMBSTONE
    assert token.is_tombstone
    assert token.key == "%3\\" + THUMBPRINT


# --- DN-Binary --------------------------------------------------------------------------------


def test_dn_binary_format_is_upper_case_with_digit_count() -> None:
    assert format_dn_binary(b"\x0a\xbc", USER_DN) == f"B:4:0ABC:{USER_DN}"


def test_dn_binary_accepts_lower_case_and_keeps_colons_in_the_dn() -> None:
    assert parse_dn_binary("B:4:0abc:CN=a:b,DC=x") == (b"\x0a\xbc", "CN=a:b,DC=x")
    assert parse_dn_binary(b"B:0::CN=x") == (b"", "CN=x")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "X:4:0ABC:CN=x",
        "B:6:0ABC:CN=x",  # count larger than the hex
        "B:2:0ABC:CN=x",  # count smaller than the hex
        "B:3:0AB:CN=x",  # odd count
        "B:4:0AXC:CN=x",
        "B:4:0A C:CN=x",  # bytes.fromhex would skip the space
        "B:4:0ABC:",
        "B:4:0ABC",
        "B::0ABC:CN=x",
        "B:-4:0ABC:CN=x",
        "B:\u00b2:0A:CN=x",  # a Unicode digit
        "B:99999999999:00:CN=x",
        b"B:2:0A:CN=\xff",
    ],
)
def test_malformed_dn_binary_is_refused(value: str | bytes) -> None:
    with pytest.raises(TokenError) as excinfo:
        parse_dn_binary(value)
    assert check_of(excinfo) == "dn-binary"


def test_dn_binary_size_limit_is_checked_before_decoding_hex() -> None:
    value = f"B:{2 * 70000}:" + "00" * 70000 + ":CN=x"
    with pytest.raises(TokenError) as excinfo:
        parse_dn_binary(value, max_blob_size=65535)
    assert check_of(excinfo) == "size-limit"


# --- properties -------------------------------------------------------------------------------

_HEX_UPPER = "0123456789ABCDEF"
_HEX_LOWER = "0123456789abcdef"
_guids = st.builds(
    lambda parts: "-".join(parts),
    st.tuples(*(st.text(_HEX_LOWER, min_size=n, max_size=n) for n in (8, 4, 4, 4, 12))),
)
_identities = st.one_of(
    st.tuples(
        st.sampled_from([3, 4, 7, 8, 9]).map(TokenType),
        st.text(_HEX_UPPER, min_size=40, max_size=40),
    ),
    st.tuples(st.just(TokenType.DPAPI_MASTER_KEY), st.one_of(_guids, st.just("Preferred"))),
    st.tuples(
        st.sampled_from([TokenType.CAPI_RSA_KEY, TokenType.CAPI_DSA_KEY]),
        st.builds(lambda h, g: f"{h}_{g}", st.text(_HEX_LOWER, min_size=32, max_size=32), _guids),
    ),
)
tokens = st.builds(
    lambda identity, last_modified, flags, data, provider: Token(
        identity[0], identity[1], last_modified, flags, data, provider
    ),
    _identities,
    st.integers(0, 2**64 - 1),
    st.integers(0, 0xFFFF),
    st.binary(max_size=600),
    st.binary(max_size=40),
)


@given(tokens)
def test_encode_decode_round_trip(token: Token) -> None:
    blob = encode_token(token)
    assert decode_token(blob) == token
    assert encode_token(decode_token(blob)) == blob
    assert from_dn_binary(format_dn_binary(blob, USER_DN)) == (token, USER_DN)


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_token_error(blob: bytes) -> None:
    with contextlib.suppress(TokenError):
        decode_token(blob)


@given(tokens, st.data())
def test_mutated_tokens_decode_exactly_or_raise_token_error(
    token: Token, data: st.DataObject
) -> None:
    blob = bytearray(encode_token(token))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    try:
        mutated = decode_token(bytes(blob))
    except TokenError:
        return
    assert encode_token(mutated) == bytes(blob)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_dn_binary_raises_only_token_error(value: str | bytes) -> None:
    with contextlib.suppress(TokenError):
        parse_dn_binary(value)
