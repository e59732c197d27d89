"""The serialized certificate store element: the data of certificate and request tokens.

This is what ``CertSerializeCertificateStoreElement`` writes and what Windows keeps in
``SystemCertificates\\My\\Certificates\\<thumbprint>``: a run of records, little-endian::

    property id (u32) | 1 (u32, the encoding type) | length (u32) | value (length bytes)

with the DER certificate last, as the record of CERT_CERT_PROP_ID (32). Pending requests
(token types 4 and 8, store REQUEST) are kept by Windows in the same element: the certificate
is then the self-signed "dummy" certificate that carries the request key, and the request
information (request id, CA names) sits in CERT_ENROLLMENT_PROP_ID (26) (Microsoft's
ICertPropertyEnrollment and xenroll's RequestStoreName pages; DSInternals writes a roamed
request's data to ``SystemCertificates\\Request\\Certificates\\<id>``, the same element file
as ``My``). Whether, and in which property, Windows keeps the PKCS#10 itself is not documented.

Request tokens credroam writes hold the DER PKCS#10 itself, named by its SHA-1 (what the file
store keeps as ``REQUEST/<ID>.csr.pem``): a dummy certificate would need the request's private
key to sign it, which a sync never opens, and Windows' element is not known to carry the
PKCS#10 that Linux enrollment needs. So ``parse_request_token`` takes a DER CSR whose SHA-1 is the
identifier; a Windows dummy-certificate element is refused with its own reason (sync then
holds the key, R34, rather than take the request for deleted); anything else is malformed.
The two cannot be mistaken for each other: a DER CSR starts with a SEQUENCE tag, which as an
element's first record would declare an encoding type other than 1.

Tokens come from the directory, so parsing is strict: every length is checked against the
buffer, property ids are unique, the certificate record comes exactly once and last, the DER must
load as an X.509 certificate, and a stored SHA-1 hash property must match the certificate.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..cryptocompat import load_der_certificate, load_der_csr, not_valid_after
from ..timestamps import TimestampError, to_filetime
from ..tokens import Token, TokenError, TokenFlags, TokenType

__all__ = [
    "CERTIFICATE_TOKEN_TYPES",
    "CERT_ARCHIVED_PROP_ID",
    "CERT_CERT_PROP_ID",
    "CERT_ENROLLMENT_PROP_ID",
    "CERT_FRIENDLY_NAME_PROP_ID",
    "CERT_KEY_PROV_INFO_PROP_ID",
    "CERT_REQUEST_ORIGINATOR_PROP_ID",
    "CERT_SHA1_HASH_PROP_ID",
    "REQUEST_TOKEN_TYPES",
    "CertElement",
    "CertElementError",
    "build_cert_element",
    "certificate_token",
    "parse_cert_element",
    "parse_certificate_token",
    "parse_request_token",
    "request_token",
    "serialize_cert_element",
    "thumbprint",
]

CERT_KEY_PROV_INFO_PROP_ID = 2
CERT_SHA1_HASH_PROP_ID = 3
CERT_FRIENDLY_NAME_PROP_ID = 11
CERT_ARCHIVED_PROP_ID = 19
CERT_ENROLLMENT_PROP_ID = 26
CERT_CERT_PROP_ID = 32
CERT_REQUEST_ORIGINATOR_PROP_ID = 71

CERTIFICATE_TOKEN_TYPES = frozenset(
    {TokenType.CERTIFICATE, TokenType.REQUEST, TokenType.CNG_CERTIFICATE, TokenType.CNG_REQUEST}
)
REQUEST_TOKEN_TYPES = frozenset({TokenType.REQUEST, TokenType.CNG_REQUEST})

_RECORD_HEADER = struct.Struct("<III")
_ENCODING_TYPE = 1  # X509_ASN_ENCODING; the middle field of every record


class CertElementError(TokenError):
    """A certificate store element is malformed (check="element")."""

    def __init__(self, message: str) -> None:
        super().__init__("element", message)


@dataclass(frozen=True)
class CertElement:
    """A parsed store element.

    ``properties`` holds every record except the certificate, in stored order, so
    ``serialize_cert_element(parse_cert_element(b)) == b``.
    """

    der: bytes
    properties: Mapping[int, bytes] = field(default_factory=dict)
    not_valid_after: datetime = field(init=False)  # aware UTC, read from the certificate
    expires: int = field(init=False)  # the same as a FILETIME, the unit of every item time

    def __post_init__(self) -> None:
        if CERT_CERT_PROP_ID in self.properties:
            raise CertElementError("the certificate goes in 'der', not in 'properties'")
        try:
            certificate = load_der_certificate(self.der)
        except ValueError as exc:  # cryptocompat turns every refusal into ValueError
            raise CertElementError(str(exc)) from None
        expiry = not_valid_after(certificate)
        try:
            expires = to_filetime(expiry)
        except TimestampError as exc:  # X.509 allows years a FILETIME cannot hold (before 1601)
            raise CertElementError(f"the certificate's expiry: {exc}") from None
        object.__setattr__(self, "not_valid_after", expiry)
        object.__setattr__(self, "expires", expires)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.der)

    @property
    def archived(self) -> bool:
        return CERT_ARCHIVED_PROP_ID in self.properties

    @property
    def friendly_name(self) -> str | None:
        raw = self.properties.get(CERT_FRIENDLY_NAME_PROP_ID)
        return None if raw is None else _decode_friendly_name(raw)


def thumbprint(der: bytes) -> str:
    """The certificate's SHA-1 thumbprint in upper-case hex: its name in Windows stores."""
    return hashlib.sha1(der).hexdigest().upper()


