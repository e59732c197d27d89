"""Two DCs with replication paused, the real agent on two lab hosts each pinned to one DC.

Replication is held back with ``samba-tool drs options <dc> --dsa-option=+DISABLE_INBOUND_REPL``
on both DCs and resumed with ``-DISABLE_INBOUND_REPL`` and a forced ``drs replicate`` both ways
(after re-enabling, Samba 4.17 catches up only at the next change or a forced replicate).
"""

from __future__ import annotations

import base64
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization

from credroam.roaming.directory import read_roaming
from credroam.roaming.roamingkey import parse_wrapped_keys
from tests.integration import test_agent
from tests.integration.roaming_lab import connect_as, replication_paused, resume_replication
from tests.integration.test_agent import (
    CONFIG,
    DC1_ONLY,
    STORE,
    agent,
    directory_keys,
    events,
    new_certificate,
    put,
    store_files,
)
from tests.lab import Account, Lab

pytestmark = pytest.mark.integration

# The fixtures this test shares (pytest finds fixtures by name in the module).
agent_lab, alice, pyz = test_agent.agent_lab, test_agent.alice, test_agent.pyz

DC2_ONLY = "/etc/credroam/dc2-only.toml"


@pytest.fixture(scope="module")
def pinned(agent_lab: Lab) -> Lab:
    """client1's agent talks to dc1 only (DC1_ONLY), client2's to dc2 only."""
    config = CONFIG.format(dcs='dcs = ["dc2.lab.example"]\n')
    agent_lab.client(1).ssh(f"cat > {DC2_ONLY} <<'EOF'\n{config}EOF\nchmod 644 {DC2_ONLY}")
    return agent_lab


def key_ids(lab: Lab, account: Account, dc: int) -> set[str]:
    conn = connect_as(lab, account, dc)
    try:
        return {w.key_id for w in parse_wrapped_keys(read_roaming(conn, account.dn))[0]}
    finally:
        conn.unbind()


def login(lab: Lab, host: int, account: Account, env: str = ""):
    """``credroam-agent login`` as ``account`` on client ``host`` (0: through dc1 only, 1:
    through dc2 only), as PAM runs it with the logon password."""
    config = DC1_ONLY if host == 0 else DC2_ONLY
    run = agent(lab.client(host), "login", password=account.password, config=config, env=env)
    assert run.returncode == 0, run.stderr
    return run


def test_two_roaming_keys_from_a_first_use_through_both_dcs_end_as_one(pinned, alice):
    lab = pinned
    with replication_paused(lab):
        thumb_1, _ = new_certificate(lab.client(0), "alice", "first used on host 1")
        thumb_2, _ = new_certificate(lab.client(1), "alice", "first used on host 2")
        login(lab, 0, alice)
        login(lab, 1, alice)
        (id_1,), (id_2,) = key_ids(lab, alice, 0), key_ids(lab, alice, 1)
        assert id_1 != id_2  # each DC saw a first use: two keys
    assert key_ids(lab, alice, 0) == key_ids(lab, alice, 1) == {id_1, id_2}
    winner = min(id_1, id_2)
    loser_host = 0 if id_1 != winner else 1
    winner_host = 1 - loser_host

    # The losing host's next sync with the password takes the winner and re-seals its key.
    resealed = login(lab, loser_host, alice)
    assert "1 re-sealed under the winning roaming key" in resealed.stderr, resealed.stderr
    assert "1 losing roaming keys' records removed" in resealed.stderr
    resume_replication(lab)  # the re-seal, replicated now
    assert key_ids(lab, alice, 0) == key_ids(lab, alice, 1) == {winner}

    final = login(lab, winner_host, alice)
    assert 1012 not in events(final), final.stderr  # nothing sealed under another key
    expected = {f"%3\\{thumb_1}", f"%9\\{thumb_1}", f"%3\\{thumb_2}", f"%9\\{thumb_2}"}
    assert directory_keys(lab, alice, 0) == directory_keys(lab, alice, 1) == expected
    again = login(lab, loser_host, alice)
    assert 1012 not in events(again), again.stderr
    first, second = (
        store_files(lab, lab.client(0), "alice"),
        store_files(lab, lab.client(1), "alice"),
    )
    for thumb in (thumb_1, thumb_2):
        for suffix in ("cert.pem", "key.pem"):
            assert first[f"MY/{thumb}.{suffix}"] == second[f"MY/{thumb}.{suffix}"]


