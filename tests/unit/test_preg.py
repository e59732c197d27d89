"""Registry.pol codec, checked against Samba's own NDR parser (python3-samba) both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credroam.gpo import preg
from credroam.gpo.preg import PolEntry, PolFormatError, PolValueError, RegType
from tests.hypothesis_profiles import examples

samba_ndr = pytest.importorskip("samba.ndr", reason="python3-samba is the independent reader")
import contextlib

from samba.dcerpc import preg as samba_preg

KEY = "Software\\Policies\\Microsoft\\Cryptography\\AutoEnrollment"

EVERY_TYPE = [
    preg.make_entry(KEY, "DIMSRoaming", "REG_DWORD", 1),
    preg.make_entry(KEY, "Text", "REG_SZ", "héllo wörld"),
    preg.make_entry(KEY, "Path", "REG_EXPAND_SZ", "%APPDATA%\\credroam"),
    preg.make_entry(KEY, "Blob", "REG_BINARY", b"\x00\x01\xfe\xff"),
    preg.make_entry(KEY, "Hex", "binary", "deadbeef"),
    preg.make_entry(KEY, "List", "REG_MULTI_SZ", ["one", "two", "drei"]),
    preg.make_entry(KEY, "Empty list", "REG_MULTI_SZ", []),
    preg.make_entry(KEY, "Big", "REG_QWORD", 2**40 + 7),
    preg.make_entry(KEY, "", "REG_SZ", "default value"),
    preg.delete_value_entry(KEY, "RoamUnusedDpapiKeys"),
    preg.delete_all_values_entry(KEY + "\\Old"),
    preg.delete_values_entry(KEY, ["A", "B"]),
    preg.delete_keys_entry(KEY, ["Sub1", "Sub2"]),
]


def samba_entries(blob: bytes) -> list[tuple[str, str, int, bytes]]:
    """Samba's view of a file, as (key, name, type, raw data bytes)."""
    parsed = samba_ndr.ndr_unpack(samba_preg.file, blob)
    assert parsed.header.signature == "PReg" and parsed.header.version == 1
    out = []
    for entry in parsed.entries:
        out.append((entry.keyname, entry.valuename, entry.type, samba_raw(entry)))
    return out


def samba_raw(entry) -> bytes:
    data = entry.data
    if entry.type in (RegType.REG_SZ, RegType.REG_EXPAND_SZ):
        return (data + "\x00").encode("utf-16-le")
    if entry.type == RegType.REG_DWORD:
        return data.to_bytes(4, "little")
    if entry.type == RegType.REG_QWORD:
        return data.to_bytes(8, "little")
    return bytes(data or b"")


def samba_encode(entries: list[PolEntry]) -> bytes:
    pol = samba_preg.file()
    pol.header.signature = "PReg"
    pol.header.version = 1
    packed = []
    for ours in entries:
        entry = samba_preg.entry()
        entry.keyname, entry.valuename, entry.type = ours.key, ours.name, ours.type
        value = ours.value()
        if ours.type in (
            RegType.REG_SZ,
            RegType.REG_EXPAND_SZ,
            RegType.REG_DWORD,
            RegType.REG_QWORD,
        ):
            entry.data = value
        elif ours.data:
            entry.data = ours.data
        packed.append(entry)
    pol.entries = packed
    pol.num_entries = len(packed)
    return samba_ndr.ndr_pack(pol)


def test_every_type_read_back_by_samba_equals_what_was_written():
    blob = preg.encode(EVERY_TYPE)
    assert samba_entries(blob) == [(e.key, e.name, e.type, e.data) for e in EVERY_TYPE]


def test_file_written_by_samba_decodes_to_the_same_entries():
    assert preg.decode(samba_encode(EVERY_TYPE)) == EVERY_TYPE


def test_typed_values_round_trip():
    values = [e.value() for e in preg.decode(preg.encode(EVERY_TYPE))]
    assert values[:9] == [
        1,
        "héllo wörld",
        "%APPDATA%\\credroam",
        b"\x00\x01\xfe\xff",
        bytes.fromhex("deadbeef"),
        ["one", "two", "drei"],
        [],
        2**40 + 7,
        "default value",
    ]
    assert values[11] == "A;B;"


def test_delete_forms_are_recognised_case_insensitively():
    deleted = PolEntry(KEY, "**DEL.DIMSRoaming", RegType.REG_SZ, " \x00".encode("utf-16-le"))
    assert deleted.is_delete_value and deleted.target == "DIMSRoaming"
    assert deleted.identity == preg.make_entry(KEY.upper(), "dimsroaming", "REG_DWORD", 0).identity
    assert deleted.describe() == {"key": KEY, "value": "DIMSRoaming", "state": "absent"}
    assert preg.delete_all_values_entry(KEY).name == "**delvals."


def test_empty_file_is_an_empty_policy_and_header_only_too():
    assert preg.decode(b"") == []
    assert preg.decode(preg.encode([])) == []
    assert preg.encode([]) == b"PReg\x01\x00\x00\x00"


