"""Time and peak memory of credroam's pure core at the policy maximum, no lab needed.

    .venv/bin/python bench/core.py [--rounds 5] [--store-rounds 1] [--certificates 1000]
                                   [--large 20] [--key-type ec|rsa]

A user at the policy maximum holds 2000 tokens: 1000 certificates (msPKIAccountCredentials)
and their 1000 sealed private keys (credroamKeyEnvelopes). Certificates are real ones made
with cryptography, signed by an RSA-2048 issuer, with the extensions an AD CS user certificate
carries (~1.0 KB DER with an EC P-256 subject key, ~1.2 KB with RSA-2048: ``--key-type``);
``--large`` of them carry a big extension so that their token is just under the 64 KB maximum
token size. Private keys are PKCS#8, drawn from a small pool (a key may serve several
certificates; generating 1000 RSA keys would only slow the set-up).

Each operation runs ``--rounds`` times for the time figures (median, min, max), then once
more under tracemalloc for its peak memory: Python allocations above what was live before it
started (memory OpenSSL allocates itself, e.g. scrypt's 128 MiB, is not seen; it is computed
in the notes). Prints a table and writes bench/out/core.json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "module_utils")]

# After sys.path: the core is importable as `credroam` (as in the tests).
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from credroam.roaming.certelement import certificate_token, parse_certificate_token, thumbprint
from credroam.roaming.directory import (
    ACCOUNT_CREDENTIALS,
    KEY_ENVELOPES,
    ROAMING_KEYS,
    decode_record,
)
from credroam.roaming.envelope import (
    DEFAULT_SCRYPT,
    new_roaming_key,
    open_private_key,
    private_key_aad,
    seal_private_key,
    unwrap_with_password,
    wrap_with_password,
)
from credroam.roaming.model import Base, BaseEntry, Item, ItemKind, Policy, StoreName
from credroam.roaming.reconcile import reconcile
from credroam.roaming.state import StateFile
from credroam.roaming.store.file import FileStore
from credroam.roaming.sync import READ_LIMITS, map_record
from credroam.timestamps import to_filetime
from credroam.tokens import (
    Token,
    TokenFlags,
    TokenType,
    decode_token,
    encode_token,
    format_dn_binary,
)

USER_DN = "CN=alice,OU=RoamingUsers,DC=lab,DC=example"
USER_GUID = uuid.UUID("6f1c9a52-0a5e-4d8b-9b1e-1d2c3b4a5f60")
MAX_TOKEN_SIZE = Policy().max_token_size
# Token = 132-byte header + store element (SHA-1 property 12 + 20, certificate record 12 + DER).
_TOKEN_OVERHEAD = 132 + 12 + 20 + 12
_LARGE_TOKEN_TARGET = MAX_TOKEN_SIZE - 200  # "near the maximum", with room for DER length bytes
_BIG_EXTENSION_OID = ObjectIdentifier("1.3.6.1.4.1.99999.1")  # private arc: opaque filler
_TEMPLATE_OID = ObjectIdentifier("1.3.6.1.4.1.311.21.7")  # szOID_CERTIFICATE_TEMPLATE


# --- realistic credentials -------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """One roamed certificate (DER) and its private key (PKCS#8 DER)."""

    der: bytes
    key: bytes

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.der)


SubjectKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES = ("rsa", "ec")


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _subject_key(key_type: str) -> SubjectKey:
    """RSA-2048 (AD CS's User template default) or EC P-256."""
    return _rsa_key() if key_type == "rsa" else ec.generate_private_key(ec.SECP256R1())


def _user_certificate(
    issuer_key: rsa.RSAPrivateKey,
    subject_key: SubjectKey,
    index: int,
    filler: int = 0,
) -> bytes:
    """A user certificate as AD CS issues one (User template), DER; ``filler`` bytes extra."""
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "LAB Issuing CA 01"),
        ]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "lab"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "RoamingUsers"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Alice Example {index}"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "alice@lab.example"),
        ]
    )
    upn = x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x11alice@lab.example")
    not_before = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuer)
        .subject_name(subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=730))
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.CLIENT_AUTH,
                    ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    ObjectIdentifier("1.3.6.1.4.1.311.10.3.4"),  # EFS
                ]
            ),
            False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@lab.example"), upn]), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://pki.lab.example/LAB-CA-01.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://pki.lab.example/LAB-CA-01.crt"),
                    )
                ]
            ),
            False,
        )
        .add_extension(
            x509.UnrecognizedExtension(_TEMPLATE_OID, bytes.fromhex("302e06262b06010401") * 5),
            False,
        )
    )
    if filler:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(_BIG_EXTENSION_OID, os.urandom(filler)), False
        )
    certificate = builder.sign(issuer_key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER)


