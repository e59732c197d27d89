"""AD schema extension as data: OIDs, syntaxes, attribute and class definitions, the preset.

Everything here is pure and knows nothing of a live schema: user-supplied specs (the module's
``attributes``, ``classes`` and ``extend`` options) are validated into :class:`SchemaDefinitions`
by :func:`definitions_from_params`, with :data:`CREDROAM_PRESET` the one table of credroam's own
definitions. Comparing them with a live schema is :mod:`.plan`; reading and writing the schema
master is :mod:`.directory`.

- OIDs default to an arc derived from a fixed credroam GUID under 1.2.840.113556.1.8000.2554,
  the way Microsoft's oidgen script derives one (:func:`oid_from_guid`); ``.1.n`` are attributes,
  ``.2.n`` classes.
- schemaIDGUID is left to AD to generate: credroam protects its attributes through the
  Private-Information property set, never by an ACE naming an attribute's own GUID, so a stable
  schemaIDGUID buys nothing and a wrong one could not be corrected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CredroamError

__all__ = [
    "CLASS_CATEGORIES",
    "CREDROAM_GUID",
    "CREDROAM_OID_BASE",
    "CREDROAM_PRESET",
    "LINK_ID_AUTO_FORWARD",
    "MS_OID_GUID_ARC",
    "PRIVATE_INFORMATION",
    "SYNTAXES",
    "AttributeDef",
    "ClassDef",
    "ClassExtension",
    "SchemaDefinitionError",
    "SchemaDefinitions",
    "Syntax",
    "ber_to_oid",
    "definitions_from_params",
    "guid_from_bytes",
    "guid_to_bytes",
    "oid_from_guid",
    "oid_to_ber",
    "syntax_name",
]

# Microsoft's arc for OIDs derived from a GUID ("Obtaining an Object Identifier from Microsoft").
MS_OID_GUID_ARC = "1.2.840.113556.1.8000.2554"
# credroam's own GUID, fixed forever so the derived OIDs are the same in every forest.
CREDROAM_GUID = "3a71eca5-4273-4a26-b0b8-d236a98a134f"
# linkID value that asks AD to allocate the next free forward-link ID ([MS-ADTS] 3.1.1.2.3.1).
LINK_ID_AUTO_FORWARD = "1.2.840.113556.1.2.50"
# The Private-Information property set: the domain's default DACL lets each user read and write
# their own values of attributes in it, and nobody else but full-control principals.
PRIVATE_INFORMATION = "91e647de-d96f-4b70-9557-d63ff4f3ccd8"
PROPERTY_SETS = {"private-information": PRIVATE_INFORMATION}

SEARCH_FLAG_CONFIDENTIAL = 0x80
SEARCH_FLAG_RODC_FILTERED = 0x200
CLASS_CATEGORIES = {"structural": 1, "abstract": 2, "auxiliary": 3}


class SchemaDefinitionError(CredroamError, ValueError):
    """A definition given to credroam is invalid; the message names the definition and field."""


# --------------------------------------------------------------------------------------------
# OIDs and binary values


def oid_from_guid(guid: str, prefix: str = MS_OID_GUID_ARC) -> str:
    """Microsoft's oidgen method: the GUID's hex digits in chunks of 4,4,4,4,4,6,6 as arcs."""
    digits = uuid.UUID(guid).hex
    chunks, start = [], 0
    for width in (4, 4, 4, 4, 4, 6, 6):
        chunks.append(str(int(digits[start : start + width], 16)))
        start += width
    return ".".join([prefix, *chunks])


CREDROAM_OID_BASE = oid_from_guid(CREDROAM_GUID)


def _check_oid(oid: str, what: str) -> str:
    arcs = oid.split(".")
    if len(arcs) < 2 or not all(a.isdigit() and (a == "0" or not a.startswith("0")) for a in arcs):
        raise SchemaDefinitionError(f"{what}: {oid!r} is not a dotted OID")
    if int(arcs[0]) > 2 or (int(arcs[0]) < 2 and int(arcs[1]) > 39):
        raise SchemaDefinitionError(f"{what}: {oid!r} is not a valid OID (first arcs)")
    return oid


def oid_to_ber(oid: str) -> bytes:
    """BER content octets of an OID, the form AD stores in oMObjectClass."""
    arcs = [int(a) for a in _check_oid(oid, "oMObjectClass").split(".")]
    out = bytearray()
    for number in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        groups = [number & 0x7F]
        number >>= 7
        while number:
            groups.append(0x80 | (number & 0x7F))
            number >>= 7
        out.extend(reversed(groups))
    return bytes(out)


def ber_to_oid(data: bytes) -> str:
    numbers, current = [], 0
    for byte in data:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(current)
            current = 0
    if not numbers or data[-1] & 0x80:
        raise ValueError(f"truncated BER OID {data.hex()}")
    head = numbers[0]
    first, second = (min(head // 40, 2), head - 40 * min(head // 40, 2))
    return ".".join(str(n) for n in [first, second, *numbers[1:]])


def guid_to_bytes(guid: str) -> bytes:
    """AD's binary GUID layout (little-endian first three fields)."""
    return uuid.UUID(guid).bytes_le


