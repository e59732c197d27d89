"""The Windows store: ``CurrentUser\\My`` and ``CurrentUser\\REQUEST`` through PowerShell and .NET.

It implements ``credroam.roaming.store.CertificateStore`` (contract there) over the user's
own certificate stores, driven as ``nss`` drives NSS: by running a tool and parsing its
output. The tool is Windows PowerShell (``powershell.exe -NoProfile -NonInteractive -Command
<script>``) with .NET's ``System.Security.Cryptography.X509Certificates.X509Store``; each
script is a constant of this module (``SCRIPTS``), takes its input as JSON on stdin and
answers with ``ConvertTo-Json``, which this module parses strictly: output that is not what
the script promises is a :class:`WindowsStoreError` naming the command, never taken for an
empty store. The runner is injectable (``Runner``), so the commands and their parsing are
tested on recorded output without Windows (tests/unit/test_store_windows.py); no Windows host
ran them here.

Items. A certificate of ``My`` is ``%3\\<thumbprint>`` (``%7`` when it was written as a CNG
certificate token: the bookkeeping remembers), archived as its ``Archived`` property says. Its
private key, when it has one, is ``%9\\<thumbprint>`` owned by it: the PKCS#8 of the key, read
by exporting the certificate as PKCS#12 under a one-time password and opening that with
``cryptography``. A key credroam imported is listed from the bookkeeping (below), without
exporting it. A key Windows will not export (non-exportable, TPM) that the bookkeeping does not
know is not listed, is reported, and is held (``held_keys``): sync never takes it for a
deletion, nor replaces it. Smart-card keys
are the card's: never listed, and their certificates are flagged ``smartcard``.
``CurrentUser\\REQUEST`` is listed and reported, not roamed: Windows keeps a pending request
as a self-signed dummy certificate with its enrollment state, not as the PKCS#10 credroam
roams (README, "Pending requests roam as the PKCS#10"), so a credroam request is not written
there either (``write`` refuses it, and sync reports that item).

Bookkeeping. A Windows store records no modification time per certificate, so the adapter
keeps one, as the file store does, in ``<root>/index.json`` (0600): per item key the
recorded (modified, content hash) candidates, and for a key the content hash of the
certificate it was recorded with. A listed item whose content matches a candidate has its
recorded time; one added outside credroam gets the listing's time (never earlier than a
recorded one), recorded by the next batch under the lock, so it stays stable. A key is the
certificate's key pair: while the same certificate still has its private key, the key is the
one recorded, so a recorded key is listed without exporting it again. Before a write the new
candidate is recorded, after it the old ones are dropped, so a crash between leaves a
candidate for whichever version Windows holds. ``<root>/recovery/`` holds recovery copies as
the file store's (``recovery``), and ``<root>/.lock`` is the sync's lock.

Secrets. A private key never passes through a command line: a key goes to PowerShell as a
PKCS#12 encrypted under a random one-time password, both inside the JSON on stdin, and comes
back the same way on stdout. No file is written for it.

What is not done on Windows, and why: no change marker (a listing is a PowerShell run; every
sync is a full one); the core's ``fsutil`` (``fcntl``, ``O_NOFOLLOW``) is POSIX, so this
module, like the rest of the agent, does not yet start on Windows (README, "What was
exercised, and what was not").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ...cryptocompat import (
    UnparsableInput,
    load_der_certificate,
    load_der_private_key,
    not_valid_after,
)
from ...timestamps import filetime_now, to_filetime
from ...tokens import TokenType
from ..certelement import thumbprint
from ..fsutil import atomic_write, ensure_private_dir, exclusive_lock, read_private
from ..model import Item, ItemKind, StoreName, content_hash
from . import StoreError, recovery, split_item_key
from .file import _pem_file  # the file store's form: recovery copies read the same everywhere

__all__ = [
    "POWERSHELL",
    "SCRIPTS",
    "Completed",
    "Runner",
    "WindowsCertificate",
    "WindowsStore",
    "WindowsStoreError",
    "parse_export",
    "parse_listing",
    "run_powershell",
]

POWERSHELL = ("powershell.exe", "-NoProfile", "-NonInteractive", "-Command")
_TIMEOUT = 120  # seconds; a store operation takes well under one
_MAX_INDEX = 16 * 1024 * 1024
_INDEX_VERSION = 1
_THUMBPRINT = re.compile(r"[0-9A-F]{40}")
# The Windows store names as X509Store takes them, per roamed store.
_STORE_NAMES = {StoreName.MY: "My", StoreName.REQUEST: "REQUEST"}
_STORE_OF_NAME = {name: store for store, name in _STORE_NAMES.items()}
_CERTIFICATE_TYPES = (TokenType.CERTIFICATE, TokenType.CNG_CERTIFICATE)


class WindowsStoreError(StoreError):
    """A PowerShell command of the Windows store failed, or its output is not what the command
    promises; the message names the command (and the item)."""


@dataclass(frozen=True)
class Completed:
    """What a runner returns: PowerShell's exit code and its raw stdout and stderr."""

    returncode: int
    stdout: bytes
    stderr: bytes


