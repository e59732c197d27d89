"""AD schema extension as data: definitions, comparison with the live schema, and the LDAP plan.

Everything here is pure: the ``ad_schema`` module reads schema objects from the schema master,
hands them to :func:`plan_present` / :func:`plan_defunct` as plain dicts, and executes the
returned :class:`SchemaPlan`. The plan is also what check mode and diff mode show, so what is
shown is exactly what would be written.

Rules (see the module documentation for the user's view):

- A definition is matched against the live schema by lDAPDisplayName, cn *and* OID; any object
  that shares one of them but differs in what defines the attribute (OID, syntax, single-valued,
  linked-ness, required searchFlags bits, property set) is a :class:`SchemaConflict`. Schema
  objects are never modified to match us: the message shows both definitions and nothing is
  written.
- Attributes that exist and match are reported as verified (this is how the native msPKI*
  attributes of a 2008 R2+ schema are handled). Missing ones are added; a missing auxiliary class
  link on ``user`` and a missing ``mayContain`` entry on one of our own classes are added (both
  additive changes AD allows).
- ``searchFlags``: the live value must contain every bit we ask for; extra bits (an index an
  administrator added) are accepted.
- OIDs default to an arc derived from a fixed credroam GUID under 1.2.840.113556.1.8000.2554,
  the way Microsoft's oidgen script derives one (:func:`oid_from_guid`); ``.1.n`` are attributes,
  ``.2.n`` classes.
- schemaIDGUID is left to AD to generate: credroam protects its attributes through the
  Private-Information property set, never by an ACE naming an attribute's own GUID, so a stable
  schemaIDGUID buys nothing and a wrong one could not be corrected.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CredroamError
from ..ldapresult import first

__all__ = [
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
    "LdapAdd",
    "LdapModify",
    "SchemaConflict",
    "SchemaDefinitionError",
    "SchemaDefinitions",
    "SchemaPlan",
    "Syntax",
    "ber_to_oid",
    "definitions_from_params",
    "guid_from_bytes",
    "guid_to_bytes",
    "missing_on_dc",
    "normalize_entry",
    "oid_from_guid",
    "oid_to_ber",
    "plan_defunct",
    "plan_present",
    "read_filter",
    "wait_until_replicated",
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


class SchemaConflict(CredroamError):
    """The live schema holds an object that clashes with one of our definitions."""

    def __init__(self, conflicts: Sequence[str]):
        self.conflicts = list(conflicts)
        super().__init__("\n".join(self.conflicts))


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

    def own_names(self) -> list[str]:
        return [d.name for d in (*self.attributes, *self.classes) if not d.native]


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


# --------------------------------------------------------------------------------------------
# Reading the live schema

# What the module asks the DC for; normalize_entry turns the answer into comparable text.
READ_ATTRIBUTES = (
    "objectClass", "cn", "lDAPDisplayName", "attributeID", "governsID", "attributeSyntax",
    "oMSyntax", "oMObjectClass", "isSingleValued", "linkID", "searchFlags",
    "attributeSecurityGUID", "objectClassCategory", "subClassOf", "mayContain",
    "systemMayContain", "mustContain", "systemMustContain", "auxiliaryClass",
    "systemAuxiliaryClass", "isDefunct",
)  # fmt: skip
_BINARY_DECODERS: dict[str, Callable[[bytes], str]] = {
    "attributesecurityguid": guid_from_bytes,
    "omobjectclass": ber_to_oid,
}


def normalize_entry(dn: str, raw_attributes: Mapping[str, Sequence[bytes]]) -> dict[str, Any]:
    """A schema object as read (raw bytes) -> ``{"dn": dn, lowercased name: [text, ...]}``."""
    entry: dict[str, Any] = {"dn": dn}
    for name, values in raw_attributes.items():
        key = name.lower()
        decode = _BINARY_DECODERS.get(key, lambda b: bytes(b).decode("utf-8"))
        entry[key] = [decode(bytes(v)) for v in values]
    return entry


def _escape(value: str) -> str:
    out = []
    for char in value:
        out.append(f"\\{ord(char):02x}" if char in "*()\\\x00" else char)
    return "".join(out)


def read_filter(defs: SchemaDefinitions) -> str:
    """One LDAP filter finding every schema object that shares a name, cn or OID with ours,
    plus the classes we extend."""
    terms = []
    for d in defs.attributes:
        terms += [f"(lDAPDisplayName={d.name})", f"(cn={d.cn})", f"(attributeID={d.attribute_id})"]
    for c in defs.classes:
        terms += [f"(lDAPDisplayName={c.name})", f"(cn={c.cn})", f"(governsID={c.governs_id})"]
    for e in defs.extensions:
        terms += [f"(lDAPDisplayName={name})" for name in (e.class_name, *e.auxiliary)]
    terms = list(dict.fromkeys(_escape_term(t) for t in terms))
    return f"(|{''.join(terms)})"


def _escape_term(term: str) -> str:
    name, value = term[1:-1].split("=", 1)
    return f"({name}={_escape(value)})"


# --------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class LdapAdd:
    dn: str
    object_class: str
    attributes: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"dn": self.dn, "objectClass": self.object_class, "attributes": self.attributes}

    def as_operation(self) -> dict[str, Any]:
        """As an entry of a module's ``operations`` (kind, target, details), as ad_gpo's."""
        return {"kind": "ldap_add", "target": self.dn, "objectClass": self.object_class,
                "attributes": self.attributes}  # fmt: skip


@dataclass(frozen=True)
class LdapModify:
    dn: str
    # attribute -> (operation, values); operation is "add", "replace" or "delete".
    changes: dict[str, tuple[str, list[str]]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dn": self.dn,
            "changes": {k: {"op": op, "values": v} for k, (op, v) in self.changes.items()},
        }

    def as_operation(self) -> dict[str, Any]:
        """As an entry of a module's ``operations`` (kind, target, details), as ad_gpo's."""
        return {"kind": "ldap_modify", "target": self.dn, "changes": self.as_dict()["changes"]}


@dataclass
class SchemaPlan:
    # Executed in this order, with a schema cache refresh after each phase, because a class can
    # only name attributes (and user an auxiliary class) the DC's schema cache already knows.
    attribute_adds: list[LdapAdd] = field(default_factory=list)
    class_adds: list[LdapAdd] = field(default_factory=list)
    class_modifies: list[LdapModify] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.attribute_adds or self.class_adds or self.class_modifies)

    def phases(self) -> list[list[LdapAdd | LdapModify]]:
        return [p for p in (self.attribute_adds, self.class_adds, self.class_modifies) if p]


def _eq(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()


def _is_class(entry: Mapping[str, Any], object_class: str) -> bool:
    return any(_eq(v, object_class) for v in entry.get("objectclass", []))


def _live_attribute_summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    if not _is_class(entry, "attributeSchema"):
        return {"dn": entry["dn"], "objectClass": entry.get("objectclass"),
                "lDAPDisplayName": first(entry, "lDAPDisplayName"),
                "governsID": first(entry, "governsID")}  # fmt: skip
    om_syntax = first(entry, "oMSyntax")
    link_id = first(entry, "linkID")
    return {
        "dn": entry["dn"],
        "lDAPDisplayName": first(entry, "lDAPDisplayName"),
        "cn": first(entry, "cn"),
        "attributeID": first(entry, "attributeID"),
        "syntax": syntax_name(
            first(entry, "attributeSyntax") or "",
            int(om_syntax or 0),
            first(entry, "oMObjectClass"),
        ),
        "isSingleValued": _eq(first(entry, "isSingleValued"), "TRUE"),
        "linkID": int(link_id) if link_id is not None else None,
        "searchFlags": int(first(entry, "searchFlags") or 0),
        "attributeSecurityGUID": first(entry, "attributeSecurityGUID"),
    }


def _live_class_summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    if not _is_class(entry, "classSchema"):
        return {"dn": entry["dn"], "objectClass": entry.get("objectclass"),
                "lDAPDisplayName": first(entry, "lDAPDisplayName"),
                "attributeID": first(entry, "attributeID")}  # fmt: skip
    category = int(first(entry, "objectClassCategory") or 0)
    names = {v: k for k, v in CLASS_CATEGORIES.items()}
    return {
        "dn": entry["dn"],
        "lDAPDisplayName": first(entry, "lDAPDisplayName"),
        "cn": first(entry, "cn"),
        "governsID": first(entry, "governsID"),
        "objectClassCategory": names.get(category, category),
        "subClassOf": first(entry, "subClassOf"),
        "mayContain": sorted({*entry.get("maycontain", []), *entry.get("systemmaycontain", [])}),
        "mustContain": sorted({*entry.get("mustcontain", []), *entry.get("systemmustcontain", [])}),
    }


def _attribute_differences(ours: AttributeDef, live: Mapping[str, Any]) -> list[str]:
    if "attributeID" not in live or "syntax" not in live:
        return ["it is not an attributeSchema object"]
    out = []
    if not _eq(live["lDAPDisplayName"], ours.name):
        out.append("lDAPDisplayName")
    # cn is only the RDN: a different cn with our name and OID is the same attribute.
    if live["attributeID"] != ours.attribute_id:
        out.append("attributeID (OID)")
    if live["syntax"] != ours.syntax:
        out.append("syntax")
    if live["isSingleValued"] != ours.single_valued:
        out.append("isSingleValued")
    live_link = live["linkID"]
    if ours.link_id is not None and live_link != ours.link_id:
        out.append("linkID")
    elif ours.linked and (live_link is None or live_link % 2):
        out.append("linkID (not a forward link)")
    elif not ours.linked and live_link is not None:
        out.append("linkID (linked, ours is not)")
    if live["searchFlags"] & ours.search_flags != ours.search_flags:
        out.append("searchFlags (lacks required bits)")
    if ours.security_guid and not _eq(live["attributeSecurityGUID"], ours.security_guid):
        out.append("attributeSecurityGUID (property set)")
    return out


def _class_differences(ours: ClassDef, live: Mapping[str, Any]) -> list[str]:
    if "governsID" not in live or "subClassOf" not in live:
        return ["it is not a classSchema object"]
    out = []
    if not _eq(live["lDAPDisplayName"], ours.name):
        out.append("lDAPDisplayName")
    if live["governsID"] != ours.governs_id:
        out.append("governsID (OID)")
    if live["objectClassCategory"] != ours.category:
        out.append("objectClassCategory")
    if not _eq(live["subClassOf"], ours.subclass_of):
        out.append("subClassOf")
    live_must = {n.lower() for n in live["mustContain"]}
    if live_must != {n.lower() for n in ours.must_contain}:
        out.append("mustContain")
    return out


def _conflict_message(kind: str, ours: dict[str, Any], live: dict[str, Any], why: str) -> str:
    def fmt(d: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None)

    return (
        f"{kind} {ours['lDAPDisplayName']}: the schema already holds a different definition "
        f"({why}); schema objects are never modified, resolve this by hand or choose other "
        f"names/OIDs.\n  ours:     {fmt(ours)}\n  existing: {fmt(live)}"
    )


def _matches(entry: Mapping[str, Any], name: str, cn: str, oid: str) -> bool:
    return (
        _eq(first(entry, "lDAPDisplayName"), name)
        or _eq(first(entry, "cn"), cn)
        or oid in entry.get("attributeid", [])
        or oid in entry.get("governsid", [])
    )


def attribute_add(d: AttributeDef, schema_dn: str) -> LdapAdd:
    """The exact attributeSchema object we add, values in text form (see :func:`to_wire`)."""
    syntax = SYNTAXES[d.syntax]
    attrs: dict[str, list[str]] = {
        "cn": [d.cn],
        "lDAPDisplayName": [d.name],
        "attributeID": [d.attribute_id],
        "attributeSyntax": [syntax.attribute_syntax],
        "oMSyntax": [str(syntax.om_syntax)],
        "isSingleValued": ["TRUE" if d.single_valued else "FALSE"],
        "searchFlags": [str(d.search_flags)],
    }
    if syntax.om_object_class:
        attrs["oMObjectClass"] = [syntax.om_object_class]
    if d.linked:
        attrs["linkID"] = [str(d.link_id) if d.link_id is not None else LINK_ID_AUTO_FORWARD]
    if d.security_guid:
        attrs["attributeSecurityGUID"] = [d.security_guid]
    if d.description:
        attrs["adminDescription"] = [d.description]
    return LdapAdd(f"CN={d.cn},{schema_dn}", "attributeSchema", attrs)


def class_add(c: ClassDef, schema_dn: str) -> LdapAdd:
    attrs: dict[str, list[str]] = {
        "cn": [c.cn],
        "lDAPDisplayName": [c.name],
        "governsID": [c.governs_id],
        "objectClassCategory": [str(CLASS_CATEGORIES[c.category])],
        "subClassOf": [c.subclass_of],
    }
    if c.may_contain:
        attrs["mayContain"] = list(c.may_contain)
    if c.must_contain:
        attrs["mustContain"] = list(c.must_contain)
    if c.description:
        attrs["adminDescription"] = [c.description]
    return LdapAdd(f"CN={c.cn},{schema_dn}", "classSchema", attrs)


def to_wire(attribute: str, values: Sequence[str]) -> list[str | bytes]:
    """Text values of a plan -> what goes on the wire (binary attributes as bytes)."""
    key = attribute.lower()
    if key == "attributesecurityguid":
        return [guid_to_bytes(v) for v in values]
    if key == "omobjectclass":
        return [oid_to_ber(v) for v in values]
    return list(values)


def _find(entries: Sequence[Mapping[str, Any]], name: str, cn: str, oid: str) -> list:
    return [e for e in entries if _matches(e, name, cn, oid)]


def _check_existing(
    kind: str,
    ours: AttributeDef | ClassDef,
    found: Sequence[Mapping[str, Any]],
    summarize: Callable[[Mapping[str, Any]], dict[str, Any]],
    differences: Callable[[Any, Mapping[str, Any]], list[str]],
) -> list[str]:
    """Conflict messages for every live object sharing a name, cn or OID with ``ours``."""
    conflicts = []
    for entry in found:
        live = summarize(entry)
        why = differences(ours, live)
        if _eq(first(entry, "isDefunct"), "TRUE"):
            why = [*why, "it is defunct"]
        if why:
            conflicts.append(
                _conflict_message(kind, ours.summary(), live, ", ".join(why) + " differ")
            )
    return conflicts


def _plan_add(plan: SchemaPlan, add: LdapAdd, phase: list[LdapAdd]) -> None:
    phase.append(add)
    plan.before[add.dn] = None
    plan.after[add.dn] = add.as_dict()


def _plan_class_may_contain(plan: SchemaPlan, c: ClassDef, entry: Mapping[str, Any]) -> list[str]:
    """Add attributes of ours missing from our class's mayContain; a native class is a conflict."""
    live = _live_class_summary(entry)
    have = {n.lower() for n in live["mayContain"]}
    missing = [n for n in c.may_contain if n.lower() not in have]
    if missing and c.native:
        return [
            _conflict_message("class", c.summary(), live, "mayContain lacks " + ", ".join(missing))
        ]
    if missing:
        _add_values(plan, entry, "mayContain", missing)
    else:
        plan.verified.append(c.name)
    return []


