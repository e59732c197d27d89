"""Group Policy: the GPO as data, its Registry.pol, security descriptors, and the engine.

Pure and read-side pieces (``model``: versions, GPT.INI, gPLink; ``settings``: the registry
values credroam manages; ``preg``: the Registry.pol codec; ``secdesc``: security descriptors)
import only the standard library, so the agent can ship them to find a user's policy. The
engine (``engine``, over ldap3) and the SMB edge (``sysvol``, over smbprotocol) are for the
Ansible modules only.
"""
