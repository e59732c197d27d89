"""Security through the real agent on the lab: alice's roaming values stay hers, no private key
in plaintext anywhere a sync leaves traces, and ``purge`` wipes the key cache.

The raw-LDAP side of the ACLs (bob can neither read nor write alice's tokens) is in
tests/integration/test_directory.py and test_schema.py; here the same holds for the agent's own
code on a lab host, bound as bob, and for the agent aimed at alice's account.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from tests.integration import test_agent
from tests.integration.test_agent import (
    PYZ,
    agent,
    directory_keys,
    events,
    new_certificate,
    store_files,
    uid,
)
from tests.lab import REPO, ClientHost, Lab

pytestmark = pytest.mark.integration
# The agent tests' lab preparation (schema, local accounts, agent configuration, zipapp).
pyz, agent_lab, alice, bob = test_agent.pyz, test_agent.agent_lab, test_agent.alice, test_agent.bob

# Run as bob on a lab host with the zipapp's own code: bind as bob the way the agent does, then
# read alice's roaming values and try to write one. Prints what was read and what the DC said.
AS_BOB = """import sys, json
sys.path.insert(0, {pyz!r})
from credroam_agent.config import load_config
from credroam_agent.dcs import bind_as_user
from credroam.errors import DirectoryError
from credroam.roaming.directory import (ACCOUNT_CREDENTIALS, READ_ATTRIBUTES, apply_changes,
    put_token, read_roaming)
from credroam.tokens import Token, TokenFlags, TokenType
bound = bind_as_user(load_config("/etc/credroam/dc1-only.toml"), "bob", sys.stdin.read())
conn = bound.conn
record = read_roaming(conn, {dn!r})
conn.search({dn!r}, "(objectClass=*)", "BASE", attributes=list(READ_ATTRIBUTES))
raw = conn.response[0]["raw_attributes"] if conn.response else {{}}
seen = sorted(name for name, values in raw.items() if values)
token = Token(TokenType.CERTIFICATE, "A" * 40, 133000000000000000, TokenFlags.TOMBSTONE, b"")
try:
    change = put_token(record, ACCOUNT_CREDENTIALS, token)
    apply_changes(conn, record, [change], now=133000000000000001)
    written = "written"
except DirectoryError as exc:
    written = str(exc)
print(json.dumps({{"tokens": len(record.tokens), "blobs": len(record.rejected), "seen": seen,
                  "written": written}}))
