"""The schema's directory steps (credroam.schema.directory) against a small fake forest.

The fake answers the few LDAP calls the steps make (base and subtree searches by objectClass,
one-level searches of the schema, add, modify) for one DC each, so the tests can follow which
DC is asked what, and what is written where.
"""

from __future__ import annotations

from typing import Any

import ldap3
import pytest

from credroam.connection import LdapTarget, RootDse
from credroam.errors import DirectoryError
from credroam.schema.definitions import guid_to_bytes, oid_to_ber
from credroam.schema.directory import (
    apply_plan,
    connect_schema_master,
    dc_target,
    forest_dcs,
    read_schema,
    schema_master,
    wait_for_replication,
    wait_until_replicated,
)
from credroam.schema.plan import plan_present
from tests.unit.test_schema import CREDROAM, SCHEMA_DN, fully_extended_schema, user_class

DOMAIN = "DC=lab,DC=example"
CONFIG = f"CN=Configuration,{DOMAIN}"
SERVERS = f"CN=Servers,CN=Default-First-Site-Name,CN=Sites,{CONFIG}"
BASE = LdapTarget(server="10.0.0.1", bind_user="u", bind_password="p", ca_cert="/ca.pem")
ADDRESSES = {"dc1.lab.example": "10.0.0.1", "dc2.lab.example": "10.0.0.2"}


def server(name: str, with_ntds: bool = True) -> dict[str, dict[str, Any]]:
    """A DC's server object under CN=Sites, and its NTDS Settings unless it was demoted."""
    dn = f"CN={name.upper()},{SERVERS}"
    objects = {dn: {"objectClass": ["server"], "dNSHostName": [f"{name}.lab.example"]}}
    if with_ntds:
        objects[f"CN=NTDS Settings,{dn}"] = {"objectClass": ["nTDSDSA"]}
    return objects


def raw(entry: dict[str, Any]) -> dict[str, list[bytes]]:
    """A normalized schema entry as a DC sends it (the inverse of plan.normalize_entry)."""
    encode = {"attributesecurityguid": guid_to_bytes, "omobjectclass": oid_to_ber}
    return {
        key: [encode.get(key, str.encode)(value) for value in values]
        for key, values in entry.items()
        if key != "dn"
    }


class FakeDc:
    """One DC: configuration objects by DN, schema objects (normalized) by DN, the writes."""

    def __init__(self, host: str, objects: dict[str, dict], schema: list[dict[str, Any]]):
        self.server = type("Server", (), {"host": host})()
        self.objects = objects
        self.schema = {entry["dn"]: entry for entry in schema}
        self.writes: list[tuple[str, str]] = []
        self.result: dict[str, Any] = {"result": 0}
        self.response: list[dict[str, Any]] = []
        self.bound = True
        self.fail_on: str | None = None  # DN whose write the DC refuses

    def search(self, base, search_filter, search_scope=ldap3.SUBTREE, attributes=None):
        self.result = {"result": 0}
        if search_scope == ldap3.LEVEL:
            self.response = [
                {"type": "searchResEntry", "dn": dn, "raw_attributes": raw(entry)}
                for dn, entry in self.schema.items()
            ]
        elif search_scope == ldap3.BASE:
            if base not in self.objects:
                self.result = {"result": 32, "description": "noSuchObject"}
                self.response = []
                return False
            self.response = [
                {"type": "searchResEntry", "dn": base, "attributes": self.objects[base]}
            ]
        else:
            wanted = search_filter.removeprefix("(objectClass=").removesuffix(")")
            self.response = [
                {"type": "searchResEntry", "dn": dn, "attributes": attrs}
                for dn, attrs in self.objects.items()
                if dn.endswith(base) and wanted in attrs.get("objectClass", [])
            ]
        return bool(self.response)

    def _write(self, kind: str, dn: str) -> None:
        if dn == self.fail_on:
            self.result = {"result": 50, "description": "insufficientAccessRights"}
        else:
            self.result = {"result": 0}
            self.writes.append((kind, dn or "rootDSE"))

    def add(self, dn, object_class, attributes):
        self._write("add", dn)

    def modify(self, dn, changes):
        self._write("modify", dn)

    def unbind(self):
        self.bound = False


