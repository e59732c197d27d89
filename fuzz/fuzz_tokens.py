"""Fuzz the native token codec: decode_token, then encode_token must give the same bytes back.

Valid outcome: a Token (whose identifier passes its type's pattern, whose key parses back and
which re-encodes byte for byte, but for the hash field of a token without data), or TokenError.
A certificate or request token's element is parsed as the sync parses it: an element or
CertElementError (a TokenError).
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from credroam.roaming.certelement import CERTIFICATE_TOKEN_TYPES, parse_certificate_token
    from credroam.tokens import TokenError, decode_token, encode_token, parse_key

_SHA1_START = 108  # offset of the data's SHA-1 in the header (credroam.tokens' module doc)


def one_input(data: bytes) -> None:
    try:
        token = decode_token(data)
    except TokenError:
        return
    expected = data
    if not token.data:  # an empty token's hash may be zeros or SHA-1(b""); encode writes zeros
        expected = data[:_SHA1_START] + bytes(20) + data[_SHA1_START + 20 :]
    assert encode_token(token) == expected, "decode/encode is not a round trip"
    assert parse_key(token.key) == (token.type, token.identifier)
    if token.type in CERTIFICATE_TOKEN_TYPES and not token.is_tombstone:
        try:
            element = parse_certificate_token(token)
        except TokenError:
            return
        assert element.thumbprint == token.identifier


def seeds() -> list[bytes]:
    import samples

    return samples.token_blobs()


if __name__ == "__main__":
    harness.fuzz(one_input, seeds, dictionary=[b"%3\\", b"%9\\", b"%0\\", b"..", b"\\", b":"])
