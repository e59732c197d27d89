"""The two-DC scenario's hands on the DCs, and its measurement of convergence.

    converge.py LAB_JSON pause                 # +DISABLE_INBOUND_REPL on every DC
    converge.py LAB_JSON replicate             # a forced replicate both ways, dc1 <-> each other
    converge.py LAB_JSON converge --agent CMD --user alice
        # resume (-DISABLE_INBOUND_REPL, forced replicate both ways), then rounds of one
        # `CMD --user alice login` on each client (client i through its own DC, as its agent
        # config says) and a forced replicate, until every client's store and both DCs hold
        # the same live set; prints JSON: seconds from resume to all equal, rounds, the sets.

LAB_JSON is the lab's own description (.lab/<name>/lab.json, what the lab inventory reads).
Run with the credroam core importable (PYTHONPATH=<repo>/module_utils). The sets compared are
item keys (%3\\<thumbprint> certificates, %9\\<thumbprint> their keys): the live values of each
DC read as the user over LDAPS with the lab CA, and the MY folder of the user's file store.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from credroam.connection import LdapTarget, connect
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES, read_roaming

STORE_MY = ".local/share/credroam/store/MY"
SUFFIX_TYPE = {".cert.pem": 3, ".key.pem": 9}
MAX_ROUNDS = 5


def run_in_dc(lab: dict, dc: dict, *argv: str) -> None:
    admin = lab["admin"]
    command = [*dc["exec"], *argv, f"--username={admin['upn']}", f"--password={admin['password']}"]
    env = {**os.environ, "SMB_CONF_PATH": dc["smb_conf"]}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        sys.exit(f"{dc['name']}: {' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")


def inbound(lab: dict, option: str) -> None:
    for dc in lab["dcs"]:
        run_in_dc(lab, dc, "samba-tool", "drs", "options", dc["name"], f"--dsa-option={option}")


def replicate(lab: dict) -> None:
    """Pull the domain partition both ways between the first DC and each other, now."""
    first = lab["dcs"][0]
    for other in lab["dcs"][1:]:
        for dest, source in ((first, other), (other, first)):
            run_in_dc(
                lab, dest, "samba-tool", "drs", "replicate",
                dest["name"], source["name"], lab["base_dn"], "--sync-forced",
            )  # fmt: skip


def user(lab: dict, name: str) -> dict:
    return next(u for u in lab["users"] if u["name"] == name)


def ssh(lab: dict, client: dict, command: str, stdin: str = "") -> subprocess.CompletedProcess:
    argv = [
        "ssh", "-i", lab["ssh_private_key"], "-o", f"UserKnownHostsFile={lab['known_hosts']}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        f"root@{client['ip']}", command,
    ]  # fmt: skip
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)


def login(lab: dict, client: dict, agent: str, account: dict) -> None:
    """The agent's login as the user, with the logon password on stdin (what PAM does)."""
    done = ssh(lab, client, f"{agent} --user {account['name']} login", account["password"] + "\0")
    if done.returncode != 0:
        sys.exit(f"{client['name']}: login of {account['name']} failed: {done.stderr[-2000:]}")


def host_set(lab: dict, client: dict, account: dict) -> list[str]:
    listing = ssh(lab, client, f"ls ~{account['name']}/{STORE_MY} 2>/dev/null || true").stdout
    keys = []
    for name in listing.split():
        for suffix, token_type in SUFFIX_TYPE.items():
            if name.endswith(suffix):
                keys.append(f"%{token_type}\\{name.removesuffix(suffix)}")
    return sorted(keys)


def dc_sets(lab: dict, dc: dict, account: dict) -> tuple[list[str], list[str]]:
    """(live keys, tombstoned keys) of the user's roaming values on ``dc``."""
    target = LdapTarget(
        server=dc["ip"],
        bind_user=account["upn"],
        bind_password=account["password"],
        ca_cert=lab["ca_cert"],
        timeout=10,
    )
    conn = connect(target)
    try:
        record = read_roaming(conn, account["dn"])
    finally:
        conn.unbind()
    live, dead = [], []
    for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES):
        for key, stored in record.stored(attribute).items():
            (dead if stored.token.is_tombstone else live).append(key)
    return sorted(live), sorted(dead)


def snapshot(lab: dict, account: dict) -> dict:
    dcs = {dc["name"]: dc_sets(lab, dc, account) for dc in lab["dcs"]}
    return {
        "hosts": {c["name"]: host_set(lab, c, account) for c in lab["clients"]},
        "dcs": {name: live for name, (live, _) in dcs.items()},
        "tombstones": {name: dead for name, (_, dead) in dcs.items()},
    }


def all_equal(seen: dict) -> bool:
    sets = [*seen["hosts"].values(), *seen["dcs"].values()]
    tombstones = list(seen["tombstones"].values())
    return all(s == sets[0] for s in sets) and all(t == tombstones[0] for t in tombstones)


def converge(lab: dict, agent: str, account: dict) -> dict:
    started = time.monotonic()
    inbound(lab, "-DISABLE_INBOUND_REPL")
    replicate(lab)
    resumed = time.monotonic() - started
    rounds, seen = 0, {}
    while rounds < MAX_ROUNDS and not (seen and all_equal(seen)):
        rounds += 1
        for client in lab["clients"]:
            login(lab, client, agent, account)
        replicate(lab)
        seen = snapshot(lab, account)
    return {
        "converged": all_equal(seen),
        "seconds": round(time.monotonic() - started, 2),
        "resume_and_replicate_seconds": round(resumed, 2),
        "rounds": rounds,
        **seen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lab_json")
    parser.add_argument("action", choices=["pause", "replicate", "converge", "snapshot"])
    parser.add_argument("--agent", default="credroam-agent")
    parser.add_argument("--user", default="alice")
    args = parser.parse_args()
    with open(args.lab_json, encoding="utf-8") as handle:
        lab = json.load(handle)
    if args.action == "pause":
        inbound(lab, "+DISABLE_INBOUND_REPL")
    elif args.action == "replicate":
        replicate(lab)
    elif args.action == "snapshot":
        print(json.dumps(snapshot(lab, user(lab, args.user))))
    else:
        print(json.dumps(converge(lab, args.agent, user(lab, args.user))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
