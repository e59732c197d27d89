"""A test hook: stop or kill the agent at a named step of a sync, for the fault tests.

Inert unless the environment sets ``CREDROAM_AGENT_TEST_HOOK=<action>:<step>``, where
``<step>`` is one of ``credroam.roaming.sync.SyncStep.ALL`` (planned, directory-written,
store-half-written, base-not-saved) and ``<action>`` is

- ``kill``: the agent SIGKILLs itself there, as a crash or a power cut would stop it;
- ``stop``: the agent SIGSTOPs itself there, so a test can act at that exact moment (stop the
  DC, cut the network, start a second sync) and then resume it with SIGCONT.

Either way it first writes ``credroam-agent test hook: <action> at <step> (pid <pid>)`` to
stderr, which is what the test waits for (no sleeps). A value that names no action or step is
reported and ignored. The hook gives nothing a user does not already have: a process the user
can signal anyway. Used by ``tests/integration/test_faults.py``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping

from credroam.roaming.sync import SyncStep

ENV = "CREDROAM_AGENT_TEST_HOOK"
_SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _ignore(step: str) -> None:
    """No hook: the sync runs through every step."""


def checkpoint(environ: Mapping[str, str] = os.environ) -> Callable[[str], None]:
    """The checkpoint ``sync_user`` calls at each step: a no-op unless the hook is set."""
    value = environ.get(ENV)
    if not value:
        return _ignore
    action, _, wanted = value.partition(":")
    if action not in _SIGNALS or wanted not in SyncStep.ALL:
        print(f"credroam-agent test hook: ignoring {ENV}={value!r}", file=sys.stderr)
        return _ignore

    def at(step: str) -> None:
        if step == wanted:
            print(f"credroam-agent test hook: {action} at {step} (pid {os.getpid()})",
                  file=sys.stderr, flush=True)  # fmt: skip
            os.kill(os.getpid(), _SIGNALS[action])

    return at