def _plan_extension(
    plan: SchemaPlan,
    ext: ClassExtension,
    entries: Sequence[Mapping[str, Any]],
    our_classes: set[str],
) -> list[str]:
    live_entries = [e for e in entries if not _eq(first(e, "isDefunct"), "TRUE")]
    target = [
        e
        for e in live_entries
        if _eq(first(e, "lDAPDisplayName"), ext.class_name) and _is_class(e, "classSchema")
    ]
    if not target:
        return [f"class {ext.class_name} to extend is not in the schema"]
    have = {
        n.lower()
        for n in (*target[0].get("auxiliaryclass", []), *target[0].get("systemauxiliaryclass", []))
    }
    missing = [a for a in ext.auxiliary if a.lower() not in have]
    unknown = [
        a
        for a in missing
        if a.lower() not in our_classes
        and not any(_eq(first(e, "lDAPDisplayName"), a) for e in live_entries)
    ]
    if unknown:
        return [
            f"extension of {ext.class_name}: auxiliary class(es) {', '.join(unknown)} are "
            "neither defined here nor in the schema"
        ]
    if missing:
        _add_values(plan, target[0], "auxiliaryClass", missing)
    else:
        plan.verified.append(f"{ext.class_name}.auxiliaryClass")
    return []


def plan_present(
    defs: SchemaDefinitions, entries: Sequence[Mapping[str, Any]], schema_dn: str
) -> SchemaPlan:
    """Compare our definitions with the live objects (from :func:`normalize_entry`).

    Raises :class:`SchemaConflict` listing every clash (with both definitions) before anything
    is planned, so a conflicting run writes nothing at all.
    """
    plan = SchemaPlan()
    conflicts: list[str] = []
    for d in defs.attributes:
        found = _find(entries, d.name, d.cn, d.attribute_id)
        if not found:
            _plan_add(plan, attribute_add(d, schema_dn), plan.attribute_adds)
            continue
        clashes = _check_existing(
            "attribute", d, found, _live_attribute_summary, _attribute_differences
        )
        conflicts += clashes
        if not clashes:
            plan.verified.append(d.name)

    for c in defs.classes:
        found = _find(entries, c.name, c.cn, c.governs_id)
        if not found:
            _plan_add(plan, class_add(c, schema_dn), plan.class_adds)
            continue
        clashes = _check_existing("class", c, found, _live_class_summary, _class_differences)
        conflicts += clashes
        if not clashes:  # exactly one object matched every identity of ours
            conflicts += _plan_class_may_contain(plan, c, found[0])

    our_classes = {c.name.lower() for c in defs.classes}
    for ext in defs.extensions:
        conflicts += _plan_extension(plan, ext, entries, our_classes)

    if conflicts:
        raise SchemaConflict(conflicts)
    return plan


