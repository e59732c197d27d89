"""The one place the core parses untrusted DER with ``cryptography``, on every supported version.

The core runs on Debian 12's python3-cryptography 38.0.4 (the agent's hosts) and on the pinned
venv's current release. What differs, and is handled here only:

- cryptography 38 has no ``Certificate.not_valid_after_utc`` (it returns a naive UTC datetime
  from ``not_valid_after``, which later releases deprecate);
- cryptography 38 has no ``unsafe_skip_rsa_key_validation`` (it always validates RSA keys,
  which is slower but refuses nothing more that matters, see ``load_der_private_key``);
- the exceptions its parsers raise for bad input are not all ``ValueError``: an invalid X.509
  version raises ``x509.InvalidVersion`` (an ``Exception``), an unknown algorithm
  ``UnsupportedAlgorithm``, and the set differs between releases.

Every function here takes bytes that may come from the directory or a hand-edited file and
returns the parsed object or raises :class:`UnparsableInput` (a ``ValueError``), whatever
``cryptography`` raised, so callers turn one exception type into their own typed error.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:  # the name differs between releases (PRIVATE_KEY_TYPES in 38)
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "UnparsableInput",
    "load_der_certificate",
    "load_der_csr",
    "load_der_private_key",
    "not_valid_after",
]

_T = TypeVar("_T")
_SKIPS_RSA_CHECK = "unsafe_skip_rsa_key_validation" in (
    inspect.signature(serialization.load_der_private_key).parameters
)


class UnparsableInput(ValueError):
    """``cryptography`` refused the bytes; the message says what was parsed and why."""


def _parsed(what: str, data: bytes, parse: Callable[[], _T]) -> _T:
    try:
        return parse()
    except Exception as exc:  # any refusal, whatever its type in this cryptography release
        raise UnparsableInput(
            f"not a DER {what} ({len(data)} bytes): {type(exc).__name__}: {exc}"
        ) from None


def load_der_certificate(der: bytes) -> x509.Certificate:
    """An X.509 certificate, with its expiry readable (see :func:`not_valid_after`)."""

    def parse() -> x509.Certificate:
        certificate = x509.load_der_x509_certificate(der)
        not_valid_after(certificate)  # parsed lazily by some releases: fail here, not later
        return certificate

    return _parsed("X.509 certificate", der, parse)


def load_der_csr(der: bytes) -> x509.CertificateSigningRequest:
    return _parsed("certificate request", der, lambda: x509.load_der_x509_csr(der))


def load_der_private_key(der: bytes) -> PrivateKeyTypes:
    """An unencrypted PKCS#8 (or traditional) DER private key.

    Where the release allows it, RSA keys are loaded without cryptography's own validation
    (``unsafe_skip_rsa_key_validation``): it proves p and q prime, ~80 ms per RSA-2048 key. The
    file store checks the numbers itself and never computes with a key (its ``_check_private_key``
    says why that is safe). cryptography 38 always validates, which costs time, not safety.
    """
    if _SKIPS_RSA_CHECK:
        return _parsed(
            "private key",
            der,
            lambda: serialization.load_der_private_key(
                der, password=None, unsafe_skip_rsa_key_validation=True
            ),
        )
    return _parsed(
        "private key", der, lambda: serialization.load_der_private_key(der, password=None)
    )


def not_valid_after(certificate: x509.Certificate) -> datetime.datetime:
    """The certificate's expiry as an aware UTC datetime, on every cryptography release."""
    if hasattr(certificate, "not_valid_after_utc"):
        return certificate.not_valid_after_utc
    # cryptography < 42: a naive datetime that is UTC by definition.
    return certificate.not_valid_after.replace(tzinfo=datetime.UTC)
