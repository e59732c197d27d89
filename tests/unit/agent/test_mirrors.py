"""The agent keeps the mirrors the config's ``stores`` name in step with the file store.

NSS (Debian's real certutil and pk12util on the test's database) is a source before each
directory sync and a target after it; a mirror that cannot be written is event 1002, the file
store keeps everything, and the next sync converges the mirror. Every sync hands the mirrors'
change markers to the sync's fast path, and a sync a store watch asked for is a full one.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import credroam_agent
from credroam.roaming.directory import KEY_ENVELOPES
from credroam.tokens import (
    Token,
    TokenFlags,
    TokenType,
    decode_token,
    encode_token,
    format_dn_binary,
    parse_dn_binary,
)
from credroam_agent import operations
from tests.nss_oracle import ec_key_id, nss_certificates, nss_key_ids, thumbprint
from tests.unit.agent.agent_fixtures import (
    PASSWORD,
    certificate_and_key,
    install,
    make_host,
)
from tests.unit.test_sync import USER_DN

pytestmark = pytest.mark.skipif(
    shutil.which("certutil") is None or shutil.which("pk12util") is None,
    reason="needs certutil and pk12util (Debian's libnss3-tools)",
)
WITH_NSS = ("file", "nss")


@pytest.fixture
def host(tmp_path, directory, monkeypatch):
    made = make_host(tmp_path / "host-a", directory, monkeypatch)
    made.stores = WITH_NSS
    return made


@pytest.fixture
def other_host(tmp_path, directory, monkeypatch):
    made = make_host(tmp_path / "host-b", directory, monkeypatch)
    made.stores = WITH_NSS
    return made


def events(err: str) -> list[int]:
    return [
        int(line.split("event=", 1)[1].split()[0]) for line in err.splitlines() if "event=" in line
    ]


def _nss(tool: str, *arguments: str, db: Path) -> None:
    subprocess.run([tool, *arguments, "-d", f"sql:{db}"], check=True, capture_output=True)


def _import_with_pk12util(db: Path, tmp_path: Path) -> bytes:
    """A certificate and key imported as Chromium's certificate manager does; the DER."""
    certificate_pem, key_pem = certificate_and_key("imported into NSS")
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    bundle = pkcs12.serialize_key_and_certificates(
        b"alice",
        key,
        certificate,
        None,
        serialization.BestAvailableEncryption(b"pw"),  # type: ignore[arg-type]
    )
    path = tmp_path / "import.p12"
    path.write_bytes(bundle)
    if not (db / "cert9.db").exists():
        db.mkdir(parents=True, exist_ok=True)
        _nss("certutil", "-N", "--empty-password", db=db)
    _nss("pk12util", "-i", str(path), "-W", "pw", db=db)
    return certificate.public_bytes(serialization.Encoding.DER)


def test_an_import_into_nss_roams_at_login_and_reaches_the_other_hosts_nss(
    host, other_host, directory, tmp_path, capsys
):
    der = _import_with_pk12util(host.nssdb, tmp_path)
    thumb = thumbprint(der)

    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)

    assert (code, events(err)) == (0, [1]), err
    assert "2 uploaded" in err  # pulled from NSS before the directory sync: it roams in it
    assert (host.store / "MY" / f"{thumb}.key.pem").exists()
    code, _, err = other_host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert (code, events(err)) == (0, [1]), err
    assert thumb in nss_certificates(other_host.nssdb)
    assert ec_key_id(der) in nss_key_ids(other_host.nssdb)

    # Deleted in one host's NSS: gone from the store, the directory, and the other's NSS.
    directory.kerberos = True  # background syncs bind with the user's ticket
    _nss("certutil", "-D", "-n", f"pkcs11:id={_percent(ec_key_id(der))}", db=host.nssdb)
    code, _, err = host.run("sync", capsys=capsys)
    assert code == 0, err
    assert "2 tombstoned" in err
    code, _, err = other_host.run("sync", capsys=capsys)
    assert code == 0, err
    assert thumb not in nss_certificates(other_host.nssdb)
    assert ec_key_id(der) not in nss_key_ids(other_host.nssdb)
    assert not list((other_host.store / "MY").glob(f"{thumb}.*"))


