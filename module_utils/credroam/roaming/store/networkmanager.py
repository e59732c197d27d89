"""Files NetworkManager 802.1X (EAP-TLS) can use, kept in step with the file store.

NetworkManager takes a client certificate and private key as PEM or PKCS#12 paths
(``802-1x.client-cert``, ``802-1x.private-key``). This mirror writes, for every certificate of
the MY store that has its private key::

    <root>/                     0700
    <root>/<ID>.cert.pem        0600 the certificate
    <root>/<ID>.key.pem         0600 its PKCS#8 private key, PEM, not encrypted
    <root>/archive/<ID>.*       archived certificates, with their keys (kept, as in the store)
    <root>/latest.cert.pem      0600 copies of the live certificate (with key) that expires
    <root>/latest.key.pem       last: the stable path a connection profile names, so a renewal
                                needs no profile change

What protects the key: the file mode (0600 in a 0700 folder of the user's home), as in the file
store itself. A PKCS#12 passphrase would add nothing: NetworkManager must be able to read it
unattended, so it would sit in the connection profile or a keyring the same user unlocks,
beside the file it protects. Profiles set ``802-1x.private-key-password-flags 4`` (not
required). NetworkManager (root) reads the files when it connects.

The folder is a target only: nothing in it is read back into the store. A file the user
removed or changed is written again at the next ``sync_with``; names the mirror does not use
are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Hashable

from ..fsutil import atomic_write, ensure_private_dir, read_private
from . import CertificateStore, StoreError
from .file import MAX_PAYLOAD, _pem
from .mirror import Credential, MirrorReport, mirrored_credentials

__all__ = ["NetworkManagerMirror"]

_CERTIFICATE_SUFFIX = ".cert.pem"
_KEY_SUFFIX = ".key.pem"
_LATEST = "latest"


class NetworkManagerMirror:
    """PEM certificate and key files under ``root`` for NetworkManager (see module doc)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.name = f"NetworkManager folder {self.root}"

    def sync_with(self, store: CertificateStore, lock_timeout: float | None = 0) -> MirrorReport:
        """Write the store's certificates with keys under ``root``; remove the others.

        Holds ``store.lock(lock_timeout)`` as ``NssMirror.sync_with`` does; failures are in
        the report and the next call repairs them.
        """
        report = MirrorReport(self.name)
        with store.lock(lock_timeout):
            try:
                wanted = self._wanted(store)
                self._apply(wanted, report)
            except (StoreError, OSError) as exc:
                report.problems.append(f"{self.name}: {exc}")
        return report

    def change_marker(self) -> Hashable:
        """(inode, mtime) of the folders: any file added, replaced or removed changes it."""
        marker = []
        for folder in (self.root, os.path.join(self.root, "archive")):
            try:
                info = os.stat(folder)
            except FileNotFoundError:
                marker.append((folder, None))
                continue
            marker.append((folder, info.st_ino, info.st_mtime_ns))
        return tuple(marker)

    def watch_paths(self) -> list[str]:
        return []  # a target only: a change here is repaired at the next sync, not a trigger

    def _wanted(self, store: CertificateStore) -> dict[str, bytes]:
        """Relative path -> PEM content of every file the folder should hold."""
        credentials = [c for c in mirrored_credentials(store).values() if c.key is not None]
        wanted: dict[str, bytes] = {}
        for credential in credentials:
            folder = "archive" if credential.archived else ""
            pair = self._pair(store, credential)
            wanted[os.path.join(folder, credential.thumbprint + _CERTIFICATE_SUFFIX)] = pair[0]
            wanted[os.path.join(folder, credential.thumbprint + _KEY_SUFFIX)] = pair[1]
        live = [c for c in credentials if not c.archived]
        if live:
            latest = max(live, key=lambda c: (c.certificate.expires or 0, c.thumbprint))
            pair = self._pair(store, latest)
            wanted[_LATEST + _CERTIFICATE_SUFFIX], wanted[_LATEST + _KEY_SUFFIX] = pair
        return wanted

    @staticmethod
    def _pair(store: CertificateStore, credential: Credential) -> tuple[bytes, bytes]:
        assert credential.key is not None
        return (
            _pem("CERTIFICATE", store.read(credential.certificate)),
            _pem("PRIVATE KEY", store.read(credential.key)),
        )

    def _apply(self, wanted: dict[str, bytes], report: MirrorReport) -> None:
        for folder in (self.root, os.path.join(self.root, "archive")):
            ensure_private_dir(folder)
        for relative, content in sorted(wanted.items()):
            path = os.path.join(self.root, relative)
            if self._holds(path, content):
                continue
            try:
                atomic_write(path, content)
            except OSError as exc:
                report.problems.append(f"{self.name}: cannot write {path}: {exc}")
                continue
            report.written.append(relative)
        for relative in self._present():
            if relative not in wanted:
                os.unlink(os.path.join(self.root, relative))
                report.removed.append(relative)

    @staticmethod
    def _holds(path: str, content: bytes) -> bool:
        try:
            info = os.lstat(path)
            return (info.st_mode & 0o777) == 0o600 and read_private(path, MAX_PAYLOAD) == content
        except OSError:
            return False

    def _present(self) -> list[str]:
        """The files under ``root`` with names this mirror writes."""
        found = []
        for folder in ("", "archive"):
            for name in os.listdir(os.path.join(self.root, folder)):
                if name.endswith((_CERTIFICATE_SUFFIX, _KEY_SUFFIX)) and not name.startswith("."):
                    found.append(os.path.join(folder, name))
        return found
