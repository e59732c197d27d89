"""Jinja2 filters for playbooks that read roaming data: small, pure, over the credroam core.

Each filter decodes with the same core code that the modules and the agent use (``tokens``,
``timestamps``, ``gpo.model``), so a playbook sees a value exactly as credroam does, and a value
credroam would refuse makes the filter fail with the core's reason (:class:`AnsibleFilterError`).
Each filter is documented in the YAML file of its name beside this one (``ansible-doc -t filter
roaming_token``). The file is not called ``credroam.py`` because tests import it by file name,
and that name would hide the core package ``credroam``.

Times are ISO 8601 strings in UTC with microseconds (``2024-05-01T12:00:00.000000+00:00``), so
they compare as text; the exact FILETIME is returned beside each.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

# Ansible serves module_utils/ to modules as ansible.module_utils.*, but does not put it on the
# controller's import path for plugins: ansible-core 2.19 cannot import
# ansible.module_utils.credroam from a filter even with `module_utils` set in ansible.cfg. The
# core is therefore imported from the module_utils/ beside this folder as `credroam`, the name
# tests and the agent use. First on the path, so no other installed `credroam` shadows it.
_MODULE_UTILS = str(Path(__file__).resolve().parent.parent / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from credroam.gpo.model import GpoError, GpoVersion, parse_gplink, with_link_order
from credroam.timestamps import (
    TimestampError,
    decode_roaming_timestamp,
    from_filetime,
    to_filetime,
)
from credroam.tokens import DEFAULT_LIMITS, TokenError, TokenFlags, decode_token, parse_dn_binary

_HEX_TIMESTAMP_LENGTH = 32  # msPKIRoamingTimeStamp is 16 bytes
_VERSION_NUMBER_RANGE = (-(2**31), 2**32 - 1)  # signed as LDAP returns it, or unsigned


def _fail(name: str, reason: object) -> AnsibleFilterError:
    return AnsibleFilterError(f"{name}: {reason}")


def _iso(filetime: int) -> str:
    return from_filetime(filetime).isoformat(timespec="microseconds")


def _one_value(name: str, value: Any, what: str) -> None:
    """Refuse a list where one attribute value is expected, saying how to pass one."""
    if isinstance(value, list | tuple):
        raise _fail(name, f"expects one {what}, not a list: use map('{name}') or first")


def _integer(name: str, value: Any, what: str) -> int:
    """An int, or a decimal string as LDAP and extra vars give numbers."""
    if isinstance(value, bool):
        raise _fail(name, f"{what} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else None
    digits = text[1:] if text and text[0] == "-" else text
    if not (digits and digits.isascii() and digits.isdigit()):
        raise _fail(name, f"{what} must be an integer, not {value!r:.60}")
    return int(text)


def roaming_token(value: Any) -> dict[str, Any]:
    """One DN-Binary value of a token attribute -> its header, validated as the sync does."""
    _one_value("roaming_token", value, "DN-Binary value")
    if not isinstance(value, str | bytes):
        raise _fail("roaming_token", f"expects a DN-Binary string, not {type(value).__name__}")
    try:
        blob, dn = parse_dn_binary(value, DEFAULT_LIMITS.max_token_size)
        token = decode_token(blob, DEFAULT_LIMITS)
        time = _iso(token.last_modified)
    except (TokenError, TimestampError) as exc:
        raise _fail("roaming_token", exc) from exc
    return {
        "type": int(token.type),
        "type_name": token.type.name.lower(),
        "identifier": token.identifier,
        "key": token.key,
        "flags": int(token.flags),
        "flag_names": [flag.name.lower() for flag in TokenFlags if flag in token.flags],
        "tombstone": token.is_tombstone,
        "time": time,
        "filetime": token.last_modified,
        "size": token.encoded_size,
        "data_size": len(token.data),
        "dn": dn,
    }


def _timestamp_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        kind = type(value).__name__
        raise _fail("roaming_timestamp", f"expects bytes, hex or base64, not {kind}")
    text = value.strip()
    if len(text) == _HEX_TIMESTAMP_LENGTH:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass  # 32 characters of base64 are 24 bytes: refused below by length
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise _fail(
            "roaming_timestamp", f"{value!r:.60} is neither 32 hex digits nor base64"
        ) from None


def roaming_timestamp(value: Any) -> dict[str, Any]:
    """msPKIRoamingTimeStamp (raw bytes, hex or base64) -> both FILETIMEs, as ISO and ints."""
    _one_value("roaming_timestamp", value, "msPKIRoamingTimeStamp value")
    try:
        timestamp = decode_roaming_timestamp(_timestamp_bytes(value))
        return {
            "last_change": _iso(timestamp.last_change),
            "last_change_filetime": timestamp.last_change,
            "first": _iso(timestamp.first),
            "first_filetime": timestamp.first,
        }
    except TimestampError as exc:
        raise _fail("roaming_timestamp", exc) from exc


def filetime(value: Any) -> str | int:
    """A FILETIME (int or decimal string) -> ISO time; an ISO time or datetime -> FILETIME."""
    _one_value("filetime", value, "time")
    try:
        if isinstance(value, datetime):
            return to_filetime(value)
        if isinstance(value, str) and not value.strip().isdigit():
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise _fail(
                    "filetime", f"{value!r:.60} is neither a FILETIME nor an ISO 8601 time"
                ) from None
            return to_filetime(moment)
        return _iso(_integer("filetime", value, "a FILETIME"))
    except TimestampError as exc:
        raise _fail("filetime", exc) from exc


def _version_from_halves(value: Mapping[str, Any]) -> GpoVersion:
    unknown = sorted(set(value) - {"user", "computer", "number"})
    if unknown or not {"user", "computer"} <= set(value):
        raise _fail(
            "gpo_version", f"needs user and computer (and optionally number), not {dict(value)}"
        )
    version = GpoVersion(
        _integer("gpo_version", value["user"], "user"),
        _integer("gpo_version", value["computer"], "computer"),
    )
    if "number" in value and _integer("gpo_version", value["number"], "number") != version.number:
        raise _fail(
            "gpo_version", f"number {value['number']} is not user {version.user} << 16 | "
            f"computer {version.computer} ({version.number})"
        )  # fmt: skip
    return version


def gpo_version(value: Any) -> dict[str, int] | int:
    """versionNumber -> {user, computer, number}; {user, computer} -> versionNumber."""
    _one_value("gpo_version", value, "versionNumber")
    try:
        if isinstance(value, Mapping):
            return _version_from_halves(value).ldap_value
        number = _integer("gpo_version", value, "versionNumber")
        low, high = _VERSION_NUMBER_RANGE
        if not low <= number <= high:
            raise _fail("gpo_version", f"versionNumber {number} does not fit in 32 bits")
        return GpoVersion.from_number(number).as_dict()
    except GpoError as exc:
        raise _fail("gpo_version", exc) from exc


def gplink(value: Any) -> list[dict[str, Any]]:
    """gPLink -> its links in precedence order (order 1 first), each with enabled, enforced."""
    _one_value("gplink", value, "gPLink value")
    if value is None:
        return []
    if not isinstance(value, str):
        raise _fail("gplink", f"expects the gPLink string, not {type(value).__name__}")
    try:
        links = parse_gplink(value)
    except GpoError as exc:
        raise _fail("gplink", exc) from exc
    ordered = [
        {
            "order": order,
            "dn": link.gpo_dn,
            "guid": link.guid,
            "enabled": link.enabled,
            "enforced": link.enforced,
        }
        for order, link in with_link_order(links)
    ]
    return ordered[::-1]  # stored lowest precedence first


class FilterModule:
    """credroam's filters (docs: one YAML file per filter beside this file)."""

    def filters(self) -> dict[str, Any]:
        return {
            "roaming_token": roaming_token,
            "roaming_timestamp": roaming_timestamp,
            "filetime": filetime,
            "gpo_version": gpo_version,
            "gplink": gplink,
        }
