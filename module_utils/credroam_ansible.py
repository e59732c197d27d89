"""Ansible glue shared by every credroam directory module.

One argument spec and one way to turn module parameters into a connection, so that every module
(ad_schema, ad_gpo, credroam_sync, credroam_info) accepts the same connection options, documented
once in the ``credroam_ldap`` doc fragment. The core (``credroam``) stays free of Ansible imports.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import ldap3  # noqa: F401
    from ansible.module_utils.credroam.connection import (
        BIND_METHODS,
        TLS_MODES,
        DirectoryError,
        LdapTarget,
        connect,
    )
    from ldap3.core.exceptions import LDAPException

    LDAP3_IMPORT_ERROR = None
    # What a directory module turns into a clear failure: our own errors name the DC and the
    # operation; ldap3 still raises network errors (connection reset, timeout) after the bind,
    # even with raise_exceptions=False.
    DIRECTORY_FAILURES: tuple[type[Exception], ...] = (DirectoryError, LDAPException)
except ImportError as exc:  # pragma: no cover - depends on the target's Python
    LDAP3_IMPORT_ERROR = exc
    DIRECTORY_FAILURES = ()
    BIND_METHODS = ("simple", "gssapi")
    TLS_MODES = ("ldaps", "starttls")


def ldap_argument_spec() -> dict[str, dict[str, Any]]:
    """Connection options; a module merges them into its own spec."""
    return {
        "server": {"type": "str", "required": True},
        "port": {"type": "int"},
        "tls_mode": {"type": "str", "default": "ldaps", "choices": list(TLS_MODES)},
        "validate_certs": {"type": "bool", "default": True},
        "ca_cert": {"type": "path"},
        "tls_server_name": {"type": "str"},
        "bind_method": {"type": "str", "default": "simple", "choices": list(BIND_METHODS)},
        "bind_user": {"type": "str"},
        "bind_password": {"type": "str", "no_log": True},
        "timeout": {"type": "int", "default": 10},
    }


LDAP_REQUIRED_IF = [("bind_method", "simple", ("bind_user", "bind_password"))]


def target_from_params(params: dict[str, Any]) -> LdapTarget:
    return LdapTarget(
        server=params["server"],
        port=params.get("port"),
        tls_mode=params["tls_mode"],
        validate_certs=params["validate_certs"],
        ca_cert=params.get("ca_cert"),
        tls_server_name=params.get("tls_server_name"),
        bind_method=params["bind_method"],
        bind_user=params.get("bind_user"),
        bind_password=params.get("bind_password"),
        timeout=params["timeout"],
    )


def require_ldap3(module: AnsibleModule) -> None:
    if LDAP3_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("ldap3"), exception=str(LDAP3_IMPORT_ERROR))


def connect_or_fail(module: AnsibleModule, target: LdapTarget | None = None):
    """A bound connection, or ``fail_json`` with the DC and the cause in the message."""
    require_ldap3(module)
    target = target or target_from_params(module.params)
    if not target.validate_certs:
        module.warn(
            f"certificate validation is off for {target.describe()}: a machine in the middle "
            "can read the bind password and every roamed credential (validate_certs=false)"
        )
    try:
        return connect(target)
    except DirectoryError as exc:
        module.fail_json(msg=str(exc))


def failure_message(exc: Exception, params: dict[str, Any]) -> str:
    """The message for one of DIRECTORY_FAILURES: ldap3's own errors get the DC named."""
    if isinstance(exc, DirectoryError):
        return str(exc)
    return f"LDAP error talking to {params['server']}: {type(exc).__name__}: {exc}"
