# Copyright: credroam contributors
# Shared plumbing of the lab_forest modules: names derived from the lab name, network
# namespaces and links, the per-host sandbox (own /etc, /home, /root, /run, hostname) and
# detached daemons. Standard library only: it runs inside Ansible modules on the controller.
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,8}$")
HOST_RE = re.compile(r"^(dc|client)([1-9][0-9]?)$")
# sAMAccountName: at most 20 characters; letters, digits, '.', '_', '-' keep it a plain CN too.
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$")
REALM_RE = re.compile(r"^[A-Z0-9]([A-Z0-9-]*[A-Z0-9])?(\.[A-Z0-9]([A-Z0-9-]*[A-Z0-9])?)+$")
NETBIOS_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,14}$")
MAX_DCS = 2
MAX_CLIENTS = 20
IFNAME_MAX = 15  # Linux interface names (IFNAMSIZ - 1)
REQUIRED_COMMANDS = ("ip", "ss", "unshare", "nsenter", "samba", "samba-tool", "ssh-keygen", "ssh")
SSHD = "/usr/sbin/sshd"
# Files of Debian packages the lab needs beyond commands: sshd, samba-ad-provision's schema.
REQUIRED_PATHS = (SSHD, "/usr/share/samba/setup/ad-schema")
STOP_TIMEOUT = 5.0
# TCP ports a Samba AD DC listens on (DNS, Kerberos, RPC, NetBIOS, LDAP, SMB, kpasswd, LDAPS, GC).
DC_TCP_PORTS = (53, 88, 135, 139, 389, 445, 464, 636, 3268, 3269)
SSH_TCP_PORTS = (22,)


class LabError(Exception):
    """A lab operation failed; the message says what and, where known, what to do."""


def validate_lab_name(lab: str) -> None:
    """Every kernel object is named `cr-<lab>-<suffix>`; the longest suffix ('c20') makes
    3 + 8 + 1 + 3 = 15 characters, Linux's limit for interface names."""
    if not LAB_NAME_RE.match(lab or ""):
        problem = f"is {len(lab)} characters" if len(lab) > 8 else "has other characters"
        raise LabError(
            f"lab name (lab_forest_name) {lab!r} {problem}: it must be 1-8 of [a-z0-9], "
            f"because interface names cr-<name>-c{MAX_CLIENTS} must fit Linux's "
            f"{IFNAME_MAX} characters"
        )


def validate_subnet(subnet: str) -> ipaddress.IPv4Network:
    """The lab subnet: an IPv4 network of /24 or larger (hosts use .1 to .40)."""
    try:
        network = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise LabError(f"lab_forest_subnet {subnet!r} is not a network address: {exc}") from exc
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 24:
        raise LabError(f"lab_forest_subnet {subnet} must be an IPv4 network of /24 or larger")
    if not network.is_private:
        raise LabError(f"lab_forest_subnet {subnet} is not a private network (RFC 1918)")
    return network


def validate_counts(dc_count: int, client_count: int) -> None:
    if not 1 <= dc_count <= MAX_DCS:
        raise LabError(f"lab_forest_dc_count must be 1-{MAX_DCS}, not {dc_count}")
    if not 0 <= client_count <= MAX_CLIENTS:
        raise LabError(f"lab_forest_client_count must be 0-{MAX_CLIENTS}, not {client_count}")


def validate_directory_names(realm: str, domain: str, user_names: Sequence[str]) -> None:
    if not REALM_RE.match(realm):
        raise LabError(
            f"lab_forest_realm {realm!r} must be a DNS name in upper case with a dot, "
            "e.g. LAB.EXAMPLE"
        )
    if not NETBIOS_RE.match(domain):
        raise LabError(
            f"lab_forest_domain {domain!r} must be a NetBIOS name: 1-15 of [A-Z0-9-], e.g. LAB"
        )
    for name in user_names:
        if not USER_NAME_RE.match(name or ""):
            raise LabError(
                f"lab_forest_users name {name!r} must be 1-20 of [A-Za-z0-9._-], "
                "starting with a letter or digit"
            )
    lowered = [name.lower() for name in user_names]
    duplicates = sorted({name for name in lowered if lowered.count(name) > 1})
    if duplicates:
        raise LabError(f"lab_forest_users lists {', '.join(duplicates)} more than once")


