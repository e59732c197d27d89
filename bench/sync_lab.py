"""Time credroam syncs against a real lab DC for a user with N certificates and keys.

    .venv/bin/python bench/sync_lab.py [--sizes 10,200,1000] [--rounds 3] [--key-type ec]
                                       [--large 0] [--keep-lab] [--removed-history STEPS]

Per size N (N certificates, each with its private key: 2N tokens), each round:
  first     the first sync of a host holding everything: uploads all 2N tokens;
  no-change the next sync of that host: its LDAP operations are counted (the integration
            tests' CountingConnection); it must be exactly 1 search and 0 writes;
  download  the first sync of a second host with an empty store: downloads all 2N items.
Then the bytes the directory holds per certificate (certificate token + sealed key token, as
values of msPKIAccountCredentials and credroamKeyEnvelopes). The local side is the real
FileStore and StateFile in a temporary directory; the roaming key is in hand (obtaining it,
scrypt per logon, is in bench/core.py).

--removed-history STEPS also times a small write on a user whose object holds more and more
removed values (see removed_values_cost).

Runs on its own lab `benchlab` (172.29.110.0/24, one DC, no client), brought up through
playbooks/lab.yml and torn down at the end unless --keep-lab (which also reuses a running
one). credroam's schema is applied through the roaming_schema role first, as the integration
tests do. Each round runs as a user made for it (samba-tool user create in the roaming OU),
whose roaming values are cleared and who is deleted after it (see BENCH_PASSWORD for why).
Prints median, min and max per phase and writes bench/out/sync_lab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ldap3

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils")]

# After sys.path: the repository root and the core must be importable.
from bench.core import KEY_TYPES, Credential, local_items, make_credentials
from credroam.connection import connect
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    MARK_ATTRIBUTES,
    READ_ATTRIBUTES,
    ROAMING_TIMESTAMP,
)
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import ItemKind, Policy
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import SyncReport, sync_user
from credroam.timestamps import TICKS_PER_SECOND, filetime_now
from credroam.tokens import format_dn_binary, parse_dn_binary
from tests.integration.roaming_lab import ALL_ATTRIBUTES, CountingConnection, target_for
from tests.lab import Account, Lab, LabNotUpError, lab_playbook

BENCH_LAB = {"name": "benchlab", "subnet": "172.29.110.0/24", "dc_count": 1, "client_count": 0}
# Each round runs on a user of its own, made for it and deleted after it: Samba keeps every
# removed linked value (for replication, until the tombstone lifetime), and a user whose object
# holds thousands of them writes many times slower, so reusing one user would measure the
# benchmark's own history.
BENCH_PASSWORD = "Bench-Lab-Pass1!"
# Generous: how long one big modify takes is a figure measured here (credroam's default is 10 s).
LDAP_TIMEOUT = 300


# --- the lab ---------------------------------------------------------------------------------


def _playbook(state: str) -> None:
    run = lab_playbook(**BENCH_LAB, state=state)
    if run.returncode != 0:
        raise SystemExit(f"lab {BENCH_LAB['name']} {state} failed:\n{run.output[-4000:]}")


def _running_lab() -> Lab | None:
    try:
        lab = Lab.load(BENCH_LAB["name"])
    except LabNotUpError:
        return None
    return lab if lab.is_up() else None


def bring_up(keep: bool) -> Lab:
    if keep and (running := _running_lab()) is not None:
        return running
    _playbook("absent")  # a leftover of an interrupted run would make `present` refuse
    _playbook("present")
    return Lab.load(BENCH_LAB["name"])


def apply_schema(lab: Lab) -> None:
    """credroam's schema through the real role (playbooks/schema.yml), idempotent."""
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/schema.yml"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CREDROAM_LAB": lab.name},
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"applying credroam's schema failed:\n{done.stdout[-4000:]}")


# --- one round -------------------------------------------------------------------------------


