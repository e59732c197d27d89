"""Group Policy objects as data: GPT.INI, versions, gPLink, Registry.pol merging.

A GPO is two halves that must agree ([MS-GPOL]): the ``groupPolicyContainer`` (GPC) object
``CN={GUID},CN=Policies,CN=System,<domain>`` in the directory, and the Group Policy Template
(GPT) folder ``\\\\<domain>\\SysVol\\<domain>\\Policies\\{GUID}`` holding ``GPT.INI`` and
``User\\Registry.pol``. Both carry the version (user << 16 | computer); a client only re-applies a
GPO whose version moved, so the version moves exactly when content changes, in both places.

Everything here is pure: the module reads the current state, these functions decide what it
should become, and the module writes only the difference. The settings tables are the single
source of truth for the registry values, their ranges, and the ADMX/ADML/ADM templates
(``settings``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import CredroamError
from .preg import PolEntry

__all__ = [
    "FUNCTIONALITY_VERSION",
    "REGISTRY_CSE",
    "REGISTRY_TOOL_USER",
    "GpLink",
    "GpoError",
    "GpoVersion",
    "RegistryChange",
    "SysvolCopy",
    "add_extension_names",
    "format_gplink",
    "gpc_dn",
    "gpt_unc_path",
    "merge_registry",
    "new_gpo_guid",
    "normalize_guid",
    "parse_extension_names",
    "parse_gplink",
    "parse_gpt_ini_version",
    "place_link",
    "remove_link",
    "same_registry",
    "sysvol_copy_problem",
    "target_version",
    "update_gpt_ini",
    "with_link_order",
]

REGISTRY_CSE = "{35378EAC-683F-11D2-A89A-00C04FBBCFA2}"
REGISTRY_TOOL_USER = "{0F6B957E-509E-11D1-A7CC-0000F87571E3}"
FUNCTIONALITY_VERSION = 2
_HALF_MAX = 0xFFFF


class GpoError(CredroamError, ValueError):
    """A GPO setting, file or attribute is invalid; the message names the thing at fault."""


@dataclass(frozen=True)
class RegistryChange:
    """What happens to Registry.pol: the new entries and a per-value before/after."""

    entries: list[PolEntry]
    changed: bool
    before: list[dict]
    after: list[dict]


def _same_content(a: PolEntry, b: PolEntry) -> bool:
    return a.identity == b.identity and a.type == b.type and a.data == b.data


def same_registry(a: Sequence[PolEntry], b: Sequence[PolEntry]) -> bool:
    """Same entries in the same order, compared by content (not byte for byte)."""
    return len(a) == len(b) and all(_same_content(x, y) for x, y in zip(a, b, strict=True))


def merge_registry(
    current: Sequence[PolEntry], desired: Iterable[PolEntry], exclusive: bool = False
) -> RegistryChange:
    """Apply ``desired`` to ``current`` by identity (key + value name, case-insensitively).

    A desired entry replaces the current one in place (so unrelated entries keep their order);
    an entry with equal content is kept byte for byte (so case-only differences are no change);
    new entries go to the end. With ``exclusive``, entries not desired are dropped. A later
    desired entry with the same identity wins.
    """
    wanted: dict[tuple[str, str], PolEntry] = {}
    for entry in desired:
        wanted.pop(entry.identity, None)
        wanted[entry.identity] = entry
    result: list[PolEntry] = []
    placed: set[tuple[str, str]] = set()
    for entry in current:
        identity = entry.identity
        if identity in wanted:
            if identity in placed:
                continue  # a duplicate in the current file; the desired value stands once
            target = wanted[identity]
            result.append(entry if _same_content(entry, target) else target)
            placed.add(identity)
        elif not exclusive:
            result.append(entry)
    result.extend(entry for identity, entry in wanted.items() if identity not in placed)
    changed = len(result) != len(current) or any(
        not _same_content(a, b) for a, b in zip(result, current, strict=False)
    )
    return RegistryChange(
        entries=result,
        changed=changed,
        before=[e.describe() for e in current],
        after=[e.describe() for e in result],
    )


# --- identity and paths -----------------------------------------------------------------------

_GUID_RE = re.compile(
    r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$"
)


def normalize_guid(text: str) -> str:
    """``'{abc...}'`` / ``'abc...'`` -> ``'{ABC...}'``, the form GPO names use."""
    match = _GUID_RE.match(text.strip())
    if not match:
        raise GpoError(f"{text!r} is not a GPO GUID like {{31B2F340-016D-11D2-945F-00C04FB984F9}}")
    return "{" + match.group(1).upper() + "}"


def new_gpo_guid() -> str:
    return normalize_guid(str(uuid.uuid4()))


def gpc_dn(guid: str, domain_dn: str) -> str:
    return f"CN={normalize_guid(guid)},CN=Policies,CN=System,{domain_dn}"


def gpt_unc_path(guid: str, domain_dns_name: str) -> str:
    """gPCFileSysPath as Windows and samba-tool write it."""
    return f"\\\\{domain_dns_name}\\SysVol\\{domain_dns_name}\\Policies\\{normalize_guid(guid)}"


# --- versions ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class GpoVersion:
    """user << 16 | computer, as GPT.INI ``Version=`` and the GPC's ``versionNumber`` hold it."""

    user: int = 0
    computer: int = 0

    def __post_init__(self) -> None:
        for half in (self.user, self.computer):
            if not 0 <= half <= _HALF_MAX:
                raise GpoError(f"GPO version half {half} is outside 0..65535")

    @classmethod
    def from_number(cls, number: int) -> GpoVersion:
        # versionNumber is a signed 32-bit INTEGER in the schema: a user half >= 0x8000
        # comes back negative over LDAP.
        number &= 0xFFFFFFFF
        return cls(number >> 16, number & _HALF_MAX)

    @property
    def number(self) -> int:
        return self.user << 16 | self.computer

    @property
    def ldap_value(self) -> int:
        """The value to write to versionNumber (signed 32-bit)."""
        return self.number - 2**32 if self.number >= 2**31 else self.number

    def bump_user(self) -> GpoVersion:
        """Next user version; a wrapping half goes to 1, never 0 (0 means "no settings")."""
        return GpoVersion(self.user + 1 if self.user < _HALF_MAX else 1, self.computer)

    def as_dict(self) -> dict[str, int]:
        return {"user": self.user, "computer": self.computer, "number": self.number}