@dataclass(frozen=True)
class LabNames:
    """Kernel object names of one lab. Every name starts with `prefix`, so a lab is found
    (and only that lab: the dash ends the lab name) by prefix. Interface names stay within
    Linux's 15 characters: 'cr-' + 8 + '-' + 3."""

    lab: str

    def __post_init__(self) -> None:
        validate_lab_name(self.lab)

    @property
    def prefix(self) -> str:
        return f"cr-{self.lab}-"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def netns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def veth(self, host: str) -> str:
        kind, number = split_host(host)
        return f"{self.prefix}{kind[0]}{number}"

    def host_of_netns(self, netns: str) -> str | None:
        """The host name of one of this lab's namespaces (None for anything else)."""
        if not netns.startswith(self.prefix):
            return None
        host = netns[len(self.prefix) :]
        return host if HOST_RE.match(host) else None


def split_host(host: str) -> tuple[str, int]:
    match = HOST_RE.match(host)
    if not match:
        raise LabError(f"host name {host!r} must be dc<N> or client<N>")
    return match.group(1), int(match.group(2))


def host_ip(subnet: str, host: str) -> str:
    """DCs get .10, .11; clients .21, .22, ... of the lab subnet."""
    kind, number = split_host(host)
    offset = 9 + number if kind == "dc" else 20 + number
    network = ipaddress.ip_network(subnet)
    return str(network.network_address + offset)


def bridge_ip(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet).network_address + 1)


def host_plan(subnet: str, dc_count: int, client_count: int) -> dict:
    """The hosts of a lab: DCs first (dc1 provisions), then clients, each name and IP."""
    validate_subnet(subnet)
    validate_counts(dc_count, client_count)
    dcs = [{"name": f"dc{i}", "ip": host_ip(subnet, f"dc{i}")} for i in range(1, dc_count + 1)]
    clients = [
        {"name": f"client{i}", "ip": host_ip(subnet, f"client{i}")}
        for i in range(1, client_count + 1)
    ]
    return {"dcs": dcs, "clients": clients, "hosts": {h["name"]: h["ip"] for h in dcs + clients}}


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, output captured; ``timeout=None``: until it ends, however long that is."""
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        command = " ".join(argv)
        raise LabError(f"{argv[0]} did not finish within {timeout:.0f} s: {command}") from exc
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise LabError(f"command failed (rc={result.returncode}): {' '.join(argv)}\n{output}")
    return result


def _lab_env() -> dict[str, str]:
    """Environment of lab processes: the machine's, less Ansible's, with the system PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `check` until it is true; a bounded wait, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- discovery ---------------------------------------------------------------------------


def netns_names() -> list[str]:
    output = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def link_names() -> list[str]:
    output = run(["ip", "-o", "link", "show"]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def netns_pids(netns: str) -> list[int]:
    result = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split()]


def lab_resources(names: LabNames) -> dict[str, list]:
    """Everything of this lab that exists on the machine right now. Every lab process runs
    in one of the lab's network namespaces (they are started through `ip netns exec`), so the
    namespaces find them all; no marker in the environment would survive samba and sshd
    rewriting their process titles over it."""
    netns = [n for n in netns_names() if n.startswith(names.prefix)]
    return {
        "netns": netns,
        "links": [n for n in link_names() if n.startswith(names.prefix)],
        "pids": sorted({pid for ns in netns for pid in netns_pids(ns)}),
    }


