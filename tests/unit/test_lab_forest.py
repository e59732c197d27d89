"""Pure helpers of the lab_forest role: names and their limits, the IP plan, input checks,
smb.conf rendering, parsing of `ip` and `ss` output, and the refusal messages.

The role's module_utils file is loaded by path: it is role-local (Ansible finds it as
ansible.module_utils.lab_forest_common only inside the role's modules).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

COMMON = (
    Path(__file__).resolve().parents[2]
    / "roles"
    / "lab_forest"
    / "module_utils"
    / "lab_forest_common.py"
)


def _load_common():
    spec = importlib.util.spec_from_file_location("lab_forest_common", COMMON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


lf = _load_common()

LONGEST = "abcdefgh"  # 8 characters, the longest lab name


# --- names -------------------------------------------------------------------------------


def test_names_share_the_lab_prefix_and_the_dash_ends_the_name() -> None:
    names = lf.LabNames("lab")
    assert names.prefix == "cr-lab-"
    assert names.bridge == "cr-lab-br"
    assert names.netns("dc1") == "cr-lab-dc1"
    assert names.veth("dc2") == "cr-lab-d2"
    assert names.veth("client12") == "cr-lab-c12"
    assert not lf.LabNames("lab2").bridge.startswith(names.prefix)


def test_every_interface_name_of_the_longest_lab_fits_linux_limit() -> None:
    names = lf.LabNames(LONGEST)
    hosts = [f"dc{i}" for i in range(1, lf.MAX_DCS + 1)]
    hosts += [f"client{i}" for i in range(1, lf.MAX_CLIENTS + 1)]
    interfaces = [names.bridge, *(names.veth(host) for host in hosts)]
    assert max(len(name) for name in interfaces) == lf.IFNAME_MAX == 15
    assert names.veth(f"client{lf.MAX_CLIENTS}") == "cr-abcdefgh-c20"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("abcdefghi", "'abcdefghi' is 9 characters"),
        ("", "'' has other characters"),
        ("Lab", "'Lab' has other characters"),
        ("my-lab", "'my-lab' has other characters"),
        ("lab_1", "'lab_1' has other characters"),
    ],
)
def test_bad_lab_names_are_refused_naming_the_variable(name: str, problem: str) -> None:
    with pytest.raises(lf.LabError) as caught:
        lf.LabNames(name)
    assert f"lab name (lab_forest_name) {problem}" in str(caught.value)
    assert "15 characters" in str(caught.value)


def test_host_of_netns_knows_only_this_labs_hosts() -> None:
    names = lf.LabNames("lab")
    assert names.host_of_netns("cr-lab-client3") == "client3"
    assert names.host_of_netns("cr-lab-dc1") == "dc1"
    assert names.host_of_netns("cr-lab2-dc1") is None
    assert names.host_of_netns("cr-lab-other") is None


@pytest.mark.parametrize("host", ["dc0", "client", "web1", "dc100", "client01"])
def test_host_names_other_than_dc_n_or_client_n_are_refused(host: str) -> None:
    with pytest.raises(lf.LabError, match=f"host name '{host}' must be dc<N> or client<N>"):
        lf.split_host(host)


# --- IP plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ip"),
    [("dc1", "172.29.7.10"), ("dc2", "172.29.7.11"), ("client1", "172.29.7.21"),
     ("client20", "172.29.7.40")],
)  # fmt: skip
def test_host_addresses_follow_the_plan(host: str, ip: str) -> None:
    assert lf.host_ip("172.29.7.0/24", host) == ip


def test_bridge_gets_the_first_address_also_in_a_wider_subnet() -> None:
    assert lf.bridge_ip("10.20.0.0/16") == "10.20.0.1"
    assert lf.host_ip("10.20.0.0/16", "client2") == "10.20.0.22"


def test_host_plan_lists_dcs_first_then_clients() -> None:
    plan = lf.host_plan("172.29.7.0/24", 2, 2)
    assert [h["name"] for h in plan["dcs"]] == ["dc1", "dc2"]
    assert [h["name"] for h in plan["clients"]] == ["client1", "client2"]
    assert list(plan["hosts"]) == ["dc1", "dc2", "client1", "client2"]
    assert plan["hosts"]["client2"] == "172.29.7.22"


def test_host_plan_without_clients_has_the_dc_only() -> None:
    plan = lf.host_plan("172.29.7.0/24", 1, 0)
    assert plan == {
        "dcs": [{"name": "dc1", "ip": "172.29.7.10"}],
        "clients": [],
        "hosts": {"dc1": "172.29.7.10"},
    }


@pytest.mark.parametrize(
    ("dcs", "clients", "message"),
    [
        (0, 1, "lab_forest_dc_count must be 1-2, not 0"),
        (3, 1, "lab_forest_dc_count must be 1-2, not 3"),
        (1, -1, "lab_forest_client_count must be 0-20, not -1"),
        (1, 21, "lab_forest_client_count must be 0-20, not 21"),
    ],
)
def test_host_plan_refuses_counts_out_of_range(dcs: int, clients: int, message: str) -> None:
    with pytest.raises(lf.LabError, match=message):
        lf.host_plan("172.29.7.0/24", dcs, clients)


# --- input checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("172.29.7.5/24", "'172.29.7.5/24' is not a network address: .*host bits set"),
        ("lab", "'lab' is not a network address"),
        ("fd00::/64", "fd00::/64 must be an IPv4 network of /24 or larger"),
        ("172.29.7.0/25", "172.29.7.0/25 must be an IPv4 network of /24 or larger"),
        ("8.8.8.0/24", "8.8.8.0/24 is not a private network"),
    ],
)
def test_bad_subnets_are_refused_naming_the_variable(subnet: str, message: str) -> None:
    with pytest.raises(lf.LabError, match=f"lab_forest_subnet {message}"):
        lf.validate_subnet(subnet)


def test_private_subnets_of_24_or_wider_are_accepted() -> None:
    assert str(lf.validate_subnet("172.29.7.0/24")) == "172.29.7.0/24"
    assert str(lf.validate_subnet("10.0.0.0/16")) == "10.0.0.0/16"


def test_good_directory_names_pass() -> None:
    lf.validate_directory_names("LAB.EXAMPLE", "LAB", ["alice", "bob.smith", "svc_1", "x-2"])
    lf.validate_directory_names("AD.CORP.EXAMPLE", "CORP-LAB", [])


@pytest.mark.parametrize(
    ("realm", "domain", "users", "message"),
    [
        ("lab.example", "LAB", [], "lab_forest_realm 'lab.example' must be a DNS name"),
        ("LAB", "LAB", [], "lab_forest_realm 'LAB' must be a DNS name"),
        ("LAB.EXAMPLE", "LAB.EXAMPLE", [], "lab_forest_domain 'LAB.EXAMPLE' must be a NetBIOS"),
        ("LAB.EXAMPLE", "A234567890123456", [], "lab_forest_domain 'A234567890123456'"),
        ("LAB.EXAMPLE", "LAB", ["a,b"], "lab_forest_users name 'a,b' must be 1-20"),
        ("LAB.EXAMPLE", "LAB", ["a" * 21], "lab_forest_users name 'a{21}' must be 1-20"),
        ("LAB.EXAMPLE", "LAB", [".hidden"], "lab_forest_users name '.hidden'"),
        ("LAB.EXAMPLE", "LAB", ["alice", "Alice"], "lab_forest_users lists alice more than once"),
    ],
)
def test_bad_directory_names_are_refused_naming_the_variable(
    realm: str, domain: str, users: list[str], message: str
) -> None:
    with pytest.raises(lf.LabError, match=message):
        lf.validate_directory_names(realm, domain, users)


# --- the machine's addresses ---------------------------------------------------------------

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever
89: cr-citest-br    inet 172.29.200.1/24 scope global cr-citest-br\\       valid_lft forever
90: cr-mine-br    inet 172.29.7.1/24 scope global cr-mine-br\\       valid_lft forever
"""


