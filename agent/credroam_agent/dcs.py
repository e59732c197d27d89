"""Finding a domain controller and binding to it as the user, with failover.

DCs come from the configured list, else from DNS (``_ldap._tcp.<domain>`` SRV records, with
dnspython), ordered by priority then weight. Each is tried in turn: one that cannot be reached
is skipped for the next; the one used is reported. The bind is the user's own: GSSAPI with the
user's Kerberos ticket by default, a simple bind inside TLS with the logon password as the
fallback (and the only way when ``bind_method = "simple"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ldap3

from credroam.connection import LdapTarget, connect
from credroam.errors import DirectoryError

from .config import AgentConfig, DirectoryConfig

__all__ = ["Bound", "DirectoryUnreachable", "bind_as_user", "candidate_dcs", "srv_records"]

SrvLookup = Callable[[str], Sequence[tuple[int, int, str]]]  # (priority, weight, target)


class DirectoryUnreachable(DirectoryError):
    """No DC could be found, reached or bound to; the message lists each DC and why."""


@dataclass
class Bound:
    """A connection bound as the user; ``dc`` is the DC used, ``method`` how it bound."""

    conn: ldap3.Connection
    dc: str
    method: str
    skipped: tuple[str, ...] = ()  # DCs tried before, each with its error

    @property
    def password_verified(self) -> bool:
        """A simple bind succeeded with the password: it is the user's current one."""
        return self.method == "simple"


def srv_records(name: str) -> list[tuple[int, int, str]]:
    """The SRV records of ``name`` as (priority, weight, target) via the system resolver."""
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name, "SRV")
    except dns.exception.DNSException as exc:
        raise DirectoryUnreachable(f"no domain controller found: DNS SRV {name}: {exc}") from exc
    return [(r.priority, r.weight, str(r.target).rstrip(".")) for r in answer]


def candidate_dcs(directory: DirectoryConfig, lookup: SrvLookup | None = None) -> list[str]:
    """The DCs to try, in order: the configured list, else DNS SRV (priority, then weight)."""
    if directory.dcs:
        return list(directory.dcs)
    records = (lookup or srv_records)(f"_ldap._tcp.{directory.domain}")
    ordered = sorted(records, key=lambda r: (r[0], -r[1], r[2].lower()))
    names = [target for _, _, target in ordered if target and target != "."]
    if not names:
        raise DirectoryUnreachable(f"DNS SRV _ldap._tcp.{directory.domain} lists no DC")
    return list(dict.fromkeys(names))


def _targets(
    directory: DirectoryConfig, dc: str, principal: str, password: str | None
) -> list[LdapTarget]:
    common = {
        "server": dc,
        "port": directory.port,
        "tls_mode": directory.tls_mode,
        "ca_cert": directory.ca_file,
        "timeout": directory.timeout,
    }
    targets = []
    if directory.bind_method == "gssapi":
        targets.append(LdapTarget(bind_user=principal, bind_method="gssapi", **common))
    if password is not None:
        targets.append(
            LdapTarget(bind_user=principal, bind_password=password, bind_method="simple", **common)
        )
    return targets


def _unreachable(exc: DirectoryError) -> bool:
    """A failure to reach or trust the DC (try the next DC), not one of the credentials."""
    return "cannot reach or trust" in str(exc) or "StartTLS refused" in str(exc)


def bind_as_user(
    config: AgentConfig,
    local_name: str,
    password: str | None,
    *,
    lookup: SrvLookup | None = None,
    connector: Callable[[LdapTarget], ldap3.Connection] | None = None,
) -> Bound:
    """Bind as the AD account of ``local_name`` to the first DC that answers.

    Raises :class:`DirectoryUnreachable` naming every DC tried and its error (no DC answered,
    or none accepted the user's ticket or password).
    """
    directory = config.directory
    principal = config.principal_for(local_name)
    errors: list[str] = []
    dcs = candidate_dcs(directory, lookup)
    for dc in dcs:
        targets = _targets(directory, dc, principal, password)
        if not targets:
            raise DirectoryUnreachable(
                f"cannot bind as {principal}: bind_method is simple and no password was given"
            )
        for target in targets:
            try:
                conn = (connector or connect)(target)
            except DirectoryError as exc:
                errors.append(f"{dc} ({target.bind_method}): {exc}")
                if _unreachable(exc):
                    break  # this DC is down: the other bind method would fail the same way
                continue
            return Bound(conn, dc, target.bind_method, tuple(errors))
    raise DirectoryUnreachable(
        f"cannot reach AD as {principal}: no DC of {', '.join(dcs)} answered or accepted the "
        f"bind: {'; '.join(errors)}"
    )