def stale_lab_message(names: LabNames, found: dict[str, list], state_dir: Path) -> str:
    """Why a lab without lab.json cannot be brought up ('' when nothing of it exists but,
    at most, its bridge). Such leftovers come from an interrupted bring-up or dead daemons;
    they may not match the settings asked for now, so they are not reused."""
    pieces = []
    netns = found.get("netns", [])
    if netns:
        pieces.append(f"network namespaces {', '.join(netns)}")
    links = [link for link in found.get("links", []) if link != names.bridge]
    if links:
        pieces.append(f"links {', '.join(links)}")
    if state_dir.is_dir() and any(state_dir.iterdir()):
        pieces.append(f"files in {state_dir}")
    if not pieces:
        return ""
    pids = found.get("pids", [])
    processes = (
        f"{len(pids)} lab processes still run" if pids else "no lab process runs (they died)"
    )
    return (
        f"lab {names.lab!r} is stale or half-started: {'; '.join(pieces)} exist, {processes}, "
        f"and there is no {state_dir / 'lab.json'}. Remove it with "
        f"-e lab_forest_name={names.lab} -e lab_forest_state=absent, then bring it up again"
    )


def unchangeable_settings_message(recorded: dict, wanted: dict) -> str:
    """Why an up lab (described by its lab.json) cannot take the wanted settings ('' if it
    can). Subnet, realm and domain are baked into every host and the directory; a DC cannot
    be dropped without demoting it. Clients and users converge instead."""
    name = recorded.get("name", "?")
    changed = [
        f"lab_forest_{key} is {wanted[key]!r} but the lab has {recorded.get(key)!r}"
        for key in ("subnet", "realm", "domain")
        if key in wanted and recorded.get(key) != wanted[key]
    ]
    running_dcs = len(recorded.get("dcs", []))
    if wanted.get("dc_count", running_dcs) < running_dcs:
        changed.append(
            f"lab_forest_dc_count is {wanted['dc_count']} but the lab has {running_dcs} DCs "
            "(a DC is not removed from a running domain)"
        )
    if not changed:
        return ""
    return (
        f"lab {name!r} is up with other settings: {'; '.join(changed)}. Keep its settings, or "
        f"remove it first with -e lab_forest_name={name} -e lab_forest_state=absent"
    )


# --- directory ---------------------------------------------------------------------------

UF_NORMAL_ACCOUNT = 0x0200
UF_DONT_EXPIRE_PASSWD = 0x10000  # a lab lives longer than the 42-day default maximum age


def password_value(password: str) -> bytes:
    """unicodePwd as AD wants it: the quoted password in UTF-16LE (set over TLS only)."""
    return f'"{password}"'.encode("utf-16-le")


def new_user_attributes(name: str, password: str, realm: str) -> dict[str, object]:
    """LDAP attributes of a new, enabled lab user whose password never expires."""
    return {
        "objectClass": ["top", "person", "organizationalPerson", "user"],
        "sAMAccountName": name,
        "userPrincipalName": f"{name}@{realm.lower()}",
        "unicodePwd": password_value(password),
        "userAccountControl": str(UF_NORMAL_ACCOUNT | UF_DONT_EXPIRE_PASSWD),
    }


# --- teardown ----------------------------------------------------------------------------