def _add_values(plan: SchemaPlan, entry: Mapping[str, Any], attribute: str, values: list[str]):
    dn = entry["dn"]
    current = list(entry.get(attribute.lower(), []))
    plan.class_modifies.append(LdapModify(dn, {attribute: ("add", values)}))
    plan.before.setdefault(dn, {})[attribute] = current
    plan.after.setdefault(dn, {})[attribute] = [*current, *values]


def plan_defunct(
    defs: SchemaDefinitions, entries: Sequence[Mapping[str, Any]], schema_dn: str
) -> SchemaPlan:
    """Mark our own (never native) classes and attributes defunct: AD cannot delete them.

    Order matters to AD: first take the auxiliary class off the classes we extended, then
    defunct the classes, then the attributes they named.
    """
    del schema_dn  # objects are addressed by the DN they were found under
    plan = SchemaPlan()
    own_classes = [c for c in defs.classes if not c.native]
    own_attributes = [a for a in defs.attributes if not a.native]
    own_class_names = {c.name.lower() for c in own_classes}

    for ext in defs.extensions:
        ours = [a for a in ext.auxiliary if a.lower() in own_class_names]
        for entry in entries:
            if _eq(first(entry, "lDAPDisplayName"), ext.class_name):
                present = [a for a in entry.get("auxiliaryclass", []) if a.lower() in
                           {o.lower() for o in ours}]  # fmt: skip
                if present:
                    _delete_values(plan, entry, "auxiliaryClass", present)

    for defs_of_kind, oid_of in ((own_classes, "governs_id"), (own_attributes, "attribute_id")):
        for d in defs_of_kind:
            for entry in _find(entries, d.name, d.cn, getattr(d, oid_of)):
                if _eq(first(entry, "lDAPDisplayName"), d.name) and not _eq(
                    first(entry, "isDefunct"), "TRUE"
                ):
                    modify = LdapModify(entry["dn"], {"isDefunct": ("replace", ["TRUE"])})
                    plan.class_modifies.append(modify)
                    plan.before.setdefault(entry["dn"], {})["isDefunct"] = entry.get(
                        "isdefunct", []
                    )
                    plan.after.setdefault(entry["dn"], {})["isDefunct"] = ["TRUE"]
    return plan


