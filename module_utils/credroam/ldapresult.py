"""What a DC answered: the outcome of the last LDAP operation and the values of an entry.

The one place that turns a failed result into a :class:`~credroam.errors.DirectoryError`
(naming what was asked and the DC) and that picks an attribute's first value. Standard library
only (a connection is used only through ``result`` and ``server.host``), so pure code such as
the schema definitions can use it without ldap3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DirectoryError

# LDAP result codes a caller may expect rather than fail on.
NO_SUCH_OBJECT = 32


def first(entry: Mapping[str, Sequence], name: str, default=None):
    """The first value of an attribute in an ldap3 ``attributes`` dict, case-insensitively."""
    lowered = name.lower()
    for key, values in entry.items():
        if key.lower() == lowered:
            if isinstance(values, list | tuple):
                return values[0] if values else default
            return values
    return default


def check_result(conn: Any, what: str, *, missing_ok: bool = False) -> bool:
    """Raise :class:`DirectoryError` naming ``what`` and the DC if the last operation failed.

    With ``missing_ok`` a noSuchObject result is an answer, not a failure: False is returned
    (the object, or the base of a search, does not exist). True otherwise.
    """
    result = conn.result or {}
    code = result.get("result", 0)
    if code == 0:
        return True
    if missing_ok and code == NO_SUCH_OBJECT:
        return False
    raise DirectoryError(
        f"{what} failed on {conn.server.host}: {result.get('description')} "
        f"({code}) {result.get('message', '')}".rstrip()
    )
