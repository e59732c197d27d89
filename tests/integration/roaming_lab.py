"""Helpers shared by the directory and sync integration tests: bind as a lab user through the
project's own `connect`, count LDAP operations, clear or plant a user's roaming values, make
certificates and put them in a host's file store as a user (or an enrolment tool) would."""

from __future__ import annotations

import contextlib
import datetime
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from credroam.connection import LdapTarget, connect
from credroam.roaming.certelement import thumbprint
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    DPAPI_MASTER_KEYS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ROAMING_TIMESTAMP,
)
from credroam.roaming.fsutil import atomic_write, ensure_private_dir
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
from tests import credentials
from tests.lab import Account, Lab

# The name the CVE-2022-30170 exploit gave its token: a path into the Startup folder.
CVE_EXPLOIT_NAME = rb"..\..\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\x.bat"

NATIVE_ATTRIBUTES = (ACCOUNT_CREDENTIALS, DPAPI_MASTER_KEYS, ROAMING_TIMESTAMP)
ALL_ATTRIBUTES = (*NATIVE_ATTRIBUTES, KEY_ENVELOPES, ROAMING_KEYS)


def target_for(lab: Lab, account: Account, dc: int = 0, **overrides) -> LdapTarget:
    settings = {
        "server": lab.dc(dc).ip,
        "bind_user": account.upn,
        "bind_password": account.password,
        "ca_cert": lab.ca_cert,
        "timeout": 5,
    }
    settings.update(overrides)
    return LdapTarget(**settings)


def connect_as(lab: Lab, account: Account, dc: int = 0) -> ldap3.Connection:
    """A connection made the way credroam makes them (LDAPS, CA validated)."""
    return connect(target_for(lab, account, dc))


def clear_roaming(lab: Lab, account: Account, dc: int = 0) -> None:
    """Remove every roaming value of ``account``, as the user (the documented recovery step)."""
    conn = connect_as(lab, account, dc)
    try:
        conn.search(
            account.dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(ALL_ATTRIBUTES)
        )
        present = conn.response[0]["raw_attributes"] if conn.response else {}
        changes = {name: [(ldap3.MODIFY_REPLACE, [])] for name, values in present.items() if values}
        if changes:
            assert conn.modify(account.dn, changes), conn.result
    finally:
        conn.unbind()


def plant(lab: Lab, account: Account, attribute: str, raw_value: bytes) -> None:
    """Add a raw value as the user would (every user may write their own: hostile data)."""
    conn = connect_as(lab, account)
    try:
        assert conn.modify(account.dn, {attribute: [(ldap3.MODIFY_ADD, [raw_value])]}), conn.result
    finally:
        conn.unbind()


def replicate(lab: Lab, source: int, dest: int) -> None:
    """Pull the domain partition from DC ``source`` to DC ``dest`` now (samba-tool drs)."""
    lab.dc(dest).run(
        "samba-tool",
        "drs",
        "replicate",
        lab.dc(dest).name,
        lab.dc(source).name,
        lab.base_dn,
        f"--username={lab.admin.upn}",
        f"--password={lab.admin.password}",
    )


def replicate_both_ways(lab: Lab) -> None:
    """Replicate both ways between the first DC and each other, now."""
    for index in range(1, len(lab.dcs)):
        replicate(lab, index, 0)
        replicate(lab, 0, index)


def _inbound_replication(lab: Lab, option: str) -> None:
    for dc in lab.dcs:
        dc.run(
            "samba-tool",
            "drs",
            "options",
            dc.name,
            f"--dsa-option={option}DISABLE_INBOUND_REPL",
            f"--username={lab.admin.upn}",
            f"--password={lab.admin.password}",
        )


def pause_replication(lab: Lab) -> None:
    """No DC takes in another's changes (``+DISABLE_INBOUND_REPL`` on each) until
    resume_replication."""
    _inbound_replication(lab, "+")


def resume_replication(lab: Lab) -> None:
    """Inbound replication on again on every DC, and a replicate both ways between the first
    DC and each other (Samba 4.17 catches up on its own only at the next change)."""
    _inbound_replication(lab, "-")
    replicate_both_ways(lab)


@contextlib.contextmanager
def replication_paused(lab: Lab) -> Iterator[None]:
    """Replication paused inside the block; resumed and forced both ways at the end, also on
    failure."""
    pause_replication(lab)
    try:
        yield
    finally:
        resume_replication(lab)


def clear_everywhere(lab: Lab, account: Account) -> None:
    """Clear ``account`` on every DC and replicate, so no DC holds older values."""
    for index in range(len(lab.dcs)):
        clear_roaming(lab, account, index)
    replicate_both_ways(lab)


class CountingConnection:
    """Wraps a connection and counts the LDAP operations that go through it."""

    def __init__(self, conn: ldap3.Connection) -> None:
        self._conn = conn
        self.searches = 0
        self.writes = 0

    def search(self, *args, **kwargs):
        self.searches += 1
        return self._conn.search(*args, **kwargs)

    def modify(self, *args, **kwargs):
        self.writes += 1
        return self._conn.modify(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


# --- certificates and the local file store ------------------------------------------------------


def self_signed(
    common_name: str, not_after: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """(DER certificate, PKCS#8 DER private key) of a fresh self-signed EC certificate."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = not_after or now + datetime.timedelta(days=365)
    der, pkcs8, _ = credentials.self_signed(common_name, not_before, not_after)
    return der, pkcs8


def install(store_root: Path, certificate_der: bytes, key_der: bytes | None = None) -> str:
    """Put a certificate (and its key) in a file store's MY folder as PEM; the thumbprint."""
    folder = Path(ensure_private_dir(str(store_root / "MY")))
    thumb = thumbprint(certificate_der)
    certificate = x509.load_der_x509_certificate(certificate_der)
    atomic_write(
        str(folder / f"{thumb}.cert.pem"), certificate.public_bytes(serialization.Encoding.PEM)
    )
    if key_der is not None:
        key = serialization.load_der_private_key(key_der, password=None)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(str(folder / f"{thumb}.key.pem"), pem)
    return thumb


def hostile_token(name: bytes, token_type: int = 3, when: int = 0) -> bytes:
    """A native token header naming ``name`` (no data), as the CVE-2022-30170 exploit wrote."""
    return struct.pack("<3s93sQHH20sI", b"%%%d\\" % token_type, name, when, 0, 0, bytes(20), 0)


def files_under(root: Path) -> set[Path]:
    """Every file and symlink below ``root`` (directories excluded), as absolute paths."""
    found = set()
    for folder, _, names in os.walk(root):
        found.update(Path(folder) / name for name in names)
    return found


class SimulatedHost:
    """One host of a user: a real file store, state file and key cache under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "store"
        self.store = FileStore(str(self.root))
        self.state = StateFile(str(home / "state.json"))
        self.key_cache = str(home / "cache" / "roaming.key")

    def path(self, thumb: str, suffix: str, archived: bool = False) -> Path:
        """Where the file store keeps item ``thumb`` (suffix ``cert.pem`` or ``key.pem``)."""
        return self.root / ("archive/MY" if archived else "MY") / f"{thumb}.{suffix}"