def guid_from_bytes(data: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(data)))


# --------------------------------------------------------------------------------------------
# Syntaxes


@dataclass(frozen=True)
class Syntax:
    attribute_syntax: str
    om_syntax: int
    om_object_class: str | None = None


# Names users write in definitions -> the triple AD stores ([MS-ADTS] 3.1.1.2.2.2).
SYNTAXES: dict[str, Syntax] = {
    "boolean": Syntax("2.5.5.8", 1),
    "integer": Syntax("2.5.5.9", 2),
    "enumeration": Syntax("2.5.5.9", 10),
    "large-integer": Syntax("2.5.5.16", 65),
    "octet-string": Syntax("2.5.5.10", 4),
    "sid": Syntax("2.5.5.17", 4),
    "oid": Syntax("2.5.5.2", 6),
    "unicode-string": Syntax("2.5.5.12", 64),
    "ia5-string": Syntax("2.5.5.5", 22),
    "printable-string": Syntax("2.5.5.5", 19),
    "numeric-string": Syntax("2.5.5.6", 18),
    "case-sensitive-string": Syntax("2.5.5.3", 27),
    "generalized-time": Syntax("2.5.5.11", 24),
    "utc-time": Syntax("2.5.5.11", 23),
    "nt-security-descriptor": Syntax("2.5.5.15", 66),
    "dn": Syntax("2.5.5.1", 127, "1.3.12.2.1011.28.0.714"),
    "dn-binary": Syntax("2.5.5.7", 127, "1.2.840.113556.1.1.1.11"),
    "dn-string": Syntax("2.5.5.14", 127, "1.2.840.113556.1.1.1.12"),
}
# Only DN-valued syntaxes can be link attributes in AD.
LINKABLE_SYNTAXES = {"dn", "dn-binary", "dn-string"}


def syntax_name(attribute_syntax: str, om_syntax: int, om_object_class: str | None) -> str:
    """The name of a live syntax triple, or the raw triple when it is not one we know."""
    for name, syntax in SYNTAXES.items():
        if (syntax.attribute_syntax, syntax.om_syntax) == (attribute_syntax, om_syntax) and (
            syntax.om_object_class in (None, om_object_class)
        ):
            return name
    return f"{attribute_syntax}/{om_syntax}/{om_object_class or '-'}"


# --------------------------------------------------------------------------------------------
# Definitions