# (script, stdin bytes) -> Completed. The script is one of SCRIPTS; stdin carries its input.
Runner = Callable[[str, bytes], Completed]


def run_powershell(script: str, stdin: bytes) -> Completed:
    """Run ``script`` with Windows PowerShell, ``stdin`` on its standard input."""
    try:
        done = subprocess.run(
            [*POWERSHELL, script],
            input=stdin,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WindowsStoreError(f"powershell.exe did not run: {exc}") from exc
    return Completed(done.returncode, done.stdout, done.stderr)


# --- the scripts ---------------------------------------------------------------------------------
# Single quotes only: a script travels as one command-line argument, and Windows' argument
# quoting of double quotes is where PowerShell and the C runtime disagree (tested).

_PRELUDE = r"""
using namespace System.Security.Cryptography
using namespace System.Security.Cryptography.X509Certificates
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false
function Read-Request { [Console]::In.ReadToEnd() | ConvertFrom-Json }
function Open-Store([string]$Name, [string]$Mode) {
  $store = New-Object X509Store($Name, [StoreLocation]::CurrentUser)
  $store.Open([OpenFlags]($Mode + ', IncludeArchived'))
  $store
}
function Find-One($Store, [string]$Thumbprint) {
  $found = @($Store.Certificates | Where-Object { $_.Thumbprint -eq $Thumbprint })
  if ($found.Count -ne 1) {
    throw ('certificate ' + $Thumbprint + ' is not in CurrentUser\' + $Store.Name)
  }
  $found[0]
}
function Get-Key($Cert) {
  $key = [RSACertificateExtensions]::GetRSAPrivateKey($Cert)
  if ($null -eq $key) { $key = [ECDsaCertificateExtensions]::GetECDsaPrivateKey($Cert) }
  $key
}
function Test-Cng($Key) { ($Key -is [RSACng]) -or ($Key -is [ECDsaCng]) }
function Get-KeyFacts($Cert) {
  $facts = @{ Exportable = $null; SmartCard = $false }
  if (-not $Cert.HasPrivateKey) { return $facts }
  try { $key = Get-Key $Cert } catch { return $facts }
  if (Test-Cng $key) {
    $facts.Exportable = (($key.Key.ExportPolicy -band [CngExportPolicies]::AllowExport) -ne 0)
    $facts.SmartCard = ($key.Key.Provider.Provider -eq 'Microsoft Smart Card Key Storage Provider')
  } elseif ($key -is [ICspAsymmetricAlgorithm]) {
    $info = $key.CspKeyContainerInfo
    $facts.Exportable = [bool]$info.Exportable
    $facts.SmartCard = [bool]($info.HardwareDevice -or $info.Removable)
  }
  $facts
}
function Remove-Key($Key) {
  if (Test-Cng $Key) { $Key.Key.Delete() }
  elseif ($Key -is [ICspAsymmetricAlgorithm]) { $Key.PersistKeyInCsp = $false; $Key.Clear() }
}
function Add-Certificate([string]$Name, $Cert, [bool]$Archived) {
  $store = Open-Store $Name 'ReadWrite'
  try {
    $store.Add($Cert)
    $stored = Find-One $store $Cert.Thumbprint
    $stored.Archived = $Archived
    [pscustomobject]@{
      Thumbprint = $stored.Thumbprint; HasPrivateKey = $stored.HasPrivateKey
      Archived = $stored.Archived
    } | ConvertTo-Json -Compress
  } finally { $store.Close() }
}
"""

_LIST = r"""
$out = New-Object System.Collections.Generic.List[object]
foreach ($name in @('My', 'REQUEST')) {
  $store = Open-Store $name 'ReadOnly'
  try {
    foreach ($cert in $store.Certificates) {
      $facts = Get-KeyFacts $cert
      $out.Add([pscustomobject]@{
        Store = $name; Thumbprint = $cert.Thumbprint; Subject = $cert.Subject
        RawData = [Convert]::ToBase64String($cert.RawData); HasPrivateKey = $cert.HasPrivateKey
        Archived = $cert.Archived; Exportable = $facts.Exportable
        SmartCard = [bool]$facts.SmartCard
      })
    }
  } finally { $store.Close() }
}
$out | ConvertTo-Json -Compress -Depth 2
"""

_EXPORT_KEY = r"""
$request = Read-Request
$store = Open-Store 'My' 'ReadOnly'
try {
  $cert = Find-One $store $request.Thumbprint
  $pfx = $cert.Export([X509ContentType]::Pkcs12, [string]$request.Password)
  [pscustomobject]@{
    Thumbprint = $cert.Thumbprint; Pfx = [Convert]::ToBase64String($pfx)
  } | ConvertTo-Json -Compress
} finally { $store.Close() }
"""

_ADD_CERTIFICATE = r"""
$request = Read-Request
$cert = [X509Certificate2]::new([Convert]::FromBase64String($request.Der))
Add-Certificate $request.Store $cert ([bool]$request.Archived)
"""

_IMPORT_PFX = r"""
$request = Read-Request
$flags = [X509KeyStorageFlags]'UserKeySet, PersistKeySet'
if ($request.Exportable) { $flags = $flags -bor [X509KeyStorageFlags]::Exportable }
$pfx = [Convert]::FromBase64String($request.Pfx)
$cert = [X509Certificate2]::new($pfx, [string]$request.Password, $flags)
Add-Certificate 'My' $cert ([bool]$request.Archived)
"""

# What 'key' removes is the certificate's private key alone: the certificate is put back
# without it. A smart card's key is never deleted (it is the card's).
_REMOVE = r"""
$request = Read-Request
$store = Open-Store $request.Store 'ReadWrite'
try {
  $found = @($store.Certificates | Where-Object { $_.Thumbprint -eq $request.Thumbprint })
  $removed = $found.Count -gt 0
  if ($removed) {
    $cert = $found[0]
    $facts = Get-KeyFacts $cert
    $key = $null
    if ($cert.HasPrivateKey -and -not $facts.SmartCard) { $key = Get-Key $cert }
    $plain = [X509Certificate2]::new($cert.RawData)
    $archived = $cert.Archived
    $store.Remove($cert)
    if ($null -ne $key) { Remove-Key $key }
    if ($request.What -eq 'key') {
      $store.Add($plain)
      (Find-One $store $plain.Thumbprint).Archived = $archived
    }
  }
  [pscustomobject]@{ Thumbprint = $request.Thumbprint; Removed = $removed } |
    ConvertTo-Json -Compress
} finally { $store.Close() }
"""

_SET_ARCHIVED = r"""
$request = Read-Request
$store = Open-Store $request.Store 'ReadWrite'
try {
  $cert = Find-One $store $request.Thumbprint
  $cert.Archived = [bool]$request.Archived
  [pscustomobject]@{ Thumbprint = $cert.Thumbprint; Archived = $cert.Archived } |
    ConvertTo-Json -Compress
} finally { $store.Close() }
"""


def _script(body: str) -> str:
    """One command: the shared functions, the body, and one error line on stderr, exit 1."""
    return (
        _PRELUDE.strip()
        + "\ntry {\n"
        + body.strip()
        + "\n} catch { [Console]::Error.WriteLine($_.Exception.Message); exit 1 }\n"
    )


SCRIPTS: Mapping[str, str] = {
    "list": _script(_LIST),
    "export-key": _script(_EXPORT_KEY),
    "add-certificate": _script(_ADD_CERTIFICATE),
    "import-pfx": _script(_IMPORT_PFX),
    "remove": _script(_REMOVE),
    "set-archived": _script(_SET_ARCHIVED),
}


# --- parsing what the scripts print ------------------------------------------------------------


@dataclass(frozen=True)
class WindowsCertificate:
    """One certificate of ``CurrentUser\\My`` or ``\\REQUEST`` as the listing reports it."""

    store: StoreName
    thumbprint: str
    subject: str
    der: bytes
    has_private_key: bool
    archived: bool
    exportable: bool | None  # None: no private key, or one whose kind .NET does not expose
    smartcard: bool


_LISTING_FIELDS = {
    "Store": str,
    "Thumbprint": str,
    "Subject": str,
    "RawData": str,
    "HasPrivateKey": bool,
    "Archived": bool,
    "Exportable": (bool, type(None)),
    "SmartCard": bool,
}


def _error_text(stderr: bytes) -> str:
    """PowerShell's error text: the plain line the scripts write, or the error strings of a
    CLIXML stream (what powershell.exe writes to a redirected stderr in some hosts)."""
    text = stderr.decode("utf-8", "replace").strip()
    if text.startswith("#< CLIXML"):
        errors = re.findall(r'<S S="Error">(.*?)</S>', text, flags=re.DOTALL)
        text = "".join(errors).replace("_x000D_", "").replace("_x000A_", "\n").strip()
        for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
            text = text.replace(entity, char)
    return text[-400:] or "(no error text)"


def _document(command: str, stdout: bytes) -> object:
    """The JSON value a command printed (None for no output at all)."""
    try:
        text = stdout.decode("utf-8-sig")  # the scripts ask for UTF-8; a BOM is tolerated
    except UnicodeDecodeError as exc:
        raise WindowsStoreError(f"powershell {command}: output is not UTF-8: {exc}") from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WindowsStoreError(
            f"powershell {command}: output is not JSON ({exc}): {text.strip()[:120]!r}"
        ) from None


def _records(command: str, stdout: bytes) -> list[dict]:
    """The objects a pipeline into ConvertTo-Json printed: none (no output), one (a bare
    object: ConvertTo-Json does not wrap a single pipeline object in an array) or many."""
    document = _document(command, stdout)
    if document is None:
        return []
    records = [document] if isinstance(document, dict) else document
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise WindowsStoreError(
            f"powershell {command}: expected JSON objects, got {document!r:.120}"
        )
    return records


def _check_fields(command: str, record: dict, fields: Mapping[str, type | tuple]) -> None:
    if set(record) != set(fields):
        missing = sorted(set(fields) - set(record))
        extra = sorted(set(record) - set(fields))
        raise WindowsStoreError(
            f"powershell {command}: unexpected fields (missing {missing}, extra {extra})"
        )
    for name, kind in fields.items():
        if not isinstance(record[name], kind):
            raise WindowsStoreError(
                f"powershell {command}: {name} is {record[name]!r:.60}, of the wrong type"
            )


def _base64(command: str, name: str, value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise WindowsStoreError(f"powershell {command}: {name} is not base64: {exc}") from None
    if not data:
        raise WindowsStoreError(f"powershell {command}: {name} is empty")
    return data


def _thumbprint(command: str, value: str) -> str:
    if not _THUMBPRINT.fullmatch(value):
        raise WindowsStoreError(f"powershell {command}: {value!r:.60} is not a thumbprint")
    return value


def parse_listing(stdout: bytes) -> list[WindowsCertificate]:
    """The ``list`` command's output, checked whole; WindowsStoreError naming the command."""
    found: list[WindowsCertificate] = []
    seen: set[tuple[StoreName, str]] = set()
    for record in _records("list", stdout):
        _check_fields("list", record, _LISTING_FIELDS)
        store = _STORE_OF_NAME.get(record["Store"])
        if store is None:
            raise WindowsStoreError(f"powershell list: unknown store {record['Store']!r:.40}")
        identifier = _thumbprint("list", record["Thumbprint"])
        der = _base64("list", "RawData", record["RawData"])
        if thumbprint(der) != identifier:
            raise WindowsStoreError(
                f"powershell list: RawData of {identifier} hashes to {thumbprint(der)}"
            )
        if (store, identifier) in seen:
            raise WindowsStoreError(f"powershell list: {identifier} listed twice in {store}")
        seen.add((store, identifier))
        found.append(
            WindowsCertificate(
                store=store,
                thumbprint=identifier,
                subject=record["Subject"],
                der=der,
                has_private_key=record["HasPrivateKey"],
                archived=record["Archived"],
                exportable=record["Exportable"],
                smartcard=record["SmartCard"],
            )
        )
    return found


def _one_record(command: str, stdout: bytes, fields: Mapping[str, type | tuple]) -> dict:
    records = _records(command, stdout)
    if len(records) != 1:
        raise WindowsStoreError(f"powershell {command}: expected one object, got {len(records)}")
    _check_fields(command, records[0], fields)
    return records[0]


def parse_export(stdout: bytes, identifier: str, password: str) -> bytes:
    """The PKCS#8 DER of the key in the ``export-key`` command's PKCS#12 (opened with the
    one-time ``password``), after checking it is the certificate ``identifier``'s."""
    record = _one_record("export-key", stdout, {"Thumbprint": str, "Pfx": str})
    if record["Thumbprint"] != identifier:
        raise WindowsStoreError(f"powershell export-key: asked for {identifier}, got another")
    bundle = _base64("export-key", "Pfx", record["Pfx"])
    try:
        key, certificate, _ = pkcs12.load_key_and_certificates(bundle, password.encode())
    except ValueError as exc:
        raise WindowsStoreError(
            f"powershell export-key: {identifier}: bad PKCS#12: {exc}"
        ) from None
    if key is None or certificate is None:
        raise WindowsStoreError(f"powershell export-key: {identifier}: no key in the PKCS#12")
    if thumbprint(certificate.public_bytes(serialization.Encoding.DER)) != identifier:
        raise WindowsStoreError(f"powershell export-key: {identifier}: another certificate")
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- bookkeeping entries -------------------------------------------------------------------------
# An entry is {"modified": int, "content_hash": str} (a key adds "owner_hash" and "size").


def _is_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("modified")) is int
        and entry["modified"] >= 0
        and isinstance(entry.get("content_hash"), str)
    )


