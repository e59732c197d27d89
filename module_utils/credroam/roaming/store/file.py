"""The file store for Linux: PEM certificates and requests, PKCS#8 keys, one folder per user.

It implements ``credroam.roaming.store.CertificateStore`` (contract there).

``FileStore`` layout (every directory 0700, every file 0600)::

    <root>/.lock                 flock of the running sync
    <root>/index.json            metadata sidecar: key -> modified, content_hash, archived, expires
    <root>/index.journal         write-ahead entries of a batch not yet folded into index.json
    <root>/MY/<ID>.cert.pem      certificate (token type 3; .cng.cert.pem for type 7)
    <root>/MY/<ID>.key.pem       PKCS#8 private key of that certificate (token type 9)
    <root>/REQUEST/<ID>.csr.pem  certificate request (type 4; .cng.csr.pem for type 8), key
    <root>/archive/MY/...        archived items, same names
    <root>/recovery/...          sealed copies of deleted items, never listed (``recovery``)

``<ID>`` is the upper-case SHA-1 of the DER (the thumbprint Windows uses); a private key file
carries the identifier of its certificate or request. Item times come from the sidecar index,
not from file mtimes (a copy or a restore changes mtimes, not content): a file whose content
hash matches its index entry has the recorded time; a file changed or added by hand gets its
mtime, but never a time earlier than the recorded one, so the change wins as the newest.

The content hash is also what spares a listing from parsing: an entry that carries
``expires`` (the certificate's expiry; null for a key or request) records content that was
checked when it was recorded, so a file whose SHA-256 matches it is not parsed again. Every
file is still read and hashed on every listing: the hash, not size, mtime or inode (which a
copy, ``touch -r`` or a restore can keep while the content changes), decides. New and changed
files are parsed and checked in full (see ``_check_private_key`` for RSA keys).

A batch (``batch()``, which sync holds around its local writes) keeps index changes in
memory and writes ``index.json`` once, atomically, at its end. Crash safety: before a write
replaces a file, its new entry is appended to ``index.journal`` and fsynced. A listing
matches each file against its index entry and any journal entries of its key, so after a
crash anywhere in a batch every file still has its true recorded version: the old one if it
was not replaced yet, the new one if it was (never "changed by hand", which would make a
downloaded version look like a newer local edit). The end of a batch folds the journal into
the index and removes it. Deletions and archivings need no journal: a stale entry of a
deleted file is never listed, and an archived file keeps its content, so its entry matches.
A batch held under the lock also records the entries of the files its sync listed (files
added or changed by hand), so they are not parsed again at the next sync and keep the time
that sync gave them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from ...cryptocompat import (
    load_der_certificate,
    load_der_csr,
    load_der_private_key,
    not_valid_after,
)
from ...timestamps import filetime_from_unix_ns, filetime_now, to_filetime
from ...tokens import TokenType
from ..certelement import thumbprint
from ..changemark import stat_marker
from ..fsutil import (
    append_durably,
    atomic_write,
    ensure_private_dir,
    exclusive_lock,
    read_private,
)
from ..model import Item, ItemKind, StoreName, content_hash
from . import StoreError, recovery, split_item_key

__all__ = ["MAX_PAYLOAD", "FileStore"]

MAX_PAYLOAD = 1024 * 1024
_MAX_INDEX = MAX_PAYLOAD * 16
_INDEX_VERSION = 1  # entries gained an optional "expires"; older readers ignore it


# One row per token type the file store holds: kind, suffix, PEM label, folder (None: a key,
# which lives beside its owner).
_LAYOUT: dict[TokenType, tuple[ItemKind, str, str, StoreName | None]] = {
    TokenType.CERTIFICATE: (ItemKind.CERTIFICATE, ".cert.pem", "CERTIFICATE", StoreName.MY),
    TokenType.CNG_CERTIFICATE: (
        ItemKind.CERTIFICATE,
        ".cng.cert.pem",
        "CERTIFICATE",
        StoreName.MY,
    ),
    TokenType.REQUEST: (ItemKind.REQUEST, ".csr.pem", "CERTIFICATE REQUEST", StoreName.REQUEST),
    TokenType.CNG_REQUEST: (
        ItemKind.REQUEST,
        ".cng.csr.pem",
        "CERTIFICATE REQUEST",
        StoreName.REQUEST,
    ),
    TokenType.CNG_KEY: (ItemKind.KEY, ".key.pem", "PRIVATE KEY", None),
}
_TYPE_OF_SUFFIX = {suffix: token_type for token_type, (_, suffix, _, _) in _LAYOUT.items()}
_FILE_NAME = re.compile(r"(?P<identifier>[0-9A-F]{40})(?P<suffix>(?:\.[a-z]+)+)")
_OWNER_TYPES = {
    StoreName.MY: (TokenType.CERTIFICATE, TokenType.CNG_CERTIFICATE),
    StoreName.REQUEST: (TokenType.REQUEST, TokenType.CNG_REQUEST),
}


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join(
        [f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""]
    )


def _pem_file(token_type: TokenType, identifier: str, der: bytes) -> tuple[str, bytes]:
    """The file name and the PEM content of an item as this store keeps it (``_LAYOUT``): the
    Windows store's recovery copies take the same form, so they read the same everywhere."""
    _, suffix, label, _ = _LAYOUT[token_type]
    return identifier + suffix, _pem(label, der)