@dataclass(frozen=True)
class AttributeDef:
    name: str
    cn: str
    attribute_id: str
    syntax: str
    single_valued: bool
    linked: bool = False
    # Explicit forward linkID; None with linked=True means "let AD allocate one".
    link_id: int | None = None
    search_flags: int = 0
    security_guid: str | None = None
    description: str | None = None
    # Microsoft's own attribute: verified, added only to a schema that lacks it, never defuncted.
    native: bool = False

    def summary(self) -> dict[str, Any]:
        """The defining properties, as shown next to a live object in a conflict."""
        return {
            "lDAPDisplayName": self.name,
            "cn": self.cn,
            "attributeID": self.attribute_id,
            "syntax": self.syntax,
            "isSingleValued": self.single_valued,
            "linkID": self.link_id
            if self.link_id is not None
            else ("auto (forward link)" if self.linked else None),
            "searchFlags": self.search_flags,
            "attributeSecurityGUID": self.security_guid,
        }


@dataclass(frozen=True)
class ClassDef:
    name: str
    cn: str
    governs_id: str
    category: str = "auxiliary"
    subclass_of: str = "top"
    may_contain: tuple[str, ...] = ()
    must_contain: tuple[str, ...] = ()
    description: str | None = None
    native: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "lDAPDisplayName": self.name,
            "cn": self.cn,
            "governsID": self.governs_id,
            "objectClassCategory": self.category,
            "subClassOf": self.subclass_of,
            "mayContain": list(self.may_contain),
            "mustContain": list(self.must_contain),
        }


@dataclass(frozen=True)
class ClassExtension:
    """Add auxiliary classes to an existing class (``user`` for credroam)."""

    class_name: str
    auxiliary: tuple[str, ...]


@dataclass(frozen=True)
class SchemaDefinitions:
    attributes: tuple[AttributeDef, ...] = ()
    classes: tuple[ClassDef, ...] = ()
    extensions: tuple[ClassExtension, ...] = ()


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise SchemaDefinitionError(f"{what} must be true or false, not {value!r}")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or not value[0].isalpha():
        raise SchemaDefinitionError(f"{what} must be a name starting with a letter, not {value!r}")
    if not all(c.isalnum() or c == "-" for c in value):
        raise SchemaDefinitionError(f"{what}: {value!r} may hold only letters, digits and '-'")
    return value