class WindowsStore:
    """The user's ``CurrentUser\\My`` and ``\\REQUEST`` (module doc); bookkeeping in ``root``.

    ``runner`` runs one PowerShell script (``run_powershell`` on Windows; recorded output in
    tests). ``non_exportable_keys``: private keys credroam imports are marked non-exportable
    (Windows then refuses to give them out again: this host can neither upload them again
    nor keep a recovery copy of them; they are listed from the bookkeeping only).
    """

    def __init__(
        self,
        root: str,
        runner: Runner = run_powershell,
        clock: Callable[[], int] = filetime_now,
        *,
        non_exportable_keys: bool = False,
    ) -> None:
        try:
            ensure_private_dir(root)
        except OSError as exc:
            raise StoreError(f"store bookkeeping folder {root} unusable: {exc}") from exc
        self.root = os.path.realpath(root)
        self.runner = runner
        self.clock = clock
        self.non_exportable_keys = non_exportable_keys
        self.problems: list[str] = []
        # Keys present here that could not be listed (reconcile holds them, R34).
        self.held_keys: frozenset[str] = frozenset()
        # Certificate item keys that have a private key here, listed as an item or not.
        self.private_key_owners: frozenset[str] = frozenset()
        self._listing: dict[str, WindowsCertificate] | None = None  # by item key; None: list again
        self._listed: dict[str, dict] = {}  # entries of the last listing under the lock
        self._lock_held = False
        self._batch_depth = 0

    # --- running commands ------------------------------------------------------------------
    def _run(self, command: str, request: Mapping[str, object] | None = None) -> bytes:
        stdin = json.dumps(request, ensure_ascii=True).encode() if request is not None else b""
        done = self.runner(SCRIPTS[command], stdin)
        if done.returncode != 0:
            raise WindowsStoreError(
                f"powershell {command} failed (exit {done.returncode}): {_error_text(done.stderr)}"
            )
        return done.stdout

    def _export_key(self, identifier: str) -> bytes:
        """The PKCS#8 DER of the private key of ``My\\<identifier>`` (via a one-time PKCS#12)."""
        password = secrets.token_urlsafe(24)
        stdout = self._run("export-key", {"Thumbprint": identifier, "Password": password})
        return parse_export(stdout, identifier, password)

    # --- bookkeeping ---------------------------------------------------------------------------
    def _index_path(self) -> str:
        return os.path.join(self.root, "index.json")

    def _load_index(self) -> dict[str, list[dict]]:
        try:
            document = json.loads(read_private(self._index_path(), _MAX_INDEX))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.problems.append(f"bookkeeping {self._index_path()} unusable ({exc}); ignored")
            return {}
        if not isinstance(document, dict) or document.get("version") != _INDEX_VERSION:
            self.problems.append(f"bookkeeping {self._index_path()} has an unknown format")
            return {}
        items = document.get("items")
        if not isinstance(items, dict):
            return {}
        return {
            key: [entry for entry in candidates if _is_entry(entry)]
            for key, candidates in items.items()
            if isinstance(candidates, list)
        }

    def _save_index(self, index: Mapping[str, list[dict]]) -> None:
        document = {"version": _INDEX_VERSION, "items": dict(sorted(index.items()))}
        try:
            atomic_write(self._index_path(), json.dumps(document, indent=1).encode() + b"\n")
        except OSError as exc:
            raise StoreError(f"cannot record the bookkeeping {self._index_path()}: {exc}") from exc

    def _record(self, key: str, entries: list[dict]) -> None:
        index = self._load_index()
        if entries:
            index[key] = entries
        else:
            index.pop(key, None)
        self._save_index(index)

    def _modified(self, candidates: list[dict], digest: str) -> int:
        """The recorded time of this content, else now (never earlier than a recorded one)."""
        for entry in reversed(candidates):
            if entry["content_hash"] == digest:
                return entry["modified"]
        latest = max((entry["modified"] for entry in candidates), default=-1)
        return max(self.clock(), latest + 1)

    # --- listing -------------------------------------------------------------------------------
    def items(self) -> dict[str, Item]:
        self.problems = []
        listing = parse_listing(self._run("list"))
        index = self._load_index()
        found: dict[str, Item] = {}
        entries: dict[str, dict] = {}
        held: set[str] = set()
        owners: set[str] = set()
        by_key: dict[str, WindowsCertificate] = {}
        for certificate in listing:
            if certificate.store is StoreName.REQUEST:
                self.problems.append(
                    f"CurrentUser\\REQUEST\\{certificate.thumbprint} ({certificate.subject}): a "
                    "Windows pending request (dummy certificate) is not roamed by credroam"
                )
                continue
            item = self._certificate_item(certificate, index)
            if item is None:
                continue
            found[item.key] = item
            entries[item.key] = {"modified": item.modified, "content_hash": item.content_hash}
            by_key[item.key] = certificate
            if certificate.has_private_key:
                owners.add(item.key)
            listed = self._key_item(certificate, item, index, held)
            if listed is not None:
                key_item, entry = listed
                found[key_item.key] = key_item
                entries[key_item.key] = entry
        self._listing = by_key
        self.held_keys = frozenset(held)
        self.private_key_owners = frozenset(owners)
        if self._lock_held:
            self._listed = entries
        return found

    def _certificate_key(self, identifier: str, index: Mapping[str, list[dict]]) -> str:
        """``%3\\<id>``, or ``%7\\<id>`` when the bookkeeping has it as a CNG certificate."""
        cng = f"%{TokenType.CNG_CERTIFICATE.value}\\{identifier}"
        return cng if index.get(cng) else f"%{TokenType.CERTIFICATE.value}\\{identifier}"

    def _certificate_item(
        self, certificate: WindowsCertificate, index: Mapping[str, list[dict]]
    ) -> Item | None:
        key = self._certificate_key(certificate.thumbprint, index)
        try:
            expires = to_filetime(not_valid_after(load_der_certificate(certificate.der)))
        except UnparsableInput as exc:
            self.problems.append(f"CurrentUser\\My\\{certificate.thumbprint}: {exc}; skipped")
            return None
        digest = content_hash(certificate.der)
        return Item(
            key=key,
            store=StoreName.MY,
            kind=ItemKind.CERTIFICATE,
            modified=self._modified(index.get(key, []), digest),
            content_hash=digest,
            size=len(certificate.der),
            archived=certificate.archived,
            expires=expires,
            smartcard=certificate.smartcard,
        )

    def _key_item(
        self,
        certificate: WindowsCertificate,
        owner: Item,
        index: Mapping[str, list[dict]],
        held: set[str],
    ) -> tuple[Item, dict] | None:
        """The private key of a listed certificate, as an item, with its bookkeeping entry."""
        if not certificate.has_private_key or certificate.smartcard:
            return None  # a smart card's key is the card's: it never roams (R27)
        key = f"%{TokenType.CNG_KEY.value}\\{certificate.thumbprint}"
        candidates = index.get(key, [])
        recorded = [e for e in candidates if e.get("owner_hash") == owner.content_hash]
        if recorded and type(recorded[-1].get("size")) is int:
            entry = recorded[-1]
        elif certificate.exportable:
            pkcs8 = self._export_key(certificate.thumbprint)  # a failure fails the listing
            digest = content_hash(pkcs8)
            modified = self._modified(candidates, digest)
            entry = {"modified": modified, "content_hash": digest, "size": len(pkcs8)}
            entry["owner_hash"] = owner.content_hash
        else:
            held.add(key)  # present: never to be taken for a deletion
            self.problems.append(
                f"CurrentUser\\My\\{certificate.thumbprint}: its private key is not exportable "
                "and not recorded here; it stays on this host and is not roamed by credroam"
            )
            return None
        item = Item(
            key=key,
            store=StoreName.MY,
            kind=ItemKind.KEY,
            modified=entry["modified"],
            content_hash=entry["content_hash"],
            size=entry["size"],
            archived=owner.archived,
            expires=owner.expires,
            owner=owner.key,
        )
        return item, entry

    def _located(self, key: str) -> WindowsCertificate | None:
        """The listed certificate an item key names (its own, or its key's owner)."""
        token_type, identifier = split_item_key(key)
        if token_type not in (*_CERTIFICATE_TYPES, TokenType.CNG_KEY):
            return None
        listing = self._listing if self._listing is not None else self._list_again()
        for certificate_key, certificate in listing.items():
            if certificate.thumbprint == identifier and (
                token_type is TokenType.CNG_KEY or certificate_key == key
            ):
                return certificate
        return None

    def _present(self, key: str) -> WindowsCertificate:
        """The listed certificate an item key names; StoreError when there is none."""
        certificate = self._located(key)
        if certificate is None:
            raise StoreError(f"{key} is not in CurrentUser\\My")
        return certificate

    def _list_again(self) -> dict[str, WindowsCertificate]:
        """A fresh listing for an operation, keeping the sync's problems of its own listing."""
        problems = self.problems
        self.items()
        self.problems = problems
        return self._listing or {}

    # --- reading and writing -------------------------------------------------------------------
    def read(self, item: Item | str) -> bytes:
        key = item.key if isinstance(item, Item) else item
        token_type, identifier = split_item_key(key)
        certificate = self._present(key)
        if token_type is TokenType.CNG_KEY:
            if not certificate.has_private_key:
                raise StoreError(f"{key}: CurrentUser\\My\\{identifier} has no private key")
            return self._export_key(identifier)
        return certificate.der

    def write(self, item: Item, payload: bytes) -> None:
        if item.tombstone:
            raise StoreError(f"{item.key}: a tombstone is not written to a local store")
        token_type, identifier = split_item_key(item.key)
        if content_hash(payload) != item.content_hash:
            raise StoreError(f"{item.key}: payload does not match the item's content hash")
        if item.kind is ItemKind.REQUEST:
            raise StoreError(
                f"{item.key}: a PKCS#10 request cannot be placed in CurrentUser\\REQUEST (Windows "
                "keeps a pending request as a dummy certificate with its enrollment state); "
                "enroll it on the host that made it"
            )
        entry: dict = {"modified": item.modified, "content_hash": item.content_hash}
        if item.kind is ItemKind.KEY:
            owner_der = self._owner_der(item, identifier)
            bundle, password = self._bundle(item.key, payload, owner_der)
            entry.update(owner_hash=content_hash(owner_der), size=len(payload))
            request = {
                "Pfx": base64.b64encode(bundle).decode(),
                "Password": password,
                "Exportable": not self.non_exportable_keys,
                "Archived": item.archived,
            }
            self._journaled(item.key, entry, "import-pfx", request, identifier)
            return
        try:
            load_der_certificate(payload)
        except UnparsableInput as exc:
            raise StoreError(f"{item.key}: payload refused: {exc}") from None
        if thumbprint(payload) != identifier:
            raise StoreError(f"{item.key}: SHA-1 of the content is {thumbprint(payload)}")
        request = {
            "Store": _STORE_NAMES[StoreName.MY],
            "Der": base64.b64encode(payload).decode(),
            "Archived": item.archived,
        }
        self._journaled(item.key, entry, "add-certificate", request, identifier)
        if token_type is TokenType.CNG_CERTIFICATE:
            self._record(f"%{TokenType.CERTIFICATE.value}\\{identifier}", [])

    def _owner_der(self, item: Item, identifier: str) -> bytes:
        if item.owner is None or split_item_key(item.owner)[1] != identifier:
            raise StoreError(f"private key {item.key} cannot belong to {item.owner}")
        owner = self._located(item.owner)
        if owner is None and self._listing is not None:
            self._listing = None  # the certificate may have been written in this batch
            owner = self._located(item.owner)
        if owner is None:
            raise StoreError(f"private key {item.key}: its certificate {item.owner} is not here")
        return owner.der

    @staticmethod
    def _bundle(key: str, pkcs8: bytes, certificate_der: bytes) -> tuple[bytes, str]:
        """The key and its certificate as PKCS#12 (AES-256, one-time password)."""
        try:
            private_key = load_der_private_key(pkcs8)
            certificate = load_der_certificate(certificate_der)
        except UnparsableInput as exc:
            raise StoreError(f"{key}: payload refused: {exc}") from None
        password = secrets.token_urlsafe(24)
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(10000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode())
        )
        try:
            bundle = pkcs12.serialize_key_and_certificates(
                None,
                private_key,  # type: ignore[arg-type]
                certificate,
                None,
                encryption,  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{key}: cannot make a PKCS#12 of it: {exc}") from None
        return bundle, password

    def _journaled(
        self, key: str, entry: dict, command: str, request: Mapping[str, object], identifier: str
    ) -> None:
        """Record ``entry`` as a candidate, run ``command``, then keep ``entry`` alone."""
        candidates = self._load_index().get(key, [])
        self._record(key, [*candidates, entry])
        stdout = self._run(command, request)
        record = _one_record(
            command, stdout, {"Thumbprint": str, "HasPrivateKey": bool, "Archived": bool}
        )
        if record["Thumbprint"] != identifier:
            raise WindowsStoreError(f"powershell {command}: wrote another certificate than {key}")
        if command == "import-pfx" and not record["HasPrivateKey"]:
            raise WindowsStoreError(f"powershell {command}: {key} is in the store without its key")
        self._record(key, [entry])
        self._listing = None  # listed again when next needed

    def delete(self, item: Item | str, *, keep_copy: bool = False, undecided: bool = False) -> None:
        key = item.key if isinstance(item, Item) else item
        token_type, identifier = split_item_key(key)
        certificate = self._located(key)
        if certificate is None or (
            token_type is TokenType.CNG_KEY and not certificate.has_private_key
        ):
            self._record(key, [])
            return
        if keep_copy:
            self._keep_copy(key, token_type, identifier, undecided)
        what = "key" if token_type is TokenType.CNG_KEY else "certificate"
        request = {"Store": _STORE_NAMES[StoreName.MY], "Thumbprint": identifier, "What": what}
        stdout = self._run("remove", request)
        record = _one_record("remove", stdout, {"Thumbprint": str, "Removed": bool})
        if record["Thumbprint"] != identifier:
            raise WindowsStoreError(f"powershell remove: removed another certificate than {key}")
        self._record(key, [])
        self._listing = None

    def _keep_copy(self, key: str, token_type: TokenType, identifier: str, undecided: bool) -> None:
        """A PEM copy of the item in the recovery area (the file store's, sealed by the sync)."""
        name, content = _pem_file(token_type, identifier, self.read(key))
        staged = os.path.join(self.root, name)
        try:
            atomic_write(staged, content)
            recovery.keep(staged, self.root, kept=self.clock(), undecided=undecided, inside=_inside)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise StoreError(f"cannot keep a recovery copy of {key}: {exc}") from exc

    def archive(self, item: Item | str) -> None:
        key = item.key if isinstance(item, Item) else item
        _, identifier = split_item_key(key)
        certificate = self._present(key)
        if certificate.archived:
            return
        request = {"Store": _STORE_NAMES[StoreName.MY], "Thumbprint": identifier, "Archived": True}
        stdout = self._run("set-archived", request)
        record = _one_record("set-archived", stdout, {"Thumbprint": str, "Archived": bool})
        if record["Thumbprint"] != identifier or not record["Archived"]:
            raise WindowsStoreError(f"powershell set-archived: {key} is not archived")
        self._listing = None

    def tend_recovery(
        self, roaming_key: bytes | None, user_id: str | None, retention_ticks: int, now: int
    ) -> list[str]:
        return recovery.tend(
            self.root,
            roaming_key=roaming_key,
            user_id=user_id,
            retention_ticks=retention_ticks,
            now=now,
        )

    # --- the lock and batches ------------------------------------------------------------------
    def lock(self, timeout: float | None = 0) -> contextlib.AbstractContextManager[None]:
        return self._locked(timeout)

    @contextlib.contextmanager
    def _locked(self, timeout: float | None) -> Iterator[None]:
        path = os.path.join(self.root, ".lock")
        with exclusive_lock(path, timeout, f"Windows store of {self.root}"):
            self._lock_held, self._listed = True, {}
            try:
                yield
            finally:
                self._lock_held, self._listed = False, {}

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Writes record themselves as they go; the end of the outermost batch held under the
        lock records the times the last listing gave items added outside credroam."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._lock_held and self._listed:
                self._record_listed()

    def _record_listed(self) -> None:
        index = self._load_index()
        changed = False
        for key, entry in self._listed.items():
            candidates = index.get(key, [])
            if entry not in candidates:
                index[key] = [*candidates, entry]
                changed = True
        if changed:
            self._save_index(index)
        self._listed = {}


def _inside(folder: str, name: str) -> str:
    """``folder/name`` after checking the name cannot leave ``folder`` (recovery's check)."""
    if os.sep in name or (os.altsep and os.altsep in name) or name in ("", ".", ".."):
        raise StoreError(f"recovery name {name!r:.80} leaves {folder}")
    return os.path.join(folder, name)
