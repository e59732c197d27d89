"""The per-user state file: round trip, atomic 0600 writes, previous copy, hostile content."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credroam.roaming import fsutil
from credroam.roaming.model import Base, BaseEntry, ItemKind, StoreName
from credroam.roaming.state import (
    StateError,
    StateFile,
    decode_state,
    encode_state,
    load_state,
    save_state,
)
from tests.hypothesis_profiles import examples

T0 = 133_000_000_000_000_000


def _base(*hashes: str) -> Base:
    entries = {
        f"%3\\{i:040X}": BaseEntry(
            key=f"%3\\{i:040X}",
            store=StoreName.MY,
            kind=ItemKind.CERTIFICATE,
            modified=T0 + i,
            content_hash=content,
            tombstone=False,
            archived=i % 2 == 1,
            last_seen_in_directory=T0 + 100,
            owner=None,
        )
        for i, content in enumerate(hashes)
    }
    entries["%9\\" + "A" * 40] = BaseEntry(
        "%9\\" + "A" * 40, StoreName.MY, ItemKind.KEY, T0, "", True, False, T0, "%3\\" + "A" * 40
    )
    return Base(entries=entries, directory_timestamp=T0 + 7, last_sync=T0 + 100)


def test_round_trip_keeps_every_field(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    base = _base("aa", "bb")
    save_state(path, base)
    assert load_state(path) == base


def test_missing_file_means_first_use(tmp_path) -> None:
    assert load_state(str(tmp_path / "state.json")) is None


def test_state_file_and_previous_copy_are_private(tmp_path) -> None:
    directory = tmp_path / "dims"
    path = str(directory / "state.json")
    old_umask = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        save_state(path, _base("aa"))
        save_state(path, _base("bb"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path + ".prev").st_mode) == 0o600


def test_save_keeps_the_replaced_copy_as_prev(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    save_state(path, _base("aa"))
    save_state(path, _base("bb"))
    assert decode_state((tmp_path / "state.json.prev").read_bytes()) == _base("aa")
    assert load_state(path) == _base("bb")


def test_damaged_main_copy_falls_back_to_prev_and_says_so(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    save_state(path, _base("aa"))
    save_state(path, _base("bb"))
    data = (tmp_path / "state.json").read_bytes()
    (tmp_path / "state.json").write_bytes(data[: len(data) // 2])  # truncated
    problems: list[str] = []
    assert load_state(path, problems) == _base("aa")
    assert len(problems) == 1 and path in problems[0] and ".prev" in problems[0]


def test_damaged_main_never_overwrites_a_good_prev(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    save_state(path, _base("aa"))
    save_state(path, _base("bb"))
    (tmp_path / "state.json").write_bytes(b"garbage")
    save_state(path, _base("cc"))
    assert decode_state((tmp_path / "state.json.prev").read_bytes()) == _base("aa")


def _document(**changes) -> bytes:
    document = json.loads(encode_state(_base("aa")))
    document.update(changes)
    return json.dumps(document).encode()


def _entry_document(**changes) -> bytes:
    document = json.loads(encode_state(_base("aa")))
    document["entries"][0].update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"[]",
        b"{" * 100_000,  # deep nesting must not crash the loader
        _document(version=2),
        _document(format="something-else"),
        _document(extra=1),
        _document(entries={"a": 1}),
        _document(last_sync="yesterday"),
        _document(last_sync=-1),
        _document(directory_timestamp=2**64),
        _entry_document(modified=True),
        _entry_document(tombstone="false"),
        _entry_document(store="ROOT"),
        _entry_document(key=""),
        _entry_document(key="%3\\" + "A" * 300),
        _entry_document(content_hash="a\nb"),
        _entry_document(surprise=1),
    ],
    ids=lambda content: repr(content[:40]),
)
def test_hostile_or_damaged_file_gives_state_error_naming_it(tmp_path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateError) as caught:
        load_state(str(path))
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


def _key_entry_document(**changes) -> bytes:
    document = json.loads(encode_state(_base("aa")))
    document["entries"][-1].update(changes)  # the private key entry sorts last
    return json.dumps(document).encode()


_THUMB = "A" * 40


@pytest.mark.parametrize(
    "content",
    [
        _entry_document(key="%3\\..\\..\\evil"),  # path escape
        _entry_document(key="%x\\" + _THUMB),  # type is not a digit
        _entry_document(key="%3" + _THUMB),  # no separator
        _entry_document(key="%3\\" + _THUMB.lower()),  # not a thumbprint
        _entry_document(key="%0\\Preferred"),  # a master key is never a synced item
        _entry_document(key="%9\\" + "C" * 40),  # a key filed as a certificate
        _entry_document(key="%4\\" + _THUMB),  # a request filed as a certificate
        _entry_document(store="REQUEST"),  # a certificate filed in REQUEST
        _entry_document(owner="%3\\" + _THUMB),  # a certificate with an owner
        _key_entry_document(key="%3\\" + _THUMB),  # a certificate filed as a key
        _key_entry_document(owner=None),  # a key without its owner
        _key_entry_document(owner="%3\\..\\evil"),
        _key_entry_document(owner="%9\\" + _THUMB),  # a key owning a key
        _key_entry_document(owner="%3\\" + "B" * 40),  # another item's certificate
    ],
)
def test_bad_key_or_owner_makes_the_file_a_lost_base(tmp_path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match="entries\\["):
        load_state(str(path))
    state = StateFile(str(path))
    assert state.load() is None
    assert "syncing without a base" in state.problems[0]
    (tmp_path / "state.json.prev").write_bytes(encode_state(_base("bb")))
    problems: list[str] = []
    assert load_state(str(path), problems) == _base("bb")
    assert ".prev" in problems[0]


def test_key_of_a_request_may_be_filed_in_request(tmp_path) -> None:
    entry = BaseEntry("%9\\" + _THUMB, StoreName.REQUEST, ItemKind.KEY, T0, "", True, False, T0)
    base = Base(entries={entry.key: replace(entry, owner="%8\\" + _THUMB)})
    assert decode_state(encode_state(base)) == base


def test_duplicate_keys_are_refused(tmp_path) -> None:
    document = json.loads(encode_state(_base("aa", "bb")))
    document["entries"][1]["key"] = document["entries"][0]["key"]
    (tmp_path / "state.json").write_text(json.dumps(document))
    with pytest.raises(StateError, match="duplicate key"):
        load_state(str(tmp_path / "state.json"))


def test_oversized_file_is_refused_without_reading_it_all(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("credroam.roaming.state.MAX_STATE_SIZE", 100)
    path = tmp_path / "state.json"
    path.write_bytes(encode_state(_base("aa")))
    with pytest.raises(StateError, match="larger than 100 bytes"):
        load_state(str(path))


def test_symlinked_state_file_is_refused(tmp_path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(encode_state(_base("aa")))
    os.symlink(target, tmp_path / "state.json")
    with pytest.raises(StateError, match="symbolic link"):
        load_state(str(tmp_path / "state.json"))


def test_state_file_object_treats_a_bad_file_as_lost_base(tmp_path) -> None:
    (tmp_path / "state.json").write_bytes(b"{not json")
    state = StateFile(str(tmp_path / "state.json"))
    assert state.load() is None
    assert "syncing without a base" in state.problems[0]
    state.save(_base("aa"))
    assert state.load() == _base("aa")


def test_crash_while_saving_leaves_the_old_state(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "state.json")
    save_state(path, _base("aa"))

    def crash(fd: int) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(fsutil.os, "fsync", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        save_state(path, _base("bb"))
    monkeypatch.undo()
    assert load_state(path) == _base("aa")
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


@settings(max_examples=examples(300), deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10**6),
)
def test_fuzzed_state_files_are_a_state_error_or_a_base(changes, cut) -> None:
    """Fuzz: bytes of a real state file changed or cut anywhere: decoding gives a Base or
    ValueError (StateError on load), nothing else, so a damaged file is only a lost base."""
    data = bytearray(encode_state(_base("aa", "bb")))
    for offset, value in changes:
        data[offset % len(data)] = value
    damaged = bytes(data[: None if cut is None else cut % (len(data) + 1)])
    with contextlib.suppress(ValueError):
        assert isinstance(decode_state(damaged), Base)
