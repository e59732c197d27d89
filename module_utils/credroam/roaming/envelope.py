"""Key envelope: private keys never leave a host in plaintext.

- Each user has a random 256-bit *roaming key*. Every private key is sealed with it
  (AES-256-GCM, random 96-bit nonce) before it is written to the directory, with the token's
  identity (user and token key) as associated data, so a sealed blob moved to another user or
  another token does not open.
- The roaming key itself is stored *wrapped*: by a key derived from the user's password (scrypt,
  parameters kept in the record) and, where the organisation configures one, by a recovery RSA
  public key (RSA-OAEP with SHA-256; chosen over X25519 because organisation recovery keys
  usually live in existing RSA PKI and HSMs). A lost password therefore loses nothing.
- On a host the unwrapped key lives only in a 0600 cache file owned by the user.

All records are versioned: 4-byte magic, 1-byte version. Each record also carries an 8-byte
fingerprint of its associated data so that "wrong user / wrong token" is told apart from
"tampered"; the fingerprint is itself authenticated (any change still fails). The functions are
pure: they return new bytes and never overwrite their inputs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import CredroamError
from .fsutil import UnsafePath, read_private

__all__ = [
    "DEFAULT_SCRYPT",
    "ROAMING_KEY_SIZE",
    "EnvelopeError",
    "KeyCacheError",
    "ScryptParams",
    "TamperedEnvelope",
    "UnsupportedEnvelope",
    "WrongPassword",
    "WrongRecoveryKey",
    "WrongUser",
    "new_roaming_key",
    "open_private_key",
    "password_record_cost",
    "private_key_aad",
    "public_key_id",
    "read_key_cache",
    "recovery_copy_aad",
    "recovery_key_id",
    "seal_private_key",
    "unwrap_with_password",
    "unwrap_with_recovery_key",
    "wrap_with_password",
    "wrap_with_recovery_key",
    "write_key_cache",
]

ROAMING_KEY_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
_FINGERPRINT_SIZE = 8
_SALT_SIZE = 16
_VERSION = 1
_MIN_RSA_BITS = 2048
# A password record comes from the directory: cap its cost so a crafted record cannot make a
# host allocate gigabytes or spin for minutes.
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_SCRYPT_P = 4

_SEALED_MAGIC = b"CRSK"  # sealed private key
_PASSWORD_MAGIC = b"CRPW"  # roaming key wrapped by password
_RECOVERY_MAGIC = b"CRRK"  # roaming key wrapped by recovery public key
_CACHE_MAGIC = b"CRKC"  # local cache of the unwrapped roaming key

_SEALED_HEADER = struct.Struct("<4sB8s12s")  # magic, version, AAD fingerprint, nonce
_PASSWORD_HEADER = struct.Struct("<4sBBBB16s8s12s")  # ..., log2 n, r, p, salt, user fp, nonce
_PASSWORD_RECORD_SIZE = _PASSWORD_HEADER.size + ROAMING_KEY_SIZE + _TAG_SIZE
_RECOVERY_HEADER = struct.Struct("<4sB8s32sH")  # magic, version, user fp, key id, ct length
_CACHE_RECORD = struct.Struct("<4sB32s")


class EnvelopeError(CredroamError, ValueError):
    """Base of every envelope failure."""


class WrongPassword(EnvelopeError):
    """The password (or the recovery key's PEM password) does not open the record."""


class TamperedEnvelope(EnvelopeError):
    """Authentication failed: the record was modified or truncated."""


class WrongUser(EnvelopeError):
    """The record belongs to another user or token (associated data differs)."""


class UnsupportedEnvelope(EnvelopeError):
    """Not a credroam record of this kind, or a version this code does not read."""


class WrongRecoveryKey(EnvelopeError):
    """The record was wrapped for a different recovery public key."""


class KeyCacheError(EnvelopeError):
    """The local key cache is unsafe (permissions, owner, file type) or malformed."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost: n = 2**log2_n, block size r, parallelism p.

    The default is OWASP's minimum for scrypt (n = 2^17, r = 8, p = 1): 128 MiB (128 * r * n
    bytes) and about a second of one core per derivation, once per logon. Memory is what makes
    scrypt costly to guess on, so the equal-time n = 2^15, p = 3 (32 MiB) was not chosen.
    cryptography gives OpenSSL a memory limit above that on every supported release (OpenSSL's
    own default of 32 MiB would refuse it). Records carry their parameters: older, cheaper
    records stay readable and are rewrapped at the default at the next logon (roamingkey).
    """

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log2_n <= 63 and 1 <= self.r <= 255 and 1 <= self.p <= _MAX_SCRYPT_P):
            raise UnsupportedEnvelope(f"scrypt parameters out of range: {self}")
        if self.memory > _MAX_SCRYPT_MEMORY:
            raise UnsupportedEnvelope(
                f"scrypt parameters {self} need more than {_MAX_SCRYPT_MEMORY >> 20} MiB"
            )

    @property
    def memory(self) -> int:
        """Bytes of scrypt's large array (128 * r * n)."""
        return 128 * self.r * (1 << self.log2_n)

    def is_weaker_than(self, other: ScryptParams) -> bool:
        """Cheaper than ``other`` in memory or in work (n * r * p): a guess costs less."""
        work = (1 << self.log2_n) * self.r * self.p
        other_work = (1 << other.log2_n) * other.r * other.p
        return self.memory < other.memory or work < other_work


