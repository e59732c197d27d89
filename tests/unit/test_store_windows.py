"""The Windows store adapter (CurrentUser\\My and \\REQUEST through PowerShell), without Windows.

Two kinds of test: the parsing of recorded output (tests/unit/windows_store/, written by its
make_fixtures.py in the shape Windows PowerShell 5.1 prints; not captured on a Windows host),
and the store's behaviour over a stateful fake of the PowerShell commands that answers in the
same shape. Neither runs PowerShell: no Windows host can run here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from credroam.roaming.model import Item, ItemKind, StoreName, content_hash
from credroam.roaming.store import StoreError
from credroam.roaming.store.windows import (
    POWERSHELL,
    SCRIPTS,
    Completed,
    WindowsStore,
    WindowsStoreError,
    parse_export,
    parse_listing,
    run_powershell,
)
from tests.credentials import self_signed
from tests.unit.windows_store.make_fixtures import convert_to_json

RECORDED = Path(__file__).resolve().parent / "windows_store"
T0 = 134_000_000_000_000_000


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


# --- the scripts -------------------------------------------------------------------------------


def test_every_script_is_one_argument_windows_cannot_misquote():
    # A script travels as the argument of -Command; Windows' C runtime and PowerShell disagree
    # on embedded double quotes, so the scripts use none.
    for name, script in SCRIPTS.items():
        assert '"' not in script, name
        assert script.startswith("using namespace System.Security.Cryptography"), name
        assert "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false" in script
        assert script.rstrip().endswith("exit 1 }"), name  # one error line on stderr, exit 1


def test_powershell_runs_non_interactively_with_the_script_as_its_command(monkeypatch):
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, input=kwargs["input"])
        return subprocess.CompletedProcess(argv, 0, b"out", b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    done = run_powershell(SCRIPTS["list"], b"{}")
    assert seen["argv"] == [
        "powershell.exe", "-NoProfile", "-NonInteractive", "-Command", SCRIPTS["list"],
    ]  # fmt: skip
    assert seen["input"] == b"{}" and done == Completed(0, b"out", b"")
    assert POWERSHELL == ("powershell.exe", "-NoProfile", "-NonInteractive", "-Command")


def test_a_host_without_powershell_is_a_typed_error():
    with pytest.raises(WindowsStoreError, match=r"powershell\.exe did not run"):
        run_powershell(SCRIPTS["list"], b"")  # no powershell.exe on this Linux machine


# --- parsing recorded output ---------------------------------------------------------------------


def test_an_empty_store_prints_nothing_and_lists_nothing():
    assert recorded("list_empty.out") == b""
    assert parse_listing(recorded("list_empty.out")) == []


def test_a_single_certificate_comes_as_a_bare_object_not_an_array():
    assert recorded("list_single.json").startswith(b"{")
    (only,) = parse_listing(recorded("list_single.json"))
    assert (only.store, only.subject) == (StoreName.MY, "CN=alice, OU=Roaming")
    assert only.has_private_key and only.exportable and not only.archived
    assert hashlib.sha1(only.der).hexdigest().upper() == only.thumbprint


def test_many_certificates_with_every_kind_of_key_and_a_non_ascii_subject():
    listed = {c.subject: c for c in parse_listing(recorded("list_many.json"))}
    assert len(listed) == 6
    jurgen = listed["O=Zoë's Café, CN=Jürgen Müller"]  # UTF-8, and 5.1's \u0027
    assert not jurgen.has_private_key and jurgen.exportable is None
    assert listed["CN=alice (renewed away)"].archived
    assert listed["CN=alice TPM"].exportable is False
    assert listed["CN=alice smart card"].smartcard
    assert listed["CN=REQUEST"].store is StoreName.REQUEST


def test_a_byte_order_mark_is_tolerated():
    (only,) = parse_listing(b"\xef\xbb\xbf" + recorded("list_single.json"))
    assert only.subject == "CN=alice, OU=Roaming"


def test_output_in_the_oem_code_page_is_refused_not_misread():
    # What the listing prints if [Console]::OutputEncoding were left at the OEM code page.
    with pytest.raises(WindowsStoreError, match="powershell list: output is not UTF-8"):
        parse_listing(recorded("list_oem.out"))


def _tampered(**changes) -> bytes:
    record = json.loads(recorded("list_single.json"))
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"WARNING: something\r\n" + b"[]", "powershell list: output is not JSON"),
        (b"42", "powershell list: expected JSON objects"),
        (b"[1, 2]", "powershell list: expected JSON objects"),
        (_tampered(HasPrivateKey="True"), "HasPrivateKey is 'True', of the wrong type"),
        (_tampered(Exportable="yes"), "Exportable is 'yes', of the wrong type"),
        (_tampered(Archived=...), r"missing \['Archived'\]"),
        (_tampered(FriendlyName="x"), r"extra \['FriendlyName'\]"),
        (_tampered(Store="Root"), "unknown store 'Root'"),
        (_tampered(Thumbprint="9dac" + "0" * 36), "is not a thumbprint"),
        (_tampered(Thumbprint="A" * 40), "RawData of A{40} hashes to"),
        (_tampered(RawData="not base64!"), "RawData is not base64"),
        (_tampered(RawData=""), "RawData is empty"),
    ],
)
def test_output_that_is_not_what_the_listing_promises_is_a_typed_error(output, message):
    with pytest.raises(WindowsStoreError, match=message):
        parse_listing(output)


def test_a_certificate_listed_twice_is_refused():
    record = json.loads(recorded("list_single.json"))
    with pytest.raises(WindowsStoreError, match="listed twice"):
        parse_listing(json.dumps([record, record]).encode())


def test_the_exported_key_is_opened_with_the_one_time_password():
    password = (RECORDED / "export_password.txt").read_text().strip()
    (only,) = parse_listing(recorded("list_single.json"))
    pkcs8 = parse_export(recorded("export_key.json"), only.thumbprint, password)
    assert pkcs8 == recorded("alice_key.pk8")
    with pytest.raises(WindowsStoreError, match="bad PKCS#12"):
        parse_export(recorded("export_key.json"), only.thumbprint, "another password")
    with pytest.raises(WindowsStoreError, match=r"asked for 0{40}, got another"):
        parse_export(recorded("export_key.json"), "0" * 40, password)


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ("stderr_access_denied.txt", r"powershell list failed \(exit 1\): Access is denied\.$"),
        (
            "stderr_clixml.txt",
            r'powershell list failed \(exit 1\): Exception calling "Open" with "1" argument\(s\): '
            r'"The system cannot find the file specified\.\n"\nAt line:1 char:1$',
        ),
    ],
)
def test_error_text_on_stderr_names_the_command(tmp_path, stderr, message):
    store = WindowsStore(str(tmp_path), lambda script, stdin: Completed(1, b"", recorded(stderr)))
    with pytest.raises(WindowsStoreError, match=message):
        store.items()


def test_progress_noise_on_stderr_of_a_command_that_succeeded_is_ignored(tmp_path):
    noise = b'#< CLIXML\r\n<Objs Version="1.1.0.1"><Obj S="progress" RefId="0"/></Objs>'
    store = WindowsStore(str(tmp_path), lambda script, stdin: Completed(0, b"", noise))
    assert store.items() == {}


# --- a stateful fake of the commands -------------------------------------------------------------

NAME_OF_SCRIPT = {script: name for name, script in SCRIPTS.items()}


def make_credential(name: str, not_after=datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC)):
    der, pkcs8, _ = self_signed(name, datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC), not_after)
    return der, pkcs8


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


class FakeWindows:
    """CurrentUser\\My and \\REQUEST as the scripts see them, answering in PowerShell's shape."""

    def __init__(self):
        self.certificates: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, bytes]] = []
        self.fail: dict[str, str] = {}  # command -> the error it writes on stderr

    def put(self, der, pkcs8=None, *, store="My", archived=False, exportable=True, card=False):
        self.certificates[(store, thumb(der))] = {
            "der": der, "key": pkcs8, "archived": archived, "exportable": exportable,
            "card": card, "subject": x509.load_der_x509_certificate(der).subject.rfc4514_string(),
        }  # fmt: skip

    def __call__(self, script: str, stdin: bytes) -> Completed:
        assert script in NAME_OF_SCRIPT, "only the module's own scripts are run"
        name = NAME_OF_SCRIPT[script]
        self.calls.append((name, stdin))
        if name in self.fail:
            return Completed(1, b"", f"{self.fail[name]}\r\n".encode())
        request = json.loads(stdin) if stdin else None
        try:
            records = getattr(self, name.replace("-", "_"))(request)
        except LookupError as exc:
            return Completed(1, b"", f"{exc}\r\n".encode())
        return Completed(0, convert_to_json(records), b"")

    def called(self, name: str) -> list[dict]:
        return [json.loads(stdin) for called, stdin in self.calls if called == name]

    def list(self, request):
        return [
            {
                "Store": store, "Thumbprint": thumbprint, "Subject": entry["subject"],
                "RawData": base64.b64encode(entry["der"]).decode(),
                "HasPrivateKey": entry["key"] is not None or entry["card"],
                "Archived": entry["archived"],
                "Exportable": entry["exportable"] if entry["key"] is not None else None,
                "SmartCard": entry["card"],
            }
            for (store, thumbprint), entry in sorted(self.certificates.items())
        ]  # fmt: skip

    def _find(self, store, thumbprint):
        if (store, thumbprint) not in self.certificates:
            raise LookupError(f"certificate {thumbprint} is not in CurrentUser\\{store}")
        return self.certificates[(store, thumbprint)]

    def export_key(self, request):
        entry = self._find("My", request["Thumbprint"])
        if entry["key"] is None or not entry["exportable"]:
            raise LookupError("Key not valid for use in specified state.")
        key = serialization.load_der_private_key(entry["key"], None)
        certificate = x509.load_der_x509_certificate(entry["der"])
        encryption = serialization.BestAvailableEncryption(request["Password"].encode())
        pfx = pkcs12.serialize_key_and_certificates(None, key, certificate, None, encryption)
        return [{"Thumbprint": request["Thumbprint"], "Pfx": base64.b64encode(pfx).decode()}]

    def _added(self, store, der, pkcs8, archived, exportable):
        previous = self.certificates.get((store, thumb(der)), {})
        pkcs8 = pkcs8 if pkcs8 is not None else previous.get("key")  # Add keeps the key link
        self.put(der, pkcs8, store=store, archived=archived, exportable=exportable)
        entry = self.certificates[(store, thumb(der))]
        return [{"Thumbprint": thumb(der), "HasPrivateKey": pkcs8 is not None,
                 "Archived": entry["archived"]}]  # fmt: skip

    def add_certificate(self, request):
        der = base64.b64decode(request["Der"])
        return self._added(request["Store"], der, None, request["Archived"], True)

    def import_pfx(self, request):
        key, certificate, _ = pkcs12.load_key_and_certificates(
            base64.b64decode(request["Pfx"]), request["Password"].encode()
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._added("My", der, pkcs8, request["Archived"], request["Exportable"])

    def remove(self, request):
        entry = self.certificates.pop((request["Store"], request["Thumbprint"]), None)
        if entry is not None and request["What"] == "key":
            self.put(entry["der"], None, store=request["Store"], archived=entry["archived"])
        return [{"Thumbprint": request["Thumbprint"], "Removed": entry is not None}]

    def set_archived(self, request):
        entry = self._find(request["Store"], request["Thumbprint"])
        entry["archived"] = request["Archived"]
        return [{"Thumbprint": request["Thumbprint"], "Archived": entry["archived"]}]


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def windows():
    return FakeWindows()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, windows, clock):
    return WindowsStore(str(tmp_path / "store"), windows, clock)


