"""The ad_schema module without a DC: argument spec, refusals, and what it executes.

The directory is a small fake (the module's only LDAP calls are search, add, modify), so the
tests can see the exact operations in order, and that check mode executes none of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

import ad_schema
from ansible.module_utils.testing import patch_module_args

from credroam.schema.definitions import CREDROAM_OID_BASE, guid_to_bytes, oid_to_ber

DOMAIN = "DC=lab,DC=example"
CONFIG = f"CN=Configuration,{DOMAIN}"
SCHEMA = f"CN=Schema,{CONFIG}"
DC1 = f"CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,{CONFIG}"
BASE_ARGS = {
    "server": "dc1.lab.example",
    "bind_user": "Administrator@lab.example",
    "bind_password": "secret",
    "preset": "credroam",
}


class FakeServer:
    host = "dc1.lab.example"


class FakeDirectory:
    """Answers the module's reads from a dict of schema objects and records its writes."""

    def __init__(self, schema_objects: dict[str, dict[str, list[bytes]]]):
        self.schema_objects = schema_objects
        self.writes: list[tuple[str, ...]] = []
        self.server = FakeServer()
        self.result: dict[str, Any] = {"result": 0}
        self.response: list[dict[str, Any]] = []

    def search(self, base, _filter, search_scope="SUBTREE", attributes=None):
        attrs_by_base = {
            "": {
                "defaultNamingContext": [DOMAIN],
                "schemaNamingContext": [SCHEMA],
                "configurationNamingContext": [CONFIG],
                "rootDomainNamingContext": [DOMAIN],
                "dnsHostName": ["dc1.lab.example"],
                "serverName": [DC1],
            },
            SCHEMA: {"fSMORoleOwner": [f"CN=NTDS Settings,{DC1}"]},
            DC1: {"dNSHostName": ["dc1.lab.example"]},
        }
        if search_scope == "LEVEL":
            self.response = [
                {"type": "searchResEntry", "dn": dn, "raw_attributes": raw}
                for dn, raw in self.schema_objects.items()
            ]
        else:
            self.response = [
                {"type": "searchResEntry", "dn": base, "attributes": attrs_by_base[base]}
            ]
        return True

    def add(self, dn, object_class, attributes):
        self.writes.append(("add", dn, object_class, json.dumps(sorted(attributes))))
        self.last_add = attributes

    def modify(self, dn, changes):
        self.writes.append(("modify", dn or "rootDSE", *sorted(changes)))

    def unbind(self):
        pass


def user_class() -> dict[str, list[bytes]]:
    return {
        "objectClass": [b"top", b"classSchema"],
        "cn": [b"User"],
        "lDAPDisplayName": [b"user"],
        "governsID": [b"1.2.840.113556.1.5.9"],
        "objectClassCategory": [b"1"],
        "subClassOf": [b"organizationalPerson"],
        "auxiliaryClass": [b"posixAccount"],
    }


def native(name: str, cn: str, oid: str, link_id: int | None, flags: int) -> dict:
    raw = {
        "objectClass": [b"top", b"attributeSchema"],
        "cn": [cn.encode()],
        "lDAPDisplayName": [name.encode()],
        "attributeID": [oid.encode()],
        "attributeSyntax": [b"2.5.5.7" if link_id else b"2.5.5.10"],
        "oMSyntax": [b"127" if link_id else b"4"],
        "isSingleValued": [b"FALSE" if link_id else b"TRUE"],
        "searchFlags": [str(flags).encode()],
        "attributeSecurityGUID": [guid_to_bytes("91e647de-d96f-4b70-9557-d63ff4f3ccd8")],
    }
    if link_id:
        raw["linkID"] = [str(link_id).encode()]
        raw["oMObjectClass"] = [oid_to_ber("1.2.840.113556.1.1.1.11")]
    return raw


def samba_schema() -> dict[str, dict[str, list[bytes]]]:
    """The natives as Samba ships them, no credroam yet."""
    return {
        f"CN=ms-PKI-RoamingTimeStamp,{SCHEMA}": native(
            "msPKIRoamingTimeStamp", "ms-PKI-RoamingTimeStamp", "1.2.840.113556.1.4.1892", None, 640
        ),
        f"CN=ms-PKI-DPAPIMasterKeys,{SCHEMA}": native(
            "msPKIDPAPIMasterKeys", "ms-PKI-DPAPIMasterKeys", "1.2.840.113556.1.4.1893", 2046, 640
        ),
        f"CN=ms-PKI-AccountCredentials,{SCHEMA}": native(
            "msPKIAccountCredentials",
            "ms-PKI-AccountCredentials",
            "1.2.840.113556.1.4.1894",
            2048,
            640,
        ),
        f"CN=ms-PKI-Credential-Roaming-Tokens,{SCHEMA}": native(
            "msPKI-CredentialRoamingTokens",
            "ms-PKI-Credential-Roaming-Tokens",
            "1.2.840.113556.1.4.2050",
            2162,
            128,
        ),
        f"CN=User,{SCHEMA}": user_class(),
    }


def run_module(
    args: dict[str, Any], monkeypatch, capsys, directory: FakeDirectory | None = None
) -> dict:
    """Run main() as Ansible would; the module's JSON answer."""

    def no_network(*_args, **_kwargs):
        raise AssertionError("the module must not connect")

    monkeypatch.setattr(
        ad_schema, "connect_or_fail", (lambda *_: directory) if directory else no_network
    )
    monkeypatch.setattr(ad_schema, "connect", no_network)
    with patch_module_args(args), pytest.raises(SystemExit):
        ad_schema.main()
    return json.loads(capsys.readouterr().out)