DEFAULT_SCRYPT = ScryptParams()


def new_roaming_key() -> bytes:
    """A fresh random per-user roaming key."""
    return secrets.token_bytes(ROAMING_KEY_SIZE)


def private_key_aad(user_id: str, token_key: str) -> bytes:
    """Associated data binding a sealed key to one user (e.g. objectGUID) and one token key."""
    if not user_id or not token_key or "\0" in user_id or "\0" in token_key:
        raise EnvelopeError("user id and token key must be non-empty and free of NUL")
    return b"credroam-private-key\0" + user_id.encode() + b"\0" + token_key.encode()


def recovery_copy_aad(user_id: str, name: str) -> bytes:
    """Associated data binding a sealed recovery copy to one user and one item file ``name``.

    Another context than ``private_key_aad``: a recovery copy is never a directory value.
    """
    if not user_id or not name or "\0" in user_id or "\0" in name:
        raise EnvelopeError("user id and copy name must be non-empty and free of NUL")
    return b"credroam-recovery-copy\0" + user_id.encode() + b"\0" + name.encode()


def _check_roaming_key(roaming_key: bytes) -> None:
    if not isinstance(roaming_key, bytes) or len(roaming_key) != ROAMING_KEY_SIZE:
        raise EnvelopeError(f"a roaming key is {ROAMING_KEY_SIZE} bytes")


def _fingerprint(context: bytes, value: bytes) -> bytes:
    return hashlib.sha256(context + b"\0" + value).digest()[:_FINGERPRINT_SIZE]


def _user_bytes(user_id: str | bytes) -> bytes:
    raw = user_id.encode() if isinstance(user_id, str) else bytes(user_id)
    if not raw:
        raise EnvelopeError("user_id must not be empty")
    return raw


def _check_header(record: bytes, expected_magic: bytes, what: str) -> None:
    """Magic and version; a record too short to hold them is not one of ours either."""
    magic = bytes(record[:4])
    if magic != expected_magic:
        raise UnsupportedEnvelope(f"not a {what} (magic {magic!r}, expected {expected_magic!r})")
    version = record[4] if len(record) > 4 else None
    if version != _VERSION:
        raise UnsupportedEnvelope(f"{what} version {version} is not supported (only {_VERSION})")


def _check_fingerprint(stored: bytes, expected: bytes, what: str) -> None:
    if not secrets.compare_digest(stored, expected):
        raise WrongUser(f"{what} belongs to another user or token")


# --- sealed private keys --------------------------------------------------------------------


