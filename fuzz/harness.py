"""What every fuzz target shares: the engine's setup, seeds written to a corpus, the verdict.

A target is one script, ``fuzz/fuzz_<name>.py``. It imports the code under test inside
``instrumented()`` (so atheris adds coverage feedback to credroam's modules, and only to them),
defines ``one_input(data)`` and calls ``fuzz(one_input, seeds)``. The verdict of one input is
the parser's contract: it returns a valid result (the target checks it, usually by a round
trip) or raises the project's typed error; anything else (another exception, a failed check,
a hang past ``-timeout``) is a crash: libFuzzer stops and saves the input under
``fuzz/crashes/``.

Arguments are libFuzzer's, passed through (``-atheris_runs=N``, ``-seed=S``, ``-timeout=T``,
corpus folders). libFuzzer ends the process when it is done, so the script supervises a child
process that fuzzes: the parent writes the seeds to a fresh corpus folder (every run starts
from the same valid inputs), gives the child a scratch folder, removes both afterwards and
prints one line, ``<target>: <N> inputs in <S> s, 0 crashes``, or the child's output and the
crash. A crash file given as the only argument is replayed: ``python fuzz/fuzz_x.py FILE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[1]
CRASHES = REPO / "fuzz" / "crashes"
# The core is importable as `credroam` from module_utils/, as in the tests; the seeds' shared
# certificates come from tests.hostile_certificates.
sys.path[1:1] = [str(REPO / "module_utils"), str(REPO)]

_CHILD = "CREDROAM_FUZZ_CHILD"
_SCRATCH = "CREDROAM_FUZZ_SCRATCH"
# In memory when the machine has it: the store target lays out files for every input, and
# directory operations on a disk cost milliseconds each (a 100-fold slowdown measured here).
_WORK_BASE = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
_ERROR = "ERROR: libFuzzer"
_DONE = re.compile(r"^Done (\d+) (?:runs )?in (\d+) second", re.MULTILINE)


def instrumented() -> contextlib.AbstractContextManager[None]:
    """Import the code under test inside this block: atheris instruments credroam only."""
    return atheris.instrument_imports(include=["credroam"])


def scratch() -> Path:
    """A private folder for a target that needs files; removed when the run ends."""
    return Path(os.environ[_SCRATCH])


def fuzz(
    one_input: Callable[[bytes], None],
    seeds: Callable[[], Iterable[bytes]],
    dictionary: Iterable[bytes] = (),
) -> None:
    """Fuzz ``one_input`` from ``seeds`` (built after instrumentation); exits with the verdict."""
    if os.environ.get(_CHILD) == "1":
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()  # does not return
    # Stopped from outside (make interrupted, a timeout): end the child, remove the folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sys.exit(_supervise(seeds, dictionary))


def _supervise(seeds: Callable[[], Iterable[bytes]], dictionary: Iterable[bytes]) -> int:
    target = Path(sys.argv[0]).stem.removeprefix("fuzz_")
    args = sys.argv[1:]
    replay = any(os.path.isfile(arg) for arg in args if not arg.startswith("-"))
    with tempfile.TemporaryDirectory(prefix=f"credroam-fuzz-{target}-", dir=_WORK_BASE) as work:
        folder = Path(work)
        (folder / "scratch").mkdir(mode=0o700)
        if not replay:
            args += _corpus_arguments(folder, target, seeds, dictionary)
        env = {**os.environ, _CHILD: "1", _SCRATCH: str(folder / "scratch")}
        log = folder / "libfuzzer.log"
        with log.open("wb") as out:
            child = subprocess.run(
                [sys.executable, sys.argv[0], *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        output = log.read_text(errors="replace")
    done = _DONE.search(output)
    if replay:
        print(output)
        return child.returncode
    # libFuzzer prints "Done" only after every run passed. Its periodic SIGALRM (the -timeout
    # watchdog) can still end the process while Python tears down on a loaded machine (seen
    # once, after "Done"): that is no finding, so "Done" without an error report decides.
    if done and _ERROR not in output:
        print(f"{target}: {done[1]} inputs in {done[2]} s, 0 crashes")
        return 0
    print(output[-8000:])
    print(f"{target}: CRASH (exit {child.returncode}); the input is saved under {CRASHES}")
    return 1


def _corpus_arguments(
    folder: Path,
    target: str,
    seeds: Callable[[], Iterable[bytes]],
    dictionary: Iterable[bytes],
) -> list[str]:
    corpus = folder / "corpus"
    corpus.mkdir()
    for seed in seeds():
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    args = [str(corpus)]
    words = list(dictionary)
    if words:
        # libFuzzer's dictionary format: one quoted string per line, bytes as \xNN.
        lines = ['"' + "".join(f"\\x{byte:02x}" for byte in word) + '"' for word in words]
        (folder / "words.dict").write_text("\n".join(lines) + "\n")
        args.append(f"-dict={folder / 'words.dict'}")
    if not any(arg.startswith("-artifact_prefix=") for arg in sys.argv[1:]):
        CRASHES.mkdir(exist_ok=True)
        args.append(f"-artifact_prefix={CRASHES}/{target}-")
    return args