def forest(schema_master_name: str = "dc1") -> dict[str, dict[str, Any]]:
    objects = {**server("dc1"), **server("dc2"), **server("old", with_ntds=False)}
    objects[SCHEMA_DN] = {
        "fSMORoleOwner": [f"CN=NTDS Settings,CN={schema_master_name.upper()},{SERVERS}"]
    }
    return objects


def root_dse(dc: str = "dc1") -> RootDse:
    return RootDse(
        DOMAIN, SCHEMA_DN, CONFIG, DOMAIN, f"{dc}.lab.example", f"CN={dc.upper()},{SERVERS}"
    )


class Connector:
    """Stands in for connection.connect: hands out the fake DC a target's name addresses."""

    def __init__(self, dcs: dict[str, FakeDc]):
        self.dcs = dcs
        self.targets: list[LdapTarget] = []

    def __call__(self, target: LdapTarget) -> FakeDc:
        self.targets.append(target)
        return self.dcs[target.tls_server_name or target.server]


def test_a_dc_the_controller_cannot_resolve_is_reached_by_address_checked_by_name():
    mapped = dc_target(BASE, "DC2.lab.example", {"dc2.lab.example": "10.0.0.2"})
    assert (mapped.server, mapped.tls_server_name, mapped.ca_cert) == (
        "10.0.0.2",
        "DC2.lab.example",
        "/ca.pem",
    )
    unmapped = dc_target(BASE, "dc3.lab.example", {})
    assert (unmapped.server, unmapped.tls_server_name) == ("dc3.lab.example", None)


def test_the_schema_master_is_the_fsmo_owners_server():
    dc1 = FakeDc("10.0.0.1", forest("dc2"), [])
    assert schema_master(dc1, SCHEMA_DN) == (f"CN=DC2,{SERVERS}", "dc2.lab.example")


def test_a_schema_without_fsmo_owner_is_an_error_naming_the_schema():
    objects = forest()
    objects[SCHEMA_DN] = {}
    with pytest.raises(DirectoryError, match=f"{SCHEMA_DN} names no fSMORoleOwner"):
        schema_master(FakeDc("10.0.0.1", objects, []), SCHEMA_DN)


def test_connected_to_the_master_already_keeps_that_connection():
    dc1 = FakeDc("10.0.0.1", forest("dc1"), [])
    connector = Connector({})
    assert connect_schema_master(dc1, root_dse("dc1"), BASE, ADDRESSES, connector) == (
        "dc1.lab.example",
        dc1,
    )
    assert dc1.bound and connector.targets == []


def test_another_master_is_reached_with_the_same_settings_and_the_first_dc_let_go():
    dc1 = FakeDc("10.0.0.1", forest("dc2"), [])
    dc2 = FakeDc("10.0.0.2", forest("dc2"), [])
    connector = Connector({"dc2.lab.example": dc2})
    name, conn = connect_schema_master(dc1, root_dse("dc1"), BASE, ADDRESSES, connector)
    assert (name, conn) == ("dc2.lab.example", dc2)
    assert not dc1.bound
    [target] = connector.targets
    assert (target.server, target.tls_server_name, target.bind_user) == (
        "10.0.0.2",
        "dc2.lab.example",
        "u",
    )


def test_forest_dcs_are_the_servers_holding_ntds_settings():
    assert forest_dcs(FakeDc("10.0.0.1", forest(), []), CONFIG) == [
        "dc1.lab.example",
        "dc2.lab.example",
    ]


def test_read_schema_returns_normalized_entries():
    dc1 = FakeDc("10.0.0.1", forest(), [user_class(aux=["credroamUser"])])
    [user] = read_schema(dc1, SCHEMA_DN, CREDROAM)
    assert user["auxiliaryclass"] == ["credroamUser"]
    assert user["dn"] == f"CN=User,{SCHEMA_DN}"


