"""Ansible glue shared by every credroam directory module.

One argument spec and one way to turn module parameters into a connection, so that every module
(ad_schema, ad_gpo, credroam_sync, credroam_info) accepts the same connection options, documented
once in the ``credroam_ldap`` doc fragment. The core (``credroam``) stays free of Ansible imports.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.credroam.errors import CredroamError, DirectoryError

try:
    from ansible.module_utils.credroam.connection import (
        BIND_METHODS,
        TLS_MODES,
        LdapTarget,
        connect,
        validate_target,
    )
    from ldap3.core.exceptions import LDAPException

    # What a directory module turns into a clear failure: credroam's own errors name the DC or
    # the argument at fault; ldap3 still raises network errors (connection reset, timeout)
    # after the bind, even with raise_exceptions=False.
    DIRECTORY_FAILURES: tuple[type[Exception], ...] = (CredroamError, LDAPException)
except ImportError:  # ldap3 is missing: require_libraries() says so once the module is built
    DIRECTORY_FAILURES = (CredroamError,)
    # The argument spec is checked before require_libraries() can run, so it needs these.
    BIND_METHODS = ("simple", "gssapi")
    TLS_MODES = ("ldaps", "starttls")

# Each third-party package a module may need, by its PyPI name, and the module that proves it.
LIBRARIES = {"ldap3": "ldap3", "smbprotocol": "smbclient", "jinja2": "jinja2"}


def require_libraries(module: AnsibleModule, core_import_error: str | None, *packages: str):
    """Fail with ``missing_required_lib`` naming the first of ``packages`` that cannot be
    imported. Modules import the core inside ``try``, so when every package is there but the
    core still failed to import, that error (``core_import_error``, a traceback) is reported as
    it is rather than taken for a missing package."""
    for package in packages:
        try:
            importlib.import_module(LIBRARIES[package])
        except ImportError:
            module.fail_json(msg=missing_required_lib(package), exception=traceback.format_exc())
    if core_import_error is not None:
        module.fail_json(msg="cannot import the credroam core", exception=core_import_error)


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


def validate_connection(module: AnsibleModule) -> LdapTarget:
    """The connection settings as a target, checked before any network traffic."""
    target = target_from_params(module.params)
    try:
        validate_target(target)
    except DirectoryError as exc:
        module.fail_json(msg=f"invalid connection settings: {exc}")
    return target


def connect_or_fail(module: AnsibleModule, target: LdapTarget | None = None):
    """A bound connection, or ``fail_json`` with the DC and the cause in the message."""
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


def user_selector(user: str) -> dict[str, str]:
    """find_user's selector for a ``user`` option: a DN holds '=', a UPN '@', anything else is
    a sAMAccountName."""
    if "=" in user:
        return {"dn": user}
    if "@" in user:
        return {"upn": user}
    return {"sam_account_name": user}


def exit_with_diff(module: AnsibleModule, result: dict[str, Any]) -> None:
    """``exit_json`` with the result's ``diff`` returned only in diff mode."""
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


def failure_message(exc: Exception, params: dict[str, Any]) -> str:
    """The message for a failure. credroam's own errors already name the DC, server, file or
    argument at fault; only ldap3's errors get the DC named here."""
    if isinstance(exc, CredroamError) or not isinstance(exc, DIRECTORY_FAILURES):
        return str(exc)
    return f"LDAP error talking to {params['server']}: {type(exc).__name__}: {exc}"


def agent_argument_spec() -> dict[str, dict[str, Any]]:
    """Options of modules that run the installed agent (the ``credroam_agent`` doc fragment)."""
    return {
        "agent_path": {"type": "path", "default": "/usr/bin/credroam-agent"},
        "agent_config": {"type": "path"},
    }
