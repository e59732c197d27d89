"""Print the auxiliary classes of the schema's `user` class as a JSON list (read-only).

The Molecule verifier's schema check: no read-only schema module exists, so this reads the
classSchema object over LDAPS with credroam's `connect` (DC certificate validated).

  user_auxiliary_classes.py --server IP --ca-cert PEM --bind-user UPN
  (bind password in env CREDROAM_CHECK_BIND_PASSWORD, never on the command line)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ldap3

from credroam.connection import LdapTarget, connect, read_root_dse
from credroam.errors import DirectoryError
from credroam.ldapresult import check_result

PASSWORD_ENV = "CREDROAM_CHECK_BIND_PASSWORD"


def all_values(entry: dict, name: str) -> list:
    """Every value of an attribute, its name matched case-insensitively (no schema loaded)."""
    for key, values in entry.items():
        if key.lower() == name.lower():
            return list(values) if isinstance(values, list | tuple) else [values]
    return []


def user_auxiliary_classes(target: LdapTarget) -> list[str]:
    conn = connect(target)
    try:
        user_class = f"CN=User,{read_root_dse(conn).schema_naming_context}"
        conn.search(
            user_class, "(objectClass=classSchema)", ldap3.BASE, attributes=["auxiliaryClass"]
        )
        check_result(conn, f"reading {user_class}")
        entries = [e["attributes"] for e in conn.response if e.get("type") == "searchResEntry"]
    finally:
        conn.unbind()
    return [str(name) for entry in entries for name in all_values(entry, "auxiliaryClass")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="DC name or address (LDAPS)")
    parser.add_argument("--ca-cert", required=True, help="CA that issued the DC certificate")
    parser.add_argument("--bind-user", required=True, help="user@REALM, DOMAIN\\user or a DN")
    args = parser.parse_args(argv)
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        parser.error(f"the bind password must be in the environment variable {PASSWORD_ENV}")
    target = LdapTarget(
        server=args.server, bind_user=args.bind_user, bind_password=password, ca_cert=args.ca_cert
    )
    try:
        classes = user_auxiliary_classes(target)
    except DirectoryError as exc:
        print(f"user_auxiliary_classes: {exc}", file=sys.stderr)
        return 1
    json.dump(classes, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
