"""Can the bound account read a user's confidential attributes? Decided from the user's DACL.

The roaming attributes are confidential (searchFlags 128): reading them needs Read Property
*and* Control Access on the attribute or on its property set (Private-Information). A DC does
not say that it withheld a value, it just leaves it out, so an account without that right
sees every user as having no tokens. The compliance run therefore evaluates the right itself,
per user, and reports the user's roaming checks as "could not read" instead of passing them.

Evaluation follows [MS-DTYP] 2.5.3.2 for the two bits needed: ACEs in DACL order, inherit-only
ACEs skipped, the first allow or deny that covers a bit decides it. Object ACEs count when
they name no object type, the property set, or the attribute itself.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Collection

from ..gpo.secdesc import SecurityDescriptor, parse_sid

__all__ = [
    "AUTHENTICATED_USERS",
    "CONFIDENTIAL_READ",
    "EVERYONE",
    "SELF",
    "confidential_readable",
]

READ_PROPERTY = 0x10
CONTROL_ACCESS = 0x100
CONFIDENTIAL_READ = READ_PROPERTY | CONTROL_ACCESS
EVERYONE = "S-1-1-0"
AUTHENTICATED_USERS = "S-1-5-11"
SELF = "S-1-5-10"  # stands for the object's own account in its ACEs
_ALLOWED, _DENIED, _ALLOWED_OBJECT, _DENIED_OBJECT = 0x00, 0x01, 0x05, 0x06
_ACE_TYPES = (_ALLOWED, _DENIED, _ALLOWED_OBJECT, _DENIED_OBJECT)
_INHERIT_ONLY = 0x08
_OBJECT_TYPE_PRESENT = 0x1
_INHERITED_OBJECT_TYPE_PRESENT = 0x2


def _object_fields(ace_type: int, body: bytes) -> tuple[uuid.UUID | None, int]:
    """(object type or None, offset of the trustee SID) of an ACE body."""
    if ace_type not in (_ALLOWED_OBJECT, _DENIED_OBJECT):
        return None, 4
    present = struct.unpack_from("<I", body, 4)[0]
    object_type = None
    offset = 8
    if present & _OBJECT_TYPE_PRESENT:
        object_type = uuid.UUID(bytes_le=body[8:24])
        offset += 16
    if present & _INHERITED_OBJECT_TYPE_PRESENT:
        offset += 16
    return object_type, offset


def confidential_readable(
    descriptor: SecurityDescriptor, sids: Collection[str], object_types: Collection[uuid.UUID]
) -> bool:
    """Whether an account holding ``sids`` may read a confidential attribute protected by
    ``object_types`` (its property set and its own schemaIDGUID) on the object ``descriptor``
    belongs to. Add :data:`SELF` to ``sids`` when the object is the account itself."""
    held = {sid.upper() for sid in sids}
    types = set(object_types)
    decided = granted = 0
    for ace in descriptor.aces:
        if ace.flags & _INHERIT_ONLY or ace.type not in _ACE_TYPES:
            continue
        object_type, sid_offset = _object_fields(ace.type, ace.body)
        if object_type is not None and object_type not in types:
            continue
        if parse_sid(ace.body, sid_offset)[0].upper() not in held:
            continue
        bits = ace.mask & CONFIDENTIAL_READ & ~decided
        if ace.type in (_ALLOWED, _ALLOWED_OBJECT):
            granted |= bits
        decided |= bits
        if decided == CONFIDENTIAL_READ:
            break
    return granted == CONFIDENTIAL_READ
