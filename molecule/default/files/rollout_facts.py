"""Read what the rollout left in a forest, for the Molecule verifier to assert on (read-only).

Prints one JSON object:
  user_auxiliary_classes  auxiliaryClass values of the schema's `user` class
  gpos                    every GPO with the asked display name: guid, dn, version_number
  links                   the asked container's gPLink, parsed here: [{dn, enabled, enforced}]
  registry_pol            per GPO guid, its User\\Registry.pol as Samba's own parser reads it:
                          [{key, value, type, data}] (type as REG_* name)

Independent of the code under test where it matters: gPLink is parsed by its own regex and
Registry.pol by Samba's parser (python3-samba), not by credroam's. Connections use credroam's
`connect` (LDAPS, DC certificate validated) and `Sysvol` (SMB, signed).

  rollout_facts.py --server IP --ca-cert PEM --bind-user UPN --gpo-name NAME --container DN
  (bind password in env CREDROAM_CHECK_BIND_PASSWORD, never on the command line)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import ldap3
from ldap3.utils.conv import escape_filter_chars
from samba.dcerpc import preg as samba_preg
from samba.ndr import ndr_unpack

from credroam.connection import (
    DirectoryError,
    LdapTarget,
    check_result,
    connect,
    first,
    read_root_dse,
)
from credroam.sysvol import SmbTarget, Sysvol, SysvolError, ntlm_username

PASSWORD_ENV = "CREDROAM_CHECK_BIND_PASSWORD"
REG_TYPE_NAMES = {
    1: "REG_SZ",
    2: "REG_EXPAND_SZ",
    3: "REG_BINARY",
    4: "REG_DWORD",
    7: "REG_MULTI_SZ",
    11: "REG_QWORD",
}
# [LDAP://cn={GUID},cn=policies,...;<options>] ; options bit 0 = disabled, bit 1 = enforced.
GPLINK_ITEM = re.compile(r"\[LDAP://([^;\]]+);(\d+)\]", re.IGNORECASE)


def parse_gplink(value: str | None) -> list[dict]:
    return [
        {"dn": dn, "enabled": not int(options) & 1, "enforced": bool(int(options) & 2)}
        for dn, options in GPLINK_ITEM.findall(value or "")
    ]


def search(
    conn: ldap3.Connection, base: str, filter_: str, scope: str, attributes: list[str]
) -> list[dict]:
    conn.search(base, filter_, search_scope=scope, attributes=attributes)
    check_result(conn, f"search of {base}")
    return [entry["attributes"] for entry in conn.response if entry.get("type") == "searchResEntry"]


def all_values(entry: dict, name: str) -> list:
    """Every value of an attribute, its name matched case-insensitively (no schema loaded)."""
    for key, values in entry.items():
        if key.lower() == name.lower():
            return list(values) if isinstance(values, list | tuple) else [values]
    return []


def user_auxiliary_classes(conn: ldap3.Connection, schema_dn: str) -> list[str]:
    entries = search(
        conn, f"CN=User,{schema_dn}", "(objectClass=classSchema)", ldap3.BASE, ["auxiliaryClass"]
    )
    return [str(name) for entry in entries for name in all_values(entry, "auxiliaryClass")]


def gpos_named(conn: ldap3.Connection, domain_dn: str, name: str) -> list[dict]:
    escaped = escape_filter_chars(name)
    entries = search(
        conn,
        f"CN=Policies,CN=System,{domain_dn}",
        f"(&(objectClass=groupPolicyContainer)(displayName={escaped}))",
        ldap3.LEVEL,
        ["cn", "distinguishedName", "versionNumber"],
    )
    return [
        {
            "guid": str(first(entry, "cn")).upper(),
            "dn": str(first(entry, "distinguishedName")),
            "version_number": int(first(entry, "versionNumber", 0)),
        }
        for entry in entries
    ]


def container_links(conn: ldap3.Connection, container_dn: str) -> list[dict]:
    entries = search(conn, container_dn, "(objectClass=*)", ldap3.BASE, ["gPLink"])
    return parse_gplink(first(entries[0], "gPLink") if entries else None)


def json_data(type_: int, data: object) -> object:
    if isinstance(data, bytes | bytearray):
        return bytes(data).hex()
    if type_ == 7 and isinstance(data, list):
        return [str(item) for item in data]
    return data


def registry_pol(sysvol: Sysvol, guid: str) -> list[dict] | None:
    blob = sysvol.read(guid, "User", "Registry.pol")
    if blob is None:
        return None
    parsed = ndr_unpack(samba_preg.file, blob)
    return [
        {
            "key": entry.keyname,
            "value": entry.valuename,
            "type": REG_TYPE_NAMES.get(entry.type, str(entry.type)),
            "data": json_data(entry.type, entry.data),
        }
        for entry in parsed.entries
    ]


def rollout_facts(args: argparse.Namespace, password: str) -> dict:
    target = LdapTarget(
        server=args.server, bind_user=args.bind_user, bind_password=password, ca_cert=args.ca_cert
    )
    conn = connect(target)
    try:
        root = read_root_dse(conn)
        gpos = gpos_named(conn, root.default_naming_context, args.gpo_name)
        facts = {
            "user_auxiliary_classes": user_auxiliary_classes(conn, root.schema_naming_context),
            "gpos": gpos,
            "links": container_links(conn, args.container),
        }
    finally:
        conn.unbind()
    smb = SmbTarget(
        server=args.server,
        username=ntlm_username(args.bind_user),
        password=password,
        domain_dns_name=root.domain_dns_name,
    )
    with Sysvol(smb) as sysvol:
        facts["registry_pol"] = {gpo["guid"]: registry_pol(sysvol, gpo["guid"]) for gpo in gpos}
    return facts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="DC address (LDAPS and SMB)")
    parser.add_argument("--ca-cert", required=True, help="CA that issued the DC certificate")
    parser.add_argument("--bind-user", required=True, help="user@REALM or DOMAIN\\user")
    parser.add_argument("--gpo-name", required=True, help="display name of the GPO")
    parser.add_argument("--container", required=True, help="DN whose gPLink is read")
    args = parser.parse_args(argv)
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        parser.error(f"the bind password must be in the environment variable {PASSWORD_ENV}")
    try:
        facts = rollout_facts(args, password)
    except (DirectoryError, SysvolError) as exc:
        print(f"rollout_facts: {exc}", file=sys.stderr)
        return 1
    json.dump(facts, sys.stdout, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
