"""DC discovery (configured list, DNS SRV order), failover, and the bind as the user."""

from __future__ import annotations

import pytest

from credroam.errors import DirectoryError
from credroam_agent.config import parse_config
from credroam_agent.dcs import DirectoryUnreachable, bind_as_user, candidate_dcs

CONFIG = '[directory]\ndomain = "lab.example"\n'
UNREACHABLE = "cannot reach or trust the domain controller {}:636 (ldaps): timed out"


class Conn:
    def __init__(self, target):
        self.target = target


def test_srv_records_are_tried_by_priority_then_weight():
    config = parse_config(CONFIG, "f")
    records = [(10, 50, "dc3.lab.example"), (0, 10, "dc2.lab.example"), (0, 90, "dc1.lab.example")]
    looked_up = []

    def lookup(name):
        looked_up.append(name)
        return records

    assert candidate_dcs(config.directory, lookup) == [
        "dc1.lab.example",
        "dc2.lab.example",
        "dc3.lab.example",
    ]
    assert looked_up == ["_ldap._tcp.lab.example"]


def test_a_configured_list_is_used_as_given_without_dns():
    config = parse_config(CONFIG + 'dcs = ["dc2.lab.example", "dc1.lab.example"]\n', "f")

    def lookup(name):
        raise AssertionError("no DNS lookup with a configured list")

    assert candidate_dcs(config.directory, lookup) == ["dc2.lab.example", "dc1.lab.example"]


def test_a_dc_that_is_down_is_skipped_and_the_one_used_reported():
    config = parse_config(CONFIG + 'dcs = ["dc1.lab.example", "dc2.lab.example"]\n', "f")

    def connector(target):
        if target.server == "dc1.lab.example":
            raise DirectoryError(UNREACHABLE.format(target.server))
        return Conn(target)

    bound = bind_as_user(config, "alice", None, connector=connector)
    assert bound.dc == "dc2.lab.example"
    assert bound.method == "gssapi"
    assert bound.conn.target.bind_user == "alice@LAB.EXAMPLE"
    assert len(bound.skipped) == 1 and "dc1.lab.example" in bound.skipped[0]


def test_without_a_ticket_the_password_binds_simply_inside_tls():
    config = parse_config(CONFIG + 'dcs = ["dc1.lab.example"]\n', "f")
    tried = []

    def connector(target):
        tried.append(target.bind_method)
        if target.bind_method == "gssapi":
            raise DirectoryError("no Kerberos credentials of alice@LAB.EXAMPLE: run kinit")
        return Conn(target)

    bound = bind_as_user(config, "alice", "pw", connector=connector)
    assert tried == ["gssapi", "simple"]
    assert bound.password_verified
    assert bound.conn.target.tls_mode == "ldaps"


def test_no_dc_answering_names_every_dc_and_its_error():
    config = parse_config(CONFIG + 'dcs = ["dc1.lab.example", "dc2.lab.example"]\n', "f")

    def connector(target):
        raise DirectoryError(UNREACHABLE.format(target.server))

    with pytest.raises(DirectoryUnreachable) as raised:
        bind_as_user(config, "alice", "secret-password", connector=connector)
    message = str(raised.value)
    assert "dc1.lab.example" in message and "dc2.lab.example" in message
    assert "secret-password" not in message


def test_simple_bind_method_without_a_password_cannot_bind():
    config = parse_config(CONFIG + 'dcs = ["dc1"]\nbind_method = "simple"\n', "f")
    with pytest.raises(DirectoryUnreachable, match="no password"):
        bind_as_user(config, "alice", None, connector=Conn)
