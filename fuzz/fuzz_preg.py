"""Fuzz the Registry.pol codec (a GPO's User/Registry.pol, read back from SYSVOL).

Valid outcome: the entries, which encode() writes back to the same bytes (a non-empty file)
and which describe themselves (the view ad_gpo's diffs and ad_gpo_info show); or
PolFormatError.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from credroam.gpo import preg


def one_input(data: bytes) -> None:
    try:
        entries = preg.decode(data)
    except preg.PolFormatError:
        return
    if data:
        assert preg.encode(entries) == data, "decode/encode is not a round trip"
    for entry in entries:
        entry.describe()
        entry.identity  # noqa: B018 -- computed for its checks


def seeds() -> list[bytes]:
    key = r"Software\Policies\Microsoft\Cryptography\AutoEnrollment"
    entries = [
        preg.make_entry(key, "AEPolicy", "REG_DWORD", 7),
        preg.make_entry(key, "DIMSRoamingMaxNumTokens", "REG_DWORD", 2000),
        preg.make_entry(key, "Name", "REG_SZ", "credroam"),
        preg.make_entry(key, "List", "REG_MULTI_SZ", ["a", "b"]),
        preg.make_entry(key, "Blob", "REG_BINARY", b"\x01\x02"),
        preg.make_entry(key, "Big", "REG_QWORD", 2**40),
        preg.delete_value_entry(key, "Old"),
        preg.delete_keys_entry(key, ["Sub1", "Sub2"]),
    ]
    return [preg.encode(entries), preg.encode(entries[:1]), preg.encode([])]


if __name__ == "__main__":
    harness.fuzz(one_input, seeds, dictionary=[b"PReg", b"[\x00", b";\x00", b"]\x00", b"\x00\x00"])