class TimedConnection(CountingConnection):
    """Counts LDAP operations (as the integration tests do) and times each modify."""

    def __init__(self, conn: ldap3.Connection) -> None:
        super().__init__(conn)
        self.search_s: list[float] = []
        self.modify_s: list[float] = []

    def search(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().search(*args, **kwargs)
        finally:
            self.search_s.append(time.perf_counter() - start)

    def modify(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().modify(*args, **kwargs)
        finally:
            self.modify_s.append(time.perf_counter() - start)


def bench_connection(lab: Lab, account: Account) -> TimedConnection:
    """Bound as the user, the way credroam connects (LDAPS, CA checked), long timeout."""
    return TimedConnection(connect(target_for(lab, account, timeout=LDAP_TIMEOUT)))


def _samba_tool_user(lab: Lab, *argv: str, check: bool = True) -> None:
    lab.dc(0).run("samba-tool", "user", *argv, check=check, timeout=600)


def fresh_user(lab: Lab, name: str) -> Account:
    """A new user in the roaming OU (a leftover of an interrupted run is deleted first)."""
    _samba_tool_user(lab, "delete", name, check=False)
    ou = lab.roaming_ou_dn.removesuffix("," + lab.base_dn)
    _samba_tool_user(lab, "create", name, BENCH_PASSWORD, f"--userou={ou}")
    upn = f"{name}@{lab.realm.lower()}"
    return Account(name, upn, f"CN={name},{lab.roaming_ou_dn}", BENCH_PASSWORD)


def delete_user(lab: Lab, account: Account) -> None:
    _samba_tool_user(lab, "delete", account.name)


def clear_user(lab: Lab, account: Account) -> None:
    """Remove every roaming value of the user, as the user (as the tests' clear_roaming does,
    with the long timeout: removing thousands of linked values takes Samba a while)."""
    conn = bench_connection(lab, account)
    try:
        conn.search(
            account.dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(ALL_ATTRIBUTES)
        )
        present = conn.response[0]["raw_attributes"] if conn.response else {}
        changes = {name: [(ldap3.MODIFY_REPLACE, [])] for name, values in present.items() if values}
        if changes and not conn.modify(account.dn, changes):
            raise SystemExit(f"clearing the roaming values of {account.dn} failed: {conn.result}")
    finally:
        conn.unbind()


def _fill(store: FileStore, credentials: list[Credential], modified: int) -> None:
    entries = sorted(
        local_items(credentials, modified).values(), key=lambda e: e[0].kind is ItemKind.KEY
    )
    with store.lock():
        for item, payload in entries:
            store.write(item, payload)


def _timed_sync(
    conn: Any, account: Account, store: FileStore, state: StateFile, roaming_key: bytes
) -> tuple[float, SyncReport]:
    start = time.perf_counter()
    report = sync_user(conn, account.dn, store, state, Policy(), roaming_key, filetime_now)
    return time.perf_counter() - start, report


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"benchmark outcome is wrong: {what}")


def directory_bytes(lab: Lab, account: Account) -> dict[str, int]:
    """Bytes of the user's token values: as stored (DN-Binary text) and as tokens (binary)."""
    conn = bench_connection(lab, account)
    try:
        conn.search(
            account.dn,
            "(objectClass=*)",
            search_scope=ldap3.BASE,
            attributes=[ACCOUNT_CREDENTIALS, KEY_ENVELOPES],
        )
        raw = {k.lower(): v for k, v in conn.response[0]["raw_attributes"].items()}
    finally:
        conn.unbind()
    sizes: dict[str, int] = {}
    for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES):
        values = raw.get(attribute.lower(), [])
        sizes[f"{attribute}_values"] = len(values)
        sizes[f"{attribute}_value_bytes"] = sum(len(v) for v in values)
        sizes[f"{attribute}_token_bytes"] = sum(len(parse_dn_binary(v)[0]) for v in values)
    return sizes