def _decode_friendly_name(raw: bytes) -> str:
    # CERT_FRIENDLY_NAME_PROP_ID is a NUL-terminated UTF-16LE string.
    if len(raw) % 2:
        raise CertElementError(f"friendly name of odd length {len(raw)}")
    try:
        text = raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise CertElementError(f"friendly name is not UTF-16LE: {exc}") from None
    return text[:-1] if text.endswith("\0") else text


def _encode_friendly_name(name: str) -> bytes:
    if "\0" in name:
        raise CertElementError("friendly name contains NUL")
    return (name + "\0").encode("utf-16-le")


def parse_cert_element(data: bytes) -> CertElement:
    """Parse a serialized store element; raises CertElementError on any defect."""
    view = memoryview(data)
    size = len(view)
    properties: dict[int, bytes] = {}
    offset = 0
    while offset < size:
        if size - offset < _RECORD_HEADER.size:
            raise CertElementError(f"record header at offset {offset} is truncated")
        prop_id, encoding, length = _RECORD_HEADER.unpack_from(view, offset)
        value_start = offset + _RECORD_HEADER.size
        value_end = value_start + length
        if value_end > size:
            raise CertElementError(
                f"property {prop_id} at offset {offset} declares {length} bytes, "
                f"only {size - value_start} remain"
            )
        if encoding != _ENCODING_TYPE:
            raise CertElementError(
                f"property {prop_id} at offset {offset} has encoding {encoding}, expected 1"
            )
        value = bytes(view[value_start:value_end])
        if prop_id == CERT_CERT_PROP_ID:
            if value_end != size:
                raise CertElementError(
                    f"{size - value_end} bytes follow the certificate record (it must be last)"
                )
            return _checked_element(value, properties)
        if prop_id in properties:
            raise CertElementError(f"property {prop_id} appears twice")
        properties[prop_id] = value
        offset = value_end
    raise CertElementError("no certificate record (property 32)")


def _checked_element(der: bytes, properties: dict[int, bytes]) -> CertElement:
    element = CertElement(der=der, properties=properties)
    stored_hash = properties.get(CERT_SHA1_HASH_PROP_ID)
    if stored_hash is not None and stored_hash != hashlib.sha1(der).digest():
        raise CertElementError(
            f"SHA-1 hash property {stored_hash.hex()[:40]} does not match the certificate "
            f"{element.thumbprint}"
        )
    if CERT_FRIENDLY_NAME_PROP_ID in properties:
        _decode_friendly_name(properties[CERT_FRIENDLY_NAME_PROP_ID])
    return element


