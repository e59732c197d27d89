"""fsutil: bounded no-follow reads that allocate what the file holds, durable appends."""

from __future__ import annotations

import errno
import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from credroam.roaming import fsutil
from credroam.roaming.fsutil import UnsafePath, append_durably, ensure_private_dir, read_private

LIMIT = 16 * 1024 * 1024  # the index's limit, the largest the store uses


def test_reads_a_small_file_whole_without_allocating_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"x" * 1000)
    tracemalloc.start()
    try:
        data = read_private(str(path), LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == b"x" * 1000
    assert peak < 256 * 1024, f"reading 1000 bytes peaked at {peak} bytes"


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "full"
    path.write_bytes(bytes(range(256)) * 4)
    assert read_private(str(path), 1024) == bytes(range(256)) * 4


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1025)
    with pytest.raises(UnsafePath) as caught:
        read_private(str(path), 1024)
    assert caught.value.errno == errno.EFBIG
    assert str(path) in str(caught.value)


def _stat_reporting_size(real_fstat, size: int):
    """os.fstat as it was before the file grew: every field real but the size."""

    def fstat(fd: int) -> os.stat_result:
        values = list(real_fstat(fd))
        values[stat.ST_SIZE] = size
        return os.stat_result(values)

    return fstat


def test_a_file_that_grows_past_the_limit_while_read_is_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 5000)
    monkeypatch.setattr(fsutil.os, "fstat", _stat_reporting_size(os.fstat, 10))
    with pytest.raises(UnsafePath, match="larger than 1024 bytes"):
        read_private(str(path), 1024)


def test_a_file_that_grows_within_the_limit_is_read_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / "growing"
    content = os.urandom(200_000)
    path.write_bytes(content)
    monkeypatch.setattr(fsutil.os, "fstat", _stat_reporting_size(os.fstat, 10))
    assert read_private(str(path), LIMIT) == content


def test_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(UnsafePath, match="symbolic link"):
        read_private(str(tmp_path / "link"), 1024)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafePath, match="not a regular file"):
        read_private(str(tmp_path / "fifo"), 1024)


def test_append_creates_a_private_file_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    old_umask = os.umask(0)
    try:
        append_durably(str(path), b"one\n")
        append_durably(str(path), b"two\n")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_append_refuses_a_symbolic_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, tmp_path / "journal")
    with pytest.raises(UnsafePath, match="symbolic link"):
        append_durably(str(tmp_path / "journal"), b"evil")
    assert victim.read_bytes() == b"precious"


def test_check_sees_the_opened_file_and_refuses_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"key")
    path.chmod(0o644)
    seen: list[int] = []

    def refuse_group_readable(info: os.stat_result) -> None:
        seen.append(stat.S_IMODE(info.st_mode))
        raise PermissionError("group-readable")

    with pytest.raises(PermissionError, match="group-readable"):
        read_private(str(path), 1024, refuse_group_readable)
    assert seen == [0o644]


def test_private_dir_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    old_umask = os.umask(0)
    try:
        assert ensure_private_dir(str(path)) == str(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_existing_dir_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "store"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(UnsafePath, match=f"mode {stat.S_IMODE(mode):04o}") as caught:
        ensure_private_dir(str(path))
    assert str(path) in str(caught.value)
    assert stat.S_IMODE(path.stat().st_mode) == mode  # left for its owner to check


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_existing_dir_of_ours_only_readable_by_others_is_tightened(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "store"
    path.mkdir()
    path.chmod(mode)
    ensure_private_dir(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_existing_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafePath, match="owned by uid 65534") as caught:
        ensure_private_dir(str(path))
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_a_symlink_or_file_in_place_of_the_dir_is_refused(tmp_path: Path, planted: str) -> None:
    path = tmp_path / "store"
    if planted == "symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "real")
    else:
        path.write_bytes(b"")
    with pytest.raises(UnsafePath, match="not a real directory"):
        ensure_private_dir(str(path))