def cert_item(der, modified=T0, archived=False) -> Item:
    return Item(
        f"%3\\{thumb(der)}", StoreName.MY, ItemKind.CERTIFICATE, modified, content_hash(der),
        len(der), archived=archived,
    )  # fmt: skip


def key_item(der, pkcs8, modified=T0, archived=False) -> Item:
    return Item(
        f"%9\\{thumb(der)}", StoreName.MY, ItemKind.KEY, modified, content_hash(pkcs8),
        len(pkcs8), archived=archived, owner=f"%3\\{thumb(der)}",
    )  # fmt: skip


def listed_under_lock(store) -> dict[str, Item]:
    with store.lock(), store.batch():
        return store.items()


def test_listing_gives_certificates_and_exportable_keys_and_reports_the_rest(store, windows):
    mine, mine_key = make_credential("alice")
    public, _ = make_credential("Jürgen Müller")
    tpm, tpm_key = make_credential("alice TPM")
    card, _ = make_credential("alice card")
    dummy, dummy_key = make_credential("REQUEST")
    windows.put(mine, mine_key)
    windows.put(public)
    windows.put(tpm, tpm_key, exportable=False)
    windows.put(card, card=True, exportable=False)
    windows.put(dummy, dummy_key, store="REQUEST")
    items = store.items()
    assert set(items) == {
        f"%3\\{thumb(mine)}", f"%9\\{thumb(mine)}", f"%3\\{thumb(public)}",
        f"%3\\{thumb(tpm)}", f"%3\\{thumb(card)}",
    }  # fmt: skip
    key = items[f"%9\\{thumb(mine)}"]
    assert key.content_hash == content_hash(mine_key) and key.owner == f"%3\\{thumb(mine)}"
    assert items[f"%3\\{thumb(card)}"].smartcard
    assert store.held_keys == {f"%9\\{thumb(tpm)}"}  # there, but cannot be listed
    assert store.private_key_owners == {f"%3\\{thumb(c)}" for c in (mine, tpm, card)}
    problems = "\n".join(store.problems)
    assert f"{thumb(tpm)}: its private key is not exportable" in problems
    assert (
        f"CurrentUser\\REQUEST\\{thumb(dummy)} (CN=REQUEST): a Windows pending request" in problems
    )