def terminate(pids: Iterable[int], timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM, wait (bounded), then SIGKILL what is left. Returns the pids signalled."""
    signalled = [pid for pid in set(pids) if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in signalled):
        time.sleep(0.05)
    for pid in signalled:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return signalled


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is None


def remove_host_kernel_objects(names: LabNames, host: str) -> bool:
    """Stop a host's processes and delete its namespace and veth. True if anything existed."""
    netns = names.netns(host)
    changed = False
    if netns in netns_names():
        changed = bool(terminate(netns_pids(netns))) or changed
        run(["ip", "netns", "delete", netns])
        changed = True
    if names.veth(host) in link_names():
        run(["ip", "link", "delete", names.veth(host)])
        changed = True
    return changed


def remove_lab(names: LabNames) -> dict[str, list]:
    """Tear the whole lab down by name prefix; works on a half-started lab too."""
    found = lab_resources(names)
    terminate(found["pids"])
    for netns in found["netns"]:
        run(["ip", "netns", "delete", netns])
    for link in link_names():
        if link.startswith(names.prefix) and link != names.bridge:
            run(["ip", "link", "delete", link], check=False)
    if names.bridge in link_names():
        run(["ip", "link", "delete", names.bridge])
    return found


# --- network -----------------------------------------------------------------------------


def parse_ipv4_addresses(ip_addr_output: str) -> list[tuple[str, str]]:
    """(interface, address/prefix) pairs from `ip -o -4 addr show`."""
    pairs = []
    for line in ip_addr_output.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "inet":
            pairs.append((fields[1], fields[3]))
    return pairs


def overlapping_addresses(
    subnet: str, addresses: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The (interface, address) pairs whose network overlaps `subnet`."""
    network = ipaddress.ip_network(subnet)
    return [
        (device, address)
        for device, address in addresses
        if ipaddress.ip_interface(address).network.overlaps(network)
    ]


def addresses_in(subnet: str) -> list[tuple[str, str]]:
    """(interface, address) pairs of the root namespace whose network overlaps `subnet`."""
    output = run(["ip", "-o", "-4", "addr", "show"]).stdout
    return overlapping_addresses(subnet, parse_ipv4_addresses(output))


def subnet_conflict_message(names: LabNames, subnet: str, used: Iterable[tuple[str, str]]) -> str:
    """Why `subnet` cannot be this lab's ('' when it can): another interface of the machine
    (eth0's network, another lab's bridge, ...) already has an address overlapping it."""
    foreign = [(device, address) for device, address in used if device != names.bridge]
    if not foreign:
        return ""
    owners = ", ".join(f"{device} has {address}{_lab_of(device)}" for device, address in foreign)
    return (
        f"lab_forest_subnet {subnet} overlaps an address already configured on this machine "
        f"({owners}); choose an unused private subnet, e.g. another 172.29.x.0/24"
    )


def _lab_of(device: str) -> str:
    match = re.match(r"^cr-([a-z0-9]{1,8})-br$", device)
    return f" (bridge of lab {match.group(1)!r})" if match else ""


def ensure_bridge(names: LabNames, subnet: str, check_mode: bool) -> bool:
    prefix_len = ipaddress.ip_network(subnet).prefixlen
    wanted = f"{bridge_ip(subnet)}/{prefix_len}"
    used = addresses_in(subnet)
    conflict = subnet_conflict_message(names, subnet, used)
    if conflict:
        raise LabError(conflict)
    exists = names.bridge in link_names()
    has_address = (names.bridge, wanted) in used
    up = exists and "UP" in _link_flags(names.bridge)
    if exists and has_address and up:
        return False
    if check_mode:
        return True
    if not exists:
        run(["ip", "link", "add", names.bridge, "type", "bridge"])
    if not has_address:
        run(["ip", "addr", "add", wanted, "dev", names.bridge])
    run(["ip", "link", "set", names.bridge, "up"])
    return True


def _link_flags(link: str) -> str:
    output = run(["ip", "-o", "link", "show", link]).stdout
    return output.split("<", 1)[1].split(">", 1)[0]


def ensure_host_network(names: LabNames, host: str, subnet: str) -> bool:
    """Namespace + veth (root end on the lab bridge, eth0 inside) + address. No default
    route: nothing in the lab can reach past the bridge."""
    netns, veth = names.netns(host), names.veth(host)
    changed = False
    if netns not in netns_names():
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        changed = True
    if veth not in link_names():
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", names.bridge, "up"])
        address = f"{host_ip(subnet, host)}/{ipaddress.ip_network(subnet).prefixlen}"
        run(["ip", "-n", netns, "addr", "add", address, "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        changed = True
    return changed


def host_network_ready(names: LabNames, host: str) -> bool:
    return names.netns(host) in netns_names() and names.veth(host) in link_names()


# --- ports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A listening socket as `ss` shows it."""

    protocol: str  # tcp or udp
    address: str  # IP, or '*' / '0.0.0.0' / '::' for any
    port: int
    process: str  # 'name (pid N)' or '' when ss cannot tell


def parse_listeners(ss_output: str) -> list[Listener]:
    """Listening sockets from `ss -Hlntup` (Netid State Recv-Q Send-Q Local Peer [Process])."""
    listeners = []
    for line in ss_output.splitlines():
        fields = line.split(None, 6)
        if len(fields) < 6:
            continue
        host, _, port = fields[4].rpartition(":")
        if not port.isdigit():
            continue
        address = host.strip("[]").split("%", 1)[0]
        found = re.search(r'\(\("([^"]*)",pid=(\d+)', fields[6] if len(fields) > 6 else "")
        process = f"{found.group(1)} (pid {found.group(2)})" if found else ""
        listeners.append(Listener(fields[0], address, int(port), process))
    return listeners


def busy_ports(listeners: Iterable[Listener], ip: str, tcp_ports: Iterable[int]) -> list[Listener]:
    """The TCP listeners that hold one of `tcp_ports` on `ip` (or on every address)."""
    wanted = set(tcp_ports)
    return [
        item
        for item in listeners
        if item.protocol == "tcp"
        and item.port in wanted
        and item.address in {ip, "*", "0.0.0.0", "::"}
    ]


def check_ports_free(names: LabNames, host: str, ip: str, tcp_ports: Iterable[int]) -> None:
    """Refuse to start a daemon whose ports something else already holds in the host's
    namespace (e.g. a leftover daemon whose pid file is gone): it would exit at once."""
    output = run(["ip", "netns", "exec", names.netns(host), "ss", "-Hlntup"]).stdout
    busy = busy_ports(parse_listeners(output), ip, tcp_ports)
    if busy:
        holders = ", ".join(
            f"{item.port}/tcp on {item.address} by {item.process or 'an unknown process'}"
            for item in busy
        )
        raise LabError(
            f"{host} of lab {names.lab!r} cannot start: ports in use on its address {ip} "
            f"({holders}); stop that process, or remove the lab with "
            f"-e lab_forest_name={names.lab} -e lab_forest_state=absent"
        )


# --- per-host sandbox --------------------------------------------------------------------


# The folder the sync agent is installed into on lab hosts (agent/ and bin/ below it:
# sync_agent_prefix and sync_agent_command in the lab inventory). Each host has its own, so
# installing on one host touches no other; /usr itself is the machine's, shared by every host.
AGENT_DIR = "/usr/local/lib/credroam"


@dataclass(frozen=True)
class Sandbox:
    """A host's own files under the state dir, bind-mounted over /etc, /home, /root and the
    agent's folder (AGENT_DIR) in its private mount namespace; /run is a fresh tmpfs there.
    /home is 0755, as on any Linux host, so local users reach their own homes."""

    names: LabNames
    host: str
    root: Path  # <state_dir>/<host>

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "daemon.log"

    def create_files(self, hosts_text: str, resolv_text: str, fqdn: str) -> None:
        if not self.etc.exists():
            # The whole /etc: tools such as useradd replace /etc/passwd by rename.
            shutil.copytree("/etc", self.etc, symlinks=True)
            for key in self.etc.glob("ssh/ssh_host_*"):
                key.unlink()  # never hand out the machine's own host keys
        for sub, mode in (("home", 0o755), ("root", 0o700), ("agent", 0o755)):
            (self.root / sub).mkdir(mode=mode, exist_ok=True)
            (self.root / sub).chmod(mode)  # mkdir's mode is cut by the umask
        _write(self.etc / "hostname", self.host + "\n")
        _write(self.etc / "hosts", hosts_text)
        _write(self.etc / "resolv.conf", resolv_text)
        _write(self.etc / "mailname", fqdn + "\n")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv that runs `argv` as this host: its netns, a new mount+UTS namespace with its
        files mounted. The shell execs, so the returned process id is the command's."""
        script = (
            "set -e; "
            f'hostname "{self.host}"; '
            f'mount --bind "{self.etc}" /etc; '
            f'mount --bind "{self.root}/home" /home; '
            f'mount --bind "{self.root}/root" /root; '
            f'mkdir -p "{AGENT_DIR}"; '  # an empty mount point on the machine's /usr
            f'mount --bind "{self.root}/agent" "{AGENT_DIR}"; '
            "mount -t tmpfs -o mode=0755 tmpfs /run; "
            "mkdir -p /run/samba /run/sshd; "
            'exec "$@"'
        )
        return [
            "ip",
            "netns",
            "exec",
            self.names.netns(self.host),
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
            f"lab-{self.host}",
            *argv,
        ]

    def run(
        self, argv: Sequence[str], timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        return run(self.wrap(argv), timeout=timeout, env=_lab_env())

    def start(self, argv: Sequence[str]) -> int:
        """Start a daemon detached (own session, stdio to the log) so it outlives the module."""
        with open(self.log_file, "ab") as log, open(os.devnull, "rb") as null:
            process = subprocess.Popen(
                self.wrap(argv),
                stdin=null,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=_lab_env(),
                cwd="/",
            )
        _write(self.pid_file, f"{process.pid}\n")
        return process.pid

    def started_pid(self) -> int | None:
        """The recorded daemon pid while it lives (it may still be entering its namespace)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running_pid(self) -> int | None:
        """The daemon's pid if it is alive, in this lab, and in this host's namespace."""
        pid = self.started_pid()
        if pid is None or pid not in netns_pids(self.names.netns(self.host)):
            return None
        return pid

    def stop(self) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        terminate([pid])
        return True


def exec_prefix(pid: int) -> list[str]:
    """argv prefix that runs a command inside a host's network, mount and UTS namespaces."""
    return ["nsenter", "-t", str(pid), "-n", "-m", "-u", "--"]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def hosts_file(realm: str, hosts: dict[str, str]) -> str:
    domain = realm.lower()
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{ip}\t{name}.{domain} {name}" for name, ip in hosts.items()]
    return "\n".join(lines) + "\n"


def resolv_conf(realm: str, nameservers: Sequence[str]) -> str:
    lines = [f"search {realm.lower()}"] + [f"nameserver {ip}" for ip in nameservers]
    # Short timeouts: a name the lab cannot answer fails fast instead of hanging.
    return "\n".join([*lines, "options timeout:1 attempts:1"]) + "\n"


def missing_commands() -> list[str]:
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c, path=path) is None]
    return missing + [p for p in REQUIRED_PATHS if not os.path.exists(p)]


def set_global_options(smb_conf: str, wanted: dict[str, str], remove: Iterable[str]) -> str:
    """smb.conf text with [global] holding exactly `wanted` for those keys and none of
    `remove` (e.g. 'dns forwarder': nothing may leave the lab). Keys compare like Samba:
    case-insensitively, spaces ignored."""

    def key_of(line: str) -> str:
        return line.split("=", 1)[0].strip().lower().replace(" ", "")

    dropped = {k.lower().replace(" ", "") for k in [*wanted, *remove]}
    out: list[str] = []
    section = ""
    for line in smb_conf.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if section == "global":
                out += [f"\t{k} = {v}" for k, v in wanted.items()]
            section = stripped.strip("[]").strip().lower()
        elif section == "global" and "=" in stripped and key_of(stripped) in dropped:
            continue
        out.append(line)
    if section == "global":
        out += [f"\t{k} = {v}" for k, v in wanted.items()]
    return "\n".join(out) + "\n"


def ensure_host(
    sandbox: Sandbox, subnet: str, hosts_text: str, resolv_text: str, fqdn: str, check_mode: bool
) -> list[str]:
    """Make the host's files and network if missing. Returns the actions (done or due)."""
    actions = []
    expected = {"hosts": hosts_text, "resolv.conf": resolv_text, "hostname": sandbox.host + "\n"}
    files_ok = sandbox.etc.exists() and all(
        _read(sandbox.etc / name) == text for name, text in expected.items()
    )
    if not files_ok:
        actions.append("write host files")
        if not check_mode:
            sandbox.create_files(hosts_text, resolv_text, fqdn)
    if not host_network_ready(sandbox.names, sandbox.host):
        actions.append("create network namespace and veth")
        if not check_mode:
            ensure_host_network(sandbox.names, sandbox.host, subnet)
    return actions


def remove_host(sandbox: Sandbox, check_mode: bool) -> list[str]:
    """Stop the host's processes, delete its namespace, veth and folder."""
    actions = []
    names, host = sandbox.names, sandbox.host
    if names.netns(host) in netns_names() or names.veth(host) in link_names():
        actions.append("stop processes, remove namespace and veth")
        if not check_mode:
            sandbox.stop()
            remove_host_kernel_objects(names, host)
    if sandbox.root.exists():
        actions.append("remove host folder")
        if not check_mode:
            shutil.rmtree(sandbox.root)
    return actions


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
