"""What the compliance run reads from a forest, and nothing more: every read here is a search
or an SMB read, never a write.

Per DC: its schema (the objects sharing a name or OID with credroam's definitions), the GPO's
folder on its SYSVOL, and every in-scope user's msPKIRoamingTimeStamp. Through one DC: the GPO
container, its links, and every in-scope user's whole object, read with a paged search
(:data:`PAGE_SIZE` entries a page, through ldap3's generator) so that memory stays bounded by
one page however many users there are. Only the users' timestamps (16 bytes each) are held for
the replication comparison.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars

from ..errors import DirectoryError
from ..gpo import preg
from ..gpo.engine import GpoReader
from ..gpo.model import GpoError, parse_gpt_ini_version
from ..gpo.secdesc import (
    SecurityDescriptor,
    SecurityDescriptorError,
    format_sid,
    gpt_folder_descriptor,
    same_access,
)
from ..gpo.sysvol import SysvolError
from ..ldapresult import check_result
from ..roaming.directory import ROAMING_TIMESTAMP, decode_record, read_roaming
from ..roaming.sync import READ_LIMITS
from ..schema.definitions import PRIVATE_INFORMATION, SchemaDefinitions
from ..schema.directory import dc_target, forest_dcs, read_schema
from ..schema.plan import SchemaConflict, missing_on_dc, plan_present
from .access import AUTHENTICATED_USERS, EVERYONE, SELF, confidential_readable
from .checks import GpoFacts, SysvolFacts, UserFacts

__all__ = [
    "PAGE_SIZE",
    "READ_FAILURES",
    "USER_FILTER",
    "account_sids",
    "dc_target",
    "forest_dcs",
    "gpo_facts",
    "protecting_guids",
    "schema_facts",
    "timestamps",
    "users",
]

PAGE_SIZE = 1000
USER_FILTER = "(&(objectCategory=person)(objectClass=user))"
SD_DACL = 0x04  # only the DACL: readable with READ_CONTROL, which a read-only account holds
# What a failed read raises; each becomes an "unknown" result naming the DC and the cause.
READ_FAILURES: tuple[type[Exception], ...] = (
    DirectoryError,
    LDAPException,
    GpoError,
    SysvolError,
    SecurityDescriptorError,
    OSError,
)
_GPT_INI = "GPT.INI"
_REGISTRY_POL = ("User", "Registry.pol")


# --- schema ----------------------------------------------------------------------------------


def schema_facts(
    conn: ldap3.Connection, schema_dn: str, defs: SchemaDefinitions
) -> tuple[list[str], list[str]]:
    """(what the DC's schema lacks, definitions that differ from ours) on one DC."""
    entries = read_schema(conn, schema_dn, defs)
    try:
        plan_present(defs, entries, schema_dn)
        conflicts: list[str] = []
    except SchemaConflict as exc:
        conflicts = list(exc.conflicts)
    return missing_on_dc(defs, entries), conflicts


# --- GPO -------------------------------------------------------------------------------------


def _read_sysvol(
    reader: GpoReader, guid: str, server: str, dc: str, folder_acl: SecurityDescriptor | None
) -> SysvolFacts:
    """One DC's copy, part by part (unlike ``GpoReader.read_gpt``, which stops at the first
    part that does not parse), so that each check gets its own verdict."""
    try:
        sysvol = reader.sysvol(server)
        raw_acl = sysvol.read_security(guid)
        if raw_acl is None:
            return SysvolFacts(dc, error=f"the GPO folder {guid} is missing on {server}")
        gpt_ini = sysvol.read(guid, _GPT_INI)
        raw_pol = sysvol.read(guid, *_REGISTRY_POL)
    except READ_FAILURES as exc:
        return SysvolFacts(dc, error=str(exc))
    version = None
    if gpt_ini is not None:
        try:
            version = parse_gpt_ini_version(gpt_ini).number
        except GpoError as exc:
            return SysvolFacts(dc, error=f"GPT.INI on {server}: {exc}")
    registry, registry_error = None, ""
    try:
        registry = tuple(e.describe() for e in preg.decode(raw_pol)) if raw_pol else ()
    except preg.PolFormatError as exc:
        registry_error = f"{guid}\\User\\Registry.pol on {server} does not parse: {exc}"
    acl_in_sync, acl_error = None, "the GPC's nTSecurityDescriptor could not be read"
    if folder_acl is not None:
        try:
            acl_in_sync = same_access(SecurityDescriptor.parse(raw_acl), folder_acl)
        except SecurityDescriptorError as exc:
            acl_error = f"NT ACL of {guid} on {server}: {exc}"
    return SysvolFacts(dc, version, registry, registry_error, acl_in_sync, acl_error)


def gpo_facts(reader: GpoReader, name: str, dc_of: Mapping[str, str]) -> GpoFacts:
    """The GPO named ``name`` on every SYSVOL of ``reader`` (``dc_of``: SYSVOL server -> DC
    name used as the subject)."""
    try:
        gpc = reader.find(name, None)
        if gpc is None:
            return GpoFacts(name, exists=False)
        containers = reader.linking_containers(gpc.guid)
    except READ_FAILURES as exc:
        return GpoFacts(name, exists=False, error=str(exc))
    try:
        folder_acl = gpt_folder_descriptor(reader.read_gpc_descriptor(gpc.dn))
    except READ_FAILURES:
        folder_acl = None
    links = {}
    for container, gplinks in containers.items():
        mine = next(link for link in gplinks if link.is_for(gpc.guid))
        links[container] = {"linked": True, "enabled": mine.enabled}
    sysvols = tuple(
        _read_sysvol(reader, gpc.guid, server, dc_of.get(server, server), folder_acl)
        for server in reader.sysvol_servers
    )
    return GpoFacts(name, True, gpc.guid, gpc.version.number, links, sysvols)


# --- who is reading --------------------------------------------------------------------------


def account_sids(conn: ldap3.Connection, domain_dn: str) -> tuple[set[str], str | None]:
    """(SIDs the bound account acts with, its own SID). From the rootDSE's tokenGroups (the
    DC's own view of the token) and the account's objectSid, found through "Who am I?"."""
    conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["tokenGroups"])
    check_result(conn, "reading tokenGroups of the rootDSE")
    entry = conn.response[0] if conn.response else {}
    sids = {format_sid(bytes(v)) for v in entry.get("raw_attributes", {}).get("tokenGroups", [])}
    own = None
    who = conn.extend.standard.who_am_i() or ""
    account = who.split("\\", 1)[1] if who.startswith("u:") and "\\" in who else None
    if account:
        conn.search(
            domain_dn, f"(sAMAccountName={escape_filter_chars(account)})", attributes=["objectSid"]
        )
        check_result(conn, f"finding the bound account {account}")
        found = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(found) == 1:
            own = format_sid(bytes(found[0]["raw_attributes"]["objectSid"][0]))
    return sids | {EVERYONE, AUTHENTICATED_USERS} | ({own} if own else set()), own


