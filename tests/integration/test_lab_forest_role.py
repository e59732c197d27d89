"""lab_forest role: a DC-only lab, users converging on an up lab, refusals of bad input.

Uses this session's second lab (CREDROAM_TEST_LAB with '2', next /24: fixlab2 for fixlab),
brought up once for the module with no clients and torn down at its end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from credroam.errors import DirectoryError
from tests.integration.conftest import CITEST
from tests.lab import LAB_ROOT, Lab, companion_lab, lab_playbook, lab_traces, pid_is_live

pytestmark = pytest.mark.integration

DC_ONLY = {**companion_lab(CITEST["name"], CITEST["subnet"]), "dc_count": 1, "client_count": 0}
DEFAULT_USERS = [
    {"name": "alice", "password": "Alice-Lab-Pass1!"},
    {"name": "bob", "password": "Bob-Lab-Pass1!"},
    {"name": "carol", "password": "Carol-Lab-Pass1!"},
]


def _up(users: list[dict] | None = None, **options):
    extra = {"lab_forest_users": users} if users is not None else None
    return lab_playbook(**DC_ONLY, state="present", extra_vars=extra, **options)


@pytest.fixture(scope="module")
def dc_only_lab() -> Iterator[Lab]:
    assert lab_playbook(**DC_ONLY, state="absent").returncode == 0
    try:
        up = _up()
        assert up.returncode == 0, up.output[-4000:]
        yield Lab.load(DC_ONLY["name"])
    finally:
        down = lab_playbook(**DC_ONLY, state="absent")
        assert down.returncode == 0, down.output[-4000:]
        assert lab_traces(DC_ONLY["name"]) == []


def test_lab_without_clients_is_a_working_dc(dc_only_lab: Lab) -> None:
    lab = dc_only_lab
    assert lab.clients == ()
    assert [dc.name for dc in lab.dcs] == ["dc1"]
    assert lab.is_up()
    header = f"# credroam lab {lab.name}: SSH host keys of its client hosts\n"
    assert (lab.state_dir / "ssh" / "known_hosts").read_text() == header
    alice = lab.user("alice")
    conn = lab.ldap_connection(alice.upn, alice.password)
    conn.unbind()


def test_lab_without_clients_up_again_changes_nothing(dc_only_lab: Lab) -> None:
    again = _up()
    assert again.returncode == 0 and again.changed == 0, again.output[-4000:]
    checked = _up(check_mode=True)
    assert checked.returncode == 0 and checked.changed == 0, checked.output[-4000:]


def test_users_converge_on_an_up_lab(dc_only_lab: Lab) -> None:
    wanted = [
        *[u for u in DEFAULT_USERS if u["name"] != "bob"],
        {"name": "bob", "password": "Bob-Changed-Pass2!"},
        {"name": "dave", "password": "Dave-Lab-Pass1!"},
    ]
    checked = _up(wanted, check_mode=True)
    assert checked.returncode == 0 and checked.changed > 0, checked.output[-4000:]
    with pytest.raises(DirectoryError):  # check mode added nobody
        dc_only_lab.ldap_connection("dave@" + dc_only_lab.realm.lower(), "Dave-Lab-Pass1!")

    converged = _up(wanted)
    assert converged.returncode == 0, converged.output[-4000:]
    assert converged.changed > 0
    lab = Lab.load(DC_ONLY["name"])
    assert [u.name for u in lab.users] == ["alice", "carol", "bob", "dave"]
    for name in ("dave", "bob", "alice"):
        user = lab.user(name)
        lab.ldap_connection(user.upn, user.password).unbind()
    with pytest.raises(DirectoryError, match="invalidCredentials"):
        lab.ldap_connection(lab.user("bob").upn, "Bob-Lab-Pass1!")

    again = _up(wanted)
    assert again.returncode == 0 and again.changed == 0, again.output[-4000:]
    # Back to the defaults: bob's password is set again; dave, no longer listed, stays.
    restored = _up(DEFAULT_USERS)
    assert restored.returncode == 0 and restored.changed > 0, restored.output[-4000:]
    lab = Lab.load(DC_ONLY["name"])
    lab.ldap_connection(lab.user("bob").upn, "Bob-Lab-Pass1!").unbind()


def _stop_and_wait(pid: int, netns: str) -> None:
    """Stop a DC as a crash would, and wait until every process of it is gone (samba's children
    exit after their parent and hold its ports until then)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_is_live(pid) or _pids_in(netns):
        assert time.monotonic() < deadline, f"processes of {netns} outlived SIGTERM"
        time.sleep(0.05)


def _pids_in(netns: str) -> list[int]:
    listed = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=True
    )
    return [int(pid) for pid in listed.stdout.split() if pid_is_live(int(pid))]


