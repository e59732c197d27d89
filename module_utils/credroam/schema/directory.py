"""The schema's directory steps: the schema master, the forest's DCs, reading the live schema,
applying a plan, and waiting until every DC has it.

Over ldap3 and :mod:`..connection`; ``ad_schema`` and the compliance run use the same steps. What
to read and what to write is decided by the pure :mod:`.plan`; this module only moves it.
Every error is a :class:`~..errors.DirectoryError` naming the DC and what was asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ldap3

from ..connection import LdapTarget, RootDse
from ..errors import DirectoryError
from ..ldapresult import check_result, first
from .definitions import SchemaDefinitions
from .plan import (
    READ_ATTRIBUTES,
    LdapAdd,
    SchemaPlan,
    missing_on_dc,
    normalize_entry,
    read_filter,
    to_wire,
)

__all__ = [
    "Connector",
    "apply_plan",
    "connect_schema_master",
    "dc_target",
    "forest_dcs",
    "read_schema",
    "refresh_schema_cache",
    "schema_master",
    "wait_for_replication",
    "wait_until_replicated",
]

# How a step opens a connection to another DC (the schema master, each DC while waiting):
# connection.connect, named by the caller so that no step reaches the network unasked.
Connector = Callable[[LdapTarget], ldap3.Connection]
_MODIFY_OPERATIONS = {
    "add": ldap3.MODIFY_ADD,
    "replace": ldap3.MODIFY_REPLACE,
    "delete": ldap3.MODIFY_DELETE,
}


def dc_target(base: LdapTarget, fqdn: str, dc_addresses: Mapping[str, str]) -> LdapTarget:
    """A DC by DNS name, with ``base``'s credentials and TLS settings: connect to its address
    from ``dc_addresses`` (names compared case-insensitively) when the controller cannot resolve
    the name, but check the certificate for the name either way."""
    address = next((a for n, a in dc_addresses.items() if n.lower() == fqdn.lower()), None)
    if address is None:
        return base.with_server(fqdn, base.tls_server_name if fqdn == base.server else None)
    return base.with_server(address, tls_server_name=fqdn)


def _read_object(conn: ldap3.Connection, dn: str, attributes: list[str]) -> dict[str, Any]:
    if not conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=attributes):
        check_result(conn, f"reading {dn}")
        raise DirectoryError(f"{dn} not found on {conn.server.host}")
    return conn.response[0]["attributes"]


def schema_master(conn: ldap3.Connection, schema_dn: str) -> tuple[str, str]:
    """(server object DN, DNS name) of the schema FSMO owner, the one DC that takes schema
    writes."""
    owner = first(_read_object(conn, schema_dn, ["fSMORoleOwner"]), "fSMORoleOwner")
    if not owner:
        raise DirectoryError(f"{schema_dn} names no fSMORoleOwner")
    if "," not in str(owner):
        raise DirectoryError(f"{schema_dn}: fSMORoleOwner {owner!r} is not an NTDS Settings DN")
    server_dn = str(owner).split(",", 1)[1]  # parent of CN=NTDS Settings
    return server_dn, str(first(_read_object(conn, server_dn, ["dNSHostName"]), "dNSHostName"))


def connect_schema_master(
    conn: ldap3.Connection,
    root: RootDse,
    base: LdapTarget,
    dc_addresses: Mapping[str, str],
    connector: Connector,
) -> tuple[str, ldap3.Connection]:
    """(DNS name of the schema master, a connection to it). ``conn`` (bound to any DC, whose
    rootDSE is ``root``) is returned as it is when that DC is the master; otherwise it is
    unbound and replaced by a connection to the master with ``base``'s settings."""
    master_dn, master_name = schema_master(conn, root.schema_naming_context)
    if master_dn.lower() == root.server_name.lower():
        return master_name, conn
    conn.unbind()
    return master_name, connector(dc_target(base, master_name, dc_addresses))


def forest_dcs(conn: ldap3.Connection, configuration_dn: str) -> list[str]:
    """DNS names of every DC in the forest: servers under CN=Sites holding an nTDSDSA object."""
    sites = f"CN=Sites,{configuration_dn}"
    ok = conn.search(sites, "(objectClass=nTDSDSA)", attributes=["objectClass"])
    check_result(conn, f"listing nTDSDSA objects under {sites}")
    servers = {e["dn"].split(",", 1)[1].lower() for e in conn.response if ok and "dn" in e}
    conn.search(sites, "(objectClass=server)", attributes=["dNSHostName"])
    check_result(conn, f"listing servers under {sites}")
    names = [
        str(first(e["attributes"], "dNSHostName"))
        for e in conn.response
        if e.get("dn", "").lower() in servers and first(e["attributes"], "dNSHostName")
    ]
    return sorted(names)


