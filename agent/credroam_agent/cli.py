"""``credroam-agent``: the command line. Subcommands login, sync, status, watch, purge.

Exit codes: 0 done, 1 done with problems, 2 configuration error, 3 directory unreachable
(the local store is left as it is). Events go to stderr, one line each (see :mod:`.events`).
"""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from collections.abc import Sequence

from . import __version__, operations
from .config import ConfigError, load_config
from .events import EventLog
from .identity import IdentityError, become_user
from .operations import EXIT_CONFIG, EXIT_OK, EXIT_PROBLEMS, Session

__all__ = ["build_parser", "main"]


def _common_options(parser: argparse.ArgumentParser) -> None:
    """--config and --user, taken before or after the command (the PAM hook puts them after);
    SUPPRESS keeps a value given in one place from being reset by the other's default."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="configuration file (default /etc/credroam/agent.toml)",
    )
    parser.add_argument(
        "--user",
        default=argparse.SUPPRESS,
        help="the local user to work for (as root: drop to that user first)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credroam-agent",
        description="Roam the user's certificates and private keys with Active Directory.",
        epilog="Exit codes: 0 done, 1 done with problems, 2 configuration error, "
        "3 directory unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"credroam-agent {__version__}")
    _common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        _common_options(sub)
        return sub

    login = command(
        "login", "at logon: unwrap the roaming key with the password on stdin, then sync"
    )
    login.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    login.add_argument("--json", action="store_true", help="report as JSON on stdout")
    login.add_argument(
        "--one-time-secret",
        action="store_true",
        help="after a password reset: the helpdesk's one-time secret follows the password "
        "(NUL-terminated or the next line; asked for on a terminal)",
    )
    sync = command("sync", "one reconciliation with the directory")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument("--json", action="store_true", help="report as JSON on stdout")
    status = command("status", "local versus directory, last sync, key cache, policy, problems")
    status.add_argument("--json", action="store_true", help="report as JSON on stdout")
    command("watch", "keep syncing: store changes, lock/unlock, policy refresh (long-running)")
    purge = command(
        "purge", "at logoff, when the policy asks: remove roamed credentials and the key cache"
    )
    purge.add_argument("--always", action="store_true", help="remove them whatever the policy says")
    return parser


# Triggers at which the policy is read again (the others use the user's last good policy).
_POLICY_REASONS = frozenset({"start", "refresh", "policy", "retry"})


def _watch(session: Session) -> int:
    """Run the triggers (a change in the store or a mirror an application writes, lock/unlock,
    policy refresh, backoff) until stopped."""
    from . import triggers

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    paths = session.paths
    mirrored = [path for mirror in session.mirrors for path in mirror.watch_paths()]
    triggers.run(
        lambda reason: operations.run_sync(
            session.fresh(),
            refresh_policy=reason in _POLICY_REASONS,
            # A watched file can change in place, which the fast path's markers may not show.
            force_full=reason == triggers.STORE,
        ),
        watch_paths=[f"{paths.store}/MY", f"{paths.store}/REQUEST", *mirrored],
        policy_version=lambda: operations.policy_version(session),
        stop=stop,
    )
    return EXIT_OK


def _dispatch(
    args: argparse.Namespace,
    session: Session,
    password: str | None,
    one_time_secret: str | None = None,
) -> int:
    if args.command == "login":
        return operations.run_sync(
            session,
            password,
            dry_run=args.dry_run,
            as_json=args.json,
            one_time_secret=one_time_secret,
        )
    if args.command == "sync":
        return operations.run_sync(session, dry_run=args.dry_run, as_json=args.json)
    if args.command == "status":
        return operations.status(session, as_json=args.json)
    if args.command == "purge":
        return operations.purge(session, always=args.always)
    return _watch(session)


def _login_secrets(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(password, one-time secret) of ``login``: from stdin (PAM, scripts) or, for
    ``--one-time-secret`` on a terminal, asked for without echo."""
    if args.command != "login":
        return None, None
    if not args.one_time_secret:
        return operations.read_password(sys.stdin), None
    if sys.stdin.isatty():
        return getpass.getpass("Password: "), getpass.getpass("One-time secret: ")
    password, secret = operations.read_secrets(sys.stdin, 2)
    return password, secret


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = EventLog()
    # Read before anything else, so the password is never left waiting in a pipe.
    password, one_time_secret = _login_secrets(args)
    if args.command == "login" and not password:
        events.config_error("login needs the password on stdin (pam_exec expose_authtok)")
        return EXIT_CONFIG
    if getattr(args, "one_time_secret", False) and not one_time_secret:
        events.config_error("login --one-time-secret needs the secret after the password")
        return EXIT_CONFIG
    try:
        config = load_config(getattr(args, "config", None))
        user = become_user(getattr(args, "user", None), make_runtime_dir=args.command == "login")
        operations.paths_for(config, user)  # every path resolvable before any work
    except (ConfigError, IdentityError) as exc:
        events.config_error(str(exc))
        return EXIT_CONFIG
    events.context["user"] = user.name
    session = Session(config, user, events)
    try:
        code = _dispatch(args, session, password, one_time_secret)
    except Exception as exc:  # a bug must not hang or crash a logon with a traceback
        events.internal_error(exc)
        code = EXIT_PROBLEMS
    if getattr(args, "json", False):
        print(events.as_json([("exit", code), *session.report.items()]))
    return code


if __name__ == "__main__":
    sys.exit(main())
