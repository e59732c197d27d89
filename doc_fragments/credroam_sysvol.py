"""Doc fragment for the SYSVOL (SMB) options of the GPO modules."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  smb_server:
    description:
      - DC whose SYSVOL share is used, when there is one. Defaults to O(server).
      - Mutually exclusive with O(sysvol_servers).
    type: str
  sysvol_servers:
    description:
      - Every DC whose SYSVOL clients may read (names or addresses); SYSVOL is not replicated
        between Samba DCs, so each holds its own copy of a GPO's folder. The first one is the
        reference for C(Registry.pol) content.
      - A copy lags when its C(GPT.INI) version differs from the GPC's C(versionNumber), when
        C(GPT.INI) is missing, or when its C(Registry.pol) differs from the first server's.
      - Defaults to O(smb_server) (or O(server)) alone.
    type: list
    elements: str
  smb_user:
    description:
      - SMB (NTLM) user. Defaults to O(bind_user) when that is C(user@REALM) or
        C(DOMAIN\\user); a DN bind user needs this set.
    type: str
  smb_password:
    description: Password of O(smb_user). Defaults to O(bind_password).
    type: str
  smb_port:
    description: SMB port.
    type: int
    default: 445
  smb_encrypt:
    description: Require SMB3 encryption (signing is always required).
    type: bool
    default: true
"""
