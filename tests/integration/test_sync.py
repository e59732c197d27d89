"""The sync engine against a real Samba DC, with the real file store and state file in temporary
folders (one per simulated host). Certificates only: private keys roam through
credroamKeyEnvelopes, tested with credroam's schema in test_roaming_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from credroam.connection import connect
from credroam.errors import DirectoryError
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, read_roaming
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Policy
from credroam.roaming.sync import sync_user
from credroam.timestamps import filetime_now
from credroam.tokens import format_dn_binary
from tests.integration.roaming_lab import (
    CVE_EXPLOIT_NAME,
    CountingConnection,
    clear_everywhere,
    connect_as,
    files_under,
    hostile_token,
    install,
    plant,
    replicate,
    self_signed,
    target_for,
)
from tests.integration.roaming_lab import (
    SimulatedHost as Host,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def alice(lab):
    account = lab.user("alice")
    clear_everywhere(lab, account)
    return account


@pytest.fixture
def certificate() -> bytes:
    return self_signed("alice")[0]


def sync(conn, account, host: Host, **kwargs):
    return sync_user(
        conn,
        account.dn,
        host.store,
        host.state,
        Policy(),
        new_roaming_key(),
        filetime_now,
        **kwargs,
    )


def der_of(pem_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(Encoding.DER)


def test_upload_then_a_no_change_sync_is_one_search_and_no_write(lab, alice, tmp_path, certificate):
    host = Host(tmp_path / "a")
    thumb = install(host.root, certificate)
    first = sync(connect_as(lab, alice), alice, host)
    assert first.uploaded == (f"%3\\{thumb}",)
    counting = CountingConnection(connect_as(lab, alice))
    again = sync(counting, alice, host)
    assert (counting.searches, counting.writes) == (1, 0)
    assert not again.changed


def test_another_host_downloads_through_the_other_dc(lab, alice, tmp_path, certificate):
    a, b = Host(tmp_path / "a"), Host(tmp_path / "b")
    thumb = install(a.root, certificate)
    sync(connect_as(lab, alice), alice, a)
    replicate(lab, 0, 1)
    report = sync(connect_as(lab, alice, dc=1), alice, b)
    assert report.downloaded == (f"%3\\{thumb}",)
    assert der_of(b.root / "MY" / f"{thumb}.cert.pem") == certificate


def test_a_token_named_like_the_cve_exploit_is_refused_and_nothing_lands_outside_the_store(
    lab, alice, tmp_path, certificate
):
    # The exploit's Windows path, and its POSIX twin aimed just outside the store root.
    for name in (CVE_EXPLOIT_NAME, b"../../../escaped.bat"):
        token = hostile_token(name, when=filetime_now())
        plant(lab, alice, ACCOUNT_CREDENTIALS, format_dn_binary(token, alice.dn).encode())
    host = Host(tmp_path / "home" / "alice")
    thumb = install(host.root, certificate)
    before = files_under(tmp_path)
    report = sync(connect_as(lab, alice), alice, host)
    assert [(r.attribute, r.check) for r in report.rejected] == [
        (ACCOUNT_CREDENTIALS, "identifier"),
        (ACCOUNT_CREDENTIALS, "identifier"),
    ]
    assert report.uploaded == (f"%3\\{thumb}",) and report.downloaded == ()
    new_files = files_under(tmp_path) - before
    outside = {path for path in new_files if not path.is_relative_to(host.root)}
    state = host.home / "state.json"  # the state file beside the store, and its previous copy
    assert outside == {state, state.with_name("state.json.prev")}  # (an interim base came first)
    in_store = {path.relative_to(host.root).as_posix() for path in files_under(host.root)}
    assert in_store == {".lock", "index.json", f"MY/{thumb}.cert.pem"}  # index: store metadata
    record = read_roaming(connect_as(lab, alice), alice.dn)
    assert len(record.rejected) == 2  # reported, never deleted: they are not ours to remove


def test_a_dc_that_is_down_is_named_and_nothing_local_is_lost(lab, alice, tmp_path, certificate):
    host = Host(tmp_path / "a")
    install(host.root, certificate)
    before = {path: path.read_bytes() for path in files_under(host.home)}
    dead = target_for(lab, alice, port=1, timeout=2)
    with pytest.raises(DirectoryError, match=f"{lab.dc(0).ip}:1"):
        sync(connect(dead), alice, host)
    after = {path: path.read_bytes() for path in files_under(host.home)}
    assert {p: v for p, v in after.items() if p.name != ".lock"} == before
