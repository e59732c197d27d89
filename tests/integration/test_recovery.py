"""Key recovery on the lab, as the helpdesk runs it: playbooks/recover.yml against the lab's DCs
and the real agent on the lab's client hosts.

alice's agent on host 1 wraps her roaming key for the organisation's recovery public key; an
administrator resets her password (samba-tool); the helpdesk gives her key a one-time secret;
her login on host 2 with the new password and that secret opens every private key. Then the
recovery key is rotated: check mode writes nothing, the real run rewraps, a second run changes
nothing and the old recovery key no longer opens her key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from credroam.roaming.directory import ROAMING_KEYS, read_roaming
from credroam.roaming.envelope import public_key_id
from credroam.roaming.roamingkey import (
    RecordKind,
    RoamingKeyUnavailable,
    WrappedKey,
    parse_wrapped_keys,
    recover_with_recovery_key,
    roaming_key_id,
)
from credroam.timestamps import filetime_now
from tests.integration import test_agent
from tests.integration.test_agent import (
    CONFIG,
    agent,
    events,
    new_certificate,
    password_changed,
    spki,
    store_files,
)
from tests.lab import Lab, PlaybookRun, ansible_playbook

pytestmark = pytest.mark.integration

# The fixtures this test shares (pytest finds fixtures by name in the module).
agent_lab, alice, pyz = test_agent.agent_lab, test_agent.alice, test_agent.pyz

RECOVERY_CONFIG = "/etc/credroam/recovery.toml"
RECOVERY_PEM = "/etc/credroam/recovery.pem"
NEW_PASSWORD = "Alice-Reset-By-Admin-4!"
ONE_TIME_SECRET = "HD-7QK4-M2XD-9PLA"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_file(path: Path, key: rsa.RSAPrivateKey) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return str(path)


def recover_playbook(lab: Lab, tmp_path: Path, *args: str, **variables: str) -> PlaybookRun:
    """playbooks/recover.yml on the lab inventory; the variables (secrets among them) go in a
    0600 file, as an operator passes a vault file."""
    extra = tmp_path / "recover-vars.json"
    extra.write_text(json.dumps(variables))
    extra.chmod(0o600)
    return ansible_playbook(lab, "playbooks/recover.yml", "-e", f"@{extra}", *args)


def roaming_key_values(lab: Lab, dn: str) -> list[bytes]:
    conn = lab.ldap_connection()
    try:
        return sorted(b.raw for b in read_roaming(conn, dn).blobs_in(ROAMING_KEYS))
    finally:
        conn.unbind()


def wrapped_keys(lab: Lab, dn: str) -> list[WrappedKey]:
    conn = lab.ldap_connection()
    try:
        return parse_wrapped_keys(read_roaming(conn, dn))[0]
    finally:
        conn.unbind()


def recovery_ids(lab: Lab, dn: str) -> set[str]:
    return {w.recovery_key_id for w in wrapped_keys(lab, dn) if w.kind is RecordKind.RECOVERY}


def signs_and_verifies(key_pem: bytes, certificate_pem: bytes) -> bool:
    """The roamed private key signs, and the certificate's public key verifies it."""
    key = serialization.load_pem_private_key(key_pem, None)
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    assert spki(key.public_key()) == spki(certificate.public_key())
    signature = key.sign(b"credroam recovery", ec.ECDSA(hashes.SHA256()))
    certificate.public_key().verify(signature, b"credroam recovery", ec.ECDSA(hashes.SHA256()))
    return True


@pytest.fixture(scope="module")
def recovery_key(agent_lab: Lab) -> rsa.RSAPrivateKey:
    """The organisation's recovery key; its public half configured on hosts 1 and 2."""
    key = rsa_key()
    config = CONFIG.format(dcs='dcs = ["dc1.lab.example"]\n')
    config += f'[recovery]\npublic_keys = ["{RECOVERY_PEM}"]\n'
    for host in agent_lab.clients[:2]:
        host.ssh(
            f"cat > {RECOVERY_PEM} <<'EOF'\n{public_pem(key).decode()}EOF\n"
            f"cat > {RECOVERY_CONFIG} <<'EOF'\n{config}EOF\n"
            f"chmod 644 {RECOVERY_PEM} {RECOVERY_CONFIG}"
        )
    return key


