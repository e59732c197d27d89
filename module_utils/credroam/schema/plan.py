"""The live schema compared with credroam's definitions, and the plan of LDAP writes.

Everything here is pure: :mod:`.directory` reads schema objects from the schema master, they
are turned into comparable text by :func:`normalize_entry`, and :func:`plan_present` /
:func:`plan_defunct` compare them with :class:`~.definitions.SchemaDefinitions` and return a
:class:`SchemaPlan`. The plan is also what check mode and diff mode show, so what is shown is
exactly what would be written.

Rules (see the ad_schema module documentation for the user's view):

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CredroamError
from ..ldapresult import first
from .definitions import (
    CLASS_CATEGORIES,
    LINK_ID_AUTO_FORWARD,
    SYNTAXES,
    AttributeDef,
    ClassDef,
    ClassExtension,
    SchemaDefinitions,
    ber_to_oid,
    guid_from_bytes,
    guid_to_bytes,
    oid_to_ber,
    syntax_name,
)

__all__ = [
    "READ_ATTRIBUTES",
    "LdapAdd",
    "LdapModify",
    "SchemaConflict",
    "SchemaPlan",
    "missing_on_dc",
    "normalize_entry",
    "plan_defunct",
    "plan_present",
    "read_filter",
    "to_wire",
]


class SchemaConflict(CredroamError):
    """The live schema holds an object that clashes with one of our definitions."""

    def __init__(self, conflicts: Sequence[str]):
        self.conflicts = list(conflicts)
        super().__init__("\n".join(self.conflicts))


# --------------------------------------------------------------------------------------------
# Reading the live schema

# What directory.read_schema asks the DC for; normalize_entry turns the answer into comparable text.
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
