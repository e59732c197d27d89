"""Reproducers of what fuzz/fuzz_certelement.py (and reading its findings) turned up.

Each test is the smallest input showing one defect: cryptography's InvalidVersion and a
certificate expiring in year 0 (a bare ValueError) escaped the element's checks until
credroam.cryptocompat; an expiry before 1601 (no FILETIME holds it) escaped the sync as a
TimestampError until the element converted its expiry itself.
"""

from __future__ import annotations

import struct
import uuid

import pytest

from credroam.roaming.certelement import (
    CERT_CERT_PROP_ID,
    CertElementError,
    certificate_token,
    parse_cert_element,
    thumbprint,
)
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, RoamingRecord, StoredToken
from credroam.roaming.sync import map_record
from credroam.tokens import Token, TokenType, encode_token
from tests.hostile_certificates import (
    certificate_der,
    expired_before_1601,
    expiring_in_year,
    with_unknown_version,
)

WHEN = 133_500_000_000_000_000


def _element(der: bytes) -> bytes:
    """The element holding only the certificate record (CertElement would refuse to build it)."""
    return struct.pack("<III", CERT_CERT_PROP_ID, 1, len(der)) + der


def test_a_certificate_of_an_unknown_x509_version_is_a_cert_element_error() -> None:
    with pytest.raises(CertElementError):
        parse_cert_element(_element(with_unknown_version(certificate_der())))


def test_a_certificate_expiring_in_year_0_is_a_cert_element_error() -> None:
    with pytest.raises(CertElementError):
        parse_cert_element(_element(expiring_in_year(b"0000")))


def test_a_certificate_token_expiring_before_1601_is_rejected_and_the_rest_is_mapped() -> None:
    before_1601 = expired_before_1601()
    # Built by hand: the project's own builder refuses this certificate now.
    hostile = Token(TokenType.CERTIFICATE, thumbprint(before_1601), WHEN, 0, _element(before_1601))
    good = certificate_token(certificate_der(), WHEN)
    record = RoamingRecord(
        dn="CN=alice,CN=Users,DC=lab,DC=example",
        object_guid=uuid.UUID(int=1),
        object_sid=None,
        tokens=tuple(
            StoredToken(ACCOUNT_CREDENTIALS, token, encode_token(token))
            for token in (hostile, good)
        ),
        blobs=(),
        rejected=(),
        timestamp=None,
        timestamp_raw=None,
        credroam_schema=False,
    )
    side = map_record(record, roaming_key=None)
    assert set(side.items) == {good.key}
    assert [(r.attribute, r.raw) for r in side.rejected] == [
        (ACCOUNT_CREDENTIALS, encode_token(hostile))
    ]