def one_round(
    lab: Lab, account: Account, credentials: list[Credential], scratch: str
) -> dict[str, Any]:
    tokens = 2 * len(credentials)
    roaming_key = new_roaming_key()
    first_host = FileStore(os.path.join(scratch, "host1"))
    _fill(first_host, credentials, filetime_now())
    first_state = StateFile(os.path.join(scratch, "host1.state"))

    uploading = bench_connection(lab, account)
    try:
        first_s, report = _timed_sync(uploading, account, first_host, first_state, roaming_key)
    finally:
        uploading.unbind()
    _expect(len(report.uploaded) == tokens and not report.refused, f"first sync uploads {tokens}")

    counting = bench_connection(lab, account)
    try:
        again_s, again = _timed_sync(counting, account, first_host, first_state, roaming_key)
    finally:
        counting.unbind()
    _expect(not again.changed, "the second sync changes nothing")

    second_host = FileStore(os.path.join(scratch, "host2"))
    second_state = StateFile(os.path.join(scratch, "host2.state"))
    conn = bench_connection(lab, account)
    try:
        download_s, fetched = _timed_sync(conn, account, second_host, second_state, roaming_key)
    finally:
        conn.unbind()
    _expect(len(fetched.downloaded) == tokens, f"the empty host downloads {tokens}")
    _expect(not fetched.local_errors and not fetched.rejected, "the download is clean")
    return {
        "first_s": first_s,
        "first_modify_s": uploading.modify_s,
        "no_change_s": again_s,
        "no_change_search_s": sum(counting.search_s),
        "no_change_searches": counting.searches,
        "no_change_writes": counting.writes,
        "download_s": download_s,
        "bytes": directory_bytes(lab, account),
    }


# --- the fast path ---------------------------------------------------------------------------


def settled_host(
    lab: Lab, account: Account, credentials: list[Credential], scratch: str, roaming_key: bytes
) -> tuple[FileStore, StateFile]:
    """A host whose items are all in the directory and whose last full sync left a head.

    Its store's clock runs a minute ahead: the files were just written, younger than the change
    marker's settle time, and a real host syncs again minutes later, not milliseconds.
    """
    store = FileStore(scratch, clock=lambda: filetime_now() + 60 * TICKS_PER_SECOND)
    state = StateFile(scratch + ".state")
    _fill(store, credentials, filetime_now())
    for _ in range(2):  # the upload, then the full sync that records the head
        conn = bench_connection(lab, account)
        try:
            sync_user(conn, account.dn, store, state, Policy(), roaming_key, filetime_now)
        finally:
            conn.unbind()
    _expect(state.load_header() is not None, "the settled host has a head")
    return store, state


def _bare_search(conn: Any, dn: str, attributes: tuple[str, ...]) -> None:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes))
    _expect(conn.result["result"] == 0, f"bare search of {dn}: {conn.result}")


def fast_path_size(lab: Lab, size: int, reps: int, key_type: str) -> dict[str, Any]:
    """A no-change sync against bare searches on one open connection, interleaved ``reps``
    times: the fast path's attributes, all roaming attributes, and the full no-change sync."""
    credentials = make_credentials(size, 0, key_type)
    account = fresh_user(lab, f"benchfast{size}")
    roaming_key = new_roaming_key()
    try:
        with tempfile.TemporaryDirectory(prefix="credroam-bench-") as scratch:
            store, state = settled_host(
                lab, account, credentials, os.path.join(scratch, "h"), roaming_key
            )
            conn = bench_connection(lab, account)
            times: dict[str, list[float]] = {k: [] for k in ("mark", "all", "fast", "full")}
            operations: dict[str, set[tuple[int, int]]] = {"fast": set(), "full": set()}

            def run_sync(force_full: bool) -> None:
                report = sync_user(conn, account.dn, store, state, Policy(), roaming_key,
                                   filetime_now, force_full=force_full)  # fmt: skip
                _expect(not report.changed, "the no-change sync changes nothing")
                _expect((report.full_sync_reason is None) != force_full, "the path taken")

            run_sync(False)  # the connection learns its DC (two searches, once)
            for _ in range(reps):
                for name, action in (
                    ("mark", lambda: _bare_search(conn, account.dn, MARK_ATTRIBUTES)),
                    ("all", lambda: _bare_search(conn, account.dn, READ_ATTRIBUTES)),
                    ("fast", lambda: run_sync(False)),
                    ("full", lambda: run_sync(True)),
                ):
                    searches, writes = conn.searches, conn.writes
                    start = time.perf_counter()
                    action()
                    times[name].append(time.perf_counter() - start)
                    if name in operations:
                        operations[name].add((conn.searches - searches, conn.writes - writes))
            conn.unbind()
        clear_user(lab, account)
    finally:
        delete_user(lab, account)
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    return {
        "certificates": size,
        "tokens": 2 * size,
        **{f"{name}_s": summary(samples, 6) for name, samples in times.items()},
        "ldap": {name: sorted(ops) for name, ops in operations.items()},
        "fast_over_mark_search": round(medians["fast"] / medians["mark"], 2),
        "fast_over_all_search": round(medians["fast"] / medians["all"], 4),
        "full_over_fast": round(medians["full"] / medians["fast"], 1),
    }