def _percent(hex_id: str) -> str:
    return "".join(f"%{hex_id[i : i + 2]}" for i in range(0, len(hex_id), 2))


def test_a_locked_nss_database_is_event_1002_keeps_the_store_and_is_retried(
    host, directory, capsys
):
    host.run("login", stdin=PASSWORD.encode(), capsys=capsys)  # the database exists
    certificate_pem, key_pem = certificate_and_key()
    thumb = install(host.store, certificate_pem, key_pem)
    # A writer holding SQLite's reserved lock, as a busy application does: NSS reads, but
    # cannot write, and gives up after its own short retry.
    holder = sqlite3.connect(str(host.nssdb / "key4.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    directory.kerberos = True  # background syncs bind with the user's ticket

    assert code == 1
    assert 1002 in events(err) and 1 in events(err), err
    problems = [line for line in err.splitlines() if "event=1002" in line]  # before and after
    assert problems and all(str(host.nssdb) in line for line in problems)
    assert "retried at the next sync" in problems[-1]
    assert (host.store / "MY" / f"{thumb}.key.pem").read_bytes() == key_pem
    assert len(directory.values[KEY_ENVELOPES]) == 1  # the directory sync went ahead
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    assert ec_key_id(der) not in nss_key_ids(host.nssdb)

    code, _, err = host.run("sync", capsys=capsys)

    assert (code, events(err)) == (0, [1]), err
    assert thumb in nss_certificates(host.nssdb) and ec_key_id(der) in nss_key_ids(host.nssdb)


def test_every_sync_hands_the_mirrors_markers_and_a_store_watch_forces_a_full_one(
    host, directory, monkeypatch, capsys
):
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    directory.kerberos = True  # watch's syncs bind with the user's ticket
    seen: list[dict] = []
    real_sync_user = operations.sync_user

    def sync_user(*args, **kwargs):
        seen.append(kwargs)
        return real_sync_user(*args, **kwargs)

    watched = {}

    def run(sync_once, *, watch_paths, policy_version, stop):
        watched["paths"] = watch_paths
        watched["codes"] = [sync_once("start"), sync_once("store"), sync_once("lock")]

    fake = types.SimpleNamespace(run=run, STORE="store")
    monkeypatch.setitem(sys.modules, "credroam_agent.triggers", fake)
    monkeypatch.setattr(credroam_agent, "triggers", fake, raising=False)
    monkeypatch.setattr(operations, "sync_user", sync_user)

    code, _, err = host.run("watch", capsys=capsys)

    assert code == 0 and watched["codes"] == [0, 0, 0], err
    assert str(host.nssdb) in watched["paths"]  # an application's import wakes the watch
    assert [kwargs["force_full"] for kwargs in seen] == [False, True, False]
    for kwargs in seen:
        (marker,) = kwargs["local_markers"]
        assert marker.__self__.directory == str(host.nssdb)


def test_a_key_value_nobody_can_open_is_reported_as_held(host, directory, capsys):
    """``SyncReport.warnings`` become events: the key is left alone on both sides (1012)."""
    host.stores = ("file",)
    install(host.store, *certificate_and_key())
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    directory.kerberos = True
    (value,) = directory.values[KEY_ENVELOPES]
    token = decode_token(parse_dn_binary(value)[0])
    damaged = Token(TokenType.CNG_KEY, token.identifier, token.last_modified, TokenFlags(0), b"x")
    directory.values[KEY_ENVELOPES] = [format_dn_binary(encode_token(damaged), USER_DN).encode()]

    code, _, err = host.run("sync", capsys=capsys)

    assert code == 1
    held = [line for line in err.splitlines() if "left alone on both sides" in line]
    assert len(held) == 1 and "event=1012" in held[0], err