def test_ip_addr_output_is_parsed_to_interface_and_address() -> None:
    assert lf.parse_ipv4_addresses(IP_ADDR) == [
        ("lo", "127.0.0.1/8"),
        ("eth0", "192.0.2.2/24"),
        ("cr-citest-br", "172.29.200.1/24"),
        ("cr-mine-br", "172.29.7.1/24"),
    ]


def test_overlap_is_by_network_not_by_equal_prefix() -> None:
    addresses = lf.parse_ipv4_addresses(IP_ADDR)
    assert lf.overlapping_addresses("172.29.0.0/16", addresses) == [
        ("cr-citest-br", "172.29.200.1/24"),
        ("cr-mine-br", "172.29.7.1/24"),
    ]
    assert lf.overlapping_addresses("192.0.2.0/24", addresses) == [("eth0", "192.0.2.2/24")]
    assert lf.overlapping_addresses("172.29.8.0/24", addresses) == []


def test_subnet_conflict_names_the_interface_and_another_labs_bridge() -> None:
    names = lf.LabNames("mine")
    used = lf.overlapping_addresses("172.29.0.0/16", lf.parse_ipv4_addresses(IP_ADDR))
    message = lf.subnet_conflict_message(names, "172.29.0.0/16", used)
    assert message.startswith("lab_forest_subnet 172.29.0.0/16 overlaps an address already")
    assert "cr-citest-br has 172.29.200.1/24 (bridge of lab 'citest')" in message
    assert "cr-mine-br" not in message  # the lab's own bridge is no conflict
    eth0 = lf.subnet_conflict_message(names, "192.0.2.0/24", [("eth0", "192.0.2.2/24")])
    assert "(eth0 has 192.0.2.2/24)" in eth0


