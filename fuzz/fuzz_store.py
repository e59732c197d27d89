"""Fuzz the file store's listing: a store folder holding files with fuzzed names and contents.

Each input lays out a fresh store (in the run's scratch folder): files in MY, REQUEST and the
archive, named after a real certificate's, request's or the content's thumbprint, random hex or
any string, holding PEM of a real certificate, request or key (possibly damaged), PEM of fuzzed
bytes, or fuzzed bytes; symbolic links planted where files should be (to a file outside the
store); a fuzzed or plausible index.json and index.journal.

Valid outcome: ``items()`` returns items whose keys are valid store keys, each readable back
with the content hash it was listed with (or refused with StoreError), and the listing writes
nothing, inside the store or out; or StoreError.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import atheris
import harness

with harness.instrumented():
    from credroam.roaming.store import StoreError, split_item_key
    from credroam.roaming.store.file import FileStore

FOLDERS = ["MY", "REQUEST", "archive/MY", "archive/REQUEST", ".", "recovery"]
SUFFIXES = [".cert.pem", ".cng.cert.pem", ".csr.pem", ".cng.csr.pem", ".key.pem", ".pem", ""]
LABELS = ["CERTIFICATE", "CERTIFICATE REQUEST", "PRIVATE KEY", "RSA PRIVATE KEY"]
_PEM_LABEL = {0: "CERTIFICATE", 1: "CERTIFICATE REQUEST"}


def _valid_ders() -> list[bytes]:
    import samples

    return [samples.certificate_der(), samples.request_der(), *samples.private_keys_der()]


VALID = _valid_ders()
OWNERS = [hashlib.sha1(der).hexdigest().upper() for der in VALID[:2]]


def _pem(label: str, der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n"
    ).encode()


def _damaged(fdp: atheris.FuzzedDataProvider, der: bytes) -> bytes:
    der = bytearray(der)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        der[fdp.ConsumeIntInRange(0, len(der) - 1)] = fdp.ConsumeInt(1) & 0xFF
    if fdp.ConsumeBool():
        del der[fdp.ConsumeIntInRange(0, len(der)) :]
    return bytes(der)


def _content(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, bytes]:
    """(file content, the DER inside it as far as the name is concerned)."""
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        return raw, raw
    if choice == 1:
        der = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    else:
        index = fdp.ConsumeIntInRange(0, len(VALID) - 1)
        der = VALID[index] if choice == 2 else _damaged(fdp, VALID[index])
    label = _PEM_LABEL.get(index, "PRIVATE KEY") if choice > 1 else fdp.PickValueInList(LABELS)
    if fdp.ConsumeBool():
        label = fdp.PickValueInList(LABELS)
    return _pem(label, der), der


def _name(fdp: atheris.FuzzedDataProvider, der: bytes) -> str:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 3:
        name = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 80))
        name = name.replace("/", "_").replace("\0", "_")
        return name if name not in ("", ".", "..") else "_"
    identifier = {
        0: hashlib.sha1(der).hexdigest().upper(),
        1: fdp.PickValueInList(OWNERS),
        2: fdp.ConsumeBytes(20).hex().upper().ljust(40, "0"),
    }[choice]
    return identifier + fdp.PickValueInList(SUFFIXES)


def _index_entry(fdp: atheris.FuzzedDataProvider, der: bytes) -> dict:
    return {
        "modified": fdp.ConsumeInt(9) if fdp.ConsumeBool() else 133_500_000_000_000_000,
        "content_hash": hashlib.sha256(der).hexdigest() if fdp.ConsumeBool() else "00",
        "archived": fdp.ConsumeBool(),
        "expires": fdp.PickValueInList([None, 0, -1, 2**64, fdp.ConsumeInt(9)]),
    }


def _metadata(fdp: atheris.FuzzedDataProvider, files: list[tuple[str, bytes]]) -> None:
    root = harness.scratch() / "store"
    keys = {f"%{t}\\{name[:40]}": der for name, der in files for t in (3, 4, 7, 8, 9)}
    choice = fdp.ConsumeIntInRange(0, 2)
    if choice == 1:
        (root / "index.json").write_bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)))
    elif choice == 2:
        items = {key: _index_entry(fdp, der) for key, der in keys.items() if fdp.ConsumeBool()}
        document = {"version": fdp.PickValueInList([1, 1, 2, "1"]), "items": items}
        (root / "index.json").write_text(json.dumps(document))
    if fdp.ConsumeBool():
        lines = [json.dumps({"key": key, **_index_entry(fdp, der)}) for key, der in keys.items()]
        journal = "\n".join(lines).encode() + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        (root / "index.journal").write_bytes(journal)


def _lay_out(fdp: atheris.FuzzedDataProvider) -> None:
    root = harness.scratch() / "store"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o700)
    files = []
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        folder = root / fdp.PickValueInList(FOLDERS)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        content, der = _content(fdp)
        name = _name(fdp, der)
        path = folder / name
        try:
            if path.is_dir() or path.is_symlink():
                continue
            if fdp.ConsumeIntInRange(0, 7) == 0:
                path.symlink_to(harness.scratch() / "outside.pem")
            else:
                path.write_bytes(content)
        except OSError:  # a name too long for the filesystem: not a store's concern
            continue
        files.append((name, der))
    _metadata(fdp, files)


def _snapshot() -> dict[str, tuple[int, bytes | str]]:
    """Every path under the scratch folder: its mode and content (or link target)."""
    found = {}
    for folder, dirs, names in os.walk(harness.scratch()):
        for name in dirs + names:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            content: bytes | str = b""
            if stat.S_ISLNK(mode):
                content = os.readlink(path)
            elif stat.S_ISREG(mode):
                with open(path, "rb") as handle:
                    content = handle.read()
            found[path] = (mode, content)
    return found


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    _lay_out(fdp)
    before = _snapshot()
    try:
        store = FileStore(str(harness.scratch() / "store"))
        items = store.items()
    except StoreError:
        return
    for key, item in items.items():
        assert item.key == key
        split_item_key(key)  # raises StoreError for a key no store may hold: a crash here
        try:
            payload = store.read(key)
        except StoreError:
            continue
        assert hashlib.sha256(payload).hexdigest() == item.content_hash, key
    assert all(isinstance(problem, str) for problem in store.problems)
    assert _snapshot() == before, "listing the store changed files"


def seeds() -> list[bytes]:
    return [bytes(64), bytes(range(256)), b"\x05\x02" * 200]


def _prepare() -> None:
    (harness.scratch() / "outside.pem").write_bytes(_pem("CERTIFICATE", VALID[0]))


if __name__ == "__main__":
    if os.environ.get("CREDROAM_FUZZ_CHILD") == "1":
        _prepare()
    harness.fuzz(one_input, seeds)