def first_sync_vs_modify(lab: Lab, size: int, key_type: str) -> dict[str, Any]:
    """The first sync of ``size`` certificates with keys against one bare LDAP modify adding
    the same values (re-linked to a second user's DN) and a timestamp."""
    credentials = make_credentials(size, 0, key_type)
    syncing, bare = fresh_user(lab, "benchfirst"), fresh_user(lab, "benchbare")
    try:
        with tempfile.TemporaryDirectory(prefix="credroam-bench-") as scratch:
            store = FileStore(os.path.join(scratch, "h"))
            state = StateFile(os.path.join(scratch, "h.state"))
            _fill(store, credentials, filetime_now())
            conn = bench_connection(lab, syncing)
            first_s, report = _timed_sync(conn, syncing, store, state, new_roaming_key())
            conn.unbind()
            _expect(len(report.uploaded) == 2 * size, f"the first sync uploads {2 * size}")
        conn = bench_connection(lab, syncing)
        attributes = [ACCOUNT_CREDENTIALS, KEY_ENVELOPES, ROAMING_TIMESTAMP]
        conn.search(syncing.dn, "(objectClass=*)", ldap3.BASE, attributes=attributes)
        raw = {k.lower(): v for k, v in conn.response[0]["raw_attributes"].items()}
        conn.unbind()
        modlist = {
            attribute: [(ldap3.MODIFY_ADD, [
                format_dn_binary(parse_dn_binary(v)[0], bare.dn).encode() for v in values
            ])]
            for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES)
            if (values := raw.get(attribute.lower()))
        }  # fmt: skip
        modlist[ROAMING_TIMESTAMP] = [(ldap3.MODIFY_ADD, raw[ROAMING_TIMESTAMP.lower()])]
        conn = bench_connection(lab, bare)
        start = time.perf_counter()
        done = conn.modify(bare.dn, modlist)
        modify_s = time.perf_counter() - start
        _expect(done, f"the bare modify: {conn.result}")
        conn.unbind()
        sent = sum(len(v) for ops in modlist.values() for _, values in ops for v in values)
        clear_user(lab, syncing)
        clear_user(lab, bare)
    finally:
        delete_user(lab, syncing)
        delete_user(lab, bare)
    return {
        "certificates": size,
        "tokens": 2 * size,
        "first_sync_s": round(first_s, 4),
        "first_sync_modifies": len(report.operations),
        "bare_modify_s": round(modify_s, 4),
        "bare_modify_bytes": sent,
        "first_over_modify": round(first_s / modify_s, 2),
    }


# --- a logon storm -----------------------------------------------------------------------------