@pytest.mark.parametrize(
    ("blob", "offset", "reason"),
    [
        (b"PRe", 0, "truncated signature"),
        (b"XReg\x01\x00\x00\x00", 0, "bad signature"),
        (b"PReg\x02\x00\x00\x00", 4, "unsupported version 2"),
        (b"PReg\x01\x00\x00\x00(\x00", 8, "expected '['"),
        (b"PReg\x01\x00\x00\x00[\x00a\x00b\x00", 10, "key has no NUL terminator"),
    ],
)
def test_malformed_header_and_brackets_name_the_offset(blob, offset, reason):
    with pytest.raises(PolFormatError) as caught:
        preg.decode(blob)
    assert caught.value.offset == offset
    assert reason in str(caught.value)


def test_bad_size_is_reported_at_the_size_field():
    good = preg.encode([preg.make_entry(KEY, "V", "REG_DWORD", 5)])
    size_at = 8 + 2 + 2 * (len(KEY) + 1) + 2 + 2 * 2 + 2 + 4 + 2  # header [ key ; V ; type ;
    too_big = good[:size_at] + (400).to_bytes(4, "little") + good[size_at + 4 :]
    with pytest.raises(PolFormatError, match="truncated data: needs 400 bytes") as caught:
        preg.decode(too_big)
    assert caught.value.offset == size_at + 6
    wrong_dword = good[:size_at] + (3).to_bytes(4, "little") + good[size_at + 4 :]
    with pytest.raises(PolFormatError):
        preg.decode(wrong_dword)


def test_missing_closing_bracket_is_an_error():
    good = preg.encode([preg.make_entry(KEY, "V", "REG_SZ", "x")])
    with pytest.raises(PolFormatError, match="']' closing the entry") as caught:
        preg.decode(good[:-2] + b")\x00")
    assert caught.value.offset == len(good) - 2
    with pytest.raises(PolFormatError, match="truncated"):
        preg.decode(good[:-1])


def test_invalid_utf16_in_key_is_a_format_error():
    blob = b"PReg\x01\x00\x00\x00[\x00" + b"\x00\xd8" + b"a\x00\x00\x00;\x00"
    with pytest.raises(PolFormatError, match="not valid UTF-16LE"):
        preg.decode(blob)


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("REG_DWORD", 2**32, "0..4294967295"),
        ("REG_DWORD", True, "integer"),
        ("REG_QWORD", -1, "integer"),
        ("REG_SZ", 5, "string"),
        ("REG_SZ", "a\x00b", "without NUL"),
        ("REG_MULTI_SZ", "not a list", "list of strings"),
        ("REG_MULTI_SZ", ["ok", ""], "non-empty"),
        ("REG_BINARY", "xyz", "not hex"),
        ("REG_FLOAT", 1, "unknown registry type"),
    ],
)
def test_bad_values_are_refused_naming_the_value(type_, value, message):
    with pytest.raises(PolValueError, match=message) as caught:
        preg.make_entry(KEY, "Name", type_, value)
    if "unknown" not in message:
        assert "AutoEnrollment\\Name" in str(caught.value)


def test_reserved_names_need_state_absent():
    with pytest.raises(PolValueError, match="state=absent"):
        preg.make_entry(KEY, "**del.X", "REG_SZ", "")


names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
).filter(lambda name: not name.startswith("**"))
keys = names.filter(bool)
typed_entries = st.one_of(
    st.builds(
        lambda k, n, v: preg.make_entry(k, n, "REG_DWORD", v),
        keys,
        names,
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        lambda k, n, v: preg.make_entry(k, n, "REG_QWORD", v),
        keys,
        names,
        st.integers(0, 2**64 - 1),
    ),
    st.builds(lambda k, n, v: preg.make_entry(k, n, "REG_SZ", v), keys, names, names),
    st.builds(lambda k, n, v: preg.make_entry(k, n, "REG_EXPAND_SZ", v), keys, names, names),
    st.builds(
        lambda k, n, v: preg.make_entry(k, n, "REG_BINARY", v), keys, names, st.binary(max_size=40)
    ),
    st.builds(
        lambda k, n, v: preg.make_entry(k, n, "REG_MULTI_SZ", v),
        keys,
        names,
        st.lists(names.filter(bool), max_size=4),
    ),
    st.builds(preg.delete_value_entry, keys, keys),
)


@given(st.lists(typed_entries, max_size=6))
@settings(max_examples=examples(150))
def test_round_trip_and_samba_agrees(entries):
    blob = preg.encode(entries)
    assert preg.decode(blob) == entries
    assert samba_entries(blob) == [(e.key, e.name, e.type, e.data) for e in entries]


@given(st.binary(max_size=200))
@settings(max_examples=examples(400))
def test_decode_of_arbitrary_bytes_raises_only_format_errors(blob):
    with contextlib.suppress(PolFormatError):
        preg.decode(blob)


@given(st.lists(typed_entries, min_size=1, max_size=3), st.data())
@settings(max_examples=examples(200))
def test_decode_of_damaged_files_raises_only_format_errors(entries, data):
    blob = bytearray(preg.encode(entries))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    with contextlib.suppress(PolFormatError):
        preg.decode(bytes(blob[:cut]))
