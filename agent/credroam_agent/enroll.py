"""Outstanding enrollment requests (seed step 6), handed to a site's enrollment command.

Contract of the command (certmonger's helpers or any site tool can sit behind it): the request
in PEM on stdin; the issued certificate in PEM on stdout and exit 0; any other exit means "not
now" (the request stays and is offered again at the next sync). An issued certificate must
carry the request's public key. It lands in MY with the request's private key; the request and
its key leave REQUEST, so the next sync uploads the certificate and tombstones the request.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from credroam.roaming.certelement import thumbprint
from credroam.roaming.model import Item, ItemKind, StoreName
from credroam.roaming.store import CertificateStore
from credroam.tokens import TokenType

__all__ = ["EnrollmentResult", "enroll_outstanding", "outstanding_requests"]

_MAX_OUTPUT = 1024 * 1024


@dataclass
class EnrollmentResult:
    issued: list[tuple[str, str]] = field(default_factory=list)  # (request key, cert key)
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (request key, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (request key, why)

    @property
    def changed(self) -> bool:
        return bool(self.issued)


def outstanding_requests(items: dict[str, Item]) -> list[Item]:
    """Live, unarchived requests of the REQUEST store, in key order."""
    return sorted(
        (i for i in items.values() if i.kind is ItemKind.REQUEST and not i.archived),
        key=lambda i: i.key,
    )


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_certificate(output: bytes, request: x509.CertificateSigningRequest) -> bytes:
    """The DER of the first PEM certificate in ``output``; ValueError when it does not fit."""
    if len(output) > _MAX_OUTPUT:
        raise ValueError(f"enrollment command printed {len(output)} bytes")
    try:
        certificate = x509.load_pem_x509_certificate(output)
    except ValueError as exc:
        raise ValueError(f"enrollment command printed no PEM certificate: {exc}") from None
    if _spki(certificate.public_key()) != _spki(request.public_key()):
        raise ValueError("the issued certificate does not carry the request's public key")
    return certificate.public_bytes(serialization.Encoding.DER)


def _submit(
    command: Sequence[str], request_der: bytes, timeout: int
) -> tuple[bytes | None, str, x509.CertificateSigningRequest]:
    """(issued certificate DER or None, why not, parsed request)."""
    request = x509.load_der_x509_csr(request_der)
    pem = request.public_bytes(serialization.Encoding.PEM)
    try:
        done = subprocess.run(
            list(command), input=pem, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"enrollment command timed out after {timeout} s", request
    except OSError as exc:
        return None, f"enrollment command {command[0]} cannot run: {exc.strerror}", request
    if done.returncode != 0:
        return None, f"enrollment command exited {done.returncode} (not now)", request
    return _issued_certificate(done.stdout, request), "", request


def _request_key(items: dict[str, Item], request: Item) -> Item | None:
    return next(
        (i for i in items.values() if i.kind is ItemKind.KEY and i.owner == request.key), None
    )


def _install(
    store: CertificateStore,
    items: dict[str, Item],
    request: Item,
    certificate_der: bytes,
    now: int,
) -> str:
    """Write the certificate (and the request's key beside it) to MY; remove the request."""
    thumb = thumbprint(certificate_der)
    # No expiry here: the store reads it from the certificate when it writes and lists it.
    cert_item = Item(
        key=f"%{TokenType.CERTIFICATE.value}\\{thumb}",
        store=StoreName.MY,
        kind=ItemKind.CERTIFICATE,
        modified=now,
        content_hash=hashlib.sha256(certificate_der).hexdigest(),
        size=len(certificate_der),
    )
    key = _request_key(items, request)
    with store.batch():
        store.write(cert_item, certificate_der)
        if key is not None:
            key_der = store.read(key)
            store.write(
                Item(
                    key=f"%{TokenType.CNG_KEY.value}\\{thumb}",
                    store=StoreName.MY,
                    kind=ItemKind.KEY,
                    modified=now,
                    content_hash=hashlib.sha256(key_der).hexdigest(),
                    size=len(key_der),
                    owner=cert_item.key,
                ),
                key_der,
            )
            store.delete(key)
        store.delete(request)
    return cert_item.key


def enroll_outstanding(
    store: CertificateStore,
    command: Sequence[str],
    clock: Callable[[], int],
    *,
    timeout: int = 120,
) -> EnrollmentResult:
    """Offer each outstanding request to ``command``; install what it issues (under the
    store's lock, so no sync interleaves)."""
    result = EnrollmentResult()
    if not command:
        return result
    with store.lock(0):
        items = store.items()
        for request in outstanding_requests(items):
            try:
                issued, why, _ = _submit(command, store.read(request), timeout)
                if issued is None:
                    result.deferred.append((request.key, why))
                    continue
                cert_key = _install(store, items, request, issued, clock())
            except Exception as exc:  # one request's failure must not stop the others
                result.failed.append((request.key, f"{type(exc).__name__}: {exc}"))
                continue
            result.issued.append((request.key, cert_key))
    return result