def dc_cpu_seconds(lab: Lab, dc: int = 0) -> float:
    """User + system CPU of every process in the DC's network namespace (Samba's), so far."""
    pids = subprocess.run(
        ["ip", "netns", "pids", f"cr-{lab.name}-{lab.dc(dc).name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def storm(lab: Lab, ks: list[int], key_type: str) -> list[dict[str, Any]]:
    """K concurrent logons of K hosts of one user (10 certificates with keys), each with its
    own connection (TLS + bind), in threads: a fast no-change sync, a full one (force_full),
    and, as the DC's own figure, a bare search of the fast path's attributes."""
    credentials = make_credentials(10, 0, key_type)
    account = fresh_user(lab, "benchstorm")
    roaming_key = new_roaming_key()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="credroam-bench-") as scratch:
            hosts = [
                settled_host(lab, account, credentials, os.path.join(scratch, "h0"), roaming_key)
            ]
            for index in range(1, max(ks)):
                hosts.append(
                    settled_host(lab, account, [], os.path.join(scratch, f"h{index}"), roaming_key)
                )

            def logon(index: int, kind: str, start: threading.Barrier) -> None:
                start.wait()
                conn = connect(target_for(lab, account, timeout=LDAP_TIMEOUT))
                try:
                    if kind == "bare":
                        _bare_search(conn, account.dn, MARK_ATTRIBUTES)
                        return
                    store, state = hosts[index]
                    report = sync_user(conn, account.dn, store, state, Policy(), roaming_key,
                                       filetime_now, force_full=kind == "full")  # fmt: skip
                    _expect((report.full_sync_reason is None) == (kind == "fast"), "path")
                finally:
                    conn.unbind()

            for k in ks:
                row: dict[str, Any] = {"k": k}
                for kind in ("bare", "fast", "full"):
                    barrier = threading.Barrier(k)
                    cpu = dc_cpu_seconds(lab)
                    start = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=k) as pool:
                        list(pool.map(lambda i, b=barrier, n=kind: logon(i, n, b), range(k)))
                    elapsed = time.perf_counter() - start
                    used = dc_cpu_seconds(lab) - cpu
                    row[kind] = {
                        "wall_s": round(elapsed, 3),
                        "per_second": round(k / elapsed, 1),
                        "dc_cpu_ms_each": round(1000 * used / k, 2),
                    }
                row["fast_over_bare_throughput"] = round(
                    row["fast"]["per_second"] / row["bare"]["per_second"], 2
                )
                rows.append(row)
                print(f"  K={k}: " + ", ".join(
                    f"{kind} {row[kind]['per_second']}/s, DC {row[kind]['dc_cpu_ms_each']} ms each"
                    for kind in ("bare", "fast", "full")
                ), flush=True)  # fmt: skip
        clear_user(lab, account)
    finally:
        delete_user(lab, account)
    return rows


# --- removed values ----------------------------------------------------------------------------

SMALL_WRITE = 20  # values in the "small write" probe (a sync that changes a few items)