def _delete_values(plan: SchemaPlan, entry: Mapping[str, Any], attribute: str, values: list[str]):
    dn = entry["dn"]
    current = list(entry.get(attribute.lower(), []))
    plan.class_modifies.append(LdapModify(dn, {attribute: ("delete", values)}))
    plan.before.setdefault(dn, {})[attribute] = current
    lowered = {v.lower() for v in values}
    plan.after.setdefault(dn, {})[attribute] = [v for v in current if v.lower() not in lowered]


# --------------------------------------------------------------------------------------------
# Waiting for every DC


def missing_on_dc(defs: SchemaDefinitions, entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a DC's schema (normalized entries read with :func:`read_filter`) still lacks."""
    missing = []
    for d in defs.attributes:
        if not any(d.attribute_id in e.get("attributeid", []) for e in entries):
            missing.append(d.name)
    for c in defs.classes:
        if not any(c.governs_id in e.get("governsid", []) for e in entries):
            missing.append(c.name)
    for ext in defs.extensions:
        for entry in entries:
            if _eq(first(entry, "lDAPDisplayName"), ext.class_name):
                have = {n.lower() for n in (*entry.get("auxiliaryclass", []),
                                            *entry.get("systemauxiliaryclass", []))}  # fmt: skip
                missing += [
                    f"{ext.class_name}.auxiliaryClass={a}"
                    for a in ext.auxiliary
                    if a.lower() not in have
                ]
    return missing


def wait_until_replicated(
    dcs: Sequence[str],
    check: Callable[[str], list[str]],
    timeout: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
    first_delay: float = 0.5,
    max_delay: float = 10.0,
) -> dict[str, list[str]]:
    """Poll ``check(dc)`` (-> what the DC lacks; raising counts as "unreachable") with backoff
    until every DC lacks nothing or ``timeout`` seconds pass. Returns what each lagging DC still
    lacks (empty dict = all current)."""
    deadline = monotonic() + timeout
    delay = first_delay
    lagging: dict[str, list[str]] = {dc: ["not checked yet"] for dc in dcs}
    while True:
        for dc in list(lagging):
            try:
                missing = check(dc)
            except Exception as exc:  # a DC that cannot be asked yet is lagging, not fatal
                missing = [f"unreachable: {exc}"]
            if missing:
                lagging[dc] = missing
            else:
                del lagging[dc]
        remaining = deadline - monotonic()
        if not lagging or remaining <= 0:
            return lagging
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)