def test_own_bridge_alone_is_no_conflict() -> None:
    names = lf.LabNames("mine")
    own = [("cr-mine-br", "172.29.7.1/24")]
    assert lf.subnet_conflict_message(names, "172.29.7.0/24", own) == ""
    assert lf.subnet_conflict_message(names, "172.29.7.0/24", []) == ""


# --- ports ---------------------------------------------------------------------------------

SS = """\
udp UNCONN 0 0 172.29.90.10:88 0.0.0.0:* users:(("kdc(3",pid=12111,fd=34),("kdc[master]",pid=12091,fd=34))
tcp LISTEN 0 10 172.29.90.10:636 0.0.0.0:* users:(("python3",pid=4242,fd=3))
tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=77,fd=3))
tcp LISTEN 0 128 [::]:2024 [::]:*
tcp LISTEN 0 10 172.29.90.11%eth0:389 0.0.0.0:* users:(("ldap[master]",pid=9,fd=28))
"""  # noqa: E501


def test_ss_output_is_parsed_with_process_names() -> None:
    listeners = lf.parse_listeners(SS)
    assert listeners[0] == lf.Listener("udp", "172.29.90.10", 88, "kdc(3 (pid 12111)")
    assert listeners[1] == lf.Listener("tcp", "172.29.90.10", 636, "python3 (pid 4242)")
    assert listeners[3] == lf.Listener("tcp", "::", 2024, "")
    assert listeners[4].address == "172.29.90.11"


def test_busy_ports_are_tcp_on_the_address_or_on_every_address() -> None:
    listeners = lf.parse_listeners(SS)
    busy = lf.busy_ports(listeners, "172.29.90.10", lf.DC_TCP_PORTS)
    assert [(item.port, item.process) for item in busy] == [(636, "python3 (pid 4242)")]
    assert [item.port for item in lf.busy_ports(listeners, "172.29.90.21", (22,))] == [22]
    assert lf.busy_ports(listeners, "172.29.90.10", (88,)) == []  # udp only
    assert lf.busy_ports(listeners, "172.29.90.10", (389,)) == []  # another address


# --- smb.conf ------------------------------------------------------------------------------

PROVISIONED = """\
# Global parameters
[global]
\tdns forwarder = 192.0.2.53
\tnetbios name = DC1
\tTLS Enabled = no
\trealm = LAB.EXAMPLE
\tDNSForwarder=10.0.0.1

[sysvol]
\tpath = /x/sysvol
\tread only = No
"""


def test_smb_conf_drops_every_forwarder_spelling_and_sets_wanted_options() -> None:
    wanted = {"tls enabled": "yes", "dsdb:schema update allowed": "true"}
    text = lf.set_global_options(PROVISIONED, wanted, ["dns forwarder"])
    assert "forwarder" not in text.lower()
    assert "TLS Enabled = no" not in text
    glob, sysvol = text.split("[sysvol]")
    assert "\ttls enabled = yes\n" in glob
    assert "\tdsdb:schema update allowed = true\n" in glob
    assert "\tnetbios name = DC1\n" in glob
    assert sysvol == "\n\tpath = /x/sysvol\n\tread only = No\n"


def test_smb_conf_rendering_is_idempotent() -> None:
    wanted = {"tls enabled": "yes"}
    once = lf.set_global_options(PROVISIONED, wanted, ["dns forwarder"])
    assert lf.set_global_options(once, wanted, ["dns forwarder"]) == once


def test_smb_conf_with_global_last_gets_the_options_at_its_end() -> None:
    text = lf.set_global_options("[global]\n\trealm = X.Y\n", {"tls enabled": "yes"}, [])
    assert text == "[global]\n\trealm = X.Y\n\ttls enabled = yes\n"


def test_lab_resolver_and_hosts_files_point_into_the_lab_only() -> None:
    resolv = lf.resolv_conf("LAB.EXAMPLE", ["172.29.7.10", "172.29.7.11"])
    assert resolv.splitlines() == [
        "search lab.example",
        "nameserver 172.29.7.10",
        "nameserver 172.29.7.11",
        "options timeout:1 attempts:1",
    ]
    hosts = lf.hosts_file("LAB.EXAMPLE", {"dc1": "172.29.7.10", "client1": "172.29.7.21"})
    assert "172.29.7.10\tdc1.lab.example dc1\n" in hosts
    assert "172.29.7.21\tclient1.lab.example client1\n" in hosts


