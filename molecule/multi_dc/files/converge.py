"""The two-DC scenario's hands on the DCs, and its measurement of convergence.

    converge.py LAB pause                 # +DISABLE_INBOUND_REPL on every DC
    converge.py LAB replicate             # dc1 -> dc2 now (replication on)
    converge.py LAB snapshot --user alice # what each host and each DC holds, as JSON
    converge.py LAB converge --agent CMD --user alice
        # resume (-DISABLE_INBOUND_REPL, replicate both ways), then rounds of one
        # `CMD --user alice login` on each client (client i through its own DC, as its agent
        # config says) and a replicate both ways, until every client's store and both DCs hold
        # the same set; then one more round, which must change nothing. Prints JSON: seconds
        # from resume to all equal, rounds, the sets.

LAB is the lab's name (.lab/<LAB>/lab.json, what the lab inventory reads). Run from the
repository with the core and the tests importable (PYTHONPATH=<repo>/module_utils:<repo>): the
lab is reached through the integration tests' own helpers. The sets compared are item keys
(%3\\<thumbprint> certificates, %9\\<thumbprint> their keys): the live values and tombstones of
each DC read as the user over LDAPS with the lab CA, and the MY folder of the user's file store.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from tests.integration.roaming_lab import (
    pause_replication,
    replicate,
    replicate_both_ways,
    resume_replication,
)
from tests.integration.test_agent import directory_keys, store_files, tombstones
from tests.lab import Account, ClientHost, Lab

SUFFIX_TYPE = {".cert.pem": 3, ".key.pem": 9}
MAX_ROUNDS = 5
LOGIN_TIMEOUT = 600  # seconds; one login is a few seconds quiet, far more on a loaded machine


def login(host: ClientHost, agent: str, account: Account) -> None:
    """The agent's login as the user, with the logon password on stdin (what PAM does)."""
    done = subprocess.run(
        [*host.ssh_argv(), f"{agent} --user {account.name} login"],
        input=account.password + "\0",
        capture_output=True,
        text=True,
        timeout=LOGIN_TIMEOUT,
    )
    if done.returncode != 0:
        sys.exit(f"{host.name}: login of {account.name} failed: {done.stderr[-2000:]}")


def my_files(lab: Lab, host: ClientHost, account: Account) -> dict[str, bytes]:
    """The user's MY folder on ``host``: item key -> the file's bytes."""
    items = {}
    for path, data in store_files(lab, host, account.name).items():
        folder, _, name = path.rpartition("/")
        for suffix, token_type in SUFFIX_TYPE.items():
            if folder == "MY" and name.endswith(suffix):
                items[f"%{token_type}\\{name.removesuffix(suffix)}"] = data
    return items


def snapshot(lab: Lab, account: Account) -> dict:
    files = {host.name: my_files(lab, host, account) for host in lab.clients}
    contents = list(files.values())
    return {
        "hosts": {name: sorted(items) for name, items in files.items()},
        # Nothing lost: every host holds each certificate and key byte for byte.
        "same_files": all(items == contents[0] for items in contents),
        "dcs": {dc.name: sorted(directory_keys(lab, account, i)) for i, dc in enumerate(lab.dcs)},
        "tombstones": {
            dc.name: sorted(tombstones(lab, account, i)) for i, dc in enumerate(lab.dcs)
        },
    }


def all_equal(seen: dict) -> bool:
    sets = [*seen["hosts"].values(), *seen["dcs"].values()]
    tombstoned = list(seen["tombstones"].values())
    return (
        seen["same_files"]
        and all(s == sets[0] for s in sets)
        and all(t == tombstoned[0] for t in tombstoned)
    )


def sync_round(lab: Lab, agent: str, account: Account) -> dict:
    """One login on every host, each through its own DC, then a replicate both ways."""
    for host in lab.clients:
        login(host, agent, account)
    replicate_both_ways(lab)
    return snapshot(lab, account)


def converge(lab: Lab, agent: str, account: Account) -> dict:
    started = time.monotonic()
    resume_replication(lab)
    resumed = time.monotonic() - started
    rounds, seen = 0, {}
    while rounds < MAX_ROUNDS and not (seen and all_equal(seen)):
        rounds += 1
        seen = sync_round(lab, agent, account)
    seconds = time.monotonic() - started
    # Once converged, another round changes nothing: deletions stay deleted.
    stable = all_equal(seen) and sync_round(lab, agent, account) == seen
    return {
        "converged": all_equal(seen),
        "stable": stable,
        "seconds": round(seconds, 2),
        "resume_and_replicate_seconds": round(resumed, 2),
        "rounds": rounds,
        **seen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lab")
    parser.add_argument("action", choices=["pause", "replicate", "converge", "snapshot"])
    parser.add_argument("--agent", default="credroam-agent")
    parser.add_argument("--user", default="alice")
    args = parser.parse_args()
    lab = Lab.load(args.lab)
    account = lab.user(args.user)
    if args.action == "pause":
        pause_replication(lab)
    elif args.action == "replicate":
        replicate(lab, 0, 1)
    elif args.action == "snapshot":
        print(json.dumps(snapshot(lab, account)))
    else:
        print(json.dumps(converge(lab, args.agent, account)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
