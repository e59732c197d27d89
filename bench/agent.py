"""The agent's own costs on a host: start-up, peak memory per sync, the logon's scrypt unwrap.

    .venv/bin/python bench/agent.py [--rounds 5] [--lab NAME] [--certificates 200]

Everything runs the zipapp as a host runs it: ``/usr/bin/python3 dist/credroam-agent.pyz``
(built first, as ``make agent`` does) on Debian 12's python3-ldap3, python3-cryptography 38
(OpenSSL 3.0), python3-gssapi and python3-dnspython. Each figure is a fresh process, timed
``--rounds`` times (median, min, max of the wall time) with its peak RSS (GNU time's
``%M``: the whole process, memory OpenSSL allocates included, unlike tracemalloc).

Always (no lab needed):
  python        ``/usr/bin/python3 -c pass``: the interpreter's own start, for comparison
  import        ``import credroam_agent.cli, credroam_agent.operations`` from the zipapp: what
                every command loads before it does anything
  help          ``credroam-agent --help``
  scrypt        one ``envelope.unwrap_with_password`` at the default cost (n=2^17, r=8, p=1)
                with the zipapp's core under /usr/bin/python3: the per-logon cost of opening
                the roaming key (the process's time minus ``import`` is printed as well)

With ``--lab NAME`` (a running integration lab, e.g. one kept with CREDROAM_KEEP_LAB=1): as
alice (``--user``) on client 1, prepared as tests/integration/test_agent.py prepares its hosts (her
directory values and agent files cleared first, every round):
  first_sync    ``credroam-agent sync`` (her Kerberos ticket) of a store holding
                ``--certificates`` certificates with keys that the directory does not hold:
                uploads them all
  second_sync   the next ``sync`` with nothing to do (a full one: no head yet after a write)
  fast_sync     the one after it (``--json`` says whether the fast path was taken)
  status        ``credroam-agent status`` against the lab DC
  login         ``credroam-agent login`` (password on stdin): bind, scrypt unwrap, policy,
                a sync with nothing to do
Prints a table and writes bench/out/agent.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils"), str(REPO / "agent")]

# After sys.path: the repository root, the core and the agent's build script are importable.
import build_zipapp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.core import make_credentials
from credroam.roaming.envelope import DEFAULT_SCRYPT
from tests.integration.roaming_lab import connect_as
from tests.integration.test_agent import (
    CONFIG,
    PYZ,
    STORE,
    directory_keys,
    forget_user,
    kinit,
    prepare_host,
    uid,
)
from tests.integration.test_schema import run_schema_playbook
from tests.lab import Account, ClientHost, Lab

PYTHON = "/usr/bin/python3"  # Debian's, as on a host
TIME = "/usr/bin/time"  # GNU time (Debian's package time)
# The lab agent's configuration with room for a slow DC: a first sync writes every value in
# one modify, which a loaded 2-core machine can take longer than the tests' 5 s to apply.
BENCH_CONFIG = "/etc/credroam/bench.toml"
OUT = REPO / "bench" / "out"
IMPORT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "import credroam_agent.cli, credroam_agent.operations"
)
SCRYPT = """import sys, time
sys.path.insert(0, sys.argv[1])
from credroam.roaming.envelope import new_roaming_key, unwrap_with_password, wrap_with_password
key = new_roaming_key()
record = wrap_with_password(key, "Alice-Pass-1!", user_id="bench")
started = time.perf_counter()
assert unwrap_with_password(record, "Alice-Pass-1!", user_id="bench") == key
print(time.perf_counter() - started)
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_kib: int
    code: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], stdin: bytes = b"") -> Run:
    """One process: its wall time and peak RSS, output kept for checks.

    The peak RSS comes from GNU time (``%M``), a small parent: a child forked from this
    benchmark's own Python would start with its resident pages (``ru_maxrss`` survives exec).
    """
    with tempfile.NamedTemporaryFile() as rss:
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", rss.name, *argv], input=stdin, capture_output=True
        )
        seconds = time.perf_counter() - started
        max_rss_kib = int(Path(rss.name).read_text().split()[-1])
    return Run(
        seconds,
        max_rss_kib,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def summary(runs: list[Run], what: str) -> dict[str, Any]:
    seconds = [r.seconds for r in runs]
    rss = [r.max_rss_kib for r in runs]
    return {
        "what": what,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "peak_rss_mib": max(rss) / 1024,
        "median_rss_mib": statistics.median(rss) / 1024,
        "rounds": len(runs),
    }


def _checked(result: Run, what: str, codes: Sequence[int] = (0,)) -> Run:
    if result.code not in codes:
        raise SystemExit(f"{what} exited {result.code}:\n{result.stderr[-3000:]}")
    return result


def bench_start(rows: dict, rounds: int) -> None:
    pyz = str(PYZ)
    cases = {
        "python": ([PYTHON, "-c", "pass"], "/usr/bin/python3 -c pass (the interpreter alone)"),
        "import": ([PYTHON, "-c", IMPORT, pyz], "import the agent's CLI and operations"),
        "help": ([PYTHON, pyz, "--help"], "credroam-agent --help"),
    }  # fmt: skip
    for name, (argv, what) in cases.items():
        rows[name] = summary([_checked(run(argv), name) for _ in range(rounds)], what)
    cost = f"n=2^{DEFAULT_SCRYPT.log2_n}, r={DEFAULT_SCRYPT.r}, p={DEFAULT_SCRYPT.p}"
    runs = [_checked(run([PYTHON, "-c", SCRYPT, pyz]), "scrypt") for _ in range(rounds)]
    rows["scrypt"] = summary(runs, f"unwrap the roaming key, scrypt {cost}, a process of its own")
    unwrap = [float(r.stdout.strip()) for r in runs]
    rows["scrypt"]["unwrap_median_s"] = statistics.median(unwrap)
    rows["scrypt"]["unwrap_min_s"] = min(unwrap)
    rows["scrypt"]["unwrap_max_s"] = max(unwrap)


# --- on the lab ------------------------------------------------------------------------------


def _as_user(host: ClientHost, account: Account, ticket: str | None, *argv: str) -> list[str]:
    """``credroam-agent <argv>`` as the user in the host, in the user's session environment
    (``ticket``: the KRB5CCNAME setting of her Kerberos ticket, if she has one)."""
    user = account.name
    session = [
        f"HOME=/home/{user}", f"XDG_RUNTIME_DIR=/run/user/{uid(host, user)}",
        *([ticket] if ticket else []), "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
    ]  # fmt: skip
    return [
        *host.exec, "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
        "env", "-i", *session, PYTHON, str(PYZ), "--config", BENCH_CONFIG, *argv,
    ]  # fmt: skip


def _login(host: ClientHost, account: Account) -> list[str]:
    """``credroam-agent --user <user> login`` started as root, as the PAM hook starts it (it
    makes /run/user/<uid> and drops to the user)."""
    return [
        *host.exec, "env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
        PYTHON, str(PYZ), "--config", BENCH_CONFIG, "--user", account.name, "login",
    ]  # fmt: skip


def _place(lab: Lab, host: ClientHost, account: Account, count: int) -> set[str]:
    """``count`` certificates with keys written into the user's store folder, owned by the
    user (as the user's tools would leave them); their thumbprints."""
    owner = uid(host, account.name)
    home = lab.state_dir / host.name / "home" / account.name
    folder = home / STORE / "MY"
    for path in [*reversed(folder.relative_to(home).parents), folder.relative_to(home)]:
        if str(path) == ".":
            continue
        (home / path).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / path, owner, owner)
    placed = set()
    for credential in make_credentials(count, key_type="ec"):
        thumb = credential.thumbprint
        key = serialization.load_der_private_key(credential.key, None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        certificate = x509.load_der_x509_certificate(credential.der).public_bytes(
            serialization.Encoding.PEM
        )
        for name, data in ((f"{thumb}.cert.pem", certificate), (f"{thumb}.key.pem", key)):
            path = folder / name
            path.write_bytes(data)
            path.chmod(0o600)
            os.chown(path, owner, owner)
        placed.add(thumb)
    return placed


def bench_lab(rows: dict, lab: Lab, rounds: int, count: int, user: str) -> None:
    applied = run_schema_playbook(lab)
    if applied.returncode != 0:
        raise SystemExit(applied.stdout[-3000:] + applied.stderr[-2000:])
    host = lab.client(0)
    prepare_host(lab, host)
    config = CONFIG.format(dcs="").replace("timeout = 5", "timeout = 300")
    host.ssh(f"cat > {BENCH_CONFIG} <<'EOF'\n{config}EOF\nchmod 644 {BENCH_CONFIG}")
    account = lab.user(user)
    runs: dict[str, list[Run]] = {
        name: [] for name in ("first_sync", "second_sync", "fast_sync", "status", "login")
    }
    reasons: dict[str, list] = {name: [] for name in ("second_sync", "fast_sync")}
    for _ in range(rounds):
        forget_user(lab, account)
        password = (account.password + "\0").encode()
        _checked(run(_login(host, account), password), "first login")
        ticket = kinit(host, account)
        thumbs = _place(lab, host, account, count)
        first = _checked(run(_as_user(host, account, ticket, "sync", "--json")), "first sync")
        runs["first_sync"].append(first)
        if len(directory_keys(lab, account)) != 2 * len(thumbs):
            raise SystemExit(f"the first sync did not upload {2 * count} tokens")
        for name in ("second_sync", "fast_sync"):
            done = _checked(run(_as_user(host, account, ticket, "sync", "--json")), name)
            runs[name].append(done)
            reasons[name].append(json.loads(done.stdout)["synced"][-1]["full_sync_reason"])
        runs["status"].append(_checked(run(_as_user(host, account, ticket, "status")), "status"))
        login = run(_login(host, account), password)
        runs["login"].append(_checked(login, "login"))
    whats = {
        "first_sync": f"sync: first sync of {count} certificates with keys (uploads them all)",
        "second_sync": "sync: nothing to do, right after the upload",
        "fast_sync": "sync: nothing to do, the one after",
        "status": "status against the lab DC",
        "login": "login: bind, scrypt unwrap, policy, sync with nothing to do",
    }
    for name, done in runs.items():
        rows[name] = summary(done, whats[name])
    for name, seen in reasons.items():
        rows[name]["full_sync_reason"] = seen  # None: the fast path
    forget_user(lab, account)
    connect_as(lab, account).unbind()  # the DC still answers after the bench


def _mib(value: float) -> str:
    return f"{value:.0f} MiB"


def table(rows: dict[str, dict]) -> str:
    lines = [f"{'':12} {'median':>9} {'min':>9} {'max':>9} {'peak RSS':>9}  what"]
    for name, row in rows.items():
        lines.append(
            f"{name:12} {row['median_s']:8.3f}s {row['min_s']:8.3f}s {row['max_s']:8.3f}s "
            f"{_mib(row['peak_rss_mib']):>9}  {row['what']}"
        )
        if "unwrap_median_s" in row:
            lines.append(
                f"{'  unwrap':12} {row['unwrap_median_s']:8.3f}s {row['unwrap_min_s']:8.3f}s "
                f"{row['unwrap_max_s']:8.3f}s {'':>9}  the unwrap alone (inside the process)"
            )
        if "full_sync_reason" in row:
            lines.append(f"{'':12} full sync reasons: {row['full_sync_reason']} (None: fast path)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lab", help="a running lab: also time syncs as alice on client 1")
    parser.add_argument("--lab-rounds", type=int, default=3)
    parser.add_argument("--certificates", type=int, default=200)
    parser.add_argument(
        "--user",
        default="alice",
        choices=("alice", "bob"),
        help="the lab user (Samba slows down on a user holding many removed values: a lab "
        "whose alice ran many tests or benchmarks is better measured with bob)",
    )
    args = parser.parse_args()
    build_zipapp.build(PYZ)
    rows: dict[str, dict] = {}
    bench_start(rows, args.rounds)
    if args.lab:
        lab = Lab.load(args.lab)
        bench_lab(rows, lab, args.lab_rounds, args.certificates, args.user)
    print(table(rows))
    load = os.getloadavg()
    result = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "load_average": load,
        "python": subprocess.run([PYTHON, "--version"], capture_output=True, text=True).stdout,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "agent.json").write_text(json.dumps(result, indent=2))
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; bench/out/agent.json")


if __name__ == "__main__":
    main()
