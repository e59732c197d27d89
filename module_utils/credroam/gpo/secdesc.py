"""Just enough of Windows security descriptors for GPOs ([MS-DTYP] 2.4): filtering and the GPT ACL.

A GPO applies to a user who holds, on the groupPolicyContainer, Read plus the extended right
"Apply Group Policy" (edacfd8f-ffb3-11d1-b41d-00a0c968f939). Security filtering means: that
right for the chosen groups only, while Authenticated Users keep Read (clients must be able to
read every GPO to process the list). This file parses a self-relative descriptor, moves those
ACEs, and writes it back; every other ACE and every byte of it is kept as it was.

The GPT folder in SYSVOL must carry the file-system form of the GPC's DACL (what GPMC and
``samba-tool gpo create`` write, and what ``samba-tool gpo aclcheck`` checks):
:func:`gpt_folder_descriptor` maps one to the other as Samba's ``dsacl2fsacl`` does.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import CredroamError

__all__ = [
    "APPLY_GROUP_POLICY",
    "AUTHENTICATED_USERS",
    "Ace",
    "SecurityDescriptor",
    "SecurityDescriptorError",
    "ds_to_file_mask",
    "format_sid",
    "gpt_folder_descriptor",
    "parse_sid",
    "same_access",
    "security_filter",
    "sid_bytes",
]

APPLY_GROUP_POLICY = uuid.UUID("edacfd8f-ffb3-11d1-b41d-00a0c968f939")
AUTHENTICATED_USERS = "S-1-5-11"
CREATOR_OWNER = "S-1-3-0"
PRE_WINDOWS_2000_ACCESS = "S-1-5-32-554"
ACCESS_ALLOWED = 0x00
ACCESS_DENIED = 0x01
ACCESS_ALLOWED_OBJECT = 0x05
ACCESS_DENIED_OBJECT = 0x06
_OBJECT_ACE_TYPES = (ACCESS_ALLOWED_OBJECT, ACCESS_DENIED_OBJECT)
OBJECT_INHERIT = 0x01
CONTAINER_INHERIT = 0x02
INHERIT_ONLY = 0x08
INHERITED = 0x10
OBJECT_TYPE_PRESENT = 0x1
INHERITED_OBJECT_TYPE_PRESENT = 0x2
CONTROL_ACCESS = 0x100
# RC | LC | RP | LO: what GPMC grants a filtered group besides Apply.
READ_GPO = 0x00020000 | 0x4 | 0x10 | 0x80
_DACL_PRESENT = 0x0004
_SELF_RELATIVE = 0x8000
# The control bits SDDL shows for a DACL: P (protected), AI (auto-inherited), AR (inherit req).
_DACL_CONTROL = 0x1000 | 0x0400 | 0x0100
_SACL_CONTROL = 0x0010 | 0x0020 | 0x0200 | 0x0800 | 0x2000

# Directory-service rights ([MS-ADTS] 5.1.3.2) and the file rights they become ([MS-SMB2]
# 2.2.13.1); standard rights (DELETE, READ_CONTROL, WRITE_DAC, WRITE_OWNER, SYNCHRONIZE) stay.
_DS_CREATE_CHILD, _DS_DELETE_CHILD, _DS_LIST = 0x01, 0x02, 0x04
_DS_READ_PROPERTY, _DS_WRITE_PROPERTY = 0x10, 0x20
_STANDARD_RIGHTS = 0x001F0000
_SYNCHRONIZE = 0x00100000
_FILE_READ = 0x0001 | 0x0008 | 0x0020 | 0x0080  # read data/list, read EA, execute, read attrs
_FILE_WRITE = 0x0002 | 0x0004 | 0x0010 | 0x0100  # write data/add file, append/add dir, EA, attrs
_FILE_ADD = 0x0002 | 0x0004  # add file, add subdirectory
_FILE_DELETE_CHILD = 0x0040


class SecurityDescriptorError(CredroamError, ValueError):
    """A security descriptor or SID could not be parsed."""


def format_sid(raw: bytes) -> str:
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        raise SecurityDescriptorError(f"malformed SID {raw.hex()}")
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack(f"<{raw[1]}I", raw[8:])
    return "S-1-" + "-".join(str(n) for n in (authority, *subs))


def sid_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or parts[1] != "1":
        raise SecurityDescriptorError(f"{sid!r} is not a SID like S-1-5-21-...")
    try:
        authority, *subs = (int(p) for p in parts[2:])
    except ValueError:
        raise SecurityDescriptorError(f"{sid!r} is not a SID like S-1-5-21-...") from None
    return (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )


def parse_sid(buffer: bytes, offset: int) -> tuple[str, int]:
    if offset + 8 > len(buffer):
        raise SecurityDescriptorError(f"SID at {offset} runs past the buffer")
    size = 8 + 4 * buffer[offset + 1]
    return format_sid(buffer[offset : offset + size]), size


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    body: bytes  # everything after the 4-byte header, kept verbatim

    @property
    def mask(self) -> int:
        return struct.unpack_from("<I", self.body)[0]

    @property
    def object_type(self) -> uuid.UUID | None:
        if self.type not in _OBJECT_ACE_TYPES:
            return None
        if struct.unpack_from("<I", self.body, 4)[0] & OBJECT_TYPE_PRESENT:
            return uuid.UUID(bytes_le=self.body[8:24])
        return None

    @property
    def trustee(self) -> str:
        offset = 4
        if self.type in _OBJECT_ACE_TYPES:
            present = struct.unpack_from("<I", self.body, 4)[0]
            offset = 8 + 16 * bool(present & OBJECT_TYPE_PRESENT)
            offset += 16 * bool(present & INHERITED_OBJECT_TYPE_PRESENT)
        return parse_sid(self.body, offset)[0]

    @property
    def is_apply_group_policy(self) -> bool:
        return (
            self.type == ACCESS_ALLOWED_OBJECT
            and self.object_type == APPLY_GROUP_POLICY
            and bool(self.mask & CONTROL_ACCESS)
            and not self.flags & INHERITED
        )

    def pack(self) -> bytes:
        return struct.pack("<BBH", self.type, self.flags, 4 + len(self.body)) + self.body

    @classmethod
    def allow(cls, sid: str, mask: int) -> Ace:
        return cls(ACCESS_ALLOWED, CONTAINER_INHERIT, struct.pack("<I", mask) + sid_bytes(sid))

    @classmethod
    def allow_extended_right(cls, sid: str, right: uuid.UUID) -> Ace:
        body = struct.pack("<II", CONTROL_ACCESS, OBJECT_TYPE_PRESENT) + right.bytes_le
        return cls(ACCESS_ALLOWED_OBJECT, CONTAINER_INHERIT, body + sid_bytes(sid))


@dataclass(frozen=True)
class SecurityDescriptor:
    """Self-relative descriptor as read with the SD flags control; only the DACL is touched."""

    control: int
    owner: bytes | None
    group: bytes | None
    sacl: bytes | None
    dacl_revision: int
    aces: tuple[Ace, ...]

    @classmethod
    def parse(cls, raw: bytes) -> SecurityDescriptor:
        try:
            _rev, _sbz, control, o_owner, o_group, o_sacl, o_dacl = struct.unpack_from(
                "<BBHIIII", raw
            )
            if not control & _DACL_PRESENT or not o_dacl:
                raise SecurityDescriptorError("security descriptor has no DACL")
            owner = raw[o_owner : o_owner + parse_sid(raw, o_owner)[1]] if o_owner else None
            group = raw[o_group : o_group + parse_sid(raw, o_group)[1]] if o_group else None
            sacl = None
            if o_sacl:
                sacl = raw[o_sacl : o_sacl + struct.unpack_from("<H", raw, o_sacl + 2)[0]]
            dacl_revision, _, _size, count, _ = struct.unpack_from("<BBHHH", raw, o_dacl)
            aces, offset = [], o_dacl + 8
            for _ in range(count):
                ace_type, flags, size = struct.unpack_from("<BBH", raw, offset)
                if size < 8 or offset + size > len(raw):
                    raise SecurityDescriptorError(f"ACE at {offset} has a bad size {size}")
                aces.append(Ace(ace_type, flags, raw[offset + 4 : offset + size]))
                offset += size
        except struct.error as exc:
            raise SecurityDescriptorError(f"truncated security descriptor: {exc}") from None
        return cls(control, owner, group, sacl, dacl_revision, tuple(aces))

    def pack(self) -> bytes:
        """Self-relative bytes: header, owner, group, SACL, DACL (the order Windows uses)."""
        ace_bytes = b"".join(ace.pack() for ace in self.aces)
        dacl = struct.pack("<BBHHH", self.dacl_revision, 0, 8 + len(ace_bytes), len(self.aces), 0)
        parts, offsets, position = [], [], 20
        for part in (self.owner, self.group, self.sacl, dacl + ace_bytes):
            offsets.append(position if part else 0)
            if part:
                parts.append(part)
                position += len(part)
        header = struct.pack("<BBHIIII", 1, 0, self.control | _SELF_RELATIVE, *offsets)
        return header + b"".join(parts)

    @property
    def apply_trustees(self) -> list[str]:
        return sorted({ace.trustee for ace in self.aces if ace.is_apply_group_policy})


def security_filter(sd: SecurityDescriptor, sids: Iterable[str]) -> SecurityDescriptor:
    """The descriptor with Apply Group Policy for exactly ``sids`` (each also gets Read);
    Authenticated Users keep their Read ACE. Untouched ACEs keep their order; new ones go after
    the explicit ACEs and before the inherited ones, as canonical order requires."""
    wanted = list(dict.fromkeys(sids))
    kept = [ace for ace in sd.aces if not (ace.is_apply_group_policy and ace.trustee not in wanted)]
    have_apply = {ace.trustee for ace in kept if ace.is_apply_group_policy}
    have_read = {
        ace.trustee
        for ace in kept
        if ace.type == ACCESS_ALLOWED and ace.mask & READ_GPO == READ_GPO
    }
    new = []
    for sid in wanted:
        if sid not in have_read:
            new.append(Ace.allow(sid, READ_GPO))
        if sid not in have_apply:
            new.append(Ace.allow_extended_right(sid, APPLY_GROUP_POLICY))
    first_inherited = next((i for i, a in enumerate(kept) if a.flags & INHERITED), len(kept))
    aces = (*kept[:first_inherited], *new, *kept[first_inherited:])
    return SecurityDescriptor(sd.control, sd.owner, sd.group, sd.sacl, sd.dacl_revision, aces)


def ds_to_file_mask(mask: int) -> int:
    """The file access mask equivalent to a directory access mask (Samba's ldapmask2filemask).

    Read needs both read-property and list-contents; control access (extended rights such as
    Apply Group Policy) has no file meaning and maps to nothing.
    """
    file_mask = mask & _STANDARD_RIGHTS
    if mask & _DS_READ_PROPERTY and mask & _DS_LIST:
        file_mask |= _SYNCHRONIZE | _FILE_READ
    if mask & _DS_WRITE_PROPERTY:
        file_mask |= _SYNCHRONIZE | _FILE_WRITE
    if mask & _DS_CREATE_CHILD:
        file_mask |= _FILE_ADD
    if mask & _DS_DELETE_CHILD:
        file_mask |= _FILE_DELETE_CHILD
    return file_mask


def gpt_folder_descriptor(gpc: SecurityDescriptor) -> SecurityDescriptor:
    """The NT ACL of a GPO's SYSVOL folder, derived from its groupPolicyContainer's descriptor.

    As GPMC and Samba (``samba.ntacls.dsacl2fsacl``) do: owner, group and DACL flags are kept;
    every allow ACE (plain or object) except Pre-Windows 2000 Compatible Access's is kept with
    its type, object GUIDs and inheritance, made to inherit to files and folders (CREATOR OWNER
    inherit-only, since it only means something on children), its mask mapped to file rights.
    Deny and other ACEs are dropped. The result has no SACL.
    """
    aces = []
    for ace in gpc.aces:
        if ace.type not in (ACCESS_ALLOWED, ACCESS_ALLOWED_OBJECT):
            continue
        trustee = ace.trustee
        if trustee == PRE_WINDOWS_2000_ACCESS:
            continue
        flags = ace.flags | OBJECT_INHERIT | CONTAINER_INHERIT
        if trustee == CREATOR_OWNER:
            flags |= INHERIT_ONLY
        body = struct.pack("<I", ds_to_file_mask(ace.mask)) + ace.body[4:]
        aces.append(Ace(ace.type, flags, body))
    control = (gpc.control & ~_SACL_CONTROL) | _DACL_PRESENT
    return SecurityDescriptor(control, gpc.owner, gpc.group, None, gpc.dacl_revision, tuple(aces))


def same_access(a: SecurityDescriptor, b: SecurityDescriptor) -> bool:
    """Same owner, group, DACL flags and ACEs (what SDDL ``O:..G:..D:..`` shows; the ACL
    revision and byte layout are not compared)."""
    return (
        a.owner == b.owner
        and a.group == b.group
        and a.control & _DACL_CONTROL == b.control & _DACL_CONTROL
        and a.aces == b.aces
    )