def test_an_item_added_on_windows_keeps_the_time_of_the_sync_that_first_listed_it(
    store, windows, clock
):
    der, pkcs8 = make_credential("alice")
    windows.put(der, pkcs8)
    first = listed_under_lock(store)
    clock.now += 10_000_000
    again = listed_under_lock(store)
    assert {item.modified for item in first.values()} == {T0}
    assert again == first
    assert len(windows.called("export-key")) == 1  # a recorded key is not exported again


def test_outside_a_locked_batch_a_listing_records_nothing(store, windows, clock):
    der, _ = make_credential("alice")
    windows.put(der)
    store.items()
    clock.now += 1
    assert store.items()[f"%3\\{thumb(der)}"].modified == T0 + 1
    assert not os.path.exists(os.path.join(store.root, "index.json"))


def test_a_written_certificate_and_key_are_listed_as_written(store, windows):
    der, pkcs8 = make_credential("alice")
    certificate, key = cert_item(der, T0 - 50), key_item(der, pkcs8, T0 - 50)
    with store.lock(), store.batch():
        store.write(certificate, der)
        store.write(key, pkcs8)
    assert windows.certificates[("My", thumb(der))]["key"] == pkcs8
    listed = store.items()
    for written in (certificate, key):
        again = listed[written.key]
        assert (again.modified, again.content_hash, again.archived, again.owner) == (
            written.modified, written.content_hash, written.archived, written.owner,
        )  # fmt: skip
    assert listed[key.key].expires == listed[certificate.key].expires is not None