_GPT_VERSION_RE = re.compile(rb"(?im)^([ \t]*version[ \t]*=[ \t]*)(-?\d+)[ \t]*(\r?)$")
_GPT_SECTION_RE = re.compile(rb"(?im)^[ \t]*\[general\][ \t]*\r?$")


def parse_gpt_ini_version(raw: bytes) -> GpoVersion:
    """``Version=`` of GPT.INI's [General] section; a file without it is version 0."""
    match = _GPT_VERSION_RE.search(raw)
    if not match:
        if raw.strip() and not _GPT_SECTION_RE.search(raw):
            raise GpoError("GPT.INI has neither a [General] section nor a Version line")
        return GpoVersion()
    try:
        return GpoVersion.from_number(int(match.group(2)))
    except ValueError:
        raise GpoError(f"GPT.INI Version={match.group(2)!r} is not a number") from None


def update_gpt_ini(raw: bytes | None, version: GpoVersion) -> bytes:
    """GPT.INI with ``Version=`` set, every other line kept as it was (CRLF, like Windows)."""
    line = b"Version=%d" % version.number
    if not raw or not raw.strip():
        return b"[General]\r\n" + line + b"\r\n"
    if _GPT_VERSION_RE.search(raw):
        return _GPT_VERSION_RE.sub(
            lambda m: m.group(1) + b"%d" % version.number + m.group(3), raw, 1
        )
    section = _GPT_SECTION_RE.search(raw)
    if not section:
        return b"[General]\r\n" + line + b"\r\n" + raw
    line_end = raw.find(b"\n", section.end())
    if line_end < 0:
        return raw + b"\r\n" + line + b"\r\n"
    return raw[: line_end + 1] + line + b"\r\n" + raw[line_end + 1 :]


# --- several SYSVOLs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SysvolCopy:
    """What one DC's SYSVOL holds of a GPO (SYSVOL is not replicated between Samba DCs)."""

    server: str
    version: GpoVersion | None  # None: GPT.INI is missing
    entries: Sequence[PolEntry] = ()


def sysvol_copy_problem(
    ad_version: GpoVersion, copy: SysvolCopy, reference: SysvolCopy
) -> str | None:
    """Why ``copy`` lags, or None. The first SYSVOL listed is the reference for content: a copy
    whose Registry.pol differs from it would give clients other settings under one version."""
    if copy.version is None:
        return f"GPT.INI missing on {copy.server}"
    if copy.version != ad_version:
        return (
            f"GPT.INI version {copy.version.number} on {copy.server}, "
            f"versionNumber {ad_version.number} in AD"
        )
    if copy is not reference and not same_registry(copy.entries, reference.entries):
        return f"User\\Registry.pol on {copy.server} differs from {reference.server}'s"
    return None


def target_version(
    ad_version: GpoVersion,
    copies: Sequence[SysvolCopy],
    wanted: Sequence[PolEntry],
    content_changed: bool,
    repair: bool,
) -> GpoVersion:
    """The version every copy and the GPC get. A content change bumps the user half past every
    version seen, so each client re-applies; a repair takes the highest version seen, bumped
    when a copy already at that version holds other content (its clients must re-apply too)."""
    if not content_changed and not repair:
        return ad_version
    top = max([ad_version, *(c.version for c in copies if c.version is not None)])
    if content_changed:
        return top.bump_user()
    if any(c.version == top and not same_registry(c.entries, wanted) for c in copies):
        return top.bump_user()
    return top