def _unpem(label: str, data: bytes) -> bytes:
    """The DER of exactly one PEM block with ``label``; ValueError otherwise."""
    lines = data.decode("ascii").strip().splitlines()
    if len(lines) < 3 or lines[0] != f"-----BEGIN {label}-----":
        raise ValueError(f"not a single PEM {label} block")
    if lines[-1] != f"-----END {label}-----":
        raise ValueError(f"PEM {label} block is not terminated")
    try:
        return base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in PEM {label}: {exc}") from None


def _check_rsa_numbers(numbers: rsa.RSAPrivateNumbers) -> None:
    """Refuse RSA numbers that do not belong together (what any damage to a real key breaks)."""
    p, q, d = numbers.p, numbers.q, numbers.d
    e, n = numbers.public_numbers.e, numbers.public_numbers.n
    consistent = (
        p > 1
        and q > 1
        and p * q == n
        and 1 < e < n
        and (e * d) % math.lcm(p - 1, q - 1) == 1
        and (e * numbers.dmp1) % (p - 1) == 1
        and (e * numbers.dmq1) % (q - 1) == 1
        and (numbers.iqmp * q) % p == 1
    )
    if not consistent:
        raise ValueError("RSA private key numbers are inconsistent (n, e, d, p, q or CRT values)")


def _check_private_key(der: bytes) -> None:
    """Refuse a private key that is malformed or, for RSA, whose numbers are inconsistent.

    RSA keys are loaded without cryptography's validation where the release allows it
    (``cryptocompat.load_der_private_key``): it costs ~80 ms per RSA-2048 key (it proves p and q
    prime), a minute per 1000 keys. Why that is safe here: credroam never computes with a
    private key. It checks it, stores it and roams its PKCS#8 bytes; the loaded object is
    dropped at once, so the hazard the skipped check guards against (OpenSSL misbehaving when
    an invalid key is *used*) cannot arise in this process. What a store must refuse is still
    refused: DER that does not parse as a private key, and RSA numbers that do not belong
    together (n = p*q, e*d = 1 mod lcm(p-1, q-1), the CRT values), which any damage or
    truncation of a real key breaks. Only the primality of p and q is not proven; a key with a
    composite factor is one made on purpose, and whoever can place one in this 0600 store or
    seal one under the user's roaming key holds the user's keys already.
    """
    key = load_der_private_key(der)
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_numbers(key.private_numbers())


def _check_payload(token_type: TokenType, identifier: str, der: bytes) -> int | None:
    """Validate a payload against its type and identifier; return the expiry (FILETIME)."""
    kind = _LAYOUT[token_type][0]
    if kind is ItemKind.KEY:
        _check_private_key(der)
        return None
    if thumbprint(der) != identifier:
        raise ValueError(f"SHA-1 of the content is {thumbprint(der)}, not {identifier}")
    if kind is ItemKind.REQUEST:
        load_der_csr(der)
        return None
    return to_filetime(not_valid_after(load_der_certificate(der)))


def _filetime_of_mtime(info: os.stat_result) -> int:
    return filetime_from_unix_ns(info.st_mtime_ns)


# --- index entries -----------------------------------------------------------------------------
# An entry is {"modified": int, "content_hash": str, "archived": bool, "expires": int | None}.
# "expires" is present only when the content was checked as it was recorded; a listing then
# trusts it instead of parsing the file again.


