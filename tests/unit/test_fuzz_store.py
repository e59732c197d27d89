"""Reproducers of what fuzz/fuzz_store.py found in the file store's listing.

An index entry with a negative time stopped the whole listing (ReconcileError) until damaged
entries were ignored.
"""

from __future__ import annotations

import hashlib
import json

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from credroam.roaming.certelement import thumbprint
from credroam.roaming.store.file import FileStore
from tests.hostile_certificates import certificate_der


def test_an_index_entry_with_a_negative_time_does_not_stop_the_listing(tmp_path) -> None:
    der = certificate_der()
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
    key = f"%3\\{thumbprint(der)}"
    (tmp_path / "MY").mkdir(mode=0o700)
    (tmp_path / "MY" / f"{thumbprint(der)}.cert.pem").write_bytes(pem)
    entry = {
        "modified": -1,  # the index is only as trustworthy as the user's files: damaged, or planted
        "content_hash": hashlib.sha256(der).hexdigest(),
        "archived": False,
        "expires": None,
    }
    (tmp_path / "index.json").write_text(json.dumps({"version": 1, "items": {key: entry}}))
    items = FileStore(str(tmp_path)).items()
    assert list(items) == [key]
    assert items[key].modified > 0  # the file's own time: the entry is ignored as damaged
