"""The convergence hunt: many generated schedules of the simulation, counted (``make hunt``).

Each schedule (``test_convergence.random_schedule``: 2 to 8 hosts, 1 to 4 DCs, clock skew,
crashes at every write step, partial replication, the fast path in half of them) comes from a
``random.Random`` seeded with ``seed`` and the schedule's number, so schedule 12345 of seed 1 is
the same on every machine and ``--only 12345`` runs it again. Printed at the end: schedules run
and, for each kind of broken promise (``test_convergence.Broken``), how many schedules broke it.
The exit status is 1 when any did; the first failures are printed shrunk (operations removed one
at a time while it still fails), ready to pin as an ``@example``.

    PYTHONPATH=module_utils:. python -m tests.unit.convergence_hunt --schedules 100000 --seed 1

Schedules are independent, so ``--jobs`` spreads them over processes; the figures do not
depend on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections import Counter
from dataclasses import replace

from tests.unit.test_convergence import Broken, Schedule, random_schedule, run_schedule

SHOWN_FAILURES = 3


def schedule_number(seed: int, number: int) -> Schedule:
    return random_schedule(random.Random(f"{seed}:{number}"))


def shrink(schedule: Schedule, broken: str) -> Schedule:
    """The schedule with every operation removed whose removal keeps ``broken`` broken."""
    ops = list(schedule.ops)
    i = 0
    while i < len(ops):
        candidate = replace(schedule, ops=tuple(ops[:i] + ops[i + 1 :]))
        if any(v.broken == broken for v in run_schedule(candidate)):
            ops = list(candidate.ops)
        else:
            i += 1
    return replace(schedule, ops=tuple(ops))


def _broken(seed_and_number: tuple[int, int]) -> tuple[int, tuple[str, ...]]:
    """What schedule ``number`` broke (a worker's unit of work)."""
    seed, number = seed_and_number
    return number, tuple(sorted({v.broken for v in run_schedule(schedule_number(seed, number))}))


def hunt(seed: int, count: int, first: int = 0, jobs: int = 1, progress: int = 1000) -> Counter:
    tally: Counter = Counter()
    shown = 0
    started = time.monotonic()
    work = [(seed, number) for number in range(first, first + count)]
    with multiprocessing.Pool(jobs) as pool:
        for number, broken in pool.imap_unordered(_broken, work, chunksize=50):
            tally["schedules run"] += 1
            tally.update(broken)
            failed = [b for b in broken if b in Broken.ALL]
            if failed and shown < SHOWN_FAILURES:
                shown += 1
                _show(seed, number, failed[0])
            if progress and tally["schedules run"] % progress == 0:
                elapsed = time.monotonic() - started
                counts = ", ".join(f"{b}: {tally[b]}" for b in (*Broken.ALL, Broken.BASELESS))
                print(f"... {tally['schedules run']} schedules in {elapsed:.0f} s; {counts}",
                      flush=True)  # fmt: skip
    return tally


def _show(seed: int, number: int, broken: str) -> None:
    schedule = schedule_number(seed, number)
    small = shrink(schedule, broken)
    print(f"schedule {number} (seed {seed}): {broken}")
    print(f"  shrunk to {len(small.ops)} operations: {small}")
    print(f"  breaks: {[f'{v.broken}: {v.message}' for v in run_schedule(small)]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first", type=int, default=0, help="number of the first schedule")
    parser.add_argument("--only", type=int, help="run this one schedule and print it")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    if args.only is not None:
        schedule = schedule_number(args.seed, args.only)
        print(schedule)
        found = run_schedule(schedule)
        print("\n".join(f"{v.broken}: {v.message}" for v in found) or "all promises kept")
        return 1 if found else 0
    started = time.monotonic()
    tally = hunt(args.seed, args.schedules, args.first, args.jobs)
    elapsed = time.monotonic() - started
    print(f"seed {args.seed}, schedules {args.first}..{args.first + args.schedules - 1}")
    print(f"schedules run: {tally['schedules run']}")
    for broken in (*Broken.ALL, Broken.BASELESS):
        print(f"{broken}: {tally[broken]}")
    print(f"time: {elapsed:.0f} s")
    return 1 if any(tally[b] for b in Broken.ALL) else 0


if __name__ == "__main__":
    sys.exit(main())
