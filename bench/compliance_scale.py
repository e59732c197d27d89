"""The cost of the compliance run per 1,000 users, on a lab with generated users.

    .venv/bin/python bench/compliance_scale.py --lab co [--users 1000,2000]
                                               [--with-tokens 10] [--tokens 10]

Reuses a running lab (its DCs: the run reads every DC's schema, SYSVOL and users' timestamps) on
which playbooks/site.yml has run. Users are made in an OU of their own (OU=BenchScale, deleted
at the end) with ldap3 adds as Administrator; --with-tokens percent of them get --tokens
certificate tokens (real self-signed certificates, as native type-3 tokens in
msPKIAccountCredentials), the others none. Then, per size, `playbooks/compliance.yml` with
compliance_users_base_dn on that OU and the host checks off (they do not grow with users) is
timed end to end, and the module's own share (`credroam_info` task time, from Ansible's
profile_tasks callback) is read from its output. The empty OU is the baseline; the cost per
1,000 users is (t(N) - t(0)) / N * 1000. Writes bench/out/compliance_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ldap3

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils")]

# After sys.path: the repository root and the core must be importable.
from credroam.connection import connect
from credroam.roaming.certelement import certificate_token
from credroam.roaming.directory import ACCOUNT_CREDENTIALS
from credroam.roaming.sync import READ_LIMITS
from credroam.timestamps import filetime_now
from credroam.tokens import encode_token, format_dn_binary
from tests.integration.roaming_lab import replicate, self_signed
from tests.lab import ANSIBLE_PLAYBOOK, Lab

OU_NAME = "BenchScale"
TREE_DELETE = ("1.2.840.113556.1.4.805", True, None)
NORMAL_ACCOUNT_DISABLED = 0x0202  # no password: the run only reads the objects
LDAP_TIMEOUT = 900


def make_users(lab: Lab, ou: str, count: int, first: int, tokens: int, every: int) -> int:
    """Users first..first+count-1 under ``ou``; every ``every``-th gets ``tokens`` tokens.
    Returns how many tokens were written."""
    conn = lab.ldap_connection()
    certificates = [self_signed(f"bench {i}")[0] for i in range(tokens)]
    written = 0
    try:
        for index in range(first, first + count):
            name = f"bench{index:06d}"
            dn = f"CN={name},{ou}"
            attributes = {
                "sAMAccountName": name,
                "userPrincipalName": f"{name}@{lab.realm.lower()}",
                "userAccountControl": NORMAL_ACCOUNT_DISABLED,
            }
            assert conn.add(dn, ["top", "person", "organizationalPerson", "user"], attributes), (
                conn.result
            )
            if tokens and every and index % every == 0:
                now = filetime_now()
                values = [
                    format_dn_binary(
                        encode_token(certificate_token(der, now), READ_LIMITS), dn
                    ).encode()
                    for der in certificates
                ]
                changes = {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_ADD, values)]}
                assert conn.modify(dn, changes), conn.result
                written += len(values)
    finally:
        conn.unbind()
    return written


def run_compliance(lab: Lab, ou: str, out: Path) -> dict[str, float]:
    extra = {
        "compliance_users_base_dn": ou,
        "compliance_check_hosts": False,
        "compliance_output_dir": str(out),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "playbooks/compliance.yml", "--limit", "controller",
         "-e", json.dumps(extra)],
        cwd=REPO,
        env={**os.environ, "CREDROAM_LAB": lab.name, "ANSIBLE_CALLBACKS_ENABLED": "profile_tasks"},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    if not report["results"]:
        raise SystemExit(f"no results:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    module = re.search(r"Read and check the forest -+ (\d+\.\d+)s", done.stdout)
    return {
        "playbook_s": round(elapsed, 1),
        "module_s": float(module.group(1)) if module else None,
        "results": len(report["results"]),
        "users_read": len(report["users"]["stats"]),
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True)
    parser.add_argument("--users", default="1000")
    parser.add_argument("--with-tokens", type=int, default=10, help="percent of users")
    parser.add_argument("--tokens", type=int, default=10)
    args = parser.parse_args()
    lab = Lab.load(args.lab)
    ou = f"OU={OU_NAME},{lab.base_dn}"
    admin = lab.ldap_connection(raise_exceptions=False)
    admin.delete(ou, controls=[TREE_DELETE])  # a leftover of an interrupted run
    assert admin.add(ou, ["top", "organizationalUnit"]), admin.result
    admin.unbind()
    every = 100 // args.with_tokens if args.with_tokens else 0
    rows = []
    made = tokens = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in [0, *(int(n) for n in args.users.split(","))]:
                start = time.perf_counter()
                tokens += make_users(lab, ou, size - made, made, args.tokens, every)
                adds = time.perf_counter() - start
                made = size
                for index in range(1, len(lab.dcs)):
                    replicate(lab, 0, index)
                row = {"users": size, "tokens": tokens, "adds_s": round(adds, 1)}
                row.update(run_compliance(lab, ou, Path(tmp) / f"n{size}"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        # A tree delete of 1,000 users takes minutes on a loaded DC: wait for it.
        admin = connect(replace(lab.ldap_target(), timeout=LDAP_TIMEOUT))
        admin.delete(ou, controls=[TREE_DELETE])
        admin.unbind()
    base = rows[0]
    for row in rows[1:]:
        per = 1000 / row["users"]
        row["playbook_s_per_1000"] = round((row["playbook_s"] - base["playbook_s"]) * per, 1)
        if row["module_s"] is not None and base["module_s"] is not None:
            row["module_s_per_1000"] = round((row["module_s"] - base["module_s"]) * per, 1)
    result = {"lab": args.lab, "dcs": len(lab.dcs), "cpus": os.cpu_count(), "rows": rows}
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compliance_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows[1:], indent=1))
    print(f"written to {out / 'compliance_scale.json'}")


if __name__ == "__main__":
    main()