def _oid_for(spec: Mapping[str, Any], key: str, arc: int, oid_base: str, what: str) -> str:
    if spec.get(key):
        return _check_oid(str(spec[key]), f"{what}.{key}")
    index = spec.get("oid_index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise SchemaDefinitionError(f"{what} needs {key} or a positive integer oid_index")
    return f"{_check_oid(oid_base, 'oid_base')}.{arc}.{index}"


def _known(spec: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SchemaDefinitionError(f"{what}: unknown field(s) {', '.join(unknown)}")


_ATTRIBUTE_FIELDS = {
    "name", "cn", "attribute_id", "oid_index", "syntax", "single_valued", "linked", "link_id",
    "search_flags", "confidential", "rodc_filtered", "security_guid", "description", "native",
}  # fmt: skip
_CLASS_FIELDS = {
    "name", "cn", "governs_id", "oid_index", "category", "subclass_of", "may_contain",
    "must_contain", "description", "native",
}  # fmt: skip


def attribute_from_spec(spec: Mapping[str, Any], oid_base: str) -> AttributeDef:
    what = f"attribute {spec.get('name')!r}"
    _known({k: v for k, v in spec.items() if v is not None}, _ATTRIBUTE_FIELDS, what)
    name = _name(spec.get("name"), f"{what}.name")
    cn = _name(spec.get("cn") or name, f"{what}.cn")
    syntax = spec.get("syntax")
    if syntax not in SYNTAXES:
        raise SchemaDefinitionError(
            f"{what}.syntax must be one of {', '.join(sorted(SYNTAXES))}, not {syntax!r}"
        )
    linked = _bool(spec.get("linked", False) or False, f"{what}.linked")
    link_id = spec.get("link_id")
    if link_id is not None:
        if isinstance(link_id, bool) or not isinstance(link_id, int) or link_id < 2:
            raise SchemaDefinitionError(f"{what}.link_id must be an integer >= 2")
        if link_id % 2:
            raise SchemaDefinitionError(f"{what}.link_id {link_id} is odd: a forward link is even")
        linked = True
    if linked and syntax not in LINKABLE_SYNTAXES:
        raise SchemaDefinitionError(f"{what}: syntax {syntax} cannot be linked (needs a DN syntax)")
    flags = spec.get("search_flags") or 0
    if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
        raise SchemaDefinitionError(f"{what}.search_flags must be a non-negative integer")
    if spec.get("confidential"):
        flags |= SEARCH_FLAG_CONFIDENTIAL
    if spec.get("rodc_filtered"):
        flags |= SEARCH_FLAG_RODC_FILTERED
    guid = spec.get("security_guid")
    if guid is not None:
        guid = PROPERTY_SETS.get(str(guid).lower(), guid)
        try:
            guid = str(uuid.UUID(str(guid)))
        except ValueError:
            raise SchemaDefinitionError(
                f"{what}.security_guid must be a GUID or one of {', '.join(PROPERTY_SETS)}"
            ) from None
    return AttributeDef(
        name=name,
        cn=cn,
        attribute_id=_oid_for(spec, "attribute_id", 1, oid_base, what),
        syntax=syntax,
        single_valued=_bool(spec.get("single_valued", False), f"{what}.single_valued"),
        linked=linked,
        link_id=link_id,
        search_flags=flags,
        security_guid=guid,
        description=spec.get("description"),
        native=_bool(spec.get("native", False) or False, f"{what}.native"),
    )


def class_from_spec(spec: Mapping[str, Any], oid_base: str) -> ClassDef:
    what = f"class {spec.get('name')!r}"
    _known({k: v for k, v in spec.items() if v is not None}, _CLASS_FIELDS, what)
    name = _name(spec.get("name"), f"{what}.name")
    category = spec.get("category") or "auxiliary"
    if category not in CLASS_CATEGORIES:
        raise SchemaDefinitionError(
            f"{what}.category must be one of {', '.join(CLASS_CATEGORIES)}, not {category!r}"
        )
    return ClassDef(
        name=name,
        cn=_name(spec.get("cn") or name, f"{what}.cn"),
        governs_id=_oid_for(spec, "governs_id", 2, oid_base, what),
        category=category,
        subclass_of=_name(spec.get("subclass_of") or "top", f"{what}.subclass_of"),
        may_contain=tuple(_name(n, f"{what}.may_contain") for n in spec.get("may_contain") or ()),
        must_contain=tuple(
            _name(n, f"{what}.must_contain") for n in spec.get("must_contain") or ()
        ),
        description=spec.get("description"),
        native=_bool(spec.get("native", False) or False, f"{what}.native"),
    )


def extension_from_spec(spec: Mapping[str, Any]) -> ClassExtension:
    what = f"extension of {spec.get('class')!r}"
    _known({k: v for k, v in spec.items() if v is not None}, {"class", "auxiliary"}, what)
    auxiliary = spec.get("auxiliary")
    if isinstance(auxiliary, str):
        auxiliary = [auxiliary]
    if not auxiliary:
        raise SchemaDefinitionError(f"{what} names no auxiliary class")
    return ClassExtension(
        class_name=_name(spec.get("class"), f"{what}.class"),
        auxiliary=tuple(_name(a, f"{what}.auxiliary") for a in auxiliary),
    )


def _unique(names: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise SchemaDefinitionError(f"{what} {name!r} is defined twice")
        seen.add(name.lower())


def definitions_from_params(
    attributes: Sequence[Mapping[str, Any]] = (),
    classes: Sequence[Mapping[str, Any]] = (),
    extend: Sequence[Mapping[str, Any]] = (),
    oid_base: str = CREDROAM_OID_BASE,
    preset: str | None = None,
) -> SchemaDefinitions:
    """Validate user-supplied definitions, plus an optional preset, into definitions."""
    if preset not in (None, "none", "credroam"):
        raise SchemaDefinitionError(f"unknown preset {preset!r} (known: credroam, none)")
    base = CREDROAM_PRESET if preset == "credroam" else {}
    attrs = tuple(
        attribute_from_spec(s, oid_base) for s in [*base.get("attributes", ()), *attributes]
    )
    klasses = tuple(class_from_spec(s, oid_base) for s in [*base.get("classes", ()), *classes])
    exts = tuple(extension_from_spec(s) for s in [*base.get("extend", ()), *extend])
    _unique([d.name for d in (*attrs, *klasses)], "schema name")
    _unique([d.cn for d in (*attrs, *klasses)], "schema cn")
    _unique([d.attribute_id for d in attrs] + [d.governs_id for d in klasses], "OID")
    return SchemaDefinitions(attrs, klasses, exts)


# --------------------------------------------------------------------------------------------
# The credroam preset: one place for the definitions the role and the tests use.

_NATIVE_DN_BINARY = {"syntax": "dn-binary", "single_valued": False, "native": True}
_OWN_TOKEN_ATTRIBUTE = {
    "syntax": "dn-binary",
    "single_valued": False,
    "linked": True,
    "confidential": True,
    "security_guid": "private-information",
}
CREDROAM_PRESET: dict[str, list[dict[str, Any]]] = {
    "attributes": [
        {
            "name": "msPKIRoamingTimeStamp",
            "cn": "ms-PKI-RoamingTimeStamp",
            "attribute_id": "1.2.840.113556.1.4.1892",
            "syntax": "octet-string",
            "single_valued": True,
            "search_flags": 640,
            "security_guid": "private-information",
            "native": True,
        },
        {
            **_NATIVE_DN_BINARY,
            "name": "msPKIDPAPIMasterKeys",
            "cn": "ms-PKI-DPAPIMasterKeys",
            "attribute_id": "1.2.840.113556.1.4.1893",
            "link_id": 2046,
            "search_flags": 640,
            "security_guid": "private-information",
        },
        {
            **_NATIVE_DN_BINARY,
            "name": "msPKIAccountCredentials",
            "cn": "ms-PKI-AccountCredentials",
            "attribute_id": "1.2.840.113556.1.4.1894",
            "link_id": 2048,
            "search_flags": 640,
            "security_guid": "private-information",
        },
        {
            **_NATIVE_DN_BINARY,
            "name": "msPKI-CredentialRoamingTokens",
            "cn": "ms-PKI-Credential-Roaming-Tokens",
            "attribute_id": "1.2.840.113556.1.4.2050",
            "link_id": 2162,
            "search_flags": 128,
            "security_guid": "private-information",
        },
        {
            **_OWN_TOKEN_ATTRIBUTE,
            "name": "credroamKeyEnvelopes",
            "cn": "credroam-Key-Envelopes",
            "oid_index": 1,
            "description": "credroam: AES-GCM sealed private keys as roaming tokens (type 9)",
        },
        {
            **_OWN_TOKEN_ATTRIBUTE,
            "name": "credroamRoamingKeys",
            "cn": "credroam-Roaming-Keys",
            "oid_index": 2,
            "description": "credroam: the user's roaming key, wrapped per unlock method",
        },
    ],
    "classes": [
        {
            "name": "credroamUser",
            "cn": "credroam-User",
            "oid_index": 1,
            "category": "auxiliary",
            "subclass_of": "top",
            "may_contain": ["credroamKeyEnvelopes", "credroamRoamingKeys"],
            "description": "credroam: per-user roaming attributes, auxiliary to user",
        }
    ],
    "extend": [{"class": "user", "auxiliary": ["credroamUser"]}],
}
