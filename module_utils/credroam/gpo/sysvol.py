"""SYSVOL over SMB (smbprotocol): the GPT half of a GPO.

The only file in the core that talks SMB. Paths are built from the DC to talk to (not the
domain's DFS name, which would need DFS referrals and could land on another DC: SYSVOL is not
replicated between Samba DCs, so the files must go where the clients read them) and the
domain's DNS name: ``\\\\<dc>\\sysvol\\<domain>\\Policies\\{GUID}\\...``.

Authentication is NTLM (or Kerberos, through negotiate) with signing required and, by default,
SMB3 encryption, so GPO content is neither readable nor alterable on the wire.

NT ACLs (of folders and files alike) are read and written with SMB2 QUERY_INFO / SET_INFO of
the security info type. smbprotocol 1.17 has the request structures and smbclient's compound
transaction but no function for this info type, so :meth:`Sysvol.read_security` and
:meth:`Sysvol.write_security` put those pieces together (one CREATE + QUERY/SET + CLOSE round
trip each).
"""

from __future__ import annotations

import contextlib
import ntpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import CredroamError

try:
    import smbclient
    import smbclient.path
    import smbclient.shutil
    from smbclient._io import SMBFileTransaction, SMBRawIO
    from smbprotocol import MAX_PAYLOAD_SIZE
    from smbprotocol.exceptions import SMBException, SMBOSError, SMBResponseException
    from smbprotocol.file_info import InfoType
    from smbprotocol.open import (
        FilePipePrinterAccessMask,
        SMB2QueryInfoRequest,
        SMB2QueryInfoResponse,
        SMB2SetInfoRequest,
        SMB2SetInfoResponse,
    )

    SMB_IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # pragma: no cover - depends on the controller's Python
    SMB_IMPORT_ERROR = exc
    SMBException = SMBOSError = SMBResponseException = OSError  # type: ignore[misc,assignment]

__all__ = [
    "SmbTarget",
    "Sysvol",
    "SysvolError",
    "ntlm_username",
]


# [MS-DTYP] 2.4.7 SECURITY_INFORMATION: the parts of a descriptor read or written.
OWNER_GROUP_DACL = 0x1 | 0x2 | 0x4


class SysvolError(CredroamError):
    """An SMB operation on SYSVOL failed; the message names the server and path."""


def ntlm_username(bind_user: str | None) -> str:
    """The name to authenticate with over SMB, from an LDAP simple-bind name.

    ``user@REALM`` and ``DOMAIN\\user`` work as they are (NTLM accepts both forms); a DN cannot
    be used for NTLM, so then the caller must give the SMB user explicitly.
    """
    if not bind_user:
        raise SysvolError("no SMB user: give smb_user (or bind_user)")
    if "\\" in bind_user or ("@" in bind_user and "=" not in bind_user):
        return bind_user
    raise SysvolError(
        f"bind user {bind_user!r} is a DN, which SMB (NTLM) cannot use: give smb_user as "
        "user@REALM or DOMAIN\\user"
    )


@dataclass(frozen=True)
class SmbTarget:
    server: str
    username: str
    password: str = field(repr=False)
    domain_dns_name: str = ""
    port: int = 445
    encrypt: bool = True
    timeout: int = 30


