"""credroam_tokens against the lab's real Samba DC, run the real way (ansible on the controller),
with the real agent on the lab's client hosts: what a host's next sync does after each operation.

The agent tests' fixtures prepare the lab (schema, local accounts, agent configuration, zipapp)
and give a clean alice on every DC and host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from credroam.roaming.certelement import certificate_token
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, read_roaming
from credroam.timestamps import TICKS_PER_DAY, filetime_now
from credroam.tokens import Token, TokenFlags, TokenType, encode_token, format_dn_binary
from tests.integration import test_agent
from tests.integration.roaming_lab import connect_as, plant, self_signed
from tests.integration.test_agent import (
    agent,
    directory_keys,
    new_certificate,
    store_files,
    tombstones,
)
from tests.lab import REPO, Account, Lab

pytestmark = pytest.mark.integration
pyz, agent_lab, alice = test_agent.pyz, test_agent.agent_lab, test_agent.alice


def tokens_module(lab: Lab, args: dict, *flags: str, as_account: Account | None = None) -> dict:
    """credroam_tokens' result from one ad-hoc ansible run on the controller (JSON callback)."""
    account = as_account or lab.admin
    connection = {
        "server": lab.dc(0).ip,
        "ca_cert": str(lab.ca_cert),
        "bind_user": account.upn,
        "bind_password": account.password,
    }
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={REPO / '.venv/bin/python'}",
         "-m", "credroam_tokens", "-a", json.dumps({**connection, **args}), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
    )  # fmt: skip
    assert account.password not in run.stdout
    report = json.loads(run.stdout)
    (task,) = report["plays"][0]["tasks"]
    result = task["hosts"]["localhost"]
    assert not result.get("failed"), result
    return result


def certificate_value(account: Account) -> tuple[bytes, str]:
    """A certificate token of ``account`` as an LDAP value, and its item key."""
    token = certificate_token(self_signed(account.name)[0], filetime_now())
    return format_dn_binary(encode_token(token), account.dn).encode(), token.key


def stamp(lab: Lab, account: Account) -> bytes | None:
    conn = connect_as(lab, account)
    try:
        return read_roaming(conn, account.dn).timestamp_raw
    finally:
        conn.unbind()


def logged_in(lab: Lab, account: Account, host: int) -> None:
    run = agent(lab.client(host), "login", password=account.password)
    assert run.returncode == 0, run.stderr


def test_list_shows_alices_certificate_and_key_to_her_and_to_an_admin(agent_lab, alice):
    thumb, _ = new_certificate(agent_lab.client(0), "alice", "alice listed")
    logged_in(agent_lab, alice, 0)
    for account in (alice, None):
        listed = tokens_module(agent_lab, {"user": "alice"}, as_account=account)
        assert listed["changed"] is False and listed["operations"] == []
        by_key = {token["key"]: token for token in listed["tokens"] if token["key"]}
        certificate = by_key[f"%3\\{thumb}"]
        assert certificate["subject"] == "CN=alice listed" and certificate["expires"]
        assert certificate["tombstone"] is False and certificate["archived"] is False
        assert by_key[f"%9\\{thumb}"]["type"] == "CNG_KEY"
        assert [t["attribute"] for t in listed["tokens"] if not t["key"]] == ["credroamRoamingKeys"]


