"""LDAP connections to a domain controller: TLS always, certificate validation by default.

Every directory operation of credroam (schema, GPO, roaming tokens, compliance) connects through
:func:`connect`, so there is one place that decides how traffic to a DC is protected. Plain LDAP
is not offered: roaming data and bind passwords only ever travel inside TLS (LDAPS on 636 or
StartTLS on 389), and the DC's certificate is validated against a CA unless the caller opts out
explicitly with ``validate_certs=False``.

Two ways to bind: ``simple`` (user and password, inside TLS) and ``gssapi`` (Kerberos with the
caller's own credentials, see :func:`kerberos_credentials`).
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

import ldap3
from ldap3.core.exceptions import LDAPCertificateError, LDAPException
from ldap3.core.tls import check_hostname

from .errors import DirectoryError
from .ldapresult import first

TLS_MODES = ("ldaps", "starttls")
BIND_METHODS = ("simple", "gssapi")
DEFAULT_PORTS = {"ldaps": 636, "starttls": 389}
# OpenSSL's reason, as ldap3 passes it on in its exception text (LDAPS and StartTLS alike).
_VERIFY_FAILED = re.compile(r"certificate verify failed: (?P<reason>[^(]+)")


@dataclass(frozen=True)
class LdapTarget:
    """Where and how to connect. ``server`` is a DC host name or IP address."""

    server: str
    bind_user: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    port: int | None = None
    tls_mode: str = "ldaps"
    validate_certs: bool = True
    ca_cert: str | None = None
    # Name the DC certificate must carry when ``server`` is an address the certificate
    # does not list (e.g. a DC reached by IP whose certificate names only its FQDN).
    tls_server_name: str | None = None
    bind_method: str = "simple"
    timeout: int = 10

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.tls_mode]

    def describe(self) -> str:
        return f"{self.server}:{self.effective_port} ({self.tls_mode})"

    def with_server(self, server: str, tls_server_name: str | None = None) -> LdapTarget:
        """The same credentials and TLS settings aimed at another DC (e.g. the schema master)."""
        return LdapTarget(
            server=server,
            bind_user=self.bind_user,
            bind_password=self.bind_password,
            port=self.port,
            tls_mode=self.tls_mode,
            validate_certs=self.validate_certs,
            ca_cert=self.ca_cert,
            tls_server_name=tls_server_name,
            bind_method=self.bind_method,
            timeout=self.timeout,
        )


def validate_target(target: LdapTarget) -> None:
    """Refuse settings that cannot work, before any network traffic."""
    if not target.server:
        raise DirectoryError("no domain controller given (server is empty)")
    if target.tls_mode not in TLS_MODES:
        raise DirectoryError(
            f"tls_mode must be one of {', '.join(TLS_MODES)}, not {target.tls_mode!r}"
        )
    if target.bind_method not in BIND_METHODS:
        raise DirectoryError(
            f"bind_method must be one of {', '.join(BIND_METHODS)}, not {target.bind_method!r}"
        )
    if target.bind_method == "simple" and not (target.bind_user and target.bind_password):
        raise DirectoryError("bind_method=simple needs bind_user and bind_password")
    if target.port is not None and not 0 < target.port < 65536:
        raise DirectoryError(f"port {target.port} is not a TCP port")
    if target.timeout <= 0:
        raise DirectoryError(f"timeout must be positive, not {target.timeout}")


def _tls(target: LdapTarget) -> ldap3.Tls:
    if not target.validate_certs:
        # Explicit, documented opt-out only (validate_certs: false).
        return ldap3.Tls(validate=ssl.CERT_NONE, version=ssl.PROTOCOL_TLS_CLIENT)
    names = [target.tls_server_name] if target.tls_server_name else None
    return ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=target.ca_cert,
        valid_names=names,
    )


def connect(target: LdapTarget) -> ldap3.Connection:
    """Open a TLS-protected, bound connection or raise :class:`DirectoryError`.

    Errors name the DC and the cause (unreachable, certificate rejected, bad credentials), since
    that is what an operator needs to fix it. The certificate is checked before the bind, so a
    password is never sent to a DC that failed it.
    """
    validate_target(target)
    try:
        tls = _tls(target)
    except LDAPException as exc:
        raise DirectoryError(
            f"TLS settings for {target.describe()}: {exc} ({target.ca_cert})"
        ) from exc
    server = ldap3.Server(
        target.server,
        port=target.effective_port,
        use_ssl=target.tls_mode == "ldaps",
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=target.timeout,
    )
    bind = _bind_settings(target)
    conn = ldap3.Connection(
        server,
        receive_timeout=target.timeout,
        raise_exceptions=False,
        read_only=False,
        check_names=False,
        **bind.arguments,
    )
    try:
        _secure(conn, target)
        _bind(conn, target, bind)
    except BaseException:
        close(conn)
        raise
    return conn


def close(conn: ldap3.Connection) -> None:
    """Unbind; a connection that is already broken (a failed TLS handshake leaves a closed
    socket, so the unbind cannot be sent) is simply dropped, so cleanup never hides the cause."""
    with contextlib.suppress(LDAPException):
        conn.unbind()


def _secure(conn: ldap3.Connection, target: LdapTarget) -> None:
    """Connect and set up TLS (LDAPS, or StartTLS on the plain port), certificate checked."""
    where = target.describe()
    try:
        conn.open()
        if target.tls_mode == "starttls" and not conn.start_tls():
            raise DirectoryError(f"StartTLS refused by {where}: {conn.result}")
    except LDAPException as exc:
        raise _connect_error(exc, target) from exc
    _check_tls_server_name(conn, target)


def _connect_error(exc: LDAPException, target: LdapTarget) -> DirectoryError:
    where = target.describe()
    verify = _VERIFY_FAILED.search(str(exc))
    if verify:
        trusted = f"CA file {target.ca_cert}" if target.ca_cert else "the system trust store"
        return DirectoryError(
            f"certificate verification failed for the domain controller {where}: "
            f"{verify.group('reason').strip()} (checked against {trusted})"
        )
    if isinstance(exc, LDAPCertificateError):
        return DirectoryError(
            f"certificate verification failed for the domain controller {where}: its "
            f"certificate does not name {target.server}; give the name it carries as "
            "tls_server_name"
        )
    return DirectoryError(f"cannot reach the domain controller {where}: {exc}")


def _check_tls_server_name(conn: ldap3.Connection, target: LdapTarget) -> None:
    """With ``tls_server_name``, the certificate must carry that name: ldap3 accepts the name
    as an alternative to ``server``, which would let any certificate valid for the address
    stand in for the DC the caller named."""
    if not (target.validate_certs and target.tls_server_name):
        return
    try:
        check_hostname(conn.socket, target.tls_server_name, None)
    except LDAPCertificateError:
        names = conn.socket.getpeercert().get("subjectAltName", ())
        carried = ", ".join(f"{kind}:{value}" for kind, value in names) or "no names"
        raise DirectoryError(
            f"certificate verification failed for the domain controller {target.describe()}: "
            f"it does not name {target.tls_server_name} (tls_server_name); it names {carried}"
        ) from None


def _bind(conn: ldap3.Connection, target: LdapTarget, bind: _Bind) -> None:
    where = target.describe()
    try:
        bound = conn.bind()
    except LDAPException as exc:
        raise DirectoryError(f"bind as {bind.who} to {where} failed: {exc}") from exc
    except bind.errors as exc:
        # Kerberos failed after the ticket check: no ticket for the DC's service (unknown
        # name, KDC unreachable, clock skew). The GSSAPI message says which.
        raise DirectoryError(
            f"Kerberos bind as {bind.who} to {where} failed getting a ticket for "
            f"ldap/{kerberos_host(target)}: {_gss_message(exc)}"
        ) from exc
    if not bound:
        result = conn.result or {}
        raise DirectoryError(
            f"bind as {bind.who} to {where} failed: "
            f"{result.get('description')} {result.get('message', '')}".rstrip()
        )


class _Bind(NamedTuple):
    arguments: dict[str, Any]  # ldap3.Connection keyword arguments
    who: str  # the identity, for messages
    errors: tuple[type[Exception], ...]  # what the bind may raise besides LDAPException


def _bind_settings(target: LdapTarget) -> _Bind:
    if target.bind_method == "simple":
        arguments = {
            "authentication": ldap3.SIMPLE,
            "user": target.bind_user,
            "password": target.bind_password,
        }
        return _Bind(arguments, str(target.bind_user), ())
    gssapi, credentials = kerberos_credentials(target)
    # ldap3 asks the KDC for a ticket to ldap@<host> (the principal ldap/<host>) and binds as
    # the owner of `credentials`, with no authorization identity of its own. It negotiates no
    # SASL security layer, so the DC must accept SASL inside TLS (Samba: "ldap server require
    # strong auth = allow_sasl_over_tls"); TLS is always on here.
    arguments = {
        "authentication": ldap3.SASL,
        "sasl_mechanism": ldap3.KERBEROS,
        "sasl_credentials": (kerberos_host(target), None, credentials),
    }
    return _Bind(arguments, f"{credentials.name} (Kerberos)", (gssapi.exceptions.GSSError,))


def kerberos_host(target: LdapTarget) -> str:
    """The host part of the DC's Kerberos service principal ldap/<host>: ``tls_server_name``
    when given, else ``server``. A DC reached by IP needs its FQDN in tls_server_name: there
    is no principal ldap/<IP>."""
    return target.tls_server_name or target.server


def kerberos_principal(bind_user: str) -> str:
    """The Kerberos principal of a UPN-style ``bind_user``: an AD realm is the domain in upper
    case, so ``admin@example.com`` (as inventories give it for simple binds) is
    ``admin@EXAMPLE.COM``. A name without a realm is left to Kerberos' default realm."""
    name, at, realm = bind_user.rpartition("@")
    return f"{name}@{realm.upper()}" if at else bind_user


