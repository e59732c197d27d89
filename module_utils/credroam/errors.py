"""The root of every error the credroam core raises on purpose.

Each concern keeps its own error class beside its code (``tokens.TokenError``,
``gpo.model.GpoError``, ``roaming.store.StoreError``, ...); all of them derive from
:class:`CredroamError`, so a caller (a module, the agent) can tell "credroam refused or failed,
and the message says why" from a bug. Errors about bad input keep ``ValueError`` as a second base.
:class:`DirectoryError` lives here because every layer that talks LDAP raises it (connection,
roaming, gpo, schema). A lock held by another process is not one: see ``roaming.fsutil.LockHeld``.
"""

from __future__ import annotations


class CredroamError(Exception):
    """Something credroam refused or could not do; the message names what and where."""


class DirectoryError(CredroamError):
    """A directory operation failed; the message names the DC and what was asked."""