def test_first_run_executes_attributes_then_class_then_user_with_schema_refresh(
    monkeypatch, capsys
):
    directory = FakeDirectory(samba_schema())
    result = run_module(BASE_ARGS, monkeypatch, capsys, directory)

    assert result["changed"] is True
    assert result["schema_master"] == "dc1.lab.example"
    assert result["verified"] == [
        "msPKIRoamingTimeStamp",
        "msPKIDPAPIMasterKeys",
        "msPKIAccountCredentials",
        "msPKI-CredentialRoamingTokens",
    ]
    ops = [(w[0], w[1].split(",")[0]) for w in directory.writes]
    assert ops == [
        ("add", "CN=credroam-Key-Envelopes"),
        ("add", "CN=credroam-Roaming-Keys"),
        ("modify", "rootDSE"),
        ("add", "CN=credroam-User"),
        ("modify", "rootDSE"),
        ("modify", "CN=User"),
        ("modify", "rootDSE"),
    ]
    assert [(op["kind"], op["target"].split(",")[0]) for op in result["operations"]] == [
        ("ldap_add", "CN=credroam-Key-Envelopes"),
        ("ldap_add", "CN=credroam-Roaming-Keys"),
        ("ldap_add", "CN=credroam-User"),
        ("ldap_modify", "CN=User"),
    ]
    # Binary schema values go on the wire as AD stores them, and are shown as text.
    assert directory.last_add["governsID"] == [f"{CREDROAM_OID_BASE}.2.1"]
    envelopes = result["operations"][0]["attributes"]
    assert envelopes["attributeSecurityGUID"] == ["91e647de-d96f-4b70-9557-d63ff4f3ccd8"]


def test_check_mode_returns_the_same_operations_and_executes_none(monkeypatch, capsys):
    directory = FakeDirectory(samba_schema())
    result = run_module({**BASE_ARGS, "_ansible_check_mode": True}, monkeypatch, capsys, directory)
    assert result["changed"] is True
    assert directory.writes == []
    assert [op["kind"] for op in result["operations"]] == ["ldap_add"] * 3 + ["ldap_modify"]
    assert result["operations"][-1] == {
        "kind": "ldap_modify",
        "target": f"CN=User,{SCHEMA}",
        "changes": {"auxiliaryClass": {"op": "add", "values": ["credroamUser"]}},
    }


def test_diff_mode_shows_before_and_after_per_object(monkeypatch, capsys):
    directory = FakeDirectory(samba_schema())
    result = run_module(
        {**BASE_ARGS, "_ansible_check_mode": True, "_ansible_diff": True},
        monkeypatch,
        capsys,
        directory,
    )
    user = f"CN=User,{SCHEMA}"
    assert result["diff"]["before"][user] == {"auxiliaryClass": ["posixAccount"]}
    assert result["diff"]["after"][user] == {"auxiliaryClass": ["posixAccount", "credroamUser"]}
    assert result["diff"]["before"][f"CN=credroam-User,{SCHEMA}"] is None


def test_a_conflict_fails_and_writes_nothing(monkeypatch, capsys):
    schema = samba_schema()
    schema[f"CN=ms-PKI-AccountCredentials,{SCHEMA}"]["isSingleValued"] = [b"TRUE"]
    directory = FakeDirectory(schema)
    result = run_module(BASE_ARGS, monkeypatch, capsys, directory)
    assert result["failed"] is True
    assert result["msg"].startswith("schema conflict, nothing was written:")
    assert "attribute msPKIAccountCredentials" in result["msg"]
    assert directory.writes == []


def test_a_write_that_fails_reports_changed_with_the_operations_done(monkeypatch, capsys):
    class RefusingClasses(FakeDirectory):
        def add(self, dn, object_class, attributes):
            super().add(dn, object_class, attributes)
            if object_class == "classSchema":
                self.result = {"result": 50, "description": "insufficientAccessRights"}

    directory = RefusingClasses(samba_schema())
    result = run_module(BASE_ARGS, monkeypatch, capsys, directory)
    assert result["failed"] is True and result["changed"] is True
    assert "adding CN=credroam-User" in result["msg"]
    assert [op["target"].split(",")[0] for op in result["operations"]] == [
        "CN=credroam-Key-Envelopes",
        "CN=credroam-Roaming-Keys",
    ]


def test_state_absent_is_refused_before_connecting(monkeypatch, capsys):
    result = run_module({**BASE_ARGS, "state": "absent"}, monkeypatch, capsys)
    assert result["failed"] is True
    assert "can only be made defunct" in result["msg"]
    assert "defunct=true" in result["msg"]


def test_invalid_definition_fails_naming_it_before_connecting(monkeypatch, capsys):
    bad = {"name": "fooLinks", "oid_index": 5, "syntax": "dn-binary", "link_id": 2001}
    result = run_module({**BASE_ARGS, "attributes": [bad]}, monkeypatch, capsys)
    assert result["failed"] is True
    assert "attribute 'fooLinks'.link_id 2001 is odd" in result["msg"]


def test_unknown_syntax_is_refused_by_the_argument_spec(monkeypatch, capsys):
    bad = {"name": "fooBlob", "oid_index": 5, "syntax": "blob"}
    result = run_module({**BASE_ARGS, "attributes": [bad]}, monkeypatch, capsys)
    assert result["failed"] is True
    assert "syntax" in result["msg"] and "blob" in result["msg"]


def test_nothing_to_do_is_an_error(monkeypatch, capsys):
    result = run_module({**BASE_ARGS, "preset": "none"}, monkeypatch, capsys)
    assert result["failed"] is True
    assert "nothing to do" in result["msg"]


def test_bind_password_is_never_logged():
    assert ad_schema.argument_spec()["bind_password"]["no_log"] is True