def protecting_guids(conn: ldap3.Connection, schema_dn: str, names: Sequence[str]) -> set:
    """The object types whose Control Access opens the confidential ``names``: the
    Private-Information property set and each attribute's own schemaIDGUID."""
    terms = "".join(f"(lDAPDisplayName={name})" for name in names)
    conn.search(schema_dn, f"(|{terms})", search_scope=ldap3.LEVEL, attributes=["schemaIDGUID"])
    check_result(conn, f"reading schemaIDGUIDs under {schema_dn}")
    guids = {uuid.UUID(PRIVATE_INFORMATION)}
    for entry in conn.response or []:
        for value in entry.get("raw_attributes", {}).get("schemaIDGUID", []):
            guids.add(uuid.UUID(bytes_le=bytes(value)))
    return guids


# --- users -----------------------------------------------------------------------------------


def _paged(
    conn: ldap3.Connection, base_dn: str, user_filter: str, attributes: list[str], page_size: int
) -> Iterator[dict]:
    entries = conn.extend.standard.paged_search(
        base_dn,
        user_filter,
        search_scope=ldap3.SUBTREE,
        attributes=attributes,
        controls=security_descriptor_control(sdflags=SD_DACL),
        paged_size=page_size,
        generator=True,
    )
    for entry in entries:
        if entry.get("type") == "searchResEntry":
            yield entry
    check_result(conn, f"searching users under {base_dn}")


def users(
    conn: ldap3.Connection,
    base_dn: str,
    user_filter: str,
    readable: Callable[[SecurityDescriptor | None, bytes | None], tuple[bool, str]],
    page_size: int = PAGE_SIZE,
) -> Iterator[UserFacts]:
    """Every in-scope user, whole (all attributes the account may read), one page at a time.

    ``readable(descriptor, object_sid)`` says whether the account may read the user's
    confidential attributes, and why not."""
    attributes = ["*", "nTSecurityDescriptor"]
    for entry in _paged(conn, base_dn, user_filter, attributes, page_size):
        raw = {}
        for name, values in entry["raw_attributes"].items():
            raw.setdefault(name.lower(), []).extend(bytes(v) for v in values)
        descriptor_raw = raw.pop("ntsecuritydescriptor", [None])[0]
        if any(";range=" in name for name in raw):  # AD's ranged retrieval: >1500 values
            record = read_roaming(conn, entry["dn"], READ_LIMITS)
        else:
            record = decode_record(entry["dn"], raw, READ_LIMITS)
        try:
            descriptor = SecurityDescriptor.parse(descriptor_raw) if descriptor_raw else None
        except SecurityDescriptorError:
            descriptor = None
        ok, why = readable(descriptor, record.object_sid)
        yield UserFacts(entry["dn"], record, raw, ok, why)


def readable_for(sids: set[str], own_sid: str | None, object_types: set):
    """The ``readable`` callback of :func:`users` for an account holding ``sids``."""

    def readable(descriptor: SecurityDescriptor | None, object_sid: bytes | None):
        if descriptor is None:
            return False, "its security descriptor could not be read to tell"
        mine = own_sid is not None and object_sid is not None and format_sid(object_sid) == own_sid
        if confidential_readable(descriptor, sids | ({SELF} if mine else set()), object_types):
            return True, ""
        return False, (
            "the account lacks Read Property and Control Access on the Private-Information "
            "property set (a delegated right; see README, Compliance)"
        )

    return readable


def timestamps(
    conn: ldap3.Connection, base_dn: str, user_filter: str, page_size: int = PAGE_SIZE
) -> dict[str, bytes | None]:
    """Lower-cased user DN -> its raw msPKIRoamingTimeStamp on the DC of ``conn``."""
    found: dict[str, bytes | None] = {}
    for entry in _paged(conn, base_dn, user_filter, [ROAMING_TIMESTAMP], page_size):
        values = {k.lower(): v for k, v in entry["raw_attributes"].items()}
        stamp = values.get(ROAMING_TIMESTAMP.lower()) or [None]
        found[entry["dn"].lower()] = bytes(stamp[0]) if stamp[0] is not None else None
    return found