def read_schema(
    conn: ldap3.Connection, schema_dn: str, defs: SchemaDefinitions
) -> list[dict[str, Any]]:
    """Every schema object sharing a name, cn or OID with ``defs`` (and the classes they
    extend), normalized for :mod:`.plan`."""
    conn.search(
        schema_dn,
        read_filter(defs),
        search_scope=ldap3.LEVEL,
        attributes=list(READ_ATTRIBUTES),
    )
    check_result(conn, f"reading schema objects under {schema_dn}")
    return [
        normalize_entry(e["dn"], e["raw_attributes"])
        for e in conn.response
        if e.get("type") == "searchResEntry"
    ]


def refresh_schema_cache(conn: ldap3.Connection) -> None:
    """schemaUpdateNow: the DC reloads its schema cache, so later writes may name what was just
    added."""
    conn.modify("", {"schemaUpdateNow": [(ldap3.MODIFY_REPLACE, ["1"])]})
    check_result(conn, "schemaUpdateNow")


def apply_plan(conn: ldap3.Connection, plan: SchemaPlan, done: list[dict[str, Any]]) -> None:
    """Execute the plan phase by phase with a schema cache refresh after each phase, appending
    each executed operation to ``done`` (as ``as_operation``) as it succeeds, so a failure can
    say what was written."""
    for phase in plan.phases():
        for op in phase:
            if isinstance(op, LdapAdd):
                wire = {k: to_wire(k, v) for k, v in op.attributes.items()}
                conn.add(op.dn, op.object_class, wire)
                check_result(conn, f"adding {op.dn}")
            else:
                changes = {
                    k: [(_MODIFY_OPERATIONS[o], to_wire(k, v))] for k, (o, v) in op.changes.items()
                }
                conn.modify(op.dn, changes)
                check_result(conn, f"modifying {op.dn}")
            done.append(op.as_operation())
        refresh_schema_cache(conn)


def wait_until_replicated(
    dcs: Sequence[str],
    check: Callable[[str], list[str]],
    timeout: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
    first_delay: float = 0.5,
    max_delay: float = 10.0,
) -> dict[str, list[str]]:
    """Poll ``check(dc)`` (-> what the DC lacks; raising counts as "unreachable") with backoff
    until every DC lacks nothing or ``timeout`` seconds pass. Returns what each lagging DC still
    lacks (empty dict = all current)."""
    deadline = monotonic() + timeout
    delay = first_delay
    lagging: dict[str, list[str]] = {dc: ["not checked yet"] for dc in dcs}
    while True:
        for dc in list(lagging):
            try:
                missing = check(dc)
            except Exception as exc:  # a DC that cannot be asked yet is lagging, not fatal
                missing = [f"unreachable: {exc}"]
            if missing:
                lagging[dc] = missing
            else:
                del lagging[dc]
        remaining = deadline - monotonic()
        if not lagging or remaining <= 0:
            return lagging
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)


def wait_for_replication(
    conn: ldap3.Connection,
    root: RootDse,
    base: LdapTarget,
    defs: SchemaDefinitions,
    dc_addresses: Mapping[str, str],
    timeout: float,
    connector: Connector,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Wait until every DC of the forest shows ``defs``; ``{"dcs": [...], "seconds": s}``.

    Each DC is asked in its own connection (``base``'s settings, addressed by
    :func:`dc_target`). Raises :class:`DirectoryError` after ``timeout`` seconds naming each DC
    that lags and what it lacks.
    """
    dcs = forest_dcs(conn, root.configuration_naming_context)

    def lacks(fqdn: str) -> list[str]:
        dc_conn = connector(dc_target(base, fqdn, dc_addresses))
        try:
            return missing_on_dc(defs, read_schema(dc_conn, root.schema_naming_context, defs))
        finally:
            dc_conn.unbind()

    started = monotonic()
    lagging = wait_until_replicated(dcs, lacks, timeout, sleep, monotonic)
    if lagging:
        detail = "; ".join(f"{dc} lacks {', '.join(missing)}" for dc, missing in lagging.items())
        raise DirectoryError(f"schema change not on every DC after {timeout} s: {detail}")
    return {"dcs": dcs, "seconds": round(monotonic() - started, 1)}