def seal_private_key(roaming_key: bytes, key_pem_or_der: bytes, aad: bytes) -> bytes:
    """Encrypt a private key (PEM or DER, opaque here) under the roaming key, bound to ``aad``."""
    _check_roaming_key(roaming_key)
    if not aad:
        raise EnvelopeError("aad must identify the user and token; it may not be empty")
    header = _SEALED_HEADER.pack(
        _SEALED_MAGIC, _VERSION, _fingerprint(_SEALED_MAGIC, aad), os.urandom(_NONCE_SIZE)
    )
    nonce = header[-_NONCE_SIZE:]
    ciphertext = AESGCM(roaming_key).encrypt(nonce, bytes(key_pem_or_der), header + aad)
    return header + ciphertext


def open_private_key(roaming_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt a sealed private key. Raises UnsupportedEnvelope, WrongUser or TamperedEnvelope."""
    _check_roaming_key(roaming_key)
    _check_header(sealed, _SEALED_MAGIC, "sealed private key")
    if len(sealed) < _SEALED_HEADER.size + _TAG_SIZE:
        raise TamperedEnvelope(f"sealed private key truncated to {len(sealed)} bytes")
    _, _, fingerprint, nonce = _SEALED_HEADER.unpack_from(sealed)
    _check_fingerprint(fingerprint, _fingerprint(_SEALED_MAGIC, aad), "sealed private key")
    header = sealed[: _SEALED_HEADER.size]
    try:
        return AESGCM(roaming_key).decrypt(nonce, sealed[_SEALED_HEADER.size :], header + aad)
    except InvalidTag:
        raise TamperedEnvelope(
            "sealed private key failed authentication (modified, or another roaming key)"
        ) from None


# --- roaming key wrapped by password --------------------------------------------------------


def _password_bytes(password: str | bytes) -> bytes:
    if isinstance(password, str):
        # NFC so that the same password typed on different systems derives the same key.
        return unicodedata.normalize("NFC", password).encode()
    return bytes(password)


def _derive(password: str | bytes, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(_password_bytes(password))


def wrap_with_password(
    roaming_key: bytes,
    password: str | bytes,
    *,
    user_id: str | bytes,
    scrypt_params: ScryptParams = DEFAULT_SCRYPT,
) -> bytes:
    """Wrap the roaming key with a scrypt-derived key; AES-GCM with the user id as AAD.

    ``scrypt_params`` exists so tests can use a cheap setting; production keeps the default.
    """
    _check_roaming_key(roaming_key)
    if not password:
        raise EnvelopeError("password must not be empty")
    user = _user_bytes(user_id)
    salt = os.urandom(_SALT_SIZE)
    nonce = os.urandom(_NONCE_SIZE)
    header = _PASSWORD_HEADER.pack(
        _PASSWORD_MAGIC,
        _VERSION,
        scrypt_params.log2_n,
        scrypt_params.r,
        scrypt_params.p,
        salt,
        _fingerprint(_PASSWORD_MAGIC, user),
        nonce,
    )
    ciphertext = AESGCM(_derive(password, salt, scrypt_params)).encrypt(
        nonce, roaming_key, header + user
    )
    return header + ciphertext


def _parse_password_record(record: bytes) -> tuple[bytes, ScryptParams, bytes, bytes, bytes]:
    """(header, scrypt params, salt, user fingerprint, ciphertext) of a password record."""
    _check_header(record, _PASSWORD_MAGIC, "password-wrapped roaming key record")
    if len(record) != _PASSWORD_RECORD_SIZE:
        raise TamperedEnvelope(
            f"password record is {len(record)} bytes, expected {_PASSWORD_RECORD_SIZE}"
        )
    _, _, log2_n, r, p, salt, fingerprint, _ = _PASSWORD_HEADER.unpack_from(record)
    params = ScryptParams(log2_n=log2_n, r=r, p=p)
    return (
        record[: _PASSWORD_HEADER.size],
        params,
        salt,
        fingerprint,
        record[_PASSWORD_HEADER.size :],
    )


def password_record_cost(record: bytes) -> ScryptParams:
    """The scrypt parameters a password record was made with (read without the password)."""
    return _parse_password_record(record)[1]


def unwrap_with_password(record: bytes, password: str | bytes, *, user_id: str | bytes) -> bytes:
    """The roaming key from a password record. Raises WrongPassword, WrongUser, ..."""
    header, params, salt, fingerprint, ciphertext = _parse_password_record(record)
    user = _user_bytes(user_id)
    _check_fingerprint(fingerprint, _fingerprint(_PASSWORD_MAGIC, user), "password record")
    nonce = header[-_NONCE_SIZE:]
    try:
        return AESGCM(_derive(password, salt, params)).decrypt(nonce, ciphertext, header + user)
    except InvalidTag:
        # GCM cannot tell a wrong password from a modified record; the password is the
        # likelier cause, and the message says both.
        raise WrongPassword("wrong password (or the password record was modified)") from None


# --- roaming key wrapped by recovery public key ---------------------------------------------


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
    )


def _rsa_public_key(recovery_public_key_pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(recovery_public_key_pem)
    except Exception as exc:  # ValueError, UnsupportedAlgorithm, ... by release
        raise EnvelopeError(f"recovery public key is not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise EnvelopeError(f"recovery key must be RSA, not {type(key).__name__}")
    if key.key_size < _MIN_RSA_BITS:
        raise EnvelopeError(f"recovery key has {key.key_size} bits, at least 2048 required")
    return key


def _key_id(public_key: rsa.RSAPublicKey) -> bytes:
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def public_key_id(public_key: bytes | rsa.RSAPublicKey) -> str:
    """Hex SHA-256 of a recovery key's SubjectPublicKeyInfo (PEM or loaded): the id its records
    carry (``recovery_key_id``). Raises EnvelopeError for a PEM that is not a usable RSA key."""
    loaded = _rsa_public_key(public_key) if isinstance(public_key, bytes) else public_key
    return _key_id(loaded).hex()


def wrap_with_recovery_key(
    roaming_key: bytes, recovery_public_key_pem: bytes, *, user_id: str | bytes
) -> bytes:
    """Wrap the roaming key for the organisation's recovery RSA key (OAEP-SHA256).

    The OAEP label binds the record header and the user id.
    """
    _check_roaming_key(roaming_key)
    public_key = _rsa_public_key(recovery_public_key_pem)
    user = _user_bytes(user_id)
    ciphertext_size = public_key.key_size // 8
    header = _RECOVERY_HEADER.pack(
        _RECOVERY_MAGIC,
        _VERSION,
        _fingerprint(_RECOVERY_MAGIC, user),
        _key_id(public_key),
        ciphertext_size,
    )
    ciphertext = public_key.encrypt(roaming_key, _oaep(header + user))
    return header + ciphertext


def recovery_key_id(record: bytes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo the record was wrapped for (for key rotation)."""
    return _parse_recovery_record(record)[2].hex()


def _parse_recovery_record(record: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    _check_header(record, _RECOVERY_MAGIC, "recovery-wrapped roaming key record")
    if len(record) < _RECOVERY_HEADER.size:
        raise TamperedEnvelope(f"recovery record truncated to {len(record)} bytes")
    _, _, fingerprint, key_id, size = _RECOVERY_HEADER.unpack_from(record)
    ciphertext = record[_RECOVERY_HEADER.size :]
    if len(ciphertext) != size:
        raise TamperedEnvelope(
            f"recovery record declares {size} ciphertext bytes, holds {len(ciphertext)}"
        )
    return record[: _RECOVERY_HEADER.size], fingerprint, key_id, ciphertext


def load_recovery_private_key(
    private_key_pem: bytes | rsa.RSAPrivateKey, password: bytes | None
) -> rsa.RSAPrivateKey:
    if isinstance(private_key_pem, rsa.RSAPrivateKey):
        return private_key_pem
    try:
        private_key = serialization.load_pem_private_key(private_key_pem, password=password)
    except TypeError as exc:  # missing password, or a password for an unencrypted key
        raise WrongPassword(f"recovery private key: {exc}") from None
    except ValueError as exc:  # wrong password or not a key; cryptography does not tell apart
        raise WrongPassword(f"cannot load the recovery private key: {exc}") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise EnvelopeError(f"recovery key must be RSA, not {type(private_key).__name__}")
    return private_key


def unwrap_with_recovery_key(
    record: bytes,
    private_key_pem: bytes | rsa.RSAPrivateKey,
    password: bytes | None = None,
    *,
    user_id: str | bytes,
) -> bytes:
    """The roaming key from a recovery record, with the recovery private key.

    ``private_key_pem`` is the PEM (``password`` opens an encrypted one) or an already loaded
    RSA key, so that recovering many users loads the key once. Raises WrongPassword (PEM
    password), WrongRecoveryKey, WrongUser, TamperedEnvelope or UnsupportedEnvelope.
    """
    header, fingerprint, key_id, ciphertext = _parse_recovery_record(record)
    user = _user_bytes(user_id)
    private_key = load_recovery_private_key(private_key_pem, password)
    if not secrets.compare_digest(key_id, _key_id(private_key.public_key())):
        raise WrongRecoveryKey(
            f"record was wrapped for recovery key {key_id.hex()[:16]}..., not this one"
        )
    _check_fingerprint(fingerprint, _fingerprint(_RECOVERY_MAGIC, user), "recovery record")
    try:
        roaming_key = private_key.decrypt(ciphertext, _oaep(header + user))
    except ValueError:
        raise TamperedEnvelope("recovery record failed to decrypt (modified)") from None
    if len(roaming_key) != ROAMING_KEY_SIZE:
        raise TamperedEnvelope("recovery record holds a key of the wrong size")
    return roaming_key


# --- local cache of the unwrapped key -------------------------------------------------------


def write_key_cache(path: str | os.PathLike[str], roaming_key: bytes) -> None:
    """Write the roaming key to ``path`` atomically, mode 0600.

    A temporary file is created with O_CREAT|O_EXCL (mode 0600 from the start) in the same
    directory, written and fsynced, then renamed over ``path``; the directory is fsynced so
    the rename survives a crash. A reader never sees a partial file.
    """
    _check_roaming_key(roaming_key)
    target = Path(path)
    directory = target.parent
    temporary = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
            os.write(fd, _CACHE_RECORD.pack(_CACHE_MAGIC, _VERSION, roaming_key))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_key_cache(path: str | os.PathLike[str]) -> bytes:
    """Read the cached roaming key. FileNotFoundError when there is none.

    Refused with KeyCacheError: a symlink, a non-regular file (a FIFO does not block the read),
    a file not owned by the current user, or one any group/other permission bit is set on.
    Checks use fstat on the opened file, so the file checked is the file read.
    """

    def check_owner_and_mode(info: os.stat_result) -> None:
        if info.st_uid != os.geteuid():
            raise KeyCacheError(
                f"key cache {path} is owned by uid {info.st_uid}, not by this user "
                f"({os.geteuid()}); refusing it"
            )
        if info.st_mode & 0o077:
            raise KeyCacheError(
                f"key cache {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must not be "
                "readable or writable by group or others (expected 0600)"
            )

    try:
        content = read_private(os.fspath(path), _CACHE_RECORD.size, check_owner_and_mode)
    except UnsafePath as exc:
        raise KeyCacheError(f"key cache {path} refused: {exc.strerror}") from None
    if len(content) != _CACHE_RECORD.size:
        raise KeyCacheError(f"key cache {path} is {len(content)} bytes, not a credroam key cache")
    magic, version, roaming_key = _CACHE_RECORD.unpack(content)
    if magic != _CACHE_MAGIC or version != _VERSION:
        raise KeyCacheError(f"key cache {path} has an unknown format")
    return roaming_key