def removed_values_cost(lab: Lab, steps: int, batch: int) -> list[dict[str, Any]]:
    """How a user's history of removed token values slows later writes.

    credroam replaces a token by removing its value and adding a new one, and Samba keeps every
    removed value of a linked attribute (for replication) until the tombstone lifetime. Per
    step, on one fresh user: add SMALL_WRITE values, read them (BASE search), remove them; then
    add and remove ``batch`` more, so the object holds about ``batch + SMALL_WRITE`` more removed
    values at the next step. Values are random 1.5 KB DN-Binary blobs (the directory does not
    look inside). One pass: each step has its own history, so there are no rounds.
    """
    account = fresh_user(lab, "benchhist")
    rows = []
    try:
        conn = bench_connection(lab, account)

        def timed_modify(operation: int, count: int) -> float:
            values = [format_dn_binary(os.urandom(1500), account.dn).encode() for _ in range(count)]
            start = time.perf_counter()
            done = conn.modify(account.dn, {ACCOUNT_CREDENTIALS: [(operation, values)]})
            elapsed = time.perf_counter() - start
            _expect(done, f"modify of {count} values: {conn.result}")
            return elapsed

        def remove_all() -> float:
            start = time.perf_counter()
            done = conn.modify(account.dn, {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_REPLACE, [])]})
            _expect(done, f"removing the values: {conn.result}")
            return time.perf_counter() - start

        held = 0
        for _ in range(steps):
            add_s = timed_modify(ldap3.MODIFY_ADD, SMALL_WRITE)
            start = time.perf_counter()
            conn.search(account.dn, "(objectClass=*)", ldap3.BASE, attributes=[ACCOUNT_CREDENTIALS])
            search_s = time.perf_counter() - start
            rows.append(
                {
                    "removed_values_held": held,
                    "add_s": round(add_s, 3),
                    "search_s": round(search_s, 3),
                    "remove_s": round(remove_all(), 3),
                }
            )
            print(
                f"  {held:>6} removed values held: add {SMALL_WRITE} {add_s:7.3f} s, "
                f"search {search_s:6.3f} s, remove {SMALL_WRITE} {rows[-1]['remove_s']:7.3f} s",
                flush=True,
            )
            timed_modify(ldap3.MODIFY_ADD, batch)
            remove_all()
            held += SMALL_WRITE + batch
        conn.unbind()
    finally:
        delete_user(lab, account)
    return rows


# --- output ----------------------------------------------------------------------------------


def summary(samples: list[float], digits: int = 3) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(samples), digits),
        "min_s": round(min(samples), digits),
        "max_s": round(max(samples), digits),
        "samples_s": [round(s, digits) for s in samples],
    }


def run_size(lab: Lab, size: int, rounds: int, large: int, key_type: str) -> dict[str, Any]:
    credentials = make_credentials(size, min(large, size), key_type)
    results = []
    for index in range(rounds):
        account = fresh_user(lab, f"bench{size}r{index}")
        try:
            with tempfile.TemporaryDirectory(prefix="credroam-bench-") as scratch:
                results.append(one_round(lab, account, credentials, scratch))
        finally:
            clear_user(lab, account)  # the user's values go first, then the user
            delete_user(lab, account)
    operations = {(r["no_change_searches"], r["no_change_writes"]) for r in results}
    sizes = results[-1]["bytes"]
    stored = sizes[f"{ACCOUNT_CREDENTIALS}_value_bytes"] + sizes[f"{KEY_ENVELOPES}_value_bytes"]
    token_bytes = (
        sizes[f"{ACCOUNT_CREDENTIALS}_token_bytes"] + sizes[f"{KEY_ENVELOPES}_token_bytes"]
    )
    return {
        "certificates": size,
        "tokens": 2 * size,
        "first_sync": {**summary([r["first_s"] for r in results])},
        "first_sync_modifies": len(results[-1]["first_modify_s"]),
        "longest_modify": summary([max(r["first_modify_s"]) for r in results]),
        "no_change_sync": {**summary([r["no_change_s"] for r in results])},
        "no_change_search": summary([r["no_change_search_s"] for r in results]),
        "no_change_ldap": [{"searches": s, "writes": w} for s, w in sorted(operations)],
        "download_sync": {**summary([r["download_s"] for r in results])},
        "directory_bytes": sizes,
        "stored_bytes_per_certificate": round(stored / size),
        "token_bytes_per_certificate": round(token_bytes / size),
    }