"""
PEM_MARKERS = (b"PRIVATE KEY", b"BEGIN EC", b"BEGIN RSA")


def _key_forms(lab: Lab, host: ClientHost, thumb: str) -> list[bytes]:
    """Every form in which alice's private key could leak: PEM markers, the DER bytes, their
    hex (either case: DN-Binary is hex) and base64 (a PEM body)."""
    pem = store_files(lab, host, "alice")[f"MY/{thumb}.key.pem"]
    der = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    encoded = base64.b64encode(der)
    return [*PEM_MARKERS, der, der.hex().encode(), der.hex().upper().encode(), encoded[:64]]


def _leaks(text: bytes, forms: list[bytes]) -> list[bytes]:
    return [form[:24] for form in forms if form in text]


def test_bob_can_neither_read_nor_write_alices_values_with_the_agents_code(agent_lab, alice, bob):
    lab, host = agent_lab, agent_lab.client(0)
    thumb, _ = new_certificate(host, "alice", "alice's own")
    assert agent(host, "login", password=alice.password).returncode == 0
    before = directory_keys(lab, alice)
    assert {f"%3\\{thumb}", f"%9\\{thumb}"} <= before

    script = AS_BOB.format(pyz=str(PYZ), dn=alice.dn)
    # The password on stdin, as PAM gives it to the agent.
    run = subprocess.run(
        [*host.exec, "runuser", "-u", "bob", "--", "/usr/bin/python3", "-c", script],
        input=bob.password,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["tokens"] == 0 and seen["blobs"] == 0  # the DC withholds every value
    assert not {"msPKIAccountCredentials", "credroamKeyEnvelopes", "credroamRoamingKeys"} & {
        name for name in seen["seen"]
    }
    assert "insufficientAccessRights" in seen["written"]
    assert directory_keys(lab, alice) == before


def test_the_agent_aimed_at_alices_account_with_bobs_password_touches_nothing(
    agent_lab, alice, bob
):
    lab, host = agent_lab, agent_lab.client(0)
    assert agent(host, "login", password=alice.password).returncode == 0  # nothing yet
    thumb, _ = new_certificate(host, "alice", "alice's, not bob's")
    assert agent(host, "login", password=alice.password).returncode == 0
    before = directory_keys(lab, alice)
    host.ssh(
        "cp /etc/credroam/dc1-only.toml /etc/credroam/bob-as-alice.toml && "
        'printf \'[users]\\nmap = { "bob" = "alice" }\\n\' >> /etc/credroam/bob-as-alice.toml && '
        "chmod 644 /etc/credroam/bob-as-alice.toml"
    )
    new_certificate(host, "bob", "bob's")
    aimed = agent(host, "login", user="bob", password=bob.password,
                  config="/etc/credroam/bob-as-alice.toml")  # fmt: skip
    assert aimed.returncode == 3 and events(aimed) == [1010], aimed.stderr
    assert directory_keys(lab, alice) == before
    assert not [name for name in store_files(lab, host, "bob") if thumb in name]


def test_no_private_key_in_plaintext_in_the_directory_the_agents_output_or_ansible_vvv(
    agent_lab, alice
):
    lab, host = agent_lab, agent_lab.client(0)
    thumb, _ = new_certificate(host, "alice", "never in plaintext")
    forms = _key_forms(lab, host, thumb)

    login = agent(host, "login", password=alice.password)  # the agent's whole event stream
    assert login.returncode == 0, login.stderr
    report = agent(host, "sync", "--dry-run", "--json", password=alice.password)
    ansible = subprocess.run(
        [str(REPO / ".venv/bin/ansible"), "client1", "-vvv", "-m", "credroam_sync",
         "-a", json.dumps({"users": ["alice"], "passwords": {"alice": alice.password},
                           "agent_path": str(PYZ)})],
        cwd=REPO, capture_output=True, timeout=300, check=False,
        env={**os.environ, "CREDROAM_LAB": lab.name},
    )  # fmt: skip
    assert ansible.returncode == 0, ansible.stdout[-3000:]
    assert b"<client1>" in ansible.stdout or b"ESTABLISH SSH" in ansible.stdout  # really -vvv

    for name, text in {
        "agent login": (login.stdout + login.stderr).encode(),
        "agent sync --json": (report.stdout + report.stderr).encode(),
        "ansible -vvv": ansible.stdout + ansible.stderr,
    }.items():
        assert _leaks(text, forms) == [], name
    admin = lab.ldap_connection()  # full control: reads the confidential values too
    try:
        admin.search(alice.dn, "(objectClass=*)", "BASE", attributes=["*"])
        raw = admin.response[0]["raw_attributes"]
    finally:
        admin.unbind()
    assert raw.get("credroamKeyEnvelopes"), "the sealed key is there"
    stored = b"\n".join(value for values in raw.values() for value in values)
    assert _leaks(stored, forms) == []


def test_purge_wipes_the_key_cache(agent_lab, alice):
    host = agent_lab.client(0)
    new_certificate(host, "alice", "purged at logoff")
    assert agent(host, "login", password=alice.password).returncode == 0
    cache = f"/run/user/{uid(host, 'alice')}/credroam/roaming.key"
    assert host.ssh(f"test -s {cache}", check=False).returncode == 0

    purged = agent(host, "purge", "--always")
    assert purged.returncode == 0, purged.stderr
    assert host.ssh(f"test -e {cache}", check=False).returncode == 1
    assert not [name for name in store_files(agent_lab, host, "alice") if name.startswith("MY/")]
