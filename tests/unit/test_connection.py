"""The shared connection: settings are checked before any traffic, errors name the DC."""

from __future__ import annotations

import socket
import ssl
import sys
from types import SimpleNamespace

import pytest
from ldap3.core.exceptions import LDAPSocketSendError

from credroam import connection
from credroam.connection import (
    LdapTarget,
    RootDse,
    _tls,
    close,
    connect,
    kerberos_host,
    kerberos_principal,
    validate_target,
)
from credroam.errors import DirectoryError


def target(**overrides) -> LdapTarget:
    settings = {"server": "dc1.lab.example", "bind_user": "u@lab.example", "bind_password": "pw"}
    settings.update(overrides)
    return LdapTarget(**settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server": ""}, "no domain controller"),
        ({"tls_mode": "plain"}, "tls_mode must be one of ldaps, starttls"),
        ({"bind_method": "ntlm"}, "bind_method must be one of"),
        ({"bind_password": None}, "needs bind_user and bind_password"),
        ({"port": 70000}, "70000 is not a TCP port"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_settings_are_refused_before_connecting(overrides, message):
    with pytest.raises(DirectoryError, match=message):
        validate_target(target(**overrides))


def test_default_port_follows_tls_mode():
    assert target().effective_port == 636
    assert target(tls_mode="starttls").effective_port == 389
    assert target(port=3269).effective_port == 3269


def test_certificates_are_validated_unless_explicitly_turned_off(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    assert _tls(target(ca_cert=str(ca))).validate == ssl.CERT_REQUIRED
    assert _tls(target(tls_server_name="dc1.lab.example")).valid_names == ["dc1.lab.example"]
    assert _tls(target(validate_certs=False)).validate == ssl.CERT_NONE


def test_missing_ca_file_is_named_in_the_error(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(DirectoryError, match=str(missing)):
        connect(target(ca_cert=str(missing)))


def test_password_is_not_in_repr():
    assert "pw" not in repr(target(bind_password="pw"))


def test_with_server_keeps_credentials_and_tls_settings():
    moved = target(ca_cert="/x/ca.pem", tls_mode="starttls").with_server("10.0.0.2", "dc2.x")
    assert (moved.server, moved.tls_server_name) == ("10.0.0.2", "dc2.x")
    assert (moved.bind_user, moved.bind_password, moved.ca_cert, moved.tls_mode) == (
        "u@lab.example",
        "pw",
        "/x/ca.pem",
        "starttls",
    )


def test_unreachable_dc_error_names_the_dc():
    # A loopback port that nobody listens on: the error must say which DC could not be reached.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DirectoryError, match=rf"127\.0\.0\.1:{port} \(ldaps\)"):
        connect(target(server="127.0.0.1", port=port, timeout=2))


def test_closing_a_broken_connection_does_not_hide_the_cause():
    # A failed TLS handshake leaves a closed socket: the unbind cannot be sent.
    def unbind():
        raise LDAPSocketSendError("socket sending error[Errno 9] Bad file descriptor")

    close(SimpleNamespace(unbind=unbind))


def test_domain_dns_name_from_naming_context():
    dse = RootDse("DC=lab,DC=example", "", "", "", "dc1.lab.example", "")
    assert dse.domain_dns_name == "lab.example"


# --- bind_method=gssapi: the caller's Kerberos credentials, checked before any traffic ----------


def kerberos_target(**overrides) -> LdapTarget:
    # Loopback and a port nobody listens on: these checks must fail before connecting anyway.
    settings = {
        "server": "127.0.0.1",
        "port": 1,
        "tls_server_name": "dc1.lab.example",
        "bind_method": "gssapi",
    }
    settings.update(overrides)
    return LdapTarget(**settings)


@pytest.fixture
def empty_credential_cache(tmp_path, monkeypatch) -> str:
    """A Kerberos setup with no ticket: an empty krb5.conf and a cache file that does not exist."""
    config = tmp_path / "krb5.conf"
    config.write_text("")
    cache = f"FILE:{tmp_path / 'no-such-cache'}"
    monkeypatch.setenv("KRB5_CONFIG", str(config))
    monkeypatch.setenv("KRB5CCNAME", cache)
    return cache


def test_gssapi_needs_no_password():
    validate_target(kerberos_target())


def test_gssapi_without_a_ticket_says_to_run_kinit(empty_credential_cache):
    with pytest.raises(DirectoryError) as err:
        connect(kerberos_target())
    message = str(err.value)
    assert message.startswith("no Kerberos credentials to bind to 127.0.0.1:1 (ldaps)")
    assert "run kinit <principal> first" in message
    assert empty_credential_cache in message


def test_gssapi_without_a_ticket_of_the_named_principal_names_it(empty_credential_cache):
    with pytest.raises(DirectoryError) as err:
        connect(kerberos_target(bind_user="alice@LAB.EXAMPLE"))
    message = str(err.value)
    assert message.startswith("no Kerberos credentials of alice@LAB.EXAMPLE to bind")
    assert "run kinit alice@LAB.EXAMPLE first" in message


def test_a_upn_as_gssapi_bind_user_is_looked_for_in_its_upper_case_realm(empty_credential_cache):
    with pytest.raises(DirectoryError) as err:
        connect(kerberos_target(bind_user="Administrator@lab.example"))
    assert "run kinit Administrator@LAB.EXAMPLE first" in str(err.value)


def test_kerberos_principal_of_a_bind_user():
    assert kerberos_principal("alice@lab.example") == "alice@LAB.EXAMPLE"
    assert kerberos_principal("alice@LAB.EXAMPLE") == "alice@LAB.EXAMPLE"
    assert kerberos_principal("alice") == "alice"


def test_gssapi_without_the_gssapi_package_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "gssapi", None)  # import gssapi now raises ImportError
    with pytest.raises(DirectoryError, match="needs the Python package gssapi"):
        connect(kerberos_target())


def test_kerberos_service_host_is_the_tls_server_name_else_the_server():
    assert kerberos_host(kerberos_target()) == "dc1.lab.example"
    assert kerberos_host(kerberos_target(server="dc2.lab.example", tls_server_name=None)) == (
        "dc2.lab.example"
    )


def test_gssapi_asks_ldap3_for_the_ldap_service_of_the_dc_with_the_checked_credentials(
    monkeypatch,
):
    credentials = SimpleNamespace(name="alice@LAB.EXAMPLE")
    gssapi = SimpleNamespace(exceptions=SimpleNamespace(GSSError=RuntimeError))
    monkeypatch.setattr(connection, "kerberos_credentials", lambda target: (gssapi, credentials))
    bind = connection._bind_settings(kerberos_target())
    assert bind.arguments["sasl_mechanism"] == "GSSAPI"
    assert bind.arguments["sasl_credentials"] == ("dc1.lab.example", None, credentials)
    assert "user" not in bind.arguments and "password" not in bind.arguments
    assert bind.who == "alice@LAB.EXAMPLE (Kerberos)"
