"""Serialized certificate store elements: Windows' own token, tokens made on Linux, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from credroam.roaming.certelement import (
    CERT_ARCHIVED_PROP_ID,
    CERT_CERT_PROP_ID,
    CERT_FRIENDLY_NAME_PROP_ID,
    CERT_KEY_PROV_INFO_PROP_ID,
    CERT_REQUEST_ORIGINATOR_PROP_ID,
    CERT_SHA1_HASH_PROP_ID,
    CertElement,
    CertElementError,
    build_cert_element,
    certificate_token,
    parse_cert_element,
    parse_certificate_token,
    parse_request_token,
    request_token,
    serialize_cert_element,
    thumbprint,
)
from credroam.tokens import Token, TokenError, TokenFlags, TokenType, decode_token, encode_token
from tests.hypothesis_profiles import examples

FIXTURE_THUMBPRINT = "3B83BFA7037F6A79B3F3D17D229E1BC097F35B51"
MakeDer = Callable[..., bytes]


def record(prop_id: int, value: bytes, encoding: int = 1) -> bytes:
    return struct.pack("<III", prop_id, encoding, len(value)) + value


@pytest.fixture
def windows_token(dsinternals_blobs: dict[str, bytes]) -> Token:
    return decode_token(dsinternals_blobs["RoamedCredential_ParseCertificate"])


def test_parses_the_cng_certificate_windows_wrote(windows_token: Token) -> None:
    element = parse_certificate_token(windows_token)
    assert element.thumbprint == FIXTURE_THUMBPRINT == windows_token.identifier
    assert element.not_valid_after == datetime(2018, 3, 13, 8, 48, 31, tzinfo=UTC)
    assert (
        "CN=Administrator" in x509.load_der_x509_certificate(element.der).subject.rfc4514_string()
    )
    assert not element.archived
    assert element.friendly_name is None
    assert list(element.properties) == [3, 4, 15, 20, 25, 92, 24, 2, 87, 71]  # stored order
    assert element.properties[CERT_SHA1_HASH_PROP_ID].hex().upper() == FIXTURE_THUMBPRINT
    provider_info = element.properties[CERT_KEY_PROV_INFO_PROP_ID].decode("utf-16-le")
    assert "Microsoft Software Key Storage Provider" in provider_info
    originator = element.properties[CERT_REQUEST_ORIGINATOR_PROP_ID].decode("utf-16-le")
    assert originator == "LON-DC1.Adatum.com\0"
    assert serialize_cert_element(element) == windows_token.data


def test_built_element_parses_back(make_certificate_der: MakeDer) -> None:
    der = make_certificate_der(not_valid_after=datetime(2030, 6, 1, tzinfo=UTC))
    element = parse_cert_element(build_cert_element(der, friendly_name="Alice (VPN)"))
    assert element.der == der
    assert element.friendly_name == "Alice (VPN)"
    assert element.properties[CERT_FRIENDLY_NAME_PROP_ID] == "Alice (VPN)\0".encode("utf-16-le")
    assert element.properties[CERT_SHA1_HASH_PROP_ID] == hashlib.sha1(der).digest()
    assert not element.archived
    assert element.not_valid_after == datetime(2030, 6, 1, tzinfo=UTC)


def test_built_element_ends_with_the_certificate_record(make_certificate_der: MakeDer) -> None:
    der = make_certificate_der()
    data = build_cert_element(der, archived=True)
    assert data.endswith(record(CERT_CERT_PROP_ID, der))
    assert record(CERT_ARCHIVED_PROP_ID, b"") in data


def test_certificate_from_linux_becomes_a_native_type_3_token(
    make_certificate_der: MakeDer,
) -> None:
    der = make_certificate_der()
    token = certificate_token(der, 133_500_000_000_000_000)
    assert token.type is TokenType.CERTIFICATE
    assert token.identifier == thumbprint(der) == hashlib.sha1(der).hexdigest().upper()
    assert token.flags == TokenFlags(0)
    decoded = decode_token(encode_token(token))
    assert decoded == token
    assert parse_certificate_token(decoded).der == der


def test_archived_certificate_token_is_the_same_token_with_the_property(
    make_certificate_der: MakeDer,
) -> None:
    der = make_certificate_der()
    live = certificate_token(der, 1)
    archived = certificate_token(der, 2, archived=True)
    assert archived.key == live.key
    assert parse_certificate_token(archived).archived
    properties = parse_cert_element(archived.data).properties
    assert properties[CERT_ARCHIVED_PROP_ID] == b""
    assert {k: v for k, v in properties.items() if k != CERT_ARCHIVED_PROP_ID} == (
        parse_cert_element(live.data).properties
    )


def test_certificate_token_refuses_a_non_certificate_type(make_certificate_der: MakeDer) -> None:
    with pytest.raises(CertElementError):
        certificate_token(make_certificate_der(), 1, token_type=TokenType.CNG_KEY)


def test_request_token_types_are_accepted(make_certificate_der: MakeDer) -> None:
    token = certificate_token(make_certificate_der(), 1, token_type=TokenType.REQUEST)
    assert token.key.startswith("%4\\")


def test_token_named_after_another_certificate_is_refused(make_certificate_der: MakeDer) -> None:
    real, other = make_certificate_der("real"), make_certificate_der("other")
    forged = Token(TokenType.CERTIFICATE, thumbprint(other), 1, 0, build_cert_element(real))
    with pytest.raises(CertElementError, match="not its identifier") as excinfo:
        parse_certificate_token(forged)
    assert excinfo.value.check == "element"
    assert isinstance(excinfo.value, TokenError)


def test_key_token_is_not_parsed_as_a_certificate(dsinternals_blobs: dict[str, bytes]) -> None:
    key = decode_token(dsinternals_blobs["RoamedCredential_ParseCNGPrivateKey"])
    with pytest.raises(CertElementError, match="not a certificate"):
        parse_certificate_token(key)


def test_every_truncation_is_refused(make_certificate_der: MakeDer) -> None:
    data = build_cert_element(make_certificate_der(), friendly_name="x")
    for cut in range(len(data)):
        with pytest.raises(CertElementError):
            parse_cert_element(data[:cut])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda der: record(CERT_CERT_PROP_ID, der) + b"\0", "must be last"),
        (lambda der: record(CERT_CERT_PROP_ID, der) + record(11, b"x\0"), "must be last"),
        (lambda der: record(11, b"a\0") + record(11, b"b\0") + record(32, der), "twice"),
        (lambda der: record(11, b"a\0", encoding=2) + record(32, der), "encoding 2"),
        (lambda der: record(3, b"\0" * 20) + record(32, der), "does not match"),
        (lambda der: record(11, b"abc") + record(32, der), "odd length"),
        (lambda der: record(11, b"\x00\xd8") + record(32, der), "UTF-16"),
        (lambda der: record(32, der[:-1]), "not a DER X.509 certificate"),
        (lambda der: record(32, b"not a certificate"), "not a DER X.509 certificate"),
        (lambda der: record(11, b"a\0"), "no certificate record"),
        (lambda der: b"", "no certificate record"),
        (lambda der: struct.pack("<III", 11, 1, 0xFFFFFFFF) + der, "declares"),
    ],
)
def test_malformed_elements_are_refused(
    make_certificate_der: MakeDer, build: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(CertElementError, match=message):
        parse_cert_element(build(make_certificate_der()))


def test_certificate_cannot_be_passed_as_a_property(make_certificate_der: MakeDer) -> None:
    der = make_certificate_der()
    with pytest.raises(CertElementError):
        CertElement(der=der, properties={CERT_CERT_PROP_ID: der})


def test_friendly_name_with_nul_is_refused(make_certificate_der: MakeDer) -> None:
    with pytest.raises(CertElementError, match="NUL"):
        build_cert_element(make_certificate_der(), friendly_name="a\0b")


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_element_errors(data: bytes) -> None:
    with contextlib.suppress(CertElementError):
        parse_cert_element(data)


def test_a_certificate_with_an_invalid_version_is_an_element_error(
    make_certificate_der: MakeDer, with_invalid_x509_version: Callable[[bytes], bytes]
) -> None:
    # cryptography raises x509.InvalidVersion for it, which is not a ValueError: one such value
    # written by a user must fail its element check, not every sync of that user.
    der = with_invalid_x509_version(make_certificate_der())
    with pytest.raises(CertElementError, match="InvalidVersion") as excinfo:
        parse_cert_element(build_element_unchecked(der))
    assert excinfo.value.check == "element"


def build_element_unchecked(der: bytes) -> bytes:
    """An element around ``der`` as Windows would serialize it, without parsing the DER."""
    return record(CERT_SHA1_HASH_PROP_ID, hashlib.sha1(der).digest()) + record(
        CERT_CERT_PROP_ID, der
    )


def mutations(size: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """A few (offset, new byte) replacements inside a buffer of ``size`` bytes."""
    return st.lists(
        st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=4
    )


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None = None) -> bytes:
    buffer = bytearray(data)
    for offset, value in changes:
        buffer[offset] = value
    return bytes(buffer[:cut])


@pytest.fixture(scope="module")
def fuzzed_element(make_certificate_der: MakeDer) -> bytes:
    return build_cert_element(make_certificate_der(), friendly_name="fuzz")


# Mutated certificates may carry a serial number cryptography accepts with a deprecation warning.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=examples(400), deadline=None)
@given(st.data())
def test_mutated_elements_raise_only_element_errors(
    fuzzed_element: bytes, data: st.DataObject
) -> None:
    """Fuzz: bytes changed anywhere in a real element, the certificate's DER included."""
    element = fuzzed_element
    changes = data.draw(mutations(len(element)))
    cut = data.draw(st.none() | st.integers(0, len(element)))
    with contextlib.suppress(CertElementError):
        parsed = parse_cert_element(mutate(element, changes, cut))
        assert parsed.not_valid_after.tzinfo is UTC


# --- request tokens ----------------------------------------------------------------------------


def a_csr_der(common_name: str = "alice") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def test_a_request_token_holds_the_der_csr_and_survives_the_wire():
    der = a_csr_der()
    token = request_token(der, 5, token_type=TokenType.CNG_REQUEST)
    assert token.key == f"%8\\{thumbprint(der)}"
    assert parse_request_token(decode_token(encode_token(token))) == der


def test_a_request_token_named_after_another_request_is_refused():
    token = request_token(a_csr_der("alice"), 5)
    other = Token(TokenType.REQUEST, thumbprint(a_csr_der("bob")), 5, TokenFlags(0), token.data)
    with pytest.raises(CertElementError, match="not its identifier"):
        parse_request_token(other)


def test_a_request_token_holding_neither_a_csr_nor_an_element_is_malformed():
    junk = Token(TokenType.REQUEST, "A" * 40, 5, TokenFlags(0), b"\x30\x03\x02\x01\x00")
    with pytest.raises(CertElementError, match="not a DER certificate request"):
        parse_request_token(junk)
    with pytest.raises(CertElementError, match="does not hold a request"):
        request_token(a_csr_der(), 5, token_type=TokenType.CERTIFICATE)