def test_apply_plan_refreshes_the_schema_after_each_phase():
    dc1 = FakeDc("10.0.0.1", forest(), [])
    done: list[dict[str, Any]] = []
    apply_plan(dc1, plan_present(CREDROAM, [user_class()], SCHEMA_DN), done)
    assert [kind for kind, _ in dc1.writes] == [
        *(["add"] * 6),  # the natives are missing from this schema, and credroam's own two
        "modify",
        "add",
        "modify",
        "modify",
        "modify",
    ]
    assert [dn for _, dn in dc1.writes].count("rootDSE") == 3
    assert len(done) == 8


def test_a_refused_write_stops_the_plan_and_done_names_what_was_written():
    dc1 = FakeDc("10.0.0.1", forest(), [])
    plan = plan_present(CREDROAM, [user_class()], SCHEMA_DN)
    dc1.fail_on = plan.class_adds[0].dn
    done: list[dict[str, Any]] = []
    with pytest.raises(DirectoryError, match=r"adding CN=credroam-User,.* failed on 10\.0\.0\.1"):
        apply_plan(dc1, plan, done)
    assert [op["target"] for op in done] == [add.dn for add in plan.attribute_adds]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_returns_once_every_dc_has_the_change_with_backoff():
    clock = FakeClock()
    lag = {"dc1": 0, "dc2": 3}  # polls until dc2 shows it

    def check(dc: str) -> list[str]:
        lag[dc] -= 1
        return ["credroamUser"] if lag[dc] >= 0 else []

    assert wait_until_replicated(["dc1", "dc2"], check, 60, clock.sleep, clock.monotonic) == {}
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_wait_times_out_naming_lagging_and_unreachable_dcs():
    clock = FakeClock()

    def check(dc: str) -> list[str]:
        if dc == "dc3":
            raise OSError("connection refused")
        return [] if dc == "dc1" else ["credroamKeyEnvelopes"]

    lagging = wait_until_replicated(["dc1", "dc2", "dc3"], check, 30, clock.sleep, clock.monotonic)
    assert lagging == {
        "dc2": ["credroamKeyEnvelopes"],
        "dc3": ["unreachable: connection refused"],
    }
    assert clock.now == 30
    assert max(clock.sleeps) <= 10


def lagging_forest() -> tuple[FakeDc, Connector]:
    """dc1 has credroam's schema; dc2 still lacks the link of credroamUser on user."""
    extended = fully_extended_schema()
    behind = [*extended[:-1], user_class()]
    dc1 = FakeDc("10.0.0.1", forest(), extended)
    dc2 = FakeDc("10.0.0.2", forest(), behind)
    return dc1, Connector({"dc1.lab.example": dc1, "dc2.lab.example": dc2})


def test_wait_for_replication_asks_every_dc_in_its_own_connection():
    dc1, connector = lagging_forest()
    connector.dcs["dc2.lab.example"].schema = dc1.schema
    clock = FakeClock()
    waited = wait_for_replication(
        dc1, root_dse(), BASE, CREDROAM, ADDRESSES, 60, connector, clock.sleep, clock.monotonic
    )
    assert waited == {"dcs": ["dc1.lab.example", "dc2.lab.example"], "seconds": 0.0}
    assert [t.server for t in connector.targets] == ["10.0.0.1", "10.0.0.2"]
    assert not any(dc.bound for dc in connector.dcs.values())


def test_wait_for_replication_times_out_naming_the_dc_and_what_it_lacks():
    dc1, connector = lagging_forest()
    clock = FakeClock()
    with pytest.raises(DirectoryError) as failure:
        wait_for_replication(
            dc1, root_dse(), BASE, CREDROAM, ADDRESSES, 5, connector, clock.sleep, clock.monotonic
        )
    assert str(failure.value) == (
        "schema change not on every DC after 5 s: "
        "dc2.lab.example lacks user.auxiliaryClass=credroamUser"
    )