class Sysvol:
    """A session to one DC's sysvol share, with GPO-relative file operations."""

    def __init__(self, target: SmbTarget) -> None:
        if SMB_IMPORT_ERROR is not None:
            raise SysvolError(f"the Python package smbprotocol is needed: {SMB_IMPORT_ERROR}")
        if not target.domain_dns_name:
            raise SysvolError("domain_dns_name is needed to build SYSVOL paths")
        self.target = target
        self._cache: dict = {}
        try:
            smbclient.register_session(
                target.server,
                username=target.username,
                password=target.password,
                port=target.port,
                encrypt=target.encrypt,
                connection_timeout=target.timeout,
                connection_cache=self._cache,
                require_signing=True,
            )
        except (SMBException, OSError, ValueError) as exc:
            self.close()
            raise SysvolError(
                f"cannot open an SMB session to {target.server} as {target.username}: {exc}"
            ) from exc

    # Paths ------------------------------------------------------------------------------------
    @property
    def domain_root(self) -> str:
        return f"\\\\{self.target.server}\\sysvol\\{self.target.domain_dns_name}"

    @property
    def policies_root(self) -> str:
        return f"{self.domain_root}\\Policies"

    def path(self, *parts: str) -> str:
        """``path("{GUID}", "User", "Registry.pol")`` -> full UNC path under Policies."""
        for part in parts:
            if not part or part in (".", "..") or any(c in part for c in "\\/:\x00"):
                raise SysvolError(f"refusing SYSVOL path component {part!r}")
        return ntpath.join(self.policies_root, *parts)

    def _kw(self) -> dict:
        return {"connection_cache": self._cache}

    def _fail(self, action: str, path: str, exc: Exception) -> SysvolError:
        return SysvolError(f"{action} {path} on {self.target.server} failed: {exc}")

    # Operations -------------------------------------------------------------------------------
    def read(self, *parts: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        path = self.path(*parts)
        try:
            with smbclient.open_file(path, mode="rb", **self._kw()) as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except (SMBException, OSError) as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise self._fail("reading", path, exc) from exc

    def write(self, data: bytes, *parts: str) -> None:
        path = self.path(*parts)
        try:
            with smbclient.open_file(path, mode="wb", **self._kw()) as handle:
                handle.write(data)
        except (SMBException, OSError) as exc:
            raise self._fail("writing", path, exc) from exc

    def exists(self, *parts: str) -> bool:
        path = self.path(*parts)
        try:
            return smbclient.path.exists(path, **self._kw())
        except (SMBException, OSError) as exc:
            raise self._fail("checking", path, exc) from exc

    def domain_exists(self) -> bool:
        """Whether the share holds the domain's folder (a wrong domain name or share does not)."""
        try:
            return smbclient.path.isdir(self.domain_root, **self._kw())
        except (SMBException, OSError) as exc:
            raise self._fail("checking", self.domain_root, exc) from exc

    def makedirs(self, *parts: str) -> None:
        path = self.path(*parts)
        try:
            smbclient.makedirs(path, exist_ok=True, **self._kw())
        except (SMBException, OSError) as exc:
            raise self._fail("creating folder", path, exc) from exc

    def remove_tree(self, *parts: str) -> bool:
        """Delete a folder and everything in it; False when it was not there."""
        path = self.path(*parts)
        if not self.exists(*parts):
            return False
        try:
            smbclient.shutil.rmtree(path, **self._kw())
        except (SMBException, OSError) as exc:
            raise self._fail("removing", path, exc) from exc
        return True

    def list(self, *parts: str) -> Iterator[str]:
        path = self.path(*parts)
        try:
            for entry in smbclient.scandir(path, **self._kw()):
                yield entry.name
        except (SMBException, OSError) as exc:
            raise self._fail("listing", path, exc) from exc

    def tree(self, *parts: str) -> list[tuple[str, ...]]:
        """Every file and folder beneath ``parts`` (not ``parts`` itself), as paths relative to
        the Policies folder, each folder before what it holds; [] when ``parts`` is missing."""
        path = self.path(*parts)
        found: list[tuple[str, ...]] = []
        try:
            entries = list(smbclient.scandir(path, **self._kw()))
        except FileNotFoundError:
            return found
        except (SMBException, OSError) as exc:
            if getattr(exc, "errno", None) == 2:
                return found
            raise self._fail("listing", path, exc) from exc
        for entry in sorted(entries, key=lambda e: e.name.lower()):
            child = (*parts, entry.name)
            found.append(child)
            if entry.is_dir():
                found.extend(self.tree(*child))
        return found

    def read_security(self, *parts: str) -> bytes | None:
        """Self-relative descriptor (owner, group, DACL) of a file or folder; None when it is
        missing."""
        path = self.path(*parts)
        request = SMB2QueryInfoRequest()
        request["info_type"] = InfoType.SMB2_0_INFO_SECURITY
        request["output_buffer_length"] = MAX_PAYLOAD_SIZE
        request["additional_information"] = OWNER_GROUP_DACL
        try:
            found = self._security_transaction(
                path, FilePipePrinterAccessMask.READ_CONTROL, request, SMB2QueryInfoResponse
            )
        except FileNotFoundError:
            return None
        except (SMBException, OSError) as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise self._fail("reading the ACL of", path, exc) from exc
        return found["buffer"].get_value()

    def write_security(self, descriptor: bytes, *parts: str) -> None:
        """Replace a file's or folder's owner, group and DACL with those of ``descriptor``
        (self-relative); its control bits (e.g. DACL protected) go with it."""
        path = self.path(*parts)
        request = SMB2SetInfoRequest()
        request["info_type"] = InfoType.SMB2_0_INFO_SECURITY
        request["additional_information"] = OWNER_GROUP_DACL
        request["buffer"] = descriptor
        access = (
            FilePipePrinterAccessMask.READ_CONTROL
            | FilePipePrinterAccessMask.WRITE_DAC
            | FilePipePrinterAccessMask.WRITE_OWNER
        )
        try:
            self._security_transaction(path, access, request, SMB2SetInfoResponse)
        except (SMBException, OSError) as exc:
            raise self._fail("writing the ACL of", path, exc) from exc

    def _security_transaction(self, path: str, access: int, request, response_type):
        """Open the file or folder, send ``request`` on it, close it: one compound round trip.
        (SMBRawIO opens either kind: its create options name neither a file nor a folder.)"""
        raw = SMBRawIO(path, mode="r", share_access="rwd", desired_access=access, **self._kw())
        request["file_id"] = raw.fd.file_id

        def receive(sent):
            response = response_type()
            response.unpack(raw.fd.connection.receive(sent)["data"].get_value())
            return response

        with SMBFileTransaction(raw) as transaction:
            transaction += (request, receive)
        return transaction.results[0]

    def close(self) -> None:
        # Closing must never mask the error that made the caller close.
        with contextlib.suppress(Exception):
            smbclient.reset_connection_cache(connection_cache=self._cache)

    def __enter__(self) -> Sysvol:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
