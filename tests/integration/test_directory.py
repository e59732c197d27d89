"""The directory side against real Samba DCs: own values only, hostile values, concurrency.

Each test starts from users whose roaming attributes were cleared (as the users themselves).
"""

from __future__ import annotations

import struct

import pytest

from credroam.connection import connect
from credroam.errors import DirectoryError
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    ConcurrentModification,
    ValueChange,
    apply_changes,
    find_user,
    put_token,
    read_roaming,
)
from credroam.tokens import Token, TokenFlags, TokenType, format_dn_binary
from tests.integration.roaming_lab import (
    clear_everywhere,
    clear_roaming,
    connect_as,
    plant,
    replicate,
    target_for,
)

pytestmark = pytest.mark.integration

NOW = 134_000_000_000_000_000


def cert_token(identifier: str, data: bytes = b"certificate", modified: int = NOW) -> Token:
    return Token(TokenType.CERTIFICATE, identifier, modified, TokenFlags(0), data)


@pytest.fixture
def alice(lab):
    account = lab.user("alice")
    clear_roaming(lab, account)
    return account


@pytest.fixture
def bob(lab):
    account = lab.user("bob")
    clear_roaming(lab, account)
    return account


def write(conn, dn, *tokens, now=NOW):
    record = read_roaming(conn, dn)
    changes = [put_token(record, ACCOUNT_CREDENTIALS, token) for token in tokens]
    return apply_changes(conn, record, [c for c in changes if c], now=now)


def test_find_user_by_each_selector(lab, alice):
    conn = connect_as(lab, alice)
    by_sam = find_user(conn, lab.base_dn, sam_account_name="alice")
    assert by_sam.dn.lower() == alice.dn.lower()
    assert find_user(conn, lab.base_dn, upn=alice.upn) == by_sam
    assert find_user(conn, lab.base_dn, dn=alice.dn).object_guid == by_sam.object_guid
    with pytest.raises(DirectoryError, match="not found"):
        find_user(conn, lab.base_dn, sam_account_name="nobody*")


def test_a_user_writes_and_reads_their_own_tokens(lab, alice):
    conn = connect_as(lab, alice)
    token = cert_token("A" * 40)
    applied = write(conn, alice.dn, token)
    assert applied.changed
    record = read_roaming(conn, alice.dn)
    assert [s.token for s in record.tokens] == [token]
    assert record.timestamp == applied.timestamp
    assert record.object_guid is not None and record.rejected == ()


def test_a_user_cannot_read_another_users_tokens(lab, alice, bob):
    write(connect_as(lab, alice), alice.dn, cert_token("A" * 40))
    seen_by_bob = read_roaming(connect_as(lab, bob), alice.dn)
    assert seen_by_bob.tokens == () and seen_by_bob.timestamp is None
    assert len(read_roaming(connect_as(lab, alice), alice.dn).tokens) == 1


def test_a_user_cannot_write_another_users_tokens(lab, alice, bob):
    write(connect_as(lab, alice), alice.dn, cert_token("A" * 40))
    bob_conn = connect_as(lab, bob)
    with pytest.raises(DirectoryError, match="insufficientAccessRights") as caught:
        write(bob_conn, alice.dn, cert_token("B" * 40))
    assert not isinstance(caught.value, ConcurrentModification)
    assert [s.token.identifier for s in read_roaming(connect_as(lab, alice), alice.dn).tokens] == [
        "A" * 40
    ]


def test_hostile_values_are_rejected_and_the_rest_is_read(lab, alice):
    exploit = rb"..\..\Windows\Start Menu\Programs\Startup\x.bat"
    blob = struct.pack("<3s93sQHH20sI", b"%3\\", exploit, NOW, 0, 0, bytes(20), 0)
    plant(lab, alice, ACCOUNT_CREDENTIALS, format_dn_binary(blob, alice.dn).encode())
    plant(lab, alice, ACCOUNT_CREDENTIALS, format_dn_binary(b"\0junk", alice.dn).encode())
    conn = connect_as(lab, alice)
    write(conn, alice.dn, cert_token("C" * 40))
    record = read_roaming(conn, alice.dn)
    assert [s.token.identifier for s in record.tokens] == ["C" * 40]
    assert sorted(r.check for r in record.rejected) == ["identifier", "length"]
    # The hostile values are reported, never deleted or rewritten by a sync.
    assert len(record.rejected) == 2