# --- refusals ------------------------------------------------------------------------------


def test_nothing_but_the_bridge_is_no_stale_lab(tmp_path: Path) -> None:
    names = lf.LabNames("mine")
    found = {"netns": [], "links": ["cr-mine-br"], "pids": []}
    assert lf.stale_lab_message(names, found, tmp_path / "absent") == ""
    assert lf.stale_lab_message(names, found, tmp_path) == ""  # empty folder


def test_stale_lab_with_dead_processes_says_so_and_how_to_clean(tmp_path: Path) -> None:
    names = lf.LabNames("mine")
    found = {"netns": ["cr-mine-dc1"], "links": ["cr-mine-br", "cr-mine-d1"], "pids": []}
    message = lf.stale_lab_message(names, found, tmp_path)
    assert message.startswith("lab 'mine' is stale or half-started:")
    assert "network namespaces cr-mine-dc1; links cr-mine-d1 exist" in message
    assert "no lab process runs (they died)" in message
    assert f"no {tmp_path / 'lab.json'}" in message
    assert "-e lab_forest_name=mine -e lab_forest_state=absent" in message


def test_stale_lab_with_live_processes_or_files_counts_them(tmp_path: Path) -> None:
    (tmp_path / "dc1").mkdir()
    names = lf.LabNames("mine")
    message = lf.stale_lab_message(names, {"netns": [], "links": [], "pids": [1, 2]}, tmp_path)
    assert f"files in {tmp_path} exist, 2 lab processes still run" in message


RECORDED = {
    "name": "mine",
    "subnet": "172.29.7.0/24",
    "realm": "LAB.EXAMPLE",
    "domain": "LAB",
    "dcs": [{"name": "dc1"}, {"name": "dc2"}],
}
SAME = {"subnet": "172.29.7.0/24", "realm": "LAB.EXAMPLE", "domain": "LAB", "dc_count": 2}


def test_an_up_lab_accepts_its_own_settings() -> None:
    assert lf.unchangeable_settings_message(RECORDED, SAME) == ""


def test_an_up_lab_refuses_another_subnet_realm_or_fewer_dcs() -> None:
    wanted = {**SAME, "subnet": "172.29.8.0/24", "realm": "OTHER.EXAMPLE", "dc_count": 1}
    message = lf.unchangeable_settings_message(RECORDED, wanted)
    assert message.startswith("lab 'mine' is up with other settings:")
    assert "lab_forest_subnet is '172.29.8.0/24' but the lab has '172.29.7.0/24'" in message
    assert "lab_forest_realm is 'OTHER.EXAMPLE' but the lab has 'LAB.EXAMPLE'" in message
    assert "lab_forest_dc_count is 1 but the lab has 2 DCs" in message
    assert "-e lab_forest_name=mine -e lab_forest_state=absent" in message


# --- directory -----------------------------------------------------------------------------


def test_new_users_are_enabled_with_a_password_that_does_not_expire() -> None:
    attributes = lf.new_user_attributes("alice", "Pass-1!", "LAB.EXAMPLE")
    assert attributes["userPrincipalName"] == "alice@lab.example"
    assert attributes["sAMAccountName"] == "alice"
    assert int(attributes["userAccountControl"]) == 0x0200 | 0x10000
    assert attributes["unicodePwd"] == '"Pass-1!"'.encode("utf-16-le")


def test_a_hosts_home_is_0755_so_its_local_users_reach_their_homes(tmp_path):
    sandbox = lf.Sandbox(lf.LabNames("t"), "client1", tmp_path / "client1")
    sandbox.etc.mkdir(parents=True)  # an existing copy of /etc: the machine's is not copied
    sandbox.create_files("hosts\n", "resolv\n", "client1.lab.example")
    modes = {sub: (sandbox.root / sub).stat().st_mode & 0o777 for sub in ("home", "root", "agent")}
    assert modes == {"home": 0o755, "root": 0o700, "agent": 0o755}


def test_each_host_mounts_its_own_agent_folder_over_the_shared_usr(tmp_path):
    sandbox = lf.Sandbox(lf.LabNames("t"), "client2", tmp_path / "client2")
    script = sandbox.wrap(["true"])[-3]
    assert f'mount --bind "{sandbox.root}/agent" "{lf.AGENT_DIR}"' in script
    assert lf.AGENT_DIR == "/usr/local/lib/credroam"  # inventories/lab's sync_agent_prefix
