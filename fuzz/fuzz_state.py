"""Fuzz the per-user state file (JSON, the last-synced base of reconciliation).

Valid outcome: a Base, which encode_state writes back to a document that decodes to the same
Base; or ValueError, decode_state's contract (load_state turns it into StateError naming the
file). The dictionary gives the engine the format's field names and values.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from credroam.roaming.state import decode_state, encode_state


def one_input(data: bytes) -> None:
    try:
        base = decode_state(data)
    except ValueError:
        return
    assert decode_state(encode_state(base)) == base, "decode/encode is not a round trip"


def seeds() -> list[bytes]:
    import samples

    return samples.state_documents()


WORDS = [
    b'"format"',
    b'"credroam-state"',
    b'"version"',
    b'"entries"',
    b'"last_sync"',
    b'"directory_timestamp"',
    b'"key"',
    b'"store"',
    b'"kind"',
    b'"owner"',
    b'"MY"',
    b'"REQUEST"',
    b'"certificate"',
    b'"request"',
    b'"key"',
    b'"%3\\\\',
    b'"%9\\\\',
    b'"%4\\\\',
    b"null",
    b"true",
    b"false",
    b"18446744073709551615",
    b"-1",
    b"1e400",
    b"NaN",
    b"\\u0000",
    b"\\ud800",
]

if __name__ == "__main__":
    harness.fuzz(one_input, seeds, dictionary=WORDS)