def test_remove_check_mode_writes_nothing_then_another_hosts_sync_deletes_its_copy(
    agent_lab, alice
):
    lab = agent_lab
    thumb, _ = new_certificate(lab.client(0), "alice", "to be removed")
    logged_in(lab, alice, 0)
    logged_in(lab, alice, 1)
    assert f"MY/{thumb}.cert.pem" in store_files(lab, lab.client(1), "alice")
    before = stamp(lab, alice)

    args = {"user": alice.upn, "operation": "remove", "token": thumb}
    planned = tokens_module(lab, args, "--check", "--diff")
    assert planned["changed"] is True and len(planned["operations"]) == 1
    assert f"msPKIAccountCredentials %3\\{thumb} tombstone" in planned["diff"]["after"]
    assert stamp(lab, alice) == before and tombstones(lab, alice) == set()

    removed = tokens_module(lab, args)
    assert removed["changed"] is True
    assert tombstones(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert stamp(lab, alice) != before  # the agents' fast path sees the write
    assert tokens_module(lab, args)["changed"] is False

    logged_in(lab, alice, 1)
    left = store_files(lab, lab.client(1), "alice")
    assert f"MY/{thumb}.cert.pem" not in left and f"MY/{thumb}.key.pem" not in left


def test_prune_removes_a_tombstone_past_its_days_and_keeps_the_rest(agent_lab, alice):
    lab = agent_lab
    thumb, _ = new_certificate(lab.client(0), "alice", "kept")
    logged_in(lab, alice, 0)
    old = Token(TokenType.CERTIFICATE, "C" * 40, filetime_now() - 61 * TICKS_PER_DAY,
                TokenFlags.TOMBSTONE, b"")  # fmt: skip
    plant(lab, alice, ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(old), alice.dn).encode())
    args = {"user": "alice", "operation": "prune"}
    pruned = tokens_module(lab, args)
    assert pruned["changes"] == [f"delete msPKIAccountCredentials {old.key}"]
    assert tombstones(lab, alice) == set()
    assert directory_keys(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert tokens_module(lab, args)["changed"] is False


def test_export_clear_and_import_bring_everything_back_and_a_new_host_opens_the_key(
    agent_lab, alice, tmp_path: Path
):
    lab = agent_lab
    thumb, _ = new_certificate(lab.client(0), "alice", "exported")
    logged_in(lab, alice, 0)
    path = tmp_path / "alice.json"
    exported = tokens_module(lab, {"user": "alice", "operation": "export", "path": str(path)})
    assert exported["changed"] is True and exported["export"]["values"] == 3
    assert path.stat().st_mode & 0o777 == 0o600
    export = json.loads(path.read_text())
    assert (export["format"], export["version"]) == ("credroam-tokens-export", 1)
    again = tokens_module(lab, {"user": "alice", "operation": "export", "path": str(path)})
    assert again["changed"] is False

    purge = {"user": "alice", "operation": "purge", "purge_form": "clear", "confirm": True}
    assert tokens_module(lab, purge)["changed"] is True
    assert directory_keys(lab, alice) == set() and tombstones(lab, alice) == set()

    imported = tokens_module(lab, {"user": "alice", "operation": "import", "path": str(path)})
    assert imported["changed"] is True and imported["notes"] == []
    assert directory_keys(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert (
        tokens_module(lab, {"user": "alice", "operation": "import", "path": str(path)})["changed"]
        is False
    )
    # The sealed key and its roaming key record came back as they were: a host opens it.
    logged_in(lab, alice, 1)
    files = store_files(lab, lab.client(1), "alice")
    assert (
        files[f"MY/{thumb}.key.pem"]
        == store_files(lab, lab.client(0), "alice")[f"MY/{thumb}.key.pem"]
    )


def test_purge_as_tombstones_makes_every_host_delete_its_copies(agent_lab, alice):
    lab = agent_lab
    thumb, _ = new_certificate(lab.client(0), "alice", "purged")
    logged_in(lab, alice, 0)
    logged_in(lab, alice, 1)
    purge = {"user": "alice", "operation": "purge", "confirm": True}
    assert tokens_module(lab, purge, "--check")["changed"] is True
    assert tombstones(lab, alice) == set()
    assert tokens_module(lab, purge)["changed"] is True
    assert tombstones(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert tokens_module(lab, purge)["changed"] is False
    for host in (0, 1):
        logged_in(lab, alice, host)
        assert not [n for n in store_files(lab, lab.client(host), "alice") if n.startswith("MY/")]


def test_purge_by_clearing_leaves_a_host_with_its_base_holding_its_copy_without_reupload(
    agent_lab, alice
):
    lab = agent_lab
    thumb, _ = new_certificate(lab.client(0), "alice", "cleared")
    logged_in(lab, alice, 0)
    purge = {"user": "alice", "operation": "purge", "purge_form": "clear", "confirm": True}
    cleared = tokens_module(lab, purge)
    assert cleared["changed"] is True and cleared["tokens"] == []
    assert tokens_module(lab, purge)["changed"] is False
    # Seen in the directory within the tombstone days: the absence is taken for replication
    # lag; the copy stays and nothing is uploaded (deleted only after the tombstone days).
    logged_in(lab, alice, 0)
    assert f"MY/{thumb}.cert.pem" in store_files(lab, lab.client(0), "alice")
    assert directory_keys(lab, alice) == set()
