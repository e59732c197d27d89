"""Helpers shared by the directory and sync integration tests: bind as a lab user through the
project's own `connect`, count LDAP operations, clear or plant a user's roaming values."""

from __future__ import annotations

import ldap3

from credroam.connection import LdapTarget, connect
from credroam.directory import (
    ACCOUNT_CREDENTIALS,
    DPAPI_MASTER_KEYS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    ROAMING_TIMESTAMP,
)
from tests.lab import Account, Lab

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


def clear_everywhere(lab: Lab, account: Account) -> None:
    """Clear ``account`` on every DC and replicate, so no DC holds older values."""
    for index in range(len(lab.dcs)):
        clear_roaming(lab, account, index)
    for index in range(1, len(lab.dcs)):
        replicate(lab, index, 0)
        replicate(lab, 0, index)


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
