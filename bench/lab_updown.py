"""Time lab bring-up and teardown through the real playbook, N rounds.

    .venv/bin/python bench/lab_updown.py [--rounds 3] [--dcs 1] [--clients 3]

Uses its own lab `bench` (172.29.220.0/24) so it runs beside a user's lab. Prints median, min
and max per phase and writes the figures to bench/out/lab_updown.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils")]  # tests.lab imports credroam

from tests.lab import lab_playbook  # after sys.path: the repo root must be importable

BENCH_LAB = {"name": "bench", "subnet": "172.29.220.0/24"}


def timed_run(state: str, dcs: int, clients: int) -> float:
    start = time.perf_counter()
    run = lab_playbook(**BENCH_LAB, state=state, dc_count=dcs, client_count=clients)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"lab {state} failed:\n{run.output[-4000:]}")
    return elapsed


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(samples), 2),
        "min_s": round(min(samples), 2),
        "max_s": round(max(samples), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dcs", type=int, default=1, choices=[1, 2])
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()

    timed_run("absent", args.dcs, args.clients)  # start from nothing
    ups, downs = [], []
    for _ in range(args.rounds):
        ups.append(timed_run("present", args.dcs, args.clients))
        downs.append(timed_run("absent", args.dcs, args.clients))
    result = {
        "rounds": args.rounds,
        "dcs": args.dcs,
        "clients": args.clients,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "up": {**summary(ups), "samples_s": [round(s, 2) for s in ups]},
        "down": {**summary(downs), "samples_s": [round(s, 2) for s in downs]},
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab_updown.json").write_text(json.dumps(result, indent=2) + "\n")
    for phase in ("up", "down"):
        figures = result[phase]
        print(
            f"lab {phase:<4} ({args.dcs} DC, {args.clients} clients): "
            f"median {figures['median_s']:.2f} s  min {figures['min_s']:.2f} s  "
            f"max {figures['max_s']:.2f} s"
        )
    print(f"written to {out / 'lab_updown.json'}")


if __name__ == "__main__":
    main()
