"""Find plaintext private keys in directory values (there must be none).

credroam never writes a private key in the clear (keys roam sealed, see ``roaming.envelope``),
but anything with write access to a user's object could: a misbehaving tool, a script that
"backs up" a key into ``description``, a token whose data is a bare PKCS#8 key. Every value of
the user's object is scanned as it is, and also after decoding the text encodings a key hides
behind in LDAP (hex runs, which include DN-Binary values and the tokens inside them, and base64
runs), one level deep inside each other.

A hit is confirmed, not guessed: PEM armour naming an unencrypted private key, or DER that
``cryptography`` loads as a private key without a password (PKCS#8, PKCS#1 RSA, SEC1 EC).
Encrypted forms (``ENCRYPTED PRIVATE KEY``, PKCS#8 EncryptedPrivateKeyInfo, credroam's sealed
keys, DPAPI blobs) are not plaintext and are not reported.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_der_private_key

__all__ = ["KeyHit", "scan_values"]

# Unencrypted PEM private keys; "ENCRYPTED PRIVATE KEY" does not match (no "ENCRYPTED " here),
# and an RSA/EC key with a Proc-Type: ENCRYPTED header is excluded below.
_PEM = re.compile(rb"-----BEGIN ((?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY)-----(.{0,80})", re.DOTALL)
# SEQUENCE (short or long length) then INTEGER version 0 or 1: how PKCS#8, PKCS#1 and SEC1 begin.
_DER_START = re.compile(rb"\x30(?:[\x00-\x7f]|\x81.|\x82..|\x83...)\x02\x01[\x00\x01]", re.DOTALL)
_HEX_RUN = re.compile(rb"(?:[0-9A-Fa-f]{2}){32,}")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{64,}={0,2}")
_MAX_CANDIDATES = 256  # DER starts tried per buffer: random binary matches rarely, bounded anyway
_DER_FORMS = {0x30: "PKCS#8", 0x02: "PKCS#1", 0x04: "SEC1"}


@dataclass(frozen=True)
class KeyHit:
    """One plaintext private key: in which attribute and value, in what form, how encoded."""

    attribute: str
    index: int  # position of the value among the attribute's values
    form: str  # e.g. "PKCS#8 DER", "PEM RSA PRIVATE KEY"
    encoding: str  # "raw", "hex", "base64", "hex>base64", ...

    def describe(self) -> str:
        how = "" if self.encoding == "raw" else f", {self.encoding}-encoded"
        return f"{self.form} private key in {self.attribute} value {self.index}{how}"


def _der_length(buffer: bytes, offset: int) -> int:
    """Total length of the DER element starting at ``offset`` (its header included)."""
    first = buffer[offset + 1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    return 2 + count + int.from_bytes(buffer[offset + 2 : offset + 2 + count], "big")


def _der_keys(buffer: bytes) -> Iterator[str]:
    found_end = 0  # a key inside a key found (PKCS#1 inside PKCS#8) is the same key
    for number, match in enumerate(_DER_START.finditer(buffer)):
        if number >= _MAX_CANDIDATES:
            return
        start = match.start()
        length = _der_length(buffer, start)
        if start < found_end or start + length > len(buffer):
            continue
        try:
            load_der_private_key(buffer[start : start + length], password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        found_end = start + length
        after_version = buffer[match.end() : match.end() + 1]
        yield f"{_DER_FORMS.get(after_version[0] if after_version else 0, 'DER')} DER"


def _pem_keys(buffer: bytes) -> Iterator[str]:
    for match in _PEM.finditer(buffer):
        if b"ENCRYPTED" in match.group(2):  # Proc-Type: 4,ENCRYPTED (legacy encrypted PEM)
            continue
        yield f"PEM {match.group(1).decode()}"


def _decoded(buffer: bytes) -> Iterator[tuple[str, bytes]]:
    """The byte strings hidden in hex and base64 runs of ``buffer``."""
    for match in _HEX_RUN.finditer(buffer):
        yield "hex", binascii.unhexlify(match.group())
    for match in _BASE64_RUN.finditer(buffer):
        try:
            yield "base64", base64.b64decode(match.group() + b"==", validate=False)
        except binascii.Error:
            continue


def _forms(buffer: bytes, depth: int = 2) -> Iterator[tuple[str, str]]:
    """(form, encoding) of every key in ``buffer`` and in what it decodes to, ``depth`` deep."""
    for form in (*_pem_keys(buffer), *_der_keys(buffer)):
        yield form, "raw"
    if depth == 0:
        return
    for encoding, inner in _decoded(buffer):
        for form, inner_encoding in _forms(inner, depth - 1):
            chain = encoding if inner_encoding == "raw" else f"{encoding}>{inner_encoding}"
            yield form, chain


def scan_values(attributes: dict[str, Iterable[bytes]]) -> list[KeyHit]:
    """Every plaintext private key in the values of ``attributes`` (name -> raw values)."""
    hits = []
    for attribute, values in sorted(attributes.items()):
        for index, value in enumerate(values):
            seen = set()
            for form, encoding in _forms(bytes(value)):
                if (form, encoding) not in seen:
                    seen.add((form, encoding))
                    hits.append(KeyHit(attribute, index, form, encoding))
    return hits
