"""``credroam-agent``: the command line. Subcommands login, sync, status, watch, purge.

Exit codes: 0 done, 1 done with problems, 2 configuration error, 3 directory unreachable
(the local store is left as it is). Events go to stderr, one line each (see :mod:`.events`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from . import operations
from .config import ConfigError, load_config
from .events import EventLog
from .identity import IdentityError, become_user
from .operations import EXIT_CONFIG, EXIT_PROBLEMS, Session

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credroam-agent",
        description="Roam the user's certificates and private keys with Active Directory.",
        epilog="Exit codes: 0 done, 1 done with problems, 2 configuration error, "
        "3 directory unreachable.",
    )
    parser.add_argument("--config", help="configuration file (default /etc/credroam/agent.toml)")
    parser.add_argument(
        "--user", help="the local user to work for (as root: drop to that user first)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    login = commands.add_parser(
        "login", help="at logon: unwrap the roaming key with the password on stdin, then sync"
    )
    login.add_argument("--json", action="store_true", help="report as JSON on stdout")
    sync = commands.add_parser("sync", help="one reconciliation with the directory")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument("--json", action="store_true", help="report as JSON on stdout")
    status = commands.add_parser(
        "status", help="local versus directory, last sync, key cache, policy, problems"
    )
    status.add_argument("--json", action="store_true", help="report as JSON on stdout")
    commands.add_parser(
        "watch", help="keep syncing: store changes, lock/unlock, policy refresh (long-running)"
    )
    purge = commands.add_parser(
        "purge", help="remove roamed credentials and the key cache from this host"
    )
    purge.add_argument(
        "--if-policy", action="store_true", help="only when the policy removes them at logoff"
    )
    return parser


def _watch(session: Session) -> int:
    """Run the triggers (store change, lock/unlock, policy refresh, backoff) until stopped."""
    from . import triggers

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    policy = operations.policy_in_force(session, None, None)
    paths = session.paths
    triggers.run(
        lambda reason: operations.run_sync(session),
        watch_paths=[f"{paths.store}/MY", f"{paths.store}/REQUEST"],
        refresh=int(policy.values["sync_interval_minutes"]) * 60,
        stop=stop,
    )
    return session.exit_code()


def _dispatch(args: argparse.Namespace, session: Session, password: str | None) -> int:
    if args.command == "login":
        return operations.run_sync(session, password, as_json=args.json)
    if args.command == "sync":
        return operations.run_sync(session, dry_run=args.dry_run, as_json=args.json)
    if args.command == "status":
        return operations.status(session, as_json=args.json)
    if args.command == "purge":
        return operations.purge(session, if_policy=args.if_policy)
    return _watch(session)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = EventLog()
    # Read before anything else, so the password is never left waiting in a pipe.
    password = operations.read_password(sys.stdin) if args.command == "login" else None
    if args.command == "login" and not password:
        events.config_error("login needs the password on stdin (pam_exec expose_authtok)")
        return EXIT_CONFIG
    try:
        config = load_config(args.config)
        user = become_user(args.user, make_runtime_dir=args.command == "login")
    except (ConfigError, IdentityError) as exc:
        events.config_error(str(exc))
        return EXIT_CONFIG
    events.context["user"] = user.name
    session = Session(config, user, events)
    try:
        code = _dispatch(args, session, password)
    except Exception as exc:  # a bug must not hang or crash a logon with a traceback
        events.internal_error(exc)
        code = EXIT_PROBLEMS
    if getattr(args, "json", False):
        print(events.as_json([("exit", code), *session.report.items()]))
    return code


if __name__ == "__main__":
    sys.exit(main())