@contextlib.contextmanager
def _listener_in(netns: str, ip: str, port: int) -> Iterator[int]:
    """A process holding ip:port in a lab namespace, as a leftover daemon would."""
    program = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(({ip!r}, {port})); s.listen()\n"
        "print('listening', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", program],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "listening"
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def test_port_in_use_is_named_and_a_dead_dc_is_restarted(dc_only_lab: Lab) -> None:
    lab = Lab.load(DC_ONLY["name"])
    dc = lab.dc(0)
    _stop_and_wait(dc.pid, f"cr-{lab.name}-dc1")
    assert not lab.is_up()

    with _listener_in(f"cr-{lab.name}-dc1", dc.ip, 636):
        refused = _up()
    assert refused.returncode != 0
    assert f"dc1 of lab {lab.name!r} cannot start" in refused.output
    assert f"636/tcp on {dc.ip} by python3" in refused.output
    assert "lab_forest_state=absent" in refused.output

    # The namespaces and files are intact and lab.json is there: bringing it up repairs it.
    repaired = _up()
    assert repaired.returncode == 0 and repaired.changed > 0, repaired.output[-4000:]
    lab = Lab.load(DC_ONLY["name"])
    assert lab.is_up() and lab.dc(0).pid != dc.pid
    lab.ldap_connection().unbind()


def _other_address_network() -> tuple[str, str, str]:
    """(interface, address, /24 around it) of a non-lab, non-loopback address of the machine."""
    listed = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    )
    for line in listed.stdout.splitlines():
        device, address = line.split()[1], line.split()[3]
        if device != "lo" and not device.startswith("cr-"):
            network = ipaddress.ip_interface(address).network
            wide = network if network.prefixlen <= 24 else network.supernet(new_prefix=24)
            return device, address, str(wide)
    pytest.skip("the machine has no address outside lo and the labs")


BAD_NAME = f"{DC_ONLY['name'][:7]}x"


def _refused(extra: dict) -> str:
    options = {**DC_ONLY, "name": BAD_NAME, "subnet": "172.29.254.0/24"}
    options.update({k: extra.pop(k) for k in list(extra) if k in options})
    run = lab_playbook(**options, state="present", extra_vars=extra)
    assert run.returncode != 0, run.output[-4000:]
    assert lab_traces(options["name"]) == [], "a refused bring-up made something"
    return run.output


def test_subnet_overlapping_a_machine_address_is_refused_naming_it() -> None:
    device, address, network = _other_address_network()
    if not ipaddress.ip_network(network).is_private:
        pytest.skip(f"{device}'s network {network} is public; the private check refuses first")
    output = _refused({"subnet": network})
    assert f"lab_forest_subnet {network} overlaps" in output
    assert f"{device} has {address}" in output


def test_subnet_of_another_labs_bridge_is_refused_naming_that_lab(dc_only_lab: Lab) -> None:
    output = _refused({"subnet": dc_only_lab.subnet})
    assert f"cr-{dc_only_lab.name}-br has {dc_only_lab.controller_ip}/24" in output
    assert f"(bridge of lab {dc_only_lab.name!r})" in output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"name": "labnameistoolong"}, "lab name (lab_forest_name) 'labnameistoolong' is 16"),
        ({"name": "Bad-Name"}, "lab name (lab_forest_name) 'Bad-Name' has other characters"),
        ({"dc_count": 3}, "value of lab_forest_dc_count must be one of: 1, 2, got: 3"),
        ({"client_count": 21}, "lab_forest_client_count must be 0-20, not 21"),
        ({"subnet": "172.29.254.7/24"}, "lab_forest_subnet '172.29.254.7/24' is not a network"),
        ({"subnet": "172.29.254.0/25"}, "must be an IPv4 network of /24 or larger"),
        ({"subnet": "8.8.8.0/24"}, "lab_forest_subnet 8.8.8.0/24 is not a private network"),
        ({"lab_forest_realm": "lab"}, "lab_forest_realm 'lab' must be a DNS name"),
        (
            {"lab_forest_users": [{"name": "a b", "password": "A-b-Pass1!"}]},
            "lab_forest_users name 'a b' must be 1-20 of",
        ),
    ],
    ids=["long-name", "bad-name", "dc-count", "client-count", "host-bits", "small", "public",
         "realm", "user-name"],
)  # fmt: skip
def test_bad_input_is_refused_naming_it_before_anything_is_made(extra: dict, message: str):
    assert message in _refused(dict(extra))


def test_stale_lab_json_settings_are_refused(dc_only_lab: Lab) -> None:
    moved = lab_playbook(**{**DC_ONLY, "subnet": "172.29.254.0/24"}, state="present")
    assert moved.returncode != 0
    assert f"lab {dc_only_lab.name!r} is up with other settings" in moved.output
    assert f"but the lab has '{dc_only_lab.subnet}'" in moved.output
    assert json.loads((LAB_ROOT / dc_only_lab.name / "lab.json").read_text())["subnet"] == (
        dc_only_lab.subnet
    )