def test_a_reset_user_logs_in_on_a_second_host_with_the_one_time_secret_and_loses_nothing(
    agent_lab, alice, recovery_key, tmp_path
):
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    thumb, _ = new_certificate(first, "alice", "before the reset")
    login = agent(first, "login", password=alice.password, config=RECOVERY_CONFIG)
    assert login.returncode == 0, login.stderr
    assert recovery_ids(lab, alice.dn) == {public_key_id(public_pem(recovery_key))}

    key_file = private_file(tmp_path / "recovery.key.pem", recovery_key)
    with password_changed(lab, alice, NEW_PASSWORD):
        early = agent(second, "login", password=NEW_PASSWORD, config=RECOVERY_CONFIG)
        assert early.returncode == 1 and 1007 in events(early), early.stderr

        run = recover_playbook(
            lab,
            tmp_path,
            recover_user="alice",
            recover_one_time_secret=ONE_TIME_SECRET,
            recover_recovery_key_file=key_file,
        )
        assert run.returncode == 0 and run.changed == 1, run.output[-4000:]
        assert ONE_TIME_SECRET not in run.output and "PRIVATE KEY" not in run.output

        redeemed = agent(
            second,
            "login",
            "--one-time-secret",
            password=f"{NEW_PASSWORD}\0{ONE_TIME_SECRET}",
            config=RECOVERY_CONFIG,
        )
        assert redeemed.returncode == 0, redeemed.stderr
        files = store_files(lab, second, "alice")
        assert (
            files[f"MY/{thumb}.key.pem"] == store_files(lab, first, "alice")[f"MY/{thumb}.key.pem"]
        )
        assert signs_and_verifies(files[f"MY/{thumb}.key.pem"], files[f"MY/{thumb}.cert.pem"])

        # The secret was spent: her own password opens the key on a fresh session now.
        second.ssh("rm -rf /run/user/$(id -u alice)")
        plain = agent(second, "login", password=NEW_PASSWORD, config=RECOVERY_CONFIG)
        assert plain.returncode == 0 and 1007 not in events(plain), plain.stderr


def test_rotating_the_recovery_key_check_mode_first_then_once_and_the_old_key_is_dead(
    agent_lab, alice, recovery_key, tmp_path
):
    lab = agent_lab
    first = lab.client(0)
    new_certificate(first, "alice", "rotation")
    login = agent(first, "login", password=alice.password, config=RECOVERY_CONFIG)
    assert login.returncode == 0, login.stderr
    new_key = rsa_key()
    new_public = tmp_path / "recovery-new.pem"
    new_public.write_bytes(public_pem(new_key))
    rotate = {
        "recover_operation": "rotate",
        "recover_recovery_key_file": private_file(tmp_path / "old.key.pem", recovery_key),
        "recover_new_public_key_file": str(new_public),
    }
    before = roaming_key_values(lab, alice.dn)
    checked = recover_playbook(lab, tmp_path, "--check", "--diff", **rotate)
    assert checked.returncode == 0 and checked.changed == 1, checked.output[-4000:]
    assert f"for recovery key {public_key_id(public_pem(new_key))[:16]}" in checked.output
    assert roaming_key_values(lab, alice.dn) == before

    done = recover_playbook(lab, tmp_path, **rotate)
    assert done.returncode == 0 and done.changed == 1, done.output[-4000:]
    assert alice.dn in done.output
    assert recovery_ids(lab, alice.dn) == {public_key_id(public_pem(new_key))}
    assert recover_playbook(lab, tmp_path, **rotate).changed == 0

    conn = lab.ldap_connection()
    try:
        opened = dict(new_password=ONE_TIME_SECRET, now=filetime_now(), check_mode=True)
        with pytest.raises(RoamingKeyUnavailable, match="no recovery record"):
            recover_with_recovery_key(conn, alice.dn, recovery_private_key=recovery_key, **opened)
        key, _ = recover_with_recovery_key(conn, alice.dn, recovery_private_key=new_key, **opened)
    finally:
        conn.unbind()
    # The key the new recovery key opens is the one alice's own password record wraps.
    password_ids = {w.key_id for w in wrapped_keys(lab, alice.dn) if w.kind is RecordKind.PASSWORD}
    assert password_ids == {roaming_key_id(key)}
