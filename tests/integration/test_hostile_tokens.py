"""A corpus of hostile tokens in alice's real directory object, synced by the core.

Every user may write her own roaming values, so each below is what a user (or malware running
as her) can plant over LDAPS. One sync of a host holding alice's store must refuse each value
with the check that failed, report it, write nothing outside the store and roam the rest: a
good certificate written alongside arrives, the host's own certificate goes up. The hostile
values stay in the directory (they are reported, never deleted: not ours to remove).

The DC itself refuses malformed DN-Binary syntax (non-hex digits, an odd or lying digit
count): those never reach a client, and the test shows the refusal; the parser's own checks
of them are in tests/unit/test_tokens.py and fuzz/fuzz_dn_binary.py.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from credroam.roaming.certelement import (
    CERT_CERT_PROP_ID,
    build_cert_element,
    certificate_token,
    thumbprint,
)
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, DPAPI_MASTER_KEYS, read_roaming
from credroam.roaming.envelope import new_roaming_key
from credroam.roaming.model import Policy
from credroam.roaming.sync import MAX_CLOCK_SKEW, READ_LIMITS, sync_user
from credroam.timestamps import filetime_now
from credroam.tokens import (
    Token,
    TokenFlags,
    TokenLimits,
    TokenType,
    encode_token,
    format_dn_binary,
    parse_dn_binary,
)
from tests.hostile_certificates import (
    certificate_der,
    expired_before_1601,
    expiring_in_year,
    with_unknown_version,
)
from tests.integration import test_agent
from tests.integration.roaming_lab import (
    CVE_EXPLOIT_NAME,
    clear_everywhere,
    connect_as,
    files_under,
    install,
    self_signed,
)
from tests.integration.roaming_lab import SimulatedHost as Host

pytestmark = pytest.mark.integration

_NO_LIMIT = TokenLimits(max_token_size=1 << 24)  # to encode the oversized value at all
# Field offsets of the native token header (credroam.tokens' module doc).
_IDENTIFIER, _PROVIDER_SIZE, _SHA1, _DATA_SIZE = slice(3, 96), 106, slice(108, 128), 128


@dataclass(frozen=True)
class Hostile:
    name: str
    attribute: str
    blob: bytes
    check: str | None  # the check the sync reports; None: ignored (a type it does not own)
    dn: str | None = None  # the DN the value links to; None: the user's own


def _forged(token: Token, **patch: bytes | int) -> bytes:
    """``token`` encoded, then one header field overwritten: the lie a hand-made value tells."""
    blob = bytearray(encode_token(token))
    if "identifier" in patch:
        blob[_IDENTIFIER] = patch["identifier"].ljust(93, b"\0")
    if "provider_size" in patch:
        struct.pack_into("<H", blob, _PROVIDER_SIZE, patch["provider_size"])
    if "sha1" in patch:
        blob[_SHA1] = patch["sha1"]
    if "data_size" in patch:
        struct.pack_into("<I", blob, _DATA_SIZE, patch["data_size"])
    return bytes(blob)


def _corpus(now: int, bob_dn: str) -> list[Hostile]:
    """One value per check, each blob distinct (the report is matched to the corpus by blob)."""
    cert_a, cert_b, cert_c = (self_signed(f"hostile {n}")[0] for n in "abc")
    good = certificate_token(cert_a, now)
    data_size = len(good.data)
    oversized = Token(
        TokenType.CERTIFICATE,
        thumbprint(cert_b),
        now,
        TokenFlags(0),
        build_cert_element(cert_b) + bytes(READ_LIMITS.max_token_size),  # over what a sync reads
    )
    named_after_a = Token(TokenType.CERTIFICATE, thumbprint(cert_a), now, TokenFlags(0), b"")
    return [
        Hostile("CVE-2022-30170 Windows path", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=rb"..\..\Windows\Start Menu\Programs\Startup\x.bat"),
                "identifier"),
        Hostile("CVE-2022-30170 profile path", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=CVE_EXPLOIT_NAME), "identifier"),
        Hostile("POSIX escape from the store", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=b"../../../../escaped.bat"), "identifier"),
        Hostile("slash", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=b"A" * 20 + b"/" + b"B" * 19), "identifier"),
        Hostile("colon", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=b"C:" + b"A" * 38), "identifier"),
        Hostile("NUL inside the identifier", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=b"A" * 20 + b"\0" + b"B" * 19), "identifier"),
        Hostile("lower-case thumbprint", ACCOUNT_CREDENTIALS,
                _forged(good, identifier=thumbprint(cert_a).lower().encode()), "identifier"),
        Hostile("data size longer than the value", ACCOUNT_CREDENTIALS,
                _forged(good, data_size=data_size + 1), "length"),
        Hostile("data size shorter than the value", ACCOUNT_CREDENTIALS,
                _forged(good, data_size=data_size - 1), "length"),
        Hostile("provider size with no provider data", ACCOUNT_CREDENTIALS,
                _forged(good, provider_size=16), "length"),
        Hostile("shorter than the header", ACCOUNT_CREDENTIALS, encode_token(good)[:100],
                "length"),
        Hostile("bad SHA-1", ACCOUNT_CREDENTIALS, _forged(good, sha1=bytes(20)), "sha1"),
        Hostile("oversized", ACCOUNT_CREDENTIALS, encode_token(oversized, _NO_LIMIT), "size-limit"),
        Hostile("bad marker", ACCOUNT_CREDENTIALS, b"#3/" + encode_token(good)[3:], "marker"),
        Hostile("type not a digit", ACCOUNT_CREDENTIALS, b"%x\\" + encode_token(good)[3:], "type"),
        Hostile("element named after another certificate", ACCOUNT_CREDENTIALS,
                encode_token(Token(TokenType.CERTIFICATE, thumbprint(cert_c), now, TokenFlags(0),
                                   build_cert_element(cert_b))), "element"),
        Hostile("element that is no element", ACCOUNT_CREDENTIALS,
                encode_token(Token(TokenType.CERTIFICATE, thumbprint(cert_c), now + 1,
                                   TokenFlags(0), b"not a store element")), "element"),
        Hostile("dated beyond the allowed clock skew", ACCOUNT_CREDENTIALS,
                encode_token(certificate_token(cert_c, now + 10 * MAX_CLOCK_SKEW)), "future"),
        Hostile("linked to another user's DN", ACCOUNT_CREDENTIALS,
                encode_token(certificate_token(cert_b, now)), "dn-binary", dn=bob_dn),
        # Wrong type for the attribute: credroam owns neither, so neither is used, reported or
        # removed (Windows keeps its DPAPI-protected CNG keys as type 9 tokens right here).
        Hostile("key envelope in msPKIAccountCredentials", ACCOUNT_CREDENTIALS,
                encode_token(Token(TokenType.CNG_KEY, thumbprint(cert_a), now, TokenFlags(0),
                                   b"sealed key, wrong attribute")), None),
        Hostile("certificate token in msPKIDPAPIMasterKeys", DPAPI_MASTER_KEYS,
                encode_token(named_after_a), None),
    ]  # fmt: skip


@pytest.fixture
def alice(lab):
    account = lab.user("alice")
    clear_everywhere(lab, account)
    yield account
    clear_everywhere(lab, account)  # hostile values must not leak into other tests


def _plant(conn: ldap3.Connection, dn: str, attribute: str, value: str) -> None:
    assert conn.modify(dn, {attribute: [(ldap3.MODIFY_ADD, [value.encode()])]}), conn.result


def _sync(lab, account, host: Host):
    return sync_user(
        connect_as(lab, account),
        account.dn,
        host.store,
        host.state,
        Policy(),
        new_roaming_key(),
        filetime_now,
    )


def _blob_of(raw: bytes) -> bytes:
    return parse_dn_binary(raw, _NO_LIMIT.max_token_size)[0]


def test_the_dc_refuses_malformed_dn_binary_before_any_client_sees_it(lab, alice):
    conn = connect_as(lab, alice)
    for value in (
        f"B:4:ZZZZ:{alice.dn}",  # non-hex
        f"B:3:ABC:{alice.dn}",  # odd hex digit count
        f"B:10:ABCD:{alice.dn}",  # a count that lies
    ):
        refused = conn.modify(alice.dn, {ACCOUNT_CREDENTIALS: [(ldap3.MODIFY_ADD, [value])]})
        assert not refused and conn.result["description"] == "invalidDNSyntax", value
    assert read_roaming(conn, alice.dn).rejected == ()


def test_each_hostile_token_is_refused_with_its_check_and_the_rest_roams(lab, alice, tmp_path):
    now = filetime_now()
    corpus = _corpus(now, lab.user("bob").dn)
    assert len({(h.attribute, h.blob) for h in corpus}) == len(corpus)
    conn = connect_as(lab, alice)
    for hostile in corpus:
        _plant(
            conn,
            alice.dn,
            hostile.attribute,
            format_dn_binary(hostile.blob, hostile.dn or alice.dn),
        )
    # A good certificate another host uploaded, alongside; and one of this host's own.
    roamed_der = self_signed("alice roamed")[0]
    roamed = certificate_token(roamed_der, now)
    _plant(conn, alice.dn, ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(roamed), alice.dn))
    host = Host(tmp_path / "home" / "alice")
    local = install(host.root, self_signed("alice local")[0])
    before = files_under(tmp_path)

    report = _sync(lab, alice, host)

    reported = {(r.attribute, _blob_of(r.raw)): r.check for r in report.rejected}
    expected = {(h.attribute, h.blob): h.check for h in corpus if h.check is not None}
    named = {h.blob: h.name for h in corpus}
    assert {named[blob]: check for (_, blob), check in reported.items()} == {
        named[blob]: check for (_, blob), check in expected.items()
    }
    assert report.downloaded == (roamed.key,)
    assert report.uploaded == (f"%3\\{local}",)
    # Nothing outside the store but the state file beside it; in the store only what roamed.
    new_files = files_under(tmp_path) - before
    state = host.home / "state.json"  # and its previous copy (an interim base was saved first)
    assert {p for p in new_files if not p.is_relative_to(host.root)} == {
        state,
        state.with_name("state.json.prev"),
    }
    in_store = {p.relative_to(host.root).as_posix() for p in files_under(host.root)}
    assert in_store == {
        ".lock",
        "index.json",
        f"MY/{roamed.identifier}.cert.pem",
        f"MY/{local}.cert.pem",
    }
    arrived = x509.load_pem_x509_certificate(
        (host.root / "MY" / f"{roamed.identifier}.cert.pem").read_bytes()
    )
    assert arrived.public_bytes(Encoding.DER) == roamed_der
    # Every hostile value is still there, untouched: reported, never deleted or rewritten.
    after = read_roaming(connect_as(lab, alice), alice.dn)
    kept = {(r.attribute, _blob_of(r.raw)) for r in after.rejected}
    kept |= {(s.attribute, encode_token(s.token)) for s in after.tokens}
    assert {(h.attribute, h.blob) for h in corpus} <= kept


def _refused_and_the_rest_roams(lab, alice, host: Host, der: bytes) -> None:
    """Plant a certificate token holding ``der`` beside a good one; sync; check the outcome."""
    now = filetime_now()
    element = struct.pack("<III", CERT_CERT_PROP_ID, 1, len(der)) + der  # the certificate alone
    hostile = Token(TokenType.CERTIFICATE, thumbprint(der), now, TokenFlags(0), element)
    roamed = certificate_token(self_signed("alice roamed")[0], now)
    conn = connect_as(lab, alice)
    _plant(conn, alice.dn, ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(hostile), alice.dn))
    _plant(conn, alice.dn, ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(roamed), alice.dn))

    report = _sync(lab, alice, host)

    assert [(_blob_of(r.raw), r.check) for r in report.rejected] == [
        (encode_token(hostile), "element")
    ]
    assert report.downloaded == (roamed.key,)
    assert {p.name for p in Path(host.root, "MY").iterdir()} == {f"{roamed.identifier}.cert.pem"}


# Found by fuzz_certelement: before credroam.cryptocompat, each escaped the element's checks and
# stopped the whole sync (tests/unit/test_fuzz_certelement.py).
@pytest.mark.parametrize(
    "certificate",
    [
        pytest.param(lambda: with_unknown_version(certificate_der()), id="unknown-x509-version"),
        pytest.param(lambda: expiring_in_year(b"0000"), id="expiring-in-year-0"),
    ],
)
def test_a_certificate_cryptography_cannot_read_is_refused_and_the_rest_roams(
    lab, alice, tmp_path, certificate
):
    _refused_and_the_rest_roams(lab, alice, Host(tmp_path / "home" / "alice"), certificate())


def test_a_certificate_expiring_before_1601_is_refused_and_the_rest_roams(lab, alice, tmp_path):
    _refused_and_the_rest_roams(
        lab, alice, Host(tmp_path / "home" / "alice"), expired_before_1601()
    )


# The same corpus through the real agent on a lab host (the zipapp under Debian's python3,
# started as root for alice, dropping to her): it refuses each value with its check, reports
# each as event 1012, writes nothing outside alice's store and state, and roams the rest.
pyz, agent_lab = test_agent.pyz, test_agent.agent_lab


def _host_files(lab, host) -> set[Path]:
    root = lab.state_dir / host.name
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_the_agent_refuses_each_hostile_token_reports_it_and_roams_the_rest(agent_lab, alice):
    lab, host = agent_lab, agent_lab.client(0)
    host.ssh("rm -rf ~alice/.local ~alice/.cache")
    now = filetime_now()
    corpus = _corpus(now, lab.user("bob").dn)
    conn = connect_as(lab, alice)
    for hostile in corpus:
        _plant(conn, alice.dn, hostile.attribute,
               format_dn_binary(hostile.blob, hostile.dn or alice.dn))  # fmt: skip
    roamed = certificate_token(self_signed("alice roamed")[0], now)
    _plant(conn, alice.dn, ACCOUNT_CREDENTIALS, format_dn_binary(encode_token(roamed), alice.dn))
    local, _ = test_agent.new_certificate(host, "alice", "alice local")
    before = _host_files(lab, host)

    run = test_agent.agent(host, "login", password=alice.password)

    assert run.returncode == 1, run.stderr  # done, with problems
    # Each refused value is a 1012 naming its check (a key held for it is one more 1012).
    refusals = [
        line for line in run.stderr.splitlines() if "event=1012" in line and " check=" in line
    ]
    checks = sorted(re.search(r" check=([^ :]+)", line).group(1) for line in refusals)
    assert checks == sorted(h.check for h in corpus if h.check is not None), run.stderr
    assert 1 in test_agent.events(run)  # and the sync itself was done
    files = test_agent.store_files(lab, host, "alice")
    assert f"MY/{roamed.identifier}.cert.pem" in files
    assert {f"%3\\{local}", f"%9\\{local}"} <= test_agent.directory_keys(lab, alice)
    home = Path("home/alice")
    allowed = [home / test_agent.STORE, home / ".local/state/credroam",
               home / ".cache/credroam"]  # fmt: skip
    outside = [p for p in _host_files(lab, host) - before
               if not any(p.is_relative_to(a) for a in allowed)]  # fmt: skip
    assert outside == [], outside
    assert not [p for p in files if "escaped" in p or ".bat" in p or "Startup" in p]
