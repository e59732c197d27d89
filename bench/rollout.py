"""Time the rollout, playbooks/site.yml, on 1, 3, 6 and 12 lab hosts, and its idempotent re-run.

    .venv/bin/python bench/rollout.py [--hosts 1,3,6,12] [--lab benchro]
                                      [--subnet 172.29.221.0/24] [--keep-lab]

One lab of one DC and max(--hosts) client hosts, brought up through playbooks/lab.yml. First the
directory stages alone on the fresh forest (`site.yml --limit controller`: schema extension and
the GPO), timed once. Then per N: the agent is removed from every client (agent.yml
sync_agent_state=absent, not timed), and `site.yml --limit controller,client1..N` is timed on
those N fresh hosts (the directory stages then only check), then its re-run, which must change
nothing. Last, the re-run on every host again with Ansible's speed-ups taken away one at a
time (pipelining off; forks 5, Ansible's default), and with forks 20 (ansible.cfg has 10),
to show what each is worth here.
Writes bench/out/rollout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils")]  # tests.lab imports credroam

from tests.lab import ANSIBLE_PLAYBOOK, PlaybookRun, lab_playbook  # after sys.path

BENCH_LAB = {"name": "benchro", "subnet": "172.29.221.0/24"}


def playbook(lab: str, path: str, *args: str, env: dict | None = None) -> tuple[float, int]:
    """Run a playbook against the lab's inventory; (seconds, changed count)."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), path, *args],
        cwd=REPO,
        env={**os.environ, "CREDROAM_LAB": lab, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    elapsed = time.perf_counter() - start
    run = PlaybookRun(done.returncode, done.stdout + done.stderr)
    if run.returncode != 0:
        raise SystemExit(f"{path} {' '.join(args)} failed:\n{run.output[-4000:]}")
    return elapsed, run.changed


def limit(count: int) -> str:
    return ",".join(["controller", *(f"client{i}" for i in range(1, count + 1))])


def loadavg() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,3,6,12")
    parser.add_argument("--lab", default=BENCH_LAB["name"])
    parser.add_argument("--subnet", default=BENCH_LAB["subnet"])
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()
    sizes = [int(n) for n in args.hosts.split(",")]
    lab = {"name": args.lab, "subnet": args.subnet, "dc_count": 1, "client_count": max(sizes)}

    lab_playbook(**lab, state="absent")
    up = lab_playbook(**lab, state="present", timeout=1800)
    if up.returncode != 0:
        raise SystemExit(f"lab up failed:\n{up.output[-4000:]}")
    result: dict = {
        "lab": lab,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [],
    }

    def record(what: str, hosts: int, seconds: float, changed: int, **extra) -> None:
        row = {"what": what, "hosts": hosts, "seconds": round(seconds, 1), "changed": changed}
        row.update(extra, load=round(loadavg(), 1))
        result["runs"].append(row)
        print(json.dumps(row), flush=True)

    try:
        seconds, changed = playbook(args.lab, "playbooks/site.yml", "--limit", "controller")
        record("directory stages, fresh forest", 0, seconds, changed)
        for count in sizes:
            playbook(args.lab, "playbooks/agent.yml", "-e", "sync_agent_state=absent")
            seconds, changed = playbook(args.lab, "playbooks/site.yml", "--limit", limit(count))
            record("first rollout", count, seconds, changed)
            seconds, changed = playbook(args.lab, "playbooks/site.yml", "--limit", limit(count))
            record("re-run", count, seconds, changed)
            if changed:
                raise SystemExit(f"the re-run on {count} hosts changed {changed}")
        every = limit(max(sizes))
        for label, env in (
            ("re-run, pipelining off", {"ANSIBLE_PIPELINING": "False"}),
            ("re-run, forks 5", {"ANSIBLE_FORKS": "5"}),
            ("re-run, forks 20", {"ANSIBLE_FORKS": "20"}),
        ):
            seconds, changed = playbook(args.lab, "playbooks/site.yml", "--limit", every, env=env)
            record(label, max(sizes), seconds, changed)
    finally:
        if not args.keep_lab:
            lab_playbook(**lab, state="absent")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollout.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out / 'rollout.json'}")


if __name__ == "__main__":
    main()