def serialize_cert_element(element: CertElement) -> bytes:
    """Records in ``properties`` order, then the certificate: the inverse of parsing."""
    parts: list[bytes] = []
    for prop_id, value in (*element.properties.items(), (CERT_CERT_PROP_ID, element.der)):
        parts.append(_RECORD_HEADER.pack(prop_id, _ENCODING_TYPE, len(value)))
        parts.append(value)
    return b"".join(parts)


def build_cert_element(
    der_cert: bytes, *, archived: bool = False, friendly_name: str | None = None
) -> bytes:
    """A new element for a certificate: SHA-1 hash, friendly name, archived flag, certificate."""
    properties: dict[int, bytes] = {CERT_SHA1_HASH_PROP_ID: hashlib.sha1(der_cert).digest()}
    if friendly_name is not None:
        properties[CERT_FRIENDLY_NAME_PROP_ID] = _encode_friendly_name(friendly_name)
    if archived:
        properties[CERT_ARCHIVED_PROP_ID] = b""
    return serialize_cert_element(CertElement(der=bytes(der_cert), properties=properties))


def certificate_token(
    der: bytes,
    last_modified: int,
    *,
    archived: bool = False,
    flags: TokenFlags | int = 0,
    token_type: TokenType = TokenType.CERTIFICATE,
    friendly_name: str | None = None,
) -> Token:
    """A native certificate token (type 3 by default) whose identifier is the thumbprint.

    A certificate roamed from Linux this way is indistinguishable from one Windows wrote.
    """
    if token_type not in CERTIFICATE_TOKEN_TYPES:
        raise CertElementError(f"token type {int(token_type)} does not hold a certificate")
    data = build_cert_element(der, archived=archived, friendly_name=friendly_name)
    return Token(
        type=token_type,
        identifier=thumbprint(der),
        last_modified=last_modified,
        flags=flags,
        data=data,
    )


def parse_certificate_token(token: Token) -> CertElement:
    """The element of a certificate or request token, checked against the token's identifier.

    A token named after one thumbprint but carrying another certificate is refused: its name
    decides where it is stored and what it replaces.
    """
    if token.type not in CERTIFICATE_TOKEN_TYPES:
        raise CertElementError(f"token {token.key} is not a certificate or request token")
    element = parse_cert_element(token.data)
    if element.thumbprint != token.identifier:
        raise CertElementError(
            f"token {token.key} holds certificate {element.thumbprint}, not its identifier"
        )
    return element


def request_token(
    der_csr: bytes, last_modified: int, *, token_type: TokenType = TokenType.REQUEST
) -> Token:
    """A request token (type 4, or 8 for CNG) holding the DER PKCS#10, named by its SHA-1."""
    if token_type not in REQUEST_TOKEN_TYPES:
        raise CertElementError(f"token type {int(token_type)} does not hold a request")
    _load_csr(der_csr, f"%{int(token_type)}\\{thumbprint(der_csr)}")
    return Token(token_type, thumbprint(der_csr), last_modified, TokenFlags(0), bytes(der_csr))


def parse_request_token(token: Token) -> bytes:
    """The DER PKCS#10 of a request token credroam wrote, checked against its identifier.

    A pending request as Windows keeps it (a dummy-certificate element) is refused with a reason
    that says so: it carries no PKCS#10 credroam could enroll or write to the file store.
    """
    if token.type not in REQUEST_TOKEN_TYPES:
        raise CertElementError(f"token {token.key} is not a request token")
    try:
        _load_csr(token.data, token.key)
    except CertElementError as not_csr:
        try:
            parse_certificate_token(token)
        except CertElementError:
            raise not_csr from None
        raise CertElementError(
            f"token {token.key} is a pending request as Windows keeps it (a dummy certificate "
            "element, no PKCS#10): credroam cannot enroll it and leaves it alone"
        ) from None
    if thumbprint(token.data) != token.identifier:
        raise CertElementError(
            f"token {token.key} holds request {thumbprint(token.data)}, not its identifier"
        )
    return bytes(token.data)


def _load_csr(der: bytes, key: str) -> None:
    try:
        load_der_csr(der)
    except ValueError as exc:  # cryptocompat turns every refusal into ValueError
        raise CertElementError(f"token {key} is not a DER certificate request: {exc}") from None