def _entry(modified: int, content_hash: str, archived: bool, expires: int | None) -> dict:
    return {
        "modified": modified,
        "content_hash": content_hash,
        "archived": archived,
        "expires": expires,
    }


def _is_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("modified")) is int
        and entry["modified"] >= 0  # an item time is a FILETIME; a damaged entry is ignored
        and isinstance(entry.get("content_hash"), str)
        and (entry.get("expires") is None or type(entry.get("expires")) is int)
    )


def _matching(candidates: list[dict], content_hash: str, archived: bool) -> dict | None:
    """The recorded entry of this content: the latest, one recorded in this folder first."""
    same = [entry for entry in candidates if entry["content_hash"] == content_hash]
    in_folder = [entry for entry in same if entry.get("archived", False) is archived]
    return (in_folder or same or [None])[-1]


def _latest(candidates: list[dict]) -> dict | None:
    return max(candidates, key=lambda entry: entry["modified"], default=None)


@dataclass
class _Batch:
    """Index changes held in memory until the end of a batch."""

    loaded: dict[str, dict]  # index.json as the batch found it
    records: dict[str, list[dict]]  # key -> candidate entries (index, then journal order)
    journal_exists: bool
    settled: set[str] = field(default_factory=set)  # entry known to match the file, or gone
    doubtful: set[str] = field(default_factory=set)  # a write failed part-way: decide by content