# --- a host away longer than the tombstone days ---------------------------------------------

AWAY_DAYS = 100  # more than the default policy's 60 tombstone days
# The later phase runs with every agent's clock this far ahead (libfaketime), so the earlier
# phases lie that far in the past. Not the other way round: the lab's certificates start at
# the lab's creation, so a clock set back fails TLS validation. Kerberos would refuse a faked
# clock, so every phase binds simply, with the password inside TLS (``login``).
LATER = f"faketime -f +{AWAY_DAYS}d"


def gone(lab: Lab, account: Account, thumb: str) -> bool:
    return not {f"%3\\{thumb}", f"%9\\{thumb}"} & (
        directory_keys(lab, account, 0) | directory_keys(lab, account, 1)
    )


def reencoded(key_pem: bytes) -> bytes:
    """The same EC P-256 private key as another valid PKCS#8 (without the optional public
    key, as some tools write it): another version of the key item, as a re-export makes."""
    key = serialization.load_pem_private_key(key_pem, None)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    ec_private_key = bytes.fromhex("30250201010420") + d
    algorithm = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    der = bytes.fromhex("3041020100") + algorithm + bytes.fromhex("0427") + ec_private_key
    assert serialization.load_der_private_key(der, None).private_numbers() == key.private_numbers()
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n".encode()


def test_a_host_back_after_the_tombstone_days_brings_no_deleted_item_back(pinned, alice):
    lab = pinned
    laptop, office = lab.client(0), lab.client(1)
    deleted, _ = new_certificate(laptop, "alice", "deleted while the laptop is away")
    kept, _ = new_certificate(laptop, "alice", "its key deleted, then edited on the laptop")
    login(lab, 0, alice)
    resume_replication(lab)
    login(lab, 1, alice)
    # The office deletes one certificate with its key, and the other's key alone, while the
    # laptop is away; the tombstones reach both DCs.
    office.ssh(f"rm ~alice/{STORE}/MY/{deleted}.* ~alice/{STORE}/MY/{kept}.key.pem")
    assert "3 tombstoned" in login(lab, 1, alice).stderr
    resume_replication(lab)

    # AWAY_DAYS later: the office's sync purges the tombstones, older than the tombstone days.
    assert "3 purged" in login(lab, 1, alice, env=LATER).stderr
    resume_replication(lab)
    assert gone(lab, alice, deleted) and f"%9\\{kept}" not in directory_keys(lab, alice, 0)
    # The laptop's user re-exports the kept certificate's key now, after the deletion.
    key_name = f"MY/{kept}.key.pem"
    edited = reencoded(store_files(lab, laptop, "alice")[key_name])
    put(laptop, "alice", f"{STORE}/{key_name}", edited)
    when = int(laptop.ssh(f"{LATER} date +%s").stdout)
    laptop.ssh(f"touch -d @{when} ~alice/{STORE}/{key_name}")
    back = login(lab, 0, alice, env=LATER)
    assert "1 uploaded" in back.stderr and "2 deleted locally" in back.stderr, back.stderr
    resume_replication(lab)
    login(lab, 1, alice, env=LATER)

    # Nothing deleted came back (R16); the newer edit won (R17), on every host and both DCs.
    assert gone(lab, alice, deleted)
    both = {f"%3\\{kept}", f"%9\\{kept}"}
    assert directory_keys(lab, alice, 0) == directory_keys(lab, alice, 1) == both
    for host in (laptop, office):
        files = store_files(lab, host, "alice")
        assert not [name for name in files if name.startswith(f"MY/{deleted}")]
        assert files[key_name] == edited
    # Another round changes nothing: the deleted item stays deleted.
    for host in (0, 1):
        assert "nothing to do" in login(lab, host, alice, env=LATER).stderr
    assert gone(lab, alice, deleted)