def test_a_private_key_never_passes_in_the_clear(store, windows):
    der, pkcs8 = make_credential("alice")
    with store.lock(), store.batch():
        store.write(cert_item(der), der)
        store.write(key_item(der, pkcs8), pkcs8)
        assert store.read(key_item(der, pkcs8)) == pkcs8
    clear = (pkcs8, base64.b64encode(pkcs8))
    for name, stdin in windows.calls:
        assert not any(secret in stdin for secret in clear), name
    (imported,) = windows.called("import-pfx")
    assert imported["Exportable"] is True and len(imported["Password"]) >= 32
    assert {entry.name for entry in os.scandir(store.root)} <= {"index.json", ".lock"}


def test_a_key_imported_non_exportable_is_still_listed_from_the_bookkeeping(
    tmp_path, windows, clock
):
    store = WindowsStore(str(tmp_path / "s"), windows, clock, non_exportable_keys=True)
    der, pkcs8 = make_credential("alice")
    key = key_item(der, pkcs8, T0 - 5)
    with store.lock(), store.batch():
        store.write(cert_item(der, T0 - 5), der)
        store.write(key, pkcs8)
    assert windows.called("import-pfx")[0]["Exportable"] is False
    listed = store.items()[key.key]
    assert (listed.modified, listed.content_hash) == (key.modified, key.content_hash)
    assert not windows.called("export-key")  # it could not be