class FileStore:
    """The user's MY and REQUEST stores as PEM files under ``root`` (layout in module doc).

    ``problems`` collects files that ``items()`` skipped and why (symlinks, names that do not
    match their content, unreadable or foreign files), for the sync report. ``clock`` (FILETIME)
    dates the recovery copies ``delete`` keeps.
    """

    def __init__(self, root: str, clock: Callable[[], int] = filetime_now) -> None:
        try:
            ensure_private_dir(root)
        except OSError as exc:
            raise StoreError(f"store root {root} unusable: {exc}") from exc
        self.root = os.path.realpath(root)
        self.clock = clock
        self.problems: list[str] = []
        self._batch: _Batch | None = None
        self._lock_held = False
        self._listed: dict[str, dict] = {}  # entries of the last listing under the held lock

    # --- paths -------------------------------------------------------------------------------
    def _folder(self, store: StoreName, archived: bool, create: bool = False) -> str:
        parts = (["archive"] if archived else []) + [store.value]
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            if create:
                try:
                    ensure_private_dir(path)
                except OSError as exc:
                    raise StoreError(f"store folder {path} unusable: {exc}") from exc
        return path

    def _inside(self, folder: str, name: str) -> str:
        """``folder/name`` after checking it stays inside ``folder`` and is no symlink."""
        path = os.path.join(folder, name)
        if os.path.realpath(folder) != folder:
            raise StoreError(f"store folder {folder} is reached through a symbolic link")
        if os.path.dirname(os.path.normpath(path)) != folder:
            raise StoreError(f"path {path!r:.120} leaves its folder {folder}")
        if os.path.islink(path):
            raise StoreError(f"refusing the symbolic link planted at {path}")
        if os.path.commonpath([os.path.realpath(path), folder]) != folder:
            raise StoreError(f"path {path!r:.120} resolves outside {folder}")
        return path

    def _candidates(self, key: str) -> list[tuple[str, StoreName, bool]]:
        """Where the item of ``key`` may live: (path, store, archived), validated."""
        token_type, identifier = split_item_key(key)
        _, suffix, _, store = _LAYOUT[token_type]
        stores = [store] if store is not None else list(StoreName)
        found = []
        for candidate_store in stores:
            for archived in (False, True):
                folder = self._folder(candidate_store, archived)
                found.append((self._inside(folder, identifier + suffix), candidate_store, archived))
        return found

    def _locate(self, key: str) -> tuple[str, StoreName, bool] | None:
        for path, store, archived in self._candidates(key):
            if os.path.lexists(path):
                return path, store, archived
        return None

    # --- the metadata sidecar and its journal --------------------------------------------------
    def _index_path(self) -> str:
        return os.path.join(self.root, "index.json")

    def _journal_path(self) -> str:
        return os.path.join(self.root, "index.journal")

    def _load_index(self) -> dict[str, dict]:
        try:
            document = json.loads(read_private(self._index_path(), _MAX_INDEX))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.problems.append(f"index {self._index_path()} unusable ({exc}); using mtimes")
            return {}
        if not isinstance(document, dict) or document.get("version") != _INDEX_VERSION:
            document = {}
        entries = document.get("items")
        if not isinstance(entries, dict):
            self.problems.append(f"index {self._index_path()} has an unknown format; ignored")
            return {}
        return {key: entry for key, entry in entries.items() if _is_entry(entry)}

    def _load_journal(self) -> list[tuple[str, dict]]:
        """(key, entry) of each complete journal line; a line torn by a crash is skipped."""
        try:
            data = read_private(self._journal_path(), _MAX_INDEX)
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.problems.append(f"index journal {self._journal_path()} unusable ({exc})")
            return []
        found = []
        for line in data.splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if _is_entry(record) and isinstance(record.get("key"), str):
                key = record.pop("key")
                found.append((key, record))
        return found

    def _load_records(self) -> tuple[dict[str, dict], dict[str, list[dict]]]:
        """index.json's entries, and every key's candidate entries (index, then journal)."""
        loaded = self._load_index()
        records = {key: [dict(entry)] for key, entry in loaded.items()}
        for key, entry in self._load_journal():
            records.setdefault(key, []).append(entry)
        return loaded, records

    def _save_index(self, index: Mapping[str, dict]) -> None:
        document = {"version": _INDEX_VERSION, "items": dict(sorted(index.items()))}
        atomic_write(self._index_path(), json.dumps(document, indent=1).encode() + b"\n")

    def _journal(self, batch: _Batch, key: str, entry: dict) -> None:
        """Make ``entry`` durable as a candidate of ``key`` before its file is replaced."""
        line = json.dumps({"key": key, **entry}, separators=(",", ":")).encode()
        # The leading newline ends a line a crash may have torn, so this one parses.
        append_durably(self._journal_path(), b"\n" + line + b"\n")
        batch.journal_exists = True
        batch.records.setdefault(key, []).append(dict(entry))

    # --- batches -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Record the index once, at the end, for every write, deletion and archiving inside.

        Use it while holding ``lock()``. Nested batches join the outer one. The index is
        written also when the block raises, for what was done until then.
        """
        with self._batched():
            yield

    @contextlib.contextmanager
    def _batched(self) -> Iterator[_Batch]:
        if self._batch is not None:
            yield self._batch
            return
        loaded, records = self._load_records()
        batch = _Batch(loaded, records, os.path.lexists(self._journal_path()))
        self._batch = batch
        try:
            yield batch
        finally:
            self._batch = None
            self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        listed = self._listed if self._lock_held else {}
        final: dict[str, dict] = {}
        for key in batch.records.keys() | listed.keys():
            entry = self._settle(key, batch, listed)
            if entry is not None:
                final[key] = entry
        if final == batch.loaded and not batch.journal_exists:
            return
        try:
            self._save_index(final)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._journal_path())
        except OSError as exc:
            raise StoreError(f"cannot record the index {self._index_path()}: {exc}") from exc

    def _settle(self, key: str, batch: _Batch, listed: Mapping[str, dict]) -> dict | None:
        """The one entry ``key`` keeps in index.json at the end of ``batch``."""
        candidates = batch.records.get(key, [])
        if key in batch.doubtful or (
            key not in batch.settled and key not in listed and len(candidates) > 1
        ):
            return self._by_content(key, [*candidates, *([listed[key]] if key in listed else [])])
        if key in batch.settled or key not in listed:
            return candidates[-1] if candidates else None
        return listed[key]  # as this sync listed it (a file added or changed by hand)

    def _by_content(self, key: str, candidates: list[dict]) -> dict | None:
        """The candidate that matches the file now on disk (the latest if none does)."""
        try:
            split_item_key(key)
        except StoreError:
            return None  # not a key of this store: an entry nobody can list
        try:
            location = self._locate(key)
            if location is None:
                return None
            digest = content_hash(self.read(key))
        except StoreError:
            return _latest(candidates)  # kept, so a hand change still counts as newer
        return _matching(candidates, digest, location[2]) or _latest(candidates)

    # --- listing -------------------------------------------------------------------------------
    def items(self) -> dict[str, Item]:
        self.problems = []
        if self._batch is not None:
            records = self._batch.records
        else:
            _, records = self._load_records()
        found: dict[str, Item] = {}
        entries: dict[str, dict] = {}
        keys: list[tuple[str, str, StoreName, bool, TokenType, str]] = []
        for store in StoreName:
            for archived in (False, True):
                folder = self._folder(store, archived)
                for name in sorted(self._names(folder)):
                    parsed = self._parse_name(folder, name, store)
                    if parsed is not None:
                        keys.append((folder, name, store, archived, *parsed))
        # Certificates and requests first: a key takes its owner's expiry.
        keys.sort(key=lambda entry: _LAYOUT[entry[4]][0] is ItemKind.KEY)
        for folder, name, store, archived, token_type, identifier in keys:
            listed = self._item(
                folder, name, store, archived, token_type, identifier, records, found
            )
            if listed is None:
                continue
            item, entry = listed
            if item.key in found:
                self.problems.append(f"{item.key} is both archived and active; archived ignored")
                continue
            found[item.key] = item
            entries[item.key] = entry
        if self._lock_held:
            self._listed = entries
        return found

    def _names(self, folder: str) -> list[str]:
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(info.st_mode):
            self.problems.append(f"{folder} is not a real directory; skipped")
            return []
        return [name for name in os.listdir(folder) if not name.startswith(".tmp-")]

    def _parse_name(self, folder: str, name: str, store: StoreName) -> tuple[TokenType, str] | None:
        match = _FILE_NAME.fullmatch(name)
        token_type = _TYPE_OF_SUFFIX.get(match["suffix"]) if match else None
        if match is None or token_type is None:
            self.problems.append(f"{os.path.join(folder, name)}: not a store file name; skipped")
            return None
        expected_store = _LAYOUT[token_type][3]
        if expected_store not in (None, store):
            self.problems.append(f"{os.path.join(folder, name)}: belongs in {expected_store}")
            return None
        return token_type, match["identifier"]

    def _item(
        self,
        folder: str,
        name: str,
        store: StoreName,
        archived: bool,
        token_type: TokenType,
        identifier: str,
        records: Mapping[str, list[dict]],
        found: Mapping[str, Item],
    ) -> tuple[Item, dict] | None:
        """The item of one file and the index entry that describes it as listed."""
        path = os.path.join(folder, name)
        kind, _, label, _ = _LAYOUT[token_type]
        key = f"%{token_type.value}\\{identifier}"
        owner = None
        if kind is ItemKind.KEY:
            owner = next(
                (
                    found[k]
                    for t in _OWNER_TYPES[store]
                    if (k := f"%{t.value}\\{identifier}") in found
                ),
                None,
            )
            if owner is None:
                self.problems.append(f"{path}: private key without its certificate; not roamed")
                return None
        candidates = records.get(key, [])
        try:
            self._inside(folder, name)
            info = os.lstat(path)
            der = _unpem(label, read_private(path, MAX_PAYLOAD))
            digest = content_hash(der)
            recorded = _matching(candidates, digest, archived)
            if recorded is not None and "expires" in recorded:
                expires = recorded["expires"]  # checked when recorded: same content, same result
            else:
                expires = _check_payload(token_type, identifier, der)
        except (StoreError, OSError, ValueError, UnicodeDecodeError) as exc:
            self.problems.append(f"{path}: {exc}; skipped")
            return None
        if recorded is not None:
            modified = recorded["modified"]
        else:  # changed or added outside credroam: newer than anything recorded
            latest = _latest(candidates)
            modified = max(_filetime_of_mtime(info), latest["modified"] + 1 if latest else 0)
        item = Item(
            key=key,
            store=store,
            kind=kind,
            modified=modified,
            content_hash=digest,
            size=len(der),
            archived=archived,
            expires=owner.expires if owner is not None else expires,
            owner=owner.key if owner is not None else None,
        )
        return item, _entry(modified, digest, archived, expires)

    # --- reading and writing -------------------------------------------------------------------
    def read(self, item: Item | str) -> bytes:
        key = item.key if isinstance(item, Item) else item
        location = self._locate(key)
        if location is None:
            raise StoreError(f"{key} is not in the store {self.root}")
        token_type, _ = split_item_key(key)
        try:
            return _unpem(_LAYOUT[token_type][2], read_private(location[0], MAX_PAYLOAD))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read {key} from {location[0]}: {exc}") from exc

    def _target_store(self, item: Item, token_type: TokenType) -> StoreName:
        folder = _LAYOUT[token_type][3]
        if folder is not None:
            return folder
        if item.owner is None:
            raise StoreError(f"private key {item.key} has no owner certificate or request")
        owner_type, owner_id = split_item_key(item.owner)
        if _LAYOUT[owner_type][0] is ItemKind.KEY or owner_id != split_item_key(item.key)[1]:
            raise StoreError(f"private key {item.key} cannot belong to {item.owner}")
        return _LAYOUT[owner_type][3]  # type: ignore[return-value]

    def write(self, item: Item, payload: bytes) -> None:
        if item.tombstone:
            raise StoreError(f"{item.key}: a tombstone is not written to a local store")
        token_type, identifier = split_item_key(item.key)
        if len(payload) > MAX_PAYLOAD:
            raise StoreError(f"{item.key}: payload of {len(payload)} bytes is too large")
        if content_hash(payload) != item.content_hash:
            raise StoreError(f"{item.key}: payload does not match the item's content hash")
        try:
            expires = _check_payload(token_type, identifier, payload)
        except ValueError as exc:
            raise StoreError(f"{item.key}: payload refused: {exc}") from exc
        store = self._target_store(item, token_type)
        name, content = _pem_file(token_type, identifier, payload)
        folder = self._folder(store, item.archived, create=True)
        path = self._inside(folder, name)
        entry = _entry(item.modified, item.content_hash, item.archived, expires)
        with self._batched() as batch:
            previous = self._locate(item.key)
            try:
                self._journal(batch, item.key, entry)
                batch.doubtful.add(item.key)  # until the file is known to be replaced
                atomic_write(path, content)
                batch.records[item.key] = [entry]
                batch.doubtful.discard(item.key)
                batch.settled.add(item.key)
                if previous is not None and previous[0] != path:
                    os.unlink(previous[0])  # it moved between active and archive
            except OSError as exc:
                raise StoreError(f"cannot write {item.key} to {path}: {exc}") from exc

    def delete(self, item: Item | str, *, keep_copy: bool = False, undecided: bool = False) -> None:
        key = item.key if isinstance(item, Item) else item
        with self._batched() as batch:
            location = self._locate(key)
            if location is not None:
                path = location[0]
                if keep_copy:
                    try:
                        recovery.keep(
                            path,
                            self.root,
                            kept=self.clock(),
                            undecided=undecided,
                            inside=self._inside,
                        )
                    except OSError as exc:
                        raise StoreError(f"cannot keep a recovery copy of {path}: {exc}") from exc
                else:
                    os.unlink(path)
            batch.records.pop(key, None)
            batch.doubtful.discard(key)
            batch.settled.add(key)

    def archive(self, item: Item | str) -> None:
        key = item.key if isinstance(item, Item) else item
        with self._batched() as batch:
            location = self._locate(key)
            if location is None:
                raise StoreError(f"{key} is not in the store {self.root}")
            path, store, archived = location
            if archived:
                return
            folder = self._folder(store, True, create=True)
            os.replace(path, self._inside(folder, os.path.basename(path)))
            listed = [self._listed[key]] if key in self._listed else []
            for entry in [*batch.records.get(key, []), *listed]:
                entry["archived"] = True  # same content, now in the archive

    def change_marker(self) -> str | None:
        """The store's local change marker (:mod:`..changemark`): the root, the item folders
        (active and archived) and the index with its journal; None while one of them is too
        fresh to tell. Recovery copies are left out: no plan depends on them."""
        folders = [
            self._folder(store, archived) for archived in (False, True) for store in StoreName
        ]
        paths = [
            self.root,
            os.path.join(self.root, "archive"),
            *folders,
            self._index_path(),
            self._journal_path(),
        ]
        return stat_marker(paths, self.clock())

    def tend_recovery(
        self, roaming_key: bytes | None, user_id: str | None, retention_ticks: int, now: int
    ) -> list[str]:
        """Seal the unsealed recovery copies, remove those past ``retention_ticks``: what was
        done and what could not be (module ``recovery`` says how)."""
        return recovery.tend(
            self.root,
            roaming_key=roaming_key,
            user_id=user_id,
            retention_ticks=retention_ticks,
            now=now,
        )

    def lock(self, timeout: float | None = 0) -> contextlib.AbstractContextManager[None]:
        """Exclusive use of this store for one sync; raises ``fsutil.LockHeld`` if busy."""
        return self._locked(timeout)

    @contextlib.contextmanager
    def _locked(self, timeout: float | None) -> Iterator[None]:
        with exclusive_lock(os.path.join(self.root, ".lock"), timeout, f"store {self.root}"):
            self._lock_held, self._listed = True, {}
            try:
                yield
            finally:
                self._lock_held, self._listed = False, {}