def test_a_stale_writer_gets_a_conflict_and_a_replan_loses_nothing(lab, alice):
    first, second = connect_as(lab, alice), connect_as(lab, alice)
    seen_first = read_roaming(first, alice.dn)
    seen_second = read_roaming(second, alice.dn)
    token_a, token_b = cert_token("A" * 40), cert_token("B" * 40)
    apply_changes(first, seen_first, [put_token(seen_first, ACCOUNT_CREDENTIALS, token_a)], now=NOW)
    with pytest.raises(ConcurrentModification, match=r"changed on .* since they were read"):
        apply_changes(
            second, seen_second, [put_token(seen_second, ACCOUNT_CREDENTIALS, token_b)], now=NOW
        )
    reread = read_roaming(second, alice.dn)
    apply_changes(second, reread, [put_token(reread, ACCOUNT_CREDENTIALS, token_b)], now=NOW + 1)
    final = read_roaming(first, alice.dn)
    assert {s.token for s in final.tokens} == {token_a, token_b}
    assert final.timestamp.last_change == NOW + 1


def test_replacing_a_value_another_writer_replaced_conflicts(lab, alice):
    conn = connect_as(lab, alice)
    write(conn, alice.dn, cert_token("A" * 40, b"v1"))
    stale = read_roaming(conn, alice.dn)
    write(conn, alice.dn, cert_token("A" * 40, b"v2", NOW + 5), now=NOW + 5)
    change = put_token(stale, ACCOUNT_CREDENTIALS, cert_token("A" * 40, b"v3", NOW + 9))
    with pytest.raises(ConcurrentModification):
        apply_changes(conn, stale, [change], now=NOW + 9)
    assert read_roaming(conn, alice.dn).tokens[0].token.data == b"v2"


def test_writes_through_two_dcs_merge_per_value(lab, alice):
    """Linked values: two writers on two DCs both keep their tokens after replication."""
    clear_everywhere(lab, alice)
    on_dc1, on_dc2 = connect_as(lab, alice, dc=0), connect_as(lab, alice, dc=1)
    write(on_dc1, alice.dn, cert_token("A" * 40))
    write(on_dc2, alice.dn, cert_token("B" * 40), now=NOW + 1)
    replicate(lab, 0, 1)
    replicate(lab, 1, 0)
    for conn in (on_dc1, on_dc2):
        identifiers = {s.token.identifier for s in read_roaming(conn, alice.dn).tokens}
        assert identifiers == {"A" * 40, "B" * 40}


def test_credroam_attributes_are_refused_without_their_schema(lab, alice):
    conn = connect_as(lab, alice)
    record = read_roaming(conn, alice.dn)
    if record.credroam_schema:
        pytest.skip("credroam's schema is installed in this lab")
    with pytest.raises(DirectoryError, match="schema"):
        apply_changes(conn, record, [ValueChange(KEY_ENVELOPES, add=b"sealed")], now=NOW)


@pytest.mark.parametrize(
    ("server", "port"), [("dc", 1), ("unused", None)], ids=["closed-port", "no-dc"]
)
def test_an_unreachable_dc_is_named_in_the_error(lab, alice, server, port):
    address = lab.dc(0).ip if server == "dc" else _unused_address(lab)
    target = target_for(lab, alice, port=port, server=address, timeout=2)
    with pytest.raises(DirectoryError, match=f"cannot reach .*{address}:{port or 636}"):
        connect(target)


def _unused_address(lab) -> str:
    """An address inside the lab's own subnet that no lab host uses (.99)."""
    return lab.subnet.rsplit(".", 1)[0] + ".99"