def _large_certificate(issuer_key: rsa.RSAPrivateKey, subject_key: SubjectKey, index: int) -> bytes:
    """A certificate whose token is just under the maximum token size."""
    base = len(_user_certificate(issuer_key, subject_key, index, filler=1000))
    filler = 1000 + _LARGE_TOKEN_TARGET - _TOKEN_OVERHEAD - base
    der = _user_certificate(issuer_key, subject_key, index, filler=filler)
    assert len(der) + _TOKEN_OVERHEAD <= MAX_TOKEN_SIZE, len(der)
    return der


def make_credentials(
    count: int, large: int = 0, key_type: str = "rsa", key_pool: int = 4
) -> list[Credential]:
    """``count`` certificates with private keys; the first ``large`` have near-maximum tokens.

    Keys come from a pool of ``key_pool`` (a key may serve several certificates, as after a
    renewal with the same key).
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"key_type must be one of {KEY_TYPES}, not {key_type!r}")
    issuer_key = _rsa_key()
    pool = [_subject_key(key_type) for _ in range(min(key_pool, count) or 1)]
    pool_der = [
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for key in pool
    ]
    credentials = []
    for index in range(count):
        subject_key = pool[index % len(pool)]
        der = (
            _large_certificate(issuer_key, subject_key, index)
            if index < large
            else _user_certificate(issuer_key, subject_key, index)
        )
        credentials.append(Credential(der, pool_der[index % len(pool)]))
    return credentials


def local_items(credentials: list[Credential], modified: int) -> dict[str, tuple[Item, bytes]]:
    """Reconcile items and payloads of the credentials, as a local store lists them."""
    expires = to_filetime(datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC))
    items: dict[str, tuple[Item, bytes]] = {}
    for credential in credentials:
        cert = Item(
            key=f"%3\\{credential.thumbprint}",
            store=StoreName.MY,
            kind=ItemKind.CERTIFICATE,
            modified=modified,
            content_hash=hashlib.sha256(credential.der).hexdigest(),
            size=len(credential.der),
            expires=expires,
        )
        key = Item(
            key=f"%9\\{credential.thumbprint}",
            store=StoreName.MY,
            kind=ItemKind.KEY,
            modified=modified,
            content_hash=hashlib.sha256(credential.key).hexdigest(),
            size=len(credential.key),
            expires=expires,
            owner=cert.key,
        )
        items[cert.key] = (cert, credential.der)
        items[key.key] = (key, credential.key)
    return items


def directory_tokens(
    credentials: list[Credential], roaming_key: bytes, modified: int
) -> dict[str, list[Token]]:
    """The tokens a sync writes for the credentials, per attribute (keys sealed)."""
    certificates, keys = [], []
    for credential in credentials:
        certificates.append(certificate_token(credential.der, modified))
        token_key = f"%9\\{credential.thumbprint}"
        sealed = seal_private_key(
            roaming_key, credential.key, private_key_aad(str(USER_GUID), token_key)
        )
        keys.append(
            Token(TokenType.CNG_KEY, credential.thumbprint, modified, TokenFlags(0), sealed)
        )
    return {ACCOUNT_CREDENTIALS: certificates, KEY_ENVELOPES: keys}


def raw_entry(tokens: dict[str, list[Token]]) -> dict[str, list[bytes]]:
    """The raw attributes of the user entry as an LDAP search returns them (lower-case names)."""
    raw = {
        attribute.lower(): [format_dn_binary(encode_token(t), USER_DN).encode() for t in values]
        for attribute, values in tokens.items()
    }
    raw["objectguid"] = [USER_GUID.bytes_le]
    raw["allowedattributes"] = [KEY_ENVELOPES.encode(), ROAMING_KEYS.encode()]
    return raw


# --- measuring -------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(samples), 6),
        "min_s": round(min(samples), 6),
        "max_s": round(max(samples), 6),
    }


def measure(
    operation: Callable[[Any], object],
    rounds: int,
    setup: Callable[[], Any] = lambda: None,
) -> dict[str, Any]:
    """Time ``operation(setup())`` over ``rounds`` (set-up not timed), then its peak memory."""
    samples = []
    for _ in range(rounds):
        argument = setup()
        start = time.perf_counter()
        operation(argument)
        samples.append(time.perf_counter() - start)
    argument = setup()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        operation(argument)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return {
        **summary(samples),
        "samples_s": [round(s, 6) for s in samples],
        "peak_mib": round(peak / 2**20, 2),
    }


# --- the benchmarks --------------------------------------------------------------------------


def _base_of(items: dict[str, Item], seen: int) -> Base:
    return Base(
        entries={key: BaseEntry.of(item, seen) for key, item in items.items()},
        directory_timestamp=seen,
        last_sync=seen,
    )


def _expect(condition: bool, what: str) -> None:
    """A benchmark that measures the wrong thing is worse than none: check the outcome."""
    if not condition:
        raise SystemExit(f"benchmark set-up is wrong: {what}")


def bench_record(rows: dict, rounds: int, credentials: list[Credential], now: int) -> None:
    roaming_key = new_roaming_key()
    tokens = directory_tokens(credentials, roaming_key, now)
    raw = raw_entry(tokens)
    all_tokens = [*tokens[ACCOUNT_CREDENTIALS], *tokens[KEY_ENVELOPES]]
    count = len(all_tokens)
    record = decode_record(USER_DN, raw, READ_LIMITS)
    _expect(len(record.tokens) == count and not record.rejected, "record decodes cleanly")
    side = map_record(record, roaming_key)
    _expect(len(side.items) == count and not side.rejected, "every token maps to an item")

    rows["decode_record"] = {
        "items": count,
        "what": "directory.decode_record over the DN-Binary values of one user",
        **measure(lambda _: decode_record(USER_DN, raw, READ_LIMITS), rounds),
    }
    rows["map_record"] = {
        "items": count,
        "what": "sync.map_record: parse every certificate element, open every sealed key",
        **measure(lambda _: map_record(record, roaming_key), rounds),
    }
    rows["encode_tokens"] = {
        "items": count,
        "what": "encode_token + format_dn_binary for every token (the values a sync writes)",
        **measure(
            lambda _: [format_dn_binary(encode_token(t), USER_DN) for t in all_tokens], rounds
        ),
    }
    value_bytes = sum(
        len(v) for attr in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES) for v in raw[attr.lower()]
    )
    rows["decode_record"]["value_bytes"] = value_bytes

    # What a full sync with nothing to do spends on the CPU after its search, and what the
    # fast path saves: decode, map and reconcile against a local side and base that agree.
    local = dict(side.items)
    base = _base_of(local, now)

    def plan(_: object) -> None:
        mapped = map_record(decode_record(USER_DN, raw, READ_LIMITS), roaming_key, local)
        reconcile(local, mapped.items, base, Policy(), now)

    steady = reconcile(local, side.items, base, Policy(), now)
    _expect(steady.is_empty, "planning a user whose sides agree plans nothing")
    rows["plan_no_change"] = {
        "items": count,
        "what": "a full sync's planning: decode_record + map_record + reconcile, nothing to do",
        **measure(plan, rounds),
    }


NATIVE_FIXTURES = REPO.parent / "shared" / "fixtures" / "dsinternals-roaming-blobs.json"


def token_sizes(credentials: list[Credential]) -> dict[str, Any]:
    """Bytes per certificate and key: credroam's tokens against Windows' own (DSInternals).

    Per token: its size, the payload inside (certificate DER, private key) and the overhead;
    as stored, a token is hex text in a DN-Binary value with the user's DN (twice plus the DN).
    """
    sealed = directory_tokens(credentials, new_roaming_key(), 0)
    ours_cert = [len(encode_token(t)) for t in sealed[ACCOUNT_CREDENTIALS]]
    ours_key = [len(encode_token(t)) for t in sealed[KEY_ENVELOPES]]
    sizes: dict[str, Any] = {
        "credroam_certificate_token": round(statistics.mean(ours_cert)),
        "credroam_certificate_der": round(statistics.mean(len(c.der) for c in credentials)),
        "credroam_key_token": round(statistics.mean(ours_key)),
        "credroam_key_pkcs8": round(statistics.mean(len(c.key) for c in credentials)),
        "dn_binary_value_per_token_byte": 2,
        "dn_binary_value_fixed": len(format_dn_binary(b"", USER_DN)),
    }
    if NATIVE_FIXTURES.exists():
        native = {
            name: decode_token(bytes.fromhex(text))
            for name, text in json.loads(NATIVE_FIXTURES.read_text()).items()
        }
        certificate = native["RoamedCredential_ParseCertificate"]
        key = native["RoamedCredential_ParseCNGPrivateKey"]
        sizes["windows_certificate_token"] = len(encode_token(certificate))
        sizes["windows_certificate_der"] = len(parse_certificate_token(certificate).der)
        sizes["windows_cng_key_token"] = len(encode_token(key))
        sizes["windows_cng_key_data"] = len(key.data)
    return sizes


def bench_reconcile(rows: dict, rounds: int, credentials: list[Credential], now: int) -> None:
    earlier = now - 10_000_000 * 3600
    items = {key: item for key, (item, _) in local_items(credentials, earlier).items()}
    policy = Policy()
    base = _base_of(items, earlier)
    changed = {
        key: replace(item, modified=now - 1, content_hash=hashlib.sha256(key.encode()).hexdigest())
        for key, item in items.items()
    }
    scenarios = {
        "reconcile_steady": ("no change: local, directory and base agree", items, items, base, 0),
        "reconcile_first_use": ("first use: all upload, no base", items, {}, None, len(items)),
        "reconcile_all_changed": (
            "every item changed locally since the base: all upload",
            changed,
            items,
            base,
            len(items),
        ),
    }
    for name, (what, local, directory, old_base, uploads) in scenarios.items():
        plan = reconcile(local, directory, old_base, policy, now)
        _expect(len(plan.upload) == uploads and not plan.refused, f"{name} uploads {uploads}")
        _expect(uploads or plan.is_empty, f"{name} plans nothing")
        rows[name] = {
            "items": len(items),
            "what": f"reconcile(), {what}",
            **measure(lambda _, a=(local, directory, old_base): reconcile(*a, policy, now), rounds),
        }


def bench_envelope(rows: dict, rounds: int, credentials: list[Credential]) -> None:
    roaming_key = new_roaming_key()
    keys = [(c.key, private_key_aad(str(USER_GUID), f"%9\\{c.thumbprint}")) for c in credentials]
    sealed = [(seal_private_key(roaming_key, key, aad), aad) for key, aad in keys]
    rows["seal_keys"] = {
        "items": len(keys),
        "what": "envelope.seal_private_key (AES-256-GCM) of every private key",
        **measure(lambda _: [seal_private_key(roaming_key, k, a) for k, a in keys], rounds),
    }
    rows["open_keys"] = {
        "items": len(keys),
        "what": "envelope.open_private_key of every sealed key",
        **measure(lambda _: [open_private_key(roaming_key, s, a) for s, a in sealed], rounds),
    }
    password, user_id = "Alice-Lab-Pass1!", str(USER_GUID)
    record = wrap_with_password(roaming_key, password, user_id=user_id)
    cost = f"scrypt n=2^{DEFAULT_SCRYPT.log2_n}, r={DEFAULT_SCRYPT.r}, p={DEFAULT_SCRYPT.p}"
    rows["scrypt_wrap"] = {
        "items": 1,
        "what": f"envelope.wrap_with_password at the default {cost} (password change, rewrap)",
        **measure(lambda _: wrap_with_password(roaming_key, password, user_id=user_id), rounds),
    }
    rows["scrypt_unwrap"] = {
        "items": 1,
        "what": f"envelope.unwrap_with_password at the default {cost}: once per logon",
        **measure(lambda _: unwrap_with_password(record, password, user_id=user_id), rounds),
    }


def bench_file_store(rows: dict, rounds: int, credentials: list[Credential], now: int) -> None:
    entries = list(local_items(credentials, now).values())
    entries.sort(key=lambda entry: entry[0].kind is ItemKind.KEY)  # owners first
    with tempfile.TemporaryDirectory(prefix="credroam-bench-") as scratch:
        stores = iter(range(rounds + 2))

        def empty_store() -> FileStore:
            return FileStore(os.path.join(scratch, f"write-{next(stores)}"))

        def write_all(store: FileStore) -> None:
            with store.lock(), store.batch():  # as sync writes: one batch under the lock
                for item, payload in entries:
                    store.write(item, payload)

        rows["filestore_write"] = {
            "items": len(entries),
            "what": "FileStore.write of every item into an empty store in one batch (PEM, fsync)",
            **measure(write_all, rounds, setup=empty_store),
        }
        full = FileStore(os.path.join(scratch, "write-0"))
        listed = full.items()
        _expect(len(listed) == len(entries) and not full.problems, "the store lists every item")
        rows["filestore_list"] = {
            "items": len(entries),
            "what": "FileStore.items of a full store (read and hash every file, none parsed)",
            **measure(lambda _: full.items(), rounds),
        }
        os.rename(os.path.join(full.root, "index.json"), os.path.join(scratch, "index.json"))
        rows["filestore_list_new"] = {
            "items": len(entries),
            "what": "FileStore.items of the same files unrecorded (each parsed and checked)",
            **measure(lambda _: full.items(), rounds),
        }
        os.rename(os.path.join(scratch, "index.json"), os.path.join(full.root, "index.json"))
        base = _base_of(listed, now)
        state = StateFile(os.path.join(scratch, "state.json"))
        rows["state_save"] = {
            "items": len(base.entries),
            "what": "StateFile.save of the base after a sync (JSON, fsync)",
            **measure(lambda _: state.save(base), rounds),
        }
        rows["state_load"] = {
            "items": len(base.entries),
            "what": "StateFile.load of that base (checked field by field)",
            **measure(lambda _: state.load(), rounds),
        }


# --- output ----------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(rows: dict[str, dict]) -> str:
    lines = [
        f"{'operation':<24}{'items':>6}  {'median':>10}{'min':>10}{'max':>10}"
        f"{'per item':>11}{'peak MiB':>10}"
    ]
    for name, row in rows.items():
        per_item = row["median_s"] / row["items"]
        lines.append(
            f"{name:<24}{row['items']:>6}  {_duration(row['median_s']):>10}"
            f"{_duration(row['min_s']):>10}{_duration(row['max_s']):>10}"
            f"{_duration(per_item):>11}{row['peak_mib']:>10.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--certificates", type=int, default=1000, help="certificates (each with a key)"
    )
    parser.add_argument("--large", type=int, default=20, help="of which near 64 KB tokens")
    parser.add_argument(
        "--key-type",
        choices=KEY_TYPES,
        default="ec",
        help="subject keys: ec (P-256) or rsa (2048)",
    )
    parser.add_argument(
        "--store-rounds",
        type=int,
        default=1,
        help="rounds of the FileStore and state file figures (disk-bound, slower)",
    )
    args = parser.parse_args()
    if not 0 <= args.large <= args.certificates:
        parser.error("--large must be between 0 and --certificates")

    start = time.perf_counter()
    credentials = make_credentials(args.certificates, args.large, args.key_type)
    set_up_s = time.perf_counter() - start
    now = to_filetime(datetime.datetime.now(datetime.UTC))
    rows: dict[str, dict] = {}
    bench_record(rows, args.rounds, credentials, now)
    bench_reconcile(rows, args.rounds, credentials, now)
    bench_envelope(rows, args.rounds, credentials)
    bench_file_store(rows, args.store_rounds, credentials, now)

    der_sizes = [len(c.der) for c in credentials]
    result = {
        "rounds": args.rounds,
        "certificates": args.certificates,
        "tokens": 2 * args.certificates,
        "large_certificates": args.large,
        "key_type": args.key_type,
        "store_rounds": args.store_rounds,
        "certificate_der_bytes": {
            "median": statistics.median(der_sizes),
            "min": min(der_sizes),
            "max": max(der_sizes),
        },
        "private_key_der_bytes": len(credentials[0].key),
        "scrypt": {
            "log2_n": DEFAULT_SCRYPT.log2_n,
            "r": DEFAULT_SCRYPT.r,
            "p": DEFAULT_SCRYPT.p,
            "memory_mib": DEFAULT_SCRYPT.memory / 2**20,
        },
        "set_up_s": round(set_up_s, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "operations": rows,
        "token_sizes": token_sizes([c for c in credentials if len(c.der) < 10_000]),
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(result, indent=2) + "\n")
    sizes = result["certificate_der_bytes"]
    print(
        f"{args.certificates} certificates + {args.certificates} keys = {2 * args.certificates} "
        f"tokens; certificate DER median {sizes['median']} B (max {sizes['max']} B, "
        f"{args.large} near the 64 KB token limit); {args.rounds} rounds"
    )
    print(table(rows))
    print("bytes per token:", json.dumps(result["token_sizes"]))
    print(
        f"scrypt (n=2^{DEFAULT_SCRYPT.log2_n}, r={DEFAULT_SCRYPT.r}, p={DEFAULT_SCRYPT.p}) also "
        f"needs {result['scrypt']['memory_mib']:.0f} MiB inside OpenSSL, not seen by tracemalloc"
    )
    print(f"written to {out / 'core.json'}")


if __name__ == "__main__":
    main()
