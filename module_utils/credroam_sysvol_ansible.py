"""Ansible glue for the modules that read or write SYSVOL (ad_gpo, ad_gpo_info).

One SMB argument spec (documented once in the ``credroam_sysvol`` doc fragment) and one way to
turn module parameters into the list of SYSVOL servers and a :class:`SmbTarget` for each.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.credroam.gpo.sysvol import SmbTarget, Sysvol, SysvolError, ntlm_username

try:
    from ansible.module_utils.credroam.connection import read_root_dse
    from ansible.module_utils.credroam.gpo.engine import GpoReader
except ImportError:  # ldap3 is missing: the module's require_libraries() says so
    pass

Engine = TypeVar("Engine", bound="GpoReader")

SYSVOL_MUTUALLY_EXCLUSIVE = [("smb_server", "sysvol_servers")]


def sysvol_argument_spec() -> dict[str, dict[str, Any]]:
    """SMB options; a module merges them into its own spec (next to ldap_argument_spec())."""
    return {
        "smb_server": {"type": "str"},
        "sysvol_servers": {"type": "list", "elements": "str"},
        "smb_user": {"type": "str"},
        "smb_password": {"type": "str", "no_log": True},
        "smb_port": {"type": "int", "default": 445},
        "smb_encrypt": {"type": "bool", "default": True},
    }


def validate_sysvol(module: AnsibleModule) -> None:
    """The SMB settings checked before any network traffic."""
    params = module.params
    if not 0 < params["smb_port"] < 65536:
        module.fail_json(
            msg=f"invalid SMB settings: smb_port {params['smb_port']} is not a TCP port"
        )
    if not all(sysvol_servers(params)):
        module.fail_json(msg="invalid SMB settings: sysvol_servers holds an empty name")
    if not params.get("smb_user"):
        try:
            ntlm_username(params.get("bind_user"))
        except SysvolError as exc:
            module.fail_json(msg=f"invalid SMB settings: {exc}")


def sysvol_servers(params: dict[str, Any]) -> list[str]:
    """The DCs whose SYSVOL is read and written, the reference (first) one first."""
    return params.get("sysvol_servers") or [params.get("smb_server") or params["server"]]


def smb_target(params: dict[str, Any], domain_dns_name: str, server: str) -> SmbTarget:
    """SMB session settings for one SYSVOL server; credentials default to the LDAP bind's."""
    return SmbTarget(
        server=server,
        username=params.get("smb_user") or ntlm_username(params.get("bind_user")),
        password=params.get("smb_password") or params.get("bind_password") or "",
        domain_dns_name=domain_dns_name,
        port=params["smb_port"],
        encrypt=params["smb_encrypt"],
        timeout=params["timeout"],
    )


def gpo_engine(engine_class: type[Engine], conn, params: dict[str, Any]) -> Engine:
    """A GpoReader or GpoApplier on ``conn``, with a SYSVOL session per server ``params`` name."""
    root = read_root_dse(conn)
    domain = root.domain_dns_name
    return engine_class(
        conn,
        root,
        lambda server: Sysvol(smb_target(params, domain, server)),
        sysvol_servers(params),
    )