def _line(name: str, figures: dict[str, Any]) -> str:
    return (
        f"  {name:<16} median {figures['median_s']:8.3f} s  min {figures['min_s']:8.3f} s  "
        f"max {figures['max_s']:8.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="10,200,1000",
        help="certificates per user (each with a key); none: skip the sync figures",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec")
    parser.add_argument("--large", type=int, default=0, help="certificates near 64 KB tokens")
    parser.add_argument("--keep-lab", action="store_true", help="reuse and keep lab benchlab")
    parser.add_argument(
        "--removed-history",
        type=int,
        default=0,
        metavar="STEPS",
        help="also time small writes as removed values pile up (STEPS steps; slow, off by default)",
    )
    parser.add_argument("--removed-batch", type=int, default=1000, help="values removed per step")
    parser.add_argument(
        "--fast-sizes", default="10,200,1000", help="certificates per user for the fast path; none"
    )
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions (fast path)")
    parser.add_argument("--first-vs-modify", type=int, default=200, help="certificates; 0: skip")
    parser.add_argument("--storm", default="1,10,100", help="concurrent logons K; none: skip")
    parser.add_argument("--lab", help="use this running lab (e.g. an integration lab) as it is")
    args = parser.parse_args()
    try:
        sizes = [] if args.sizes == "none" else [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers or none, not {args.sizes!r}")
    if not all(1 <= size <= Policy().max_tokens // 2 for size in sizes):
        parser.error(f"each size must be 1..{Policy().max_tokens // 2} (2 tokens per certificate)")

    fast_sizes = [] if args.fast_sizes == "none" else [int(n) for n in args.fast_sizes.split(",")]
    ks = [] if args.storm == "none" else [int(k) for k in args.storm.split(",")]
    lab = Lab.load(args.lab) if args.lab else bring_up(args.keep_lab)
    results = []
    removed: list[dict[str, Any]] = []
    fast: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    storms: list[dict[str, Any]] = []
    try:
        apply_schema(lab)
        for size in fast_sizes:
            fast.append(fast_path_size(lab, size, args.reps, args.key_type))
            row = fast[-1]
            print(
                f"{2 * size} tokens, no-change sync on one connection ({args.reps} reps): fast "
                f"{row['fast_s']['median_s'] * 1000:.2f} ms = {row['fast_over_mark_search']} x "
                f"the bare search of {', '.join(MARK_ATTRIBUTES)} "
                f"({row['mark_s']['median_s'] * 1000:.2f} ms), {row['fast_over_all_search']} x "
                f"the bare search of all roaming attributes ({row['all_s']['median_s']:.4f} s); "
                f"full {row['full_s']['median_s']:.4f} s; LDAP {row['ldap']}",
                flush=True,
            )
        if args.first_vs_modify:
            first = first_sync_vs_modify(lab, args.first_vs_modify, args.key_type)
            print(f"first sync vs one bare modify: {first}", flush=True)
        if ks:
            print("logon storm (K concurrent connections):", flush=True)
            storms = storm(lab, ks, args.key_type)
        for size in sizes:
            results.append(run_size(lab, size, args.rounds, args.large, args.key_type))
            row = results[-1]
            print(f"{size} certificates + {size} keys ({2 * size} tokens), {args.rounds} rounds:")
            print(_line("first sync", row["first_sync"]))
            print(
                _line("longest modify", row["longest_modify"])
                + f"  ({row['first_sync_modifies']} modifies)"
            )
            print(_line("no-change sync", row["no_change_sync"]))
            print(_line("  its search", row["no_change_search"]))
            print(_line("download sync", row["download_sync"]))
            ldap = ", ".join(
                f"{o['searches']} search, {o['writes']} write" for o in row["no_change_ldap"]
            )
            print(f"  no-change LDAP   {ldap}")
            print(
                f"  directory        {row['stored_bytes_per_certificate']} B stored per "
                f"certificate ({row['token_bytes_per_certificate']} B of tokens)"
            )
        if args.removed_history:
            print(f"small writes as removed values pile up ({args.removed_batch} per step):")
            removed = removed_values_cost(lab, args.removed_history, args.removed_batch)
    finally:
        if not args.keep_lab and not args.lab:
            _playbook("absent")
    result = {
        "lab": BENCH_LAB,
        "rounds": args.rounds,
        "key_type": args.key_type,
        "large_certificates": args.large,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": results,
        "removed_values": removed,
        "fast_path": fast,
        "first_sync_vs_modify": first,
        "storm": storms,
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sync_lab.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out / 'sync_lab.json'}")


if __name__ == "__main__":
    main()