# --- extension names --------------------------------------------------------------------------

_EXTENSION_GROUP_RE = re.compile(r"\[((?:\{[0-9A-Fa-f-]{36}\})+)\]")
_BRACED_GUID_RE = re.compile(r"\{[0-9A-Fa-f-]{36}\}")


def parse_extension_names(value: str | None) -> list[tuple[str, ...]]:
    """``[{CSE}{tool}...][...]`` -> [(CSE, tool, ...), ...] with upper-case GUIDs."""
    text = (value or "").strip()
    groups = _EXTENSION_GROUP_RE.findall(text)
    if _EXTENSION_GROUP_RE.sub("", text).strip():
        raise GpoError(f"gPCUserExtensionNames {value!r} is not a list of [{{CSE}}{{tool}}]")
    return [tuple(g.upper() for g in _BRACED_GUID_RE.findall(group)) for group in groups]


def add_extension_names(value: str | None, cse: str, tool: str) -> str:
    """Add ``tool`` under ``cse``; groups and tools sorted by GUID, as Windows requires."""
    groups = {g[0]: set(g[1:]) for g in parse_extension_names(value)}
    groups.setdefault(cse.upper(), set()).add(tool.upper())
    return "".join(
        "[" + cse_guid + "".join(sorted(tools)) + "]" for cse_guid, tools in sorted(groups.items())
    )


# --- links ------------------------------------------------------------------------------------

_LINK_RE = re.compile(r"\[LDAP://([^;\]]+);(\d+)\]", re.IGNORECASE)
_LINK_GUID_RE = re.compile(r"^cn=(\{[0-9a-fA-F-]{36}\}),", re.IGNORECASE)
_OPT_DISABLED, _OPT_ENFORCED = 1, 2


@dataclass(frozen=True)
class GpLink:
    """One entry of a container's gPLink."""

    gpo_dn: str
    enabled: bool = True
    enforced: bool = False

    @property
    def options(self) -> int:
        return (0 if self.enabled else _OPT_DISABLED) | (_OPT_ENFORCED if self.enforced else 0)

    @property
    def guid(self) -> str | None:
        match = _LINK_GUID_RE.match(self.gpo_dn)
        return match.group(1).upper() if match else None

    def is_for(self, guid: str) -> bool:
        return self.guid == normalize_guid(guid)


def parse_gplink(value: str | None) -> list[GpLink]:
    """gPLink in stored order. The LAST entry has link order 1 (highest precedence)."""
    text = (value or "").strip()
    links = [
        GpLink(dn, not int(opts) & _OPT_DISABLED, bool(int(opts) & _OPT_ENFORCED))
        for dn, opts in _LINK_RE.findall(text)
    ]
    if _LINK_RE.sub("", text).strip():
        raise GpoError(f"gPLink {value!r} is not a list of [LDAP://<dn>;<options>]")
    return links


def format_gplink(links: Sequence[GpLink]) -> str:
    return "".join(f"[LDAP://{link.gpo_dn};{link.options}]" for link in links)


def with_link_order(links: Sequence[GpLink]) -> list[tuple[int, GpLink]]:
    """(GPMC's link order, link) for stored ``links``, in stored order: gPLink holds the lowest
    precedence first, so its last entry has link order 1."""
    return [(len(links) - index, link) for index, link in enumerate(links)]


def link_order(links: Sequence[GpLink], guid: str) -> int | None:
    """GPMC's link order (1 = highest precedence) of ``guid`` in stored ``links``."""
    return next((order for order, link in with_link_order(links) if link.is_for(guid)), None)


def place_link(links: Sequence[GpLink], link: GpLink, order: int | None = None) -> list[GpLink]:
    """Stored gPLink with ``link`` in it. ``order`` as in GPMC (1 = highest precedence);
    without an order an existing link keeps its place and a new one goes last in precedence
    (first in the stored string), as GPMC and samba-tool do. Orders past the end are clamped."""
    guid = link.guid
    if guid is None:
        raise GpoError(f"link target {link.gpo_dn!r} is not a GPO DN (CN={{GUID}},...)")
    if order is not None and order < 1:
        raise GpoError(f"link order must be 1 or more, not {order}")
    current_order = link_order(links, guid)
    others = [existing for existing in links if not existing.is_for(guid)]
    if order is None:
        order = current_order if current_order is not None else len(others) + 1
    order = min(order, len(others) + 1)
    index = len(others) + 1 - order
    return [*others[:index], link, *others[index:]]


def remove_link(links: Sequence[GpLink], guid: str) -> list[GpLink]:
    return [link for link in links if not link.is_for(guid)]
