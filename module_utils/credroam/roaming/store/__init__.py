"""Local certificate stores behind one small interface (the file store is in ``file``).

``CertificateStore`` is what sync needs from a host. Contract for every implementation:

- ``items()`` returns the live and archived items of the user's MY and
  REQUEST stores, keyed by ``Item.key`` (``%<type>\\<identifier>``), never tombstones. Each
  ``content_hash`` is ``model.content_hash`` of the canonical payload.
  Private keys are items of kind KEY whose ``owner`` is their certificate or request; a key
  without one is not listed (RoamUnaffiliatedKeys is off). Smart-card items are flagged.
- ``read(item)`` returns the canonical payload: DER certificate, DER request, PKCS#8 DER key.
- ``write(item, payload)`` creates or replaces the item atomically, archived or not as
  ``item.archived`` says, and records ``item.modified`` so the next listing reports the same
  version. It refuses a payload that does not match ``item.content_hash`` or the identifier.
- ``delete(item, keep_copy=..., undecided=...)`` removes it (a missing item is not an error);
  with ``keep_copy`` the payload is moved to a recovery area that ``items()`` does not list,
  and ``undecided`` (reconcile's R18) keeps that copy until the user or an admin resolves it.
- ``tend_recovery(roaming_key, user_id, retention_ticks, now)``, once per sync: recovery copies
  are sealed under the roaming key (never kept in plaintext longer than it takes to get the
  key), and copies of ordinary deletions older than the retention are removed. It returns what
  it did and reports what it could not do (the file store's ``recovery`` module).
- ``archive(item)`` marks a live item archived (expired certificates), keeping it.
- ``lock(timeout)`` is a context manager giving one sync of one user exclusive use.
- ``problems`` lists what the last ``items()`` skipped and why (a file that fails its checks, a
  private key without its certificate): sync puts it in its report.
- ``batch()`` is a context manager, used under the lock, for a run of writes, deletions and
  archivings: the store may record their bookkeeping once, at its end (the file store writes
  its index once). Each operation is still complete, or not done, when its call returns, and a
  crash inside a batch leaves a store that lists correctly.
Every identifier is untrusted (it may come from the directory, CVE-2022-30170): it passes
``tokens.validate_identifier`` and derived paths are checked to stay inside the store.

Where applications look (the NSS database, NetworkManager's files) is served by mirrors of the
file store, not by stores of their own: ``mirror`` (what they share), ``nss``,
``networkmanager``. On Windows, ``windows`` is the store over CurrentUser\\My and \\REQUEST
(PowerShell and .NET's X509Store); a store may also report ``held_keys`` (present, not
listable: held by sync) and ``private_key_owners`` (certificates with a private key here).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from ...errors import CredroamError
from ...tokens import TokenError, TokenType, parse_key
from ..model import Item

__all__ = ["STORED_TYPES", "CertificateStore", "StoreError", "split_item_key"]

# The token types a local store holds: certificates and requests (CAPI and CNG) and the private
# keys credroam seals (type 9). DPAPI master keys and CAPI key blobs are Windows' own.
STORED_TYPES = frozenset(
    {
        TokenType.CERTIFICATE,
        TokenType.CNG_CERTIFICATE,
        TokenType.REQUEST,
        TokenType.CNG_REQUEST,
        TokenType.CNG_KEY,
    }
)


class StoreError(CredroamError):
    """A store operation failed; the message names the item or file at fault."""


class CertificateStore(Protocol):
    """A user's local MY and REQUEST stores (contract in the module docstring)."""

    problems: list[str]

    def items(self) -> dict[str, Item]: ...

    def read(self, item: Item | str) -> bytes: ...

    def write(self, item: Item, payload: bytes) -> None: ...

    def delete(
        self, item: Item | str, *, keep_copy: bool = False, undecided: bool = False
    ) -> None: ...

    def tend_recovery(
        self, roaming_key: bytes | None, user_id: str | None, retention_ticks: int, now: int
    ) -> list[str]: ...

    def archive(self, item: Item | str) -> None: ...

    def lock(self, timeout: float | None = 0) -> contextlib.AbstractContextManager[None]: ...

    def batch(self) -> contextlib.AbstractContextManager[None]: ...


def split_item_key(key: str) -> tuple[TokenType, str]:
    """(type, identifier) of an item key a store may hold, both checked; raises StoreError."""
    try:
        token_type, identifier = parse_key(key)
    except TokenError as exc:
        raise StoreError(f"item key {key!r:.80} refused: {exc}") from exc
    if token_type not in STORED_TYPES:
        raise StoreError(f"item key {key}: a local store does not hold token type {token_type}")
    return token_type, identifier