def test_a_key_windows_will_not_export_and_the_bookkeeping_lost_is_held(tmp_path, windows, clock):
    store = WindowsStore(str(tmp_path / "s"), windows, clock, non_exportable_keys=True)
    der, pkcs8 = make_credential("alice")
    with store.lock(), store.batch():
        store.write(cert_item(der), der)
        store.write(key_item(der, pkcs8), pkcs8)
    os.unlink(os.path.join(store.root, "index.json"))
    assert key_item(der, pkcs8).key not in store.items()
    assert store.held_keys == {key_item(der, pkcs8).key}


def test_archiving_sets_the_archived_property(store, windows):
    der, _ = make_credential("alice")
    windows.put(der)
    store.archive(f"%3\\{thumb(der)}")
    assert windows.certificates[("My", thumb(der))]["archived"]
    assert store.items()[f"%3\\{thumb(der)}"].archived


def test_writing_an_archived_version_clears_and_sets_the_flag(store, windows):
    der, _ = make_credential("alice")
    windows.put(der, archived=True)
    store.write(cert_item(der), der)
    assert not windows.certificates[("My", thumb(der))]["archived"]
    assert windows.called("add-certificate")[0]["Archived"] is False


def test_deleting_a_key_keeps_its_certificate(store, windows):
    der, pkcs8 = make_credential("alice")
    windows.put(der, pkcs8)
    store.items()
    store.delete(key_item(der, pkcs8))
    assert windows.certificates[("My", thumb(der))]["key"] is None
    assert windows.called("remove") == [{"Store": "My", "Thumbprint": thumb(der), "What": "key"}]


def test_a_deleted_certificate_leaves_a_recovery_copy_when_asked(store, windows):
    der, pkcs8 = make_credential("alice")
    windows.put(der, pkcs8)
    store.delete(f"%9\\{thumb(der)}", keep_copy=True)
    store.delete(f"%3\\{thumb(der)}", keep_copy=True)
    assert ("My", thumb(der)) not in windows.certificates
    copies = sorted(os.listdir(os.path.join(store.root, "recovery")))
    assert [name.split(".")[1:3] for name in copies] == [["cert", "pem"], ["key", "pem"]]
    assert store.tend_recovery(None, None, 10**9, T0)  # reported: waiting for a roaming key


def test_deleting_what_is_not_there_is_not_an_error(store, windows):
    der, _ = make_credential("alice")
    store.delete(f"%3\\{thumb(der)}")
    store.delete(f"%9\\{thumb(der)}")
    assert not windows.called("remove")


def test_a_request_is_not_written_to_the_request_store(store):
    der, _ = make_credential("alice")
    request = Item(
        f"%4\\{thumb(der)}", StoreName.REQUEST, ItemKind.REQUEST, T0, content_hash(der), 1
    )
    with pytest.raises(StoreError, match="cannot be placed in CurrentUser\\\\REQUEST"):
        store.write(request, der)


def test_a_payload_that_does_not_match_its_item_is_refused_before_powershell(store, windows):
    der, _ = make_credential("alice")
    other, _ = make_credential("bob")
    with pytest.raises(StoreError, match="does not match the item's content hash"):
        store.write(cert_item(der), other)
    assert windows.calls == []


def test_a_failing_write_leaves_the_item_at_a_recorded_time(store, windows, clock):
    der, _ = make_credential("alice")
    windows.put(der)
    listed_under_lock(store)  # recorded at T0
    windows.fail["add-certificate"] = "Access is denied."
    archived = cert_item(der, T0 + 7, archived=True)
    with pytest.raises(WindowsStoreError, match=r"add-certificate failed \(exit 1\): Access is"):
        store.write(archived, der)
    clock.now += 100
    # One of the recorded times, never the listing's "changed by hand" time.
    assert store.items()[archived.key].modified in (T0, T0 + 7)
