"""The agent's unit tests import ``credroam_agent`` from agent/, as the zipapp lays it out.

Fixtures: ``ca``, a folder holding a test CA (ca.pem, ca.key) for enrollment commands;
``directory``, a fake directory; ``host`` and ``other_host``, two hosts of alice on it
(tests/unit/agent/agent_fixtures.py). A test module may define its own of these names.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

AGENT = str(Path(__file__).resolve().parents[3] / "agent")
if AGENT not in sys.path:
    sys.path.insert(0, AGENT)

from tests.unit.agent.agent_fixtures import Directory, make_host


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture
def ca(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Lab CA"))
        .issuer_name(_name("Lab CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return tmp_path


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def host(tmp_path, directory, monkeypatch):
    return make_host(tmp_path / "host-a", directory, monkeypatch)


@pytest.fixture
def other_host(tmp_path, directory, monkeypatch):
    return make_host(tmp_path / "host-b", directory, monkeypatch)
