"""Fuzz the DN-Binary parser (``B:<count>:<hex>:<DN>``), the form of every token value.

Valid outcome: (blob, DN) with the DN non-empty and the blob within the size limit, which
format_dn_binary writes back to a value that parses to the same pair; or TokenError. (The blob
is a token: fuzz_tokens covers what the directory reader does with it next.)
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from credroam.tokens import (
        DEFAULT_LIMITS,
        TokenError,
        format_dn_binary,
        parse_dn_binary,
    )

LIMIT = DEFAULT_LIMITS.max_token_size


def one_input(data: bytes) -> None:
    try:
        blob, dn = parse_dn_binary(data, LIMIT)
    except TokenError:
        return
    assert dn and len(blob) <= LIMIT
    assert parse_dn_binary(format_dn_binary(blob, dn), LIMIT) == (blob, dn)


def seeds() -> list[bytes]:
    import samples

    return [*samples.dn_binary_values(), b"B:2:0A:CN=x", b"B:0::CN=x"]


if __name__ == "__main__":
    harness.fuzz(one_input, seeds, dictionary=[b"B:", b":CN=", b"DC=", b"\\:", b"%3\\"])
