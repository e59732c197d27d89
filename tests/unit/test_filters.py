"""credroam's filter plugins (filter_plugins/credroam_filters.py) and their documentation.

Expected values are worked out here by hand (FILETIME arithmetic, struct packing, gPLink
strings), not by the core the filters call. Two tests run Ansible itself: the filters load from
ansible.cfg's filter_plugins and fail with their reason, and `ansible-doc -t filter` renders
each filter's documentation.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip(
    "ansible", reason="a filter plugin test: needs Ansible (.venv/bin/pytest runs it)"
)

import credroam_filters
import yaml
from ansible.errors import AnsibleFilterError

from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary

REPO = Path(__file__).resolve().parents[2]
FILTER_DIR = REPO / "filter_plugins"
VENV = REPO / ".venv" / "bin"
FILTERS = sorted(credroam_filters.FilterModule().filters())

USER_DN = "CN=alice,OU=Roaming,DC=lab,DC=example"
THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"
# 2024-05-01 12:00:00.123456 UTC as a FILETIME: seconds since 1601 (Unix time + 11644473600
# s between the epochs) in 100 ns ticks, plus 7 sub-microsecond ticks the ISO form drops.
MAY_FIRST_ISO = "2024-05-01T12:00:00.123456+00:00"
MAY_FIRST = (1714564800 + 11644473600) * 10_000_000 + 1234567


def certificate_value(flags: TokenFlags = TokenFlags.KNOWN_TYPE, data: bytes = b"cert") -> str:
    token = Token(TokenType.CERTIFICATE, THUMBPRINT, MAY_FIRST, flags, data)
    return format_dn_binary(encode_token(token), USER_DN)


def fails(filter_function, value, *reason: str) -> None:
    with pytest.raises(AnsibleFilterError) as failure:
        filter_function(value)
    message = str(failure.value)
    assert message.startswith(f"{filter_function.__name__}: "), message
    for part in reason:
        assert part in message, message


# ------------------------------------------------------------------------------ roaming_token


def test_roaming_token_returns_the_header_of_a_certificate_token():
    assert credroam_filters.roaming_token(certificate_value()) == {
        "type": 3,
        "type_name": "certificate",
        "identifier": THUMBPRINT,
        "key": f"%3\\{THUMBPRINT}",
        "flags": 0x10,
        "flag_names": ["known_type"],
        "tombstone": False,
        "time": MAY_FIRST_ISO,
        "filetime": MAY_FIRST,
        "size": 132 + 4,
        "data_size": 4,
        "dn": USER_DN,
    }


def test_roaming_token_shows_a_tombstone_and_keeps_unknown_flag_bits():
    token = credroam_filters.roaming_token(
        certificate_value(TokenFlags.TOMBSTONE | TokenFlags(0x8000), data=b"")
    )
    assert token["tombstone"] is True
    assert token["flag_names"] == ["tombstone"]
    assert token["flags"] == 0x8001


def test_roaming_token_reads_a_token_windows_wrote(dsinternals_blobs):
    name, blob = next(iter(dsinternals_blobs.items()))
    token = credroam_filters.roaming_token(format_dn_binary(blob, USER_DN))
    assert token["size"] == len(blob), name
    assert token["type"] == blob[1] - ord("0")
    assert blob[3:].startswith(token["identifier"].encode())


def test_roaming_token_accepts_bytes_as_well_as_text():
    value = certificate_value()
    assert credroam_filters.roaming_token(value.encode()) == credroam_filters.roaming_token(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("B:8:0102:" + USER_DN, "token check 'dn-binary' failed"),
        (format_dn_binary(b"%3\\" + b"x" * 10, USER_DN), "token check 'length' failed"),
        ([certificate_value()], "not a list: use map('roaming_token')"),
        (42, "expects a DN-Binary string, not int"),
    ],
)
def test_roaming_token_refuses_bad_values_saying_why(value, reason):
    fails(credroam_filters.roaming_token, value, reason)


def test_roaming_token_refuses_a_hostile_identifier():
    blob = bytearray.fromhex(certificate_value().split(":")[2])
    blob[3:5] = b".."  # a path-like identifier (CVE-2022-30170)
    fails(credroam_filters.roaming_token, format_dn_binary(bytes(blob), USER_DN), "'identifier'")


def test_roaming_token_refuses_a_value_whose_data_does_not_match_its_sha1():
    blob = bytearray.fromhex(certificate_value().split(":")[2])
    blob[-1] ^= 1  # the last data byte
    fails(credroam_filters.roaming_token, format_dn_binary(bytes(blob), USER_DN), "'sha1'")


# -------------------------------------------------------------------------- roaming_timestamp

FIRST = MAY_FIRST - 10_000_000 * 3600  # an hour earlier
RAW_TIMESTAMP = struct.pack("<QQ", FIRST, MAY_FIRST)
DECODED_TIMESTAMP = {
    "first": "2024-05-01T11:00:00.123456+00:00",
    "first_filetime": FIRST,
    "last_change": MAY_FIRST_ISO,
    "last_change_filetime": MAY_FIRST,
}


@pytest.mark.parametrize(
    "value",
    [
        RAW_TIMESTAMP,
        RAW_TIMESTAMP.hex(),
        RAW_TIMESTAMP.hex().upper(),
        base64.b64encode(RAW_TIMESTAMP).decode(),
        base64.b64encode(RAW_TIMESTAMP).decode() + "\n",
    ],
    ids=["bytes", "hex", "HEX", "base64", "base64 with newline"],
)
def test_roaming_timestamp_reads_bytes_hex_and_base64(value):
    assert credroam_filters.roaming_timestamp(value) == DECODED_TIMESTAMP


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (base64.b64encode(RAW_TIMESTAMP[:8]).decode(), "must be 16 bytes, got 8"),
        (RAW_TIMESTAMP.hex()[:-2] + "zz", "must be 16 bytes, got 24"),
        ("not a timestamp!", "is neither 32 hex digits nor base64"),
        ([RAW_TIMESTAMP.hex()], "not a list"),
        (None, "not NoneType"),
    ],
)
def test_roaming_timestamp_refuses_other_values_saying_why(value, reason):
    fails(credroam_filters.roaming_timestamp, value, reason)


# ----------------------------------------------------------------------------------- filetime


def test_filetime_turns_a_filetime_into_an_iso_time_dropping_sub_microseconds():
    assert credroam_filters.filetime(MAY_FIRST) == MAY_FIRST_ISO
    assert credroam_filters.filetime(str(MAY_FIRST)) == MAY_FIRST_ISO
    assert credroam_filters.filetime(0) == "1601-01-01T00:00:00.000000+00:00"


@pytest.mark.parametrize(
    "value",
    [
        MAY_FIRST_ISO,
        "2024-05-01T12:00:00.123456Z",
        "2024-05-01T14:00:00.123456+02:00",
        datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2024, 5, 1, 7, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_filetime_turns_an_aware_time_into_a_filetime(value):
    assert credroam_filters.filetime(value) == MAY_FIRST - 7


def test_filetime_examples_in_its_documentation_hold():
    assert credroam_filters.filetime(133000864000000000) == "2022-06-19T04:26:40.000000+00:00"
    assert credroam_filters.filetime("2022-06-19T04:26:40Z") == 133000864000000000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-05-01T12:00:00", "has no time zone"),
        (datetime(2024, 5, 1), "has no time zone"),
        (9223372036854775807, "after the last date Python represents"),
        (2**64, "outside the unsigned 64-bit FILETIME range"),
        (-1, "outside the unsigned 64-bit FILETIME range"),
        ("yesterday", "'yesterday' is neither a FILETIME nor an ISO 8601 time"),
        ("1600-12-31T00:00:00+00:00", "before the FILETIME epoch"),
        (True, "must be an integer, not a boolean"),
        ([MAY_FIRST], "not a list"),
    ],
)
def test_filetime_refuses_what_it_cannot_convert_saying_why(value, reason):
    fails(credroam_filters.filetime, value, reason)


# -------------------------------------------------------------------------------- gpo_version


@pytest.mark.parametrize(
    ("value", "halves"),
    [
        (3 << 16 | 1, {"user": 3, "computer": 1, "number": 196609}),
        ("196609", {"user": 3, "computer": 1, "number": 196609}),
        (0, {"user": 0, "computer": 0, "number": 0}),
        # LDAP returns versionNumber signed: user version 0x8000 comes back negative.
        (-(2**31) + 2, {"user": 0x8000, "computer": 2, "number": 0x80000002}),
        ("-65536", {"user": 0xFFFF, "computer": 0, "number": 0xFFFF0000}),
        (0xFFFF0000, {"user": 0xFFFF, "computer": 0, "number": 0xFFFF0000}),
    ],
)
def test_gpo_version_splits_a_version_number(value, halves):
    assert credroam_filters.gpo_version(value) == halves


@pytest.mark.parametrize(
    ("halves", "number"),
    [
        ({"user": 3, "computer": 0}, 196608),
        ({"user": "3", "computer": "1"}, 196609),
        ({"user": 0x8000, "computer": 2}, -(2**31) + 2),  # as the directory holds it
        ({"user": 3, "computer": 1, "number": 196609}, 196609),
    ],
)
def test_gpo_version_joins_user_and_computer_versions(halves, number):
    assert credroam_filters.gpo_version(halves) == number


def test_gpo_version_round_trips_what_ldap_returns():
    for number in (-(2**31), -1, 0, 1, 65536, 2**31 - 1):
        assert credroam_filters.gpo_version(credroam_filters.gpo_version(number)) == number


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (2**32, "versionNumber 4294967296 does not fit in 32 bits"),
        (-(2**31) - 1, "does not fit in 32 bits"),
        ({"user": 3}, "needs user and computer"),
        ({"user": 3, "computer": 0, "machine": 1}, "needs user and computer"),
        ({"user": 70000, "computer": 0}, "GPO version half 70000 is outside 0..65535"),
        ({"user": 3, "computer": 1, "number": 3}, "number 3 is not user 3 << 16 | computer 1"),
        ({"user": True, "computer": 0}, "user must be an integer, not a boolean"),
        ("three", "versionNumber must be an integer, not 'three'"),
        ([196609], "not a list"),
    ],
)
def test_gpo_version_refuses_what_is_not_a_version_saying_why(value, reason):
    fails(credroam_filters.gpo_version, value, reason)


# ------------------------------------------------------------------------------------- gplink

GPO_A = "{AAAAAAAA-0000-0000-0000-000000000001}"
GPO_B = "{BBBBBBBB-0000-0000-0000-000000000002}"
GPO_C = "{CCCCCCCC-0000-0000-0000-000000000003}"


def gpo_dn(guid: str) -> str:
    return f"cn={guid.lower()},cn=policies,cn=system,DC=lab,DC=example"


def test_gplink_lists_links_highest_precedence_first_with_their_options():
    value = "".join(
        f"[LDAP://{gpo_dn(guid)};{options}]"
        for guid, options in ((GPO_A, 0), (GPO_B, 1), (GPO_C, 2))
    )
    assert credroam_filters.gplink(value) == [
        {"order": 1, "dn": gpo_dn(GPO_C), "guid": GPO_C, "enabled": True, "enforced": True},
        {"order": 2, "dn": gpo_dn(GPO_B), "guid": GPO_B, "enabled": False, "enforced": False},
        {"order": 3, "dn": gpo_dn(GPO_A), "guid": GPO_A, "enabled": True, "enforced": False},
    ]


def test_gplink_of_a_disabled_and_enforced_link_and_a_dn_that_is_no_gpo():
    assert credroam_filters.gplink("[LDAP://CN=Someone,DC=lab,DC=example;3]") == [
        {"order": 1, "dn": "CN=Someone,DC=lab,DC=example", "guid": None, "enabled": False,
         "enforced": True},
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["", " ", None])
def test_gplink_of_a_container_without_links_is_empty(value):
    assert credroam_filters.gplink(value) == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"[LDAP://{gpo_dn(GPO_A)};0] trailing", "is not a list of [LDAP://<dn>;<options>]"),
        (f"LDAP://{gpo_dn(GPO_A)};0", "is not a list of [LDAP://<dn>;<options>]"),
        ([f"[LDAP://{gpo_dn(GPO_A)};0]"], "not a list: use map('gplink') or first"),
        (7, "expects the gPLink string, not int"),
    ],
)
def test_gplink_refuses_what_is_not_a_gplink_saying_why(value, reason):
    fails(credroam_filters.gplink, value, reason)


# ------------------------------------------------------------------- through Ansible itself


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }


def debug_through_ansible(tmp_path: Path, *expressions: str) -> list[dict]:
    """One play on localhost with a debug task per expression (a failing one does not stop the
    rest), run from the repository root: the filters as a playbook sees them, loaded from
    ansible.cfg's filter_plugins. The result of each task."""
    tasks = [
        {"ansible.builtin.debug": {"msg": f"{{{{ {expression} }}}}"}, "ignore_errors": True}
        for expression in expressions
    ]
    playbook = tmp_path / "filters.yml"
    playbook.write_text(
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    done = subprocess.run(
        [str(VENV / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = json.loads(done.stdout[done.stdout.index("{") :])
    return [task["hosts"]["localhost"] for task in output["plays"][0]["tasks"]]


def test_ansible_loads_the_filters_and_reports_their_reasons(tmp_path):
    expression = (
        "[(196609 | gpo_version), ('" + certificate_value() + "' | roaming_token).identifier,"
        " ('" + RAW_TIMESTAMP.hex() + "' | roaming_timestamp).last_change,"
        " (0 | filetime), ('[LDAP://" + gpo_dn(GPO_A) + ";2]' | gplink | first).enforced]"
    )
    decoded, failed = debug_through_ansible(tmp_path, expression, "'B:2:0:x' | roaming_token")
    assert decoded["msg"] == [
        {"user": 3, "computer": 1, "number": 196609},
        THUMBPRINT,
        MAY_FIRST_ISO,
        "1601-01-01T00:00:00.000000+00:00",
        True,
    ]
    assert failed["failed"] is True
    assert "roaming_token: token check 'dn-binary' failed" in failed["msg"]


def test_each_filter_has_one_documentation_file_and_each_file_one_filter():
    documented = sorted(path.stem for path in FILTER_DIR.glob("*.yml"))
    assert documented == FILTERS


@pytest.mark.parametrize("name", FILTERS)
def test_documentation_is_complete(name):
    doc = yaml.safe_load((FILTER_DIR / f"{name}.yml").read_text())
    assert doc["DOCUMENTATION"]["name"] == name
    assert doc["DOCUMENTATION"]["options"]["_input"]["required"] is True
    assert doc["DOCUMENTATION"]["positional"] == "_input"
    assert f"| {name}" in doc["EXAMPLES"] or f"'{name}'" in doc["EXAMPLES"]
    assert yaml.safe_load(doc["EXAMPLES"])
    assert doc["RETURN"]["_value"]["description"]


def test_ansible_doc_renders_every_filter():
    done = subprocess.run(
        [str(VENV / "ansible-doc"), "-t", "filter", *FILTERS],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[WARNING]" not in done.stderr, done.stderr
    for name in FILTERS:
        assert f"{name}.yml" in done.stdout, name
