"""The NSS shared database (``sql:$HOME/.pki/nssdb``) as a two-way mirror of the file store.

Chromium, Evolution and other NSS applications read the user's certificates and keys from
this database, and Chromium's certificate manager imports into it. So it is a target (every
live and archived certificate of the file store's MY store, with its key, is in it) and a
source (a certificate with its key imported by an application is added to the file store at
the next ``sync_with`` and so roams). NSS is driven through its own tools (Debian's
libnss3-tools): ``certutil`` lists, adds certificates without keys and deletes; ``pk12util``
imports and exports a certificate with its key as PKCS#12, which ``cryptography`` makes and
reads.

Identity. An item is its certificate's thumbprint (SHA-1 of the DER, the file store's
identifier). NSS addresses a certificate by nickname, but gives every certificate of one
subject the same nickname (a renewed certificate and the one it replaced share one), so the
mirror addresses one certificate by its PKCS#11 ``CKA_ID`` (``pkcs11:id=...``), which NSS
derives from the public key and ``_cka_id`` computes the same way. A certificate in NSS "has
its key" when ``certutil -K`` lists a key of that ``CKA_ID``.

Deletions (a two-way sync against the last mirrored state). The mirror state, a 0600 JSON
file of its own, lists each thumbprint the mirror last saw in both places. For a thumbprint:

    file store   NSS   in state   meaning                                   done
    yes          no    no         new canonically                           import into NSS
    yes          no    yes        removed in NSS by the user/application    delete from the
                                                                            store (a recovery
                                                                            copy is kept)
    no           yes   yes        removed canonically (by sync or by hand)  delete from NSS
    no           yes   no         new in NSS (only with its key)            add to the store
    yes          yes   either     in step                                   record it

Keys follow the same rule on their own: a key in NSS for a certificate the store holds without
one (one that roamed from Windows, whose keys do not reach Linux) is added to the store; a key
the state knew that the store no longer has is removed from NSS (``certutil -F -k``), the
certificate kept. A key missing from NSS while the store has it is exported again (only whole
certificates deleted in NSS are deletions).

A certificate without a key that the mirror did not write (CA certificates, other people's
certificates) is never pulled or removed. The state also records the database's identity
(``_database_identity``): a database that was removed and made again is a new database, not a
deletion of everything, so its state is forgotten and the file store is exported into it anew.

Archived certificates. NSS has no archived flag, and cannot carry one per certificate:
nicknames are per subject, and trust flags change what applications accept. An archived
certificate is kept in NSS with its key (mail encrypted to it still opens), recorded as
archived in the mirror state; applications tell it apart by its validity: credroam archives
expired certificates, and Chromium, even with a policy that auto-selects by issuer, does not
offer an expired one for TLS client authentication (tests/integration/test_app_stores.py).

Failures. A tool that fails (a locked or damaged database, a full disk, a master password the
mirror does not have) is reported in the ``MirrorReport``, naming the database and the item;
the state then records only what is really in NSS, so the next ``sync_with`` retries. A
listing that fails stops the whole sync before anything is decided, so an unreadable database
is never taken for an empty one. Private keys leave the database only inside a PKCS#12
encrypted with a random passphrase, in a 0600 file of a 0700 working folder beside the mirror
state, removed at once; they enter the file store through its own ``write`` (0600).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ...cryptocompat import (
    UnparsableInput,
    load_der_certificate,
    load_der_private_key,
    not_valid_after,
)
from ...timestamps import filetime_now, to_filetime
from ...tokens import TokenType
from ..fsutil import atomic_write, ensure_private_dir, read_private
from ..model import Item, ItemKind, StoreName
from . import CertificateStore, StoreError
from .mirror import Credential, MirrorReport, mirrored_credentials

__all__ = ["NssError", "NssMirror"]

_STATE_VERSION = 1
_MAX_STATE = 4 * 1024 * 1024
_TOOL_TIMEOUT = 120  # seconds; NSS gives up on a locked database within a few
_TRUST_LINE = re.compile(r"^(?P<nickname>\S.*?)\s+(?P<trust>[A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*$")
_KEY_LINE = re.compile(r"^<\s*\d+>\s+\S+\s+(?P<ckaid>[0-9a-f]{40})\s")
_NICKNAME_PREFIX = "credroam-"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s+([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----"
)


class NssError(StoreError):
    """An NSS tool failed; the message names the database and what was being done."""


@dataclass(frozen=True, slots=True)
class _NssCertificate:
    der: bytes
    nickname: str
    ckaid: str | None  # hex; None for a public key type whose CKA_ID this module cannot derive
    has_key: bool


def _thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def _cka_id(certificate: x509.Certificate) -> str | None:
    """The CKA_ID NSS gives a certificate and its key: SHA-1 of the public key's value."""
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        modulus = public_key.public_numbers().n
        value = modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        value = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(public_key, dsa.DSAPublicKey):
        y = public_key.public_numbers().y
        value = y.to_bytes((y.bit_length() + 7) // 8, "big")
    else:
        return None
    return hashlib.sha1(value).hexdigest()


def _cka_id_of_der(der: bytes) -> str | None:
    """``_cka_id`` of a DER certificate; None if cryptography cannot parse it.

    Such a certificate is still listed (by its thumbprint), so it is never taken for one that
    was deleted; the mirror only leaves it alone.
    """
    try:
        return _cka_id(load_der_certificate(der))
    except UnparsableInput:
        return None


def _pem_blocks(text: bytes) -> list[bytes]:
    """The DER of each PEM certificate block in ``certutil -a`` output."""
    return [base64.b64decode(body) for body in _PEM_BLOCK.findall(text)]


def _uri(ckaid: str) -> str:
    """A PKCS#11 URI naming the objects of one CKA_ID (certutil and pk12util take it as -n)."""
    return "pkcs11:id=" + "".join(f"%{ckaid[i : i + 2]}" for i in range(0, len(ckaid), 2))


def _public_der(public_key: object) -> bytes:
    """SubjectPublicKeyInfo DER, to compare public keys (key equality varies by release)."""
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _expires(certificate: x509.Certificate) -> int:
    return to_filetime(not_valid_after(certificate))


class NssMirror:
    """Keep the NSS database in ``directory`` in step with a file store (see module doc).

    ``state_path`` is the mirror state (0600; its folder is made 0700 and also holds the
    short-lived PKCS#12 working files). The database is created, without a password, if
    missing; a database with a master password is reported, not used.
    """

    def __init__(self, directory: str, state_path: str) -> None:
        self.directory = os.path.abspath(directory)
        self.state_path = os.path.abspath(state_path)
        self.name = f"NSS database sql:{self.directory}"

    # --- what the agent calls --------------------------------------------------------------
    def sync_with(self, store: CertificateStore, lock_timeout: float | None = 0) -> MirrorReport:
        """Pull what changed in NSS into ``store``, then export ``store`` into NSS.

        Holds ``store.lock(lock_timeout)`` (the sync's own lock, so call it before or after
        the directory sync, not inside it; ``fsutil.LockHeld`` when another sync holds it).
        Never raises for a failure of NSS or of the store: it is in the report, and the next
        call retries.
        """
        report = MirrorReport(self.name)
        with store.lock(lock_timeout), store.batch():
            try:
                self._sync(store, report)
            except (StoreError, OSError) as exc:
                report.problems.append(f"{self.name}: {exc}")
        return report

    def change_marker(self) -> Hashable:
        """(device, inode, size, mtime) of cert9.db and key4.db: any write changes it."""
        marker = []
        for name in ("cert9.db", "key4.db"):
            try:
                info = os.stat(os.path.join(self.directory, name))
            except FileNotFoundError:
                marker.append((name, None))
                continue
            marker.append((name, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(marker)

    def watch_paths(self) -> list[str]:
        """The folder an application writes when it imports or deletes (for ``watch``)."""
        return [self.directory]

    # --- the sync --------------------------------------------------------------------------
    def _sync(self, store: CertificateStore, report: MirrorReport) -> None:
        self._ensure_database()
        state = self._load_state()
        in_nss = self._list()
        canonical = mirrored_credentials(store)
        mirrored: dict[str, dict] = state["items"]
        try:
            self._pull(store, canonical, in_nss, mirrored, report)
            canonical = mirrored_credentials(store) if report.changed_store else canonical
            self._push(store, canonical, in_nss, mirrored, report)
        finally:
            self._save_state(mirrored)

    def _pull(
        self,
        store: CertificateStore,
        canonical: dict[str, Credential],
        in_nss: dict[str, _NssCertificate],
        mirrored: dict[str, dict],
        report: MirrorReport,
    ) -> None:
        """Apply what the user or an application did in NSS to the file store."""
        for thumbprint, entry in list(mirrored.items()):
            credential = canonical.get(thumbprint)
            if thumbprint in in_nss or credential is None:
                continue
            if credential.certificate.content_hash != entry.get("certificate_hash"):
                continue  # changed canonically since: the file store wins, exported again
            for item in (credential.key, credential.certificate):
                if item is not None:
                    store.delete(item, keep_copy=True)
            del mirrored[thumbprint]
            report.deleted.append(thumbprint)
        for thumbprint, found in in_nss.items():
            credential = canonical.get(thumbprint)
            entry = mirrored.get(thumbprint)
            if not found.has_key or (credential is not None and credential.key is not None):
                continue
            if credential is None and entry is not None:
                continue  # removed canonically: _push removes it from NSS
            if credential is not None and entry is not None and entry.get("key_hash"):
                continue  # its key was removed canonically: _push removes it from NSS
            # New in NSS, or a key imported for a certificate that roamed without one (from
            # Windows, whose keys do not roam to Linux).
            try:
                certificate_item, key_item = self._import_into(
                    store, found, credential.certificate if credential else None
                )
            except (NssError, StoreError, ValueError) as exc:
                report.problems.append(f"{self.name}: {thumbprint} not pulled: {exc}")
                continue
            mirrored[thumbprint] = self._entry(certificate_item, key_item)
            report.pulled.append(thumbprint)

    def _push(
        self,
        store: CertificateStore,
        canonical: dict[str, Credential],
        in_nss: dict[str, _NssCertificate],
        mirrored: dict[str, dict],
        report: MirrorReport,
    ) -> None:
        """Make NSS hold exactly the file store's certificates (and keys) it mirrors."""
        for thumbprint, credential in canonical.items():
            found = in_nss.get(thumbprint)
            if found is not None and found.has_key and credential.key is None:
                try:
                    self._remove_key(thumbprint, found, canonical, in_nss)
                except NssError as exc:
                    report.problems.append(f"{self.name}: key of {thumbprint} not removed: {exc}")
                    continue
                report.removed.append(thumbprint)
            missing_key = credential.key is not None and (found is None or not found.has_key)
            if found is None or missing_key:
                try:
                    self._export(store, credential)
                except (NssError, StoreError, ValueError) as exc:
                    report.problems.append(f"{self.name}: {thumbprint} not written: {exc}")
                    if found is None:
                        mirrored.pop(thumbprint, None)
                    continue
                report.written.append(thumbprint)
            mirrored[thumbprint] = self._entry(credential.certificate, credential.key)
        for thumbprint in [t for t in mirrored if t not in canonical]:
            found = in_nss.get(thumbprint)
            if found is not None:
                try:
                    self._remove(thumbprint, found, in_nss)
                except NssError as exc:
                    report.problems.append(f"{self.name}: {thumbprint} not removed: {exc}")
                    continue
                report.removed.append(thumbprint)
            del mirrored[thumbprint]

    @staticmethod
    def _entry(certificate: Item, key: Item | None) -> dict:
        return {
            "certificate_hash": certificate.content_hash,
            "key_hash": key.content_hash if key is not None else None,
            "archived": certificate.archived,
        }

    # --- NSS -> file store -----------------------------------------------------------------
    def _import_into(
        self, store: CertificateStore, found: _NssCertificate, certificate_item: Item | None
    ) -> tuple[Item, Item]:
        """Export one certificate with its key from NSS and write them to the file store.

        ``certificate_item`` is the store's copy of the certificate, if it has one: then only
        the key is written, beside it.
        """
        key_der = self._exported_key(found)
        certificate = load_der_certificate(found.der)
        thumbprint = _thumbprint(found.der)
        now = filetime_now()
        if certificate_item is None:
            certificate_item = Item(
                key=f"%{TokenType.CERTIFICATE.value}\\{thumbprint}",
                store=StoreName.MY,
                kind=ItemKind.CERTIFICATE,
                modified=now,
                content_hash=hashlib.sha256(found.der).hexdigest(),
                size=len(found.der),
                expires=_expires(certificate),
            )
            store.write(certificate_item, found.der)
        key_item = Item(
            key=f"%{TokenType.CNG_KEY.value}\\{thumbprint}",
            store=StoreName.MY,
            kind=ItemKind.KEY,
            modified=now,
            content_hash=hashlib.sha256(key_der).hexdigest(),
            size=len(key_der),
            archived=certificate_item.archived,
            expires=certificate_item.expires,
            owner=certificate_item.key,
        )
        store.write(key_item, key_der)
        return certificate_item, key_item

    def _exported_key(self, found: _NssCertificate) -> bytes:
        """The PKCS#8 DER of a certificate's private key, exported with pk12util."""
        assert found.ckaid is not None  # has_key implies a known CKA_ID
        with self._workdir() as workdir:
            password = secrets.token_urlsafe(24).encode()
            password_file = self._private_file(workdir, "password", password)
            bundle_path = os.path.join(workdir, "export.p12")
            self._run(
                ["pk12util", "-o", bundle_path, "-n", _uri(found.ckaid), "-w", password_file],
                f"exporting {_thumbprint(found.der)}",
            )
            bundle = read_private(bundle_path, _MAX_STATE)
        with warnings.catch_warnings():
            # pk12util writes BER (indefinite lengths); cryptography parses it with a warning.
            warnings.simplefilter("ignore", UserWarning)
            loaded = pkcs12.load_pkcs12(bundle, password)
        certificate = load_der_certificate(found.der)
        if loaded.key is None or _public_der(loaded.key.public_key()) != _public_der(
            certificate.public_key()
        ):
            raise ValueError("the exported PKCS#12 holds no key of this certificate")
        return loaded.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    # --- file store -> NSS -----------------------------------------------------------------
    def _export(self, store: CertificateStore, credential: Credential) -> None:
        """Import one certificate (with its key, if the store has it) into NSS."""
        der = store.read(credential.certificate)
        nickname = _NICKNAME_PREFIX + credential.thumbprint
        if credential.key is None:
            self._run(
                ["certutil", "-A", "-n", nickname, "-t", ",,"],
                f"adding {credential.thumbprint}",
                stdin=der,
            )
            return
        key = load_der_private_key(store.read(credential.key))
        certificate = load_der_certificate(der)
        password = secrets.token_urlsafe(24).encode()
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(10000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password)
        )
        bundle = pkcs12.serialize_key_and_certificates(
            nickname.encode(),
            key,
            certificate,
            None,
            encryption,  # type: ignore[arg-type]
        )
        with self._workdir() as workdir:
            password_file = self._private_file(workdir, "password", password)
            bundle_path = self._private_file(workdir, "import.p12", bundle)
            self._run(
                ["pk12util", "-i", bundle_path, "-w", password_file],
                f"importing {credential.thumbprint} with its key",
            )

    def _remove_key(
        self,
        thumbprint: str,
        found: _NssCertificate,
        canonical: dict[str, Credential],
        in_nss: dict[str, _NssCertificate],
    ) -> None:
        """Delete a certificate's key alone (removed canonically), unless another keeps it."""
        assert found.ckaid is not None
        keeping = [
            t
            for t, other in in_nss.items()
            if t != thumbprint
            and other.ckaid == found.ckaid
            and (t not in canonical or canonical[t].key is not None)
        ]
        if keeping:
            raise NssError(f"its key pair is also the key of {', '.join(keeping)}")
        self._run(["certutil", "-F", "-k", found.ckaid], f"removing the key of {thumbprint}")

    def _remove(
        self, thumbprint: str, found: _NssCertificate, in_nss: dict[str, _NssCertificate]
    ) -> None:
        """Delete one certificate, and its key unless another certificate shares the key."""
        if found.ckaid is None:
            raise NssError(f"cannot address {thumbprint} (unknown public key type)")
        sharing = [
            t for t, other in in_nss.items() if t != thumbprint and other.ckaid == found.ckaid
        ]
        if sharing:
            # One CKA_ID names both certificates: NSS tools cannot delete just one of them.
            raise NssError(f"{thumbprint} shares its key pair with {', '.join(sharing)}")
        command = "-F" if found.has_key else "-D"
        self._run(["certutil", command, "-n", _uri(found.ckaid)], f"removing {thumbprint}")

    # --- reading NSS -----------------------------------------------------------------------
    def _list(self) -> dict[str, _NssCertificate]:
        """Every certificate of the database's own token, by thumbprint."""
        listing = self._run(["certutil", "-L"], "listing certificates")
        nicknames = []
        for line in listing.decode("utf-8", "replace").splitlines():
            match = _TRUST_LINE.match(line)
            if match and match["nickname"] not in nicknames:
                nicknames.append(match["nickname"])
        keys = self._key_ids()
        found: dict[str, _NssCertificate] = {}
        for nickname in nicknames:
            if nickname.startswith("pkcs11:"):
                continue  # would be read as a URI; not a nickname the mirror can address
            pem = self._run(["certutil", "-L", "-n", nickname, "-a"], f"reading {nickname!r}")
            for der in _pem_blocks(pem):
                ckaid = _cka_id_of_der(der)
                found[_thumbprint(der)] = _NssCertificate(der, nickname, ckaid, ckaid in keys)
        return found

    def _key_ids(self) -> set[str]:
        try:
            listing = self._run(["certutil", "-K"], "listing keys")
        except NssError as exc:
            if "no keys found" in str(exc):
                return set()
            raise
        return {
            match["ckaid"]
            for line in listing.decode("utf-8", "replace").splitlines()
            if (match := _KEY_LINE.match(line.strip()))
        }

    # --- the database, the tools, the state ------------------------------------------------
    def _ensure_database(self) -> None:
        if os.path.exists(os.path.join(self.directory, "cert9.db")):
            return
        try:
            ensure_private_dir(self.directory)
        except OSError as exc:
            raise NssError(f"database folder {self.directory} unusable: {exc}") from exc
        self._run(["certutil", "-N", "--empty-password"], "creating the database")

    def _run(self, arguments: list[str], doing: str, stdin: bytes | None = None) -> bytes:
        """Run an NSS tool on this database; NssError with its message if it fails."""
        command = [arguments[0], *arguments[1:], "-d", f"sql:{self.directory}"]
        try:
            finished = subprocess.run(
                command,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=_TOOL_TIMEOUT,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NssError(f"{doing}: {arguments[0]} did not run: {exc}") from exc
        if finished.returncode != 0:
            message = (finished.stderr or finished.stdout).decode("utf-8", "replace").strip()
            raise NssError(f"{doing}: {arguments[0]} failed: {message[-400:]}")
        return finished.stdout

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[str]:
        """A fresh 0700 folder beside the state for PKCS#12 files; removed with its content."""
        parent = ensure_private_dir(os.path.dirname(self.state_path))
        workdir = tempfile.mkdtemp(prefix=".nss-", dir=parent)
        try:
            yield workdir
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _private_file(folder: str, name: str, data: bytes) -> str:
        path = os.path.join(folder, name)
        atomic_write(path, data)
        return path

    def _database_identity(self) -> str | None:
        """A digest of the global salt NSS drew when it made key4.db; None if there is none.

        It tells a database made again apart from the one the state describes: it is random
        per database and stable while the database lives (a new master password draws a new
        one, which is then also a new database to the mirror: nothing deleted, all exported
        again). Inode numbers are not enough: a removed database's are soon reused. Read with
        SQLite read-only; no NSS tool shows it.
        """
        path = os.path.join(self.directory, "key4.db")
        if not os.path.exists(path):
            return None
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            ) as connection:
                row = connection.execute(
                    "SELECT item1 FROM metaData WHERE id = 'password'"
                ).fetchone()
        except sqlite3.Error as exc:
            raise NssError(f"cannot read the identity of {path}: {exc}") from exc
        return hashlib.sha256(row[0]).hexdigest() if row and row[0] else None

    def _load_state(self) -> dict:
        """The mirror state; empty when absent, unreadable, or of another database."""
        empty = {"items": {}}
        try:
            document = json.loads(read_private(self.state_path, _MAX_STATE))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError):
            return empty  # nothing is then deleted anywhere; the store is exported again
        if (
            not isinstance(document, dict)
            or document.get("version") != _STATE_VERSION
            or document.get("database") != self.directory
            or document.get("identity") != self._database_identity()
            or not isinstance(document.get("items"), dict)
        ):
            return empty
        return {"items": {k: v for k, v in document["items"].items() if isinstance(v, dict)}}

    def _save_state(self, mirrored: dict[str, dict]) -> None:
        document = {
            "version": _STATE_VERSION,
            "database": self.directory,
            "identity": self._database_identity(),
            "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "items": dict(sorted(mirrored.items())),
        }
        ensure_private_dir(os.path.dirname(self.state_path))
        try:
            atomic_write(self.state_path, json.dumps(document, indent=1).encode() + b"\n")
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise NssError(f"mirror state {self.state_path}: disk full") from exc
            raise NssError(f"cannot record the mirror state {self.state_path}: {exc}") from exc