def kerberos_credentials(target: LdapTarget) -> tuple[ModuleType, Any]:
    """The ``gssapi`` module and the caller's Kerberos credentials, or :class:`DirectoryError`.

    The credentials are the caller's own: the ticket-granting ticket in the credential cache
    named by ``KRB5CCNAME`` (default: the system's), obtained beforehand with ``kinit``, with the
    Kerberos settings of ``KRB5_CONFIG`` (default /etc/krb5.conf). ``bind_user``, when given,
    picks that principal's ticket from a cache collection. credroam never handles a Kerberos
    password. Checked before connecting, so a missing or expired ticket is reported as such,
    not as a failed bind.
    """
    where = target.describe()
    try:
        # Optional: imported only for bind_method=gssapi (ldap3's Kerberos support uses it too).
        import gssapi
    except ImportError as exc:
        raise DirectoryError(
            f"bind_method=gssapi to {where} needs the Python package gssapi (pinned in "
            f"requirements.txt; building it needs Debian's libkrb5-dev): {exc}"
        ) from exc
    wanted = kerberos_principal(target.bind_user) if target.bind_user else None
    principal = gssapi.Name(wanted, gssapi.NameType.kerberos_principal) if wanted else None
    cache = os.environ.get("KRB5CCNAME", "unset, the default cache")
    kinit = f"kinit {wanted or '<principal>'}"
    try:
        credentials = gssapi.Credentials(name=principal, usage="initiate")
        remaining = credentials.lifetime
    except gssapi.exceptions.GSSError as exc:
        owner = f" of {wanted}" if wanted else ""
        raise DirectoryError(
            f"no Kerberos credentials{owner} to bind to {where} (KRB5CCNAME {cache}): "
            f"run {kinit} first ({_gss_message(exc)})"
        ) from exc
    if remaining == 0:
        raise DirectoryError(
            f"the Kerberos ticket of {credentials.name} has expired (KRB5CCNAME {cache}): "
            f"run {kinit} again to bind to {where}"
        )
    return gssapi, credentials


def _gss_message(exc: Exception) -> str:
    """A GSSError's text on one line (gssapi joins major and minor status with newlines)."""
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class RootDse:
    default_naming_context: str
    schema_naming_context: str
    configuration_naming_context: str
    root_domain_naming_context: str
    dns_host_name: str
    server_name: str

    @property
    def domain_dns_name(self) -> str:
        return ".".join(rdn.split("=", 1)[1] for rdn in self.default_naming_context.split(","))


def read_root_dse(conn: ldap3.Connection) -> RootDse:
    names = [
        "defaultNamingContext",
        "schemaNamingContext",
        "configurationNamingContext",
        "rootDomainNamingContext",
        "dnsHostName",
        "serverName",
    ]
    if not conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=names):
        raise DirectoryError(f"cannot read the rootDSE of {conn.server.host}: {conn.result}")
    attrs = conn.response[0]["attributes"]
    return RootDse(*(str(first(attrs, name, "")) for name in names))
