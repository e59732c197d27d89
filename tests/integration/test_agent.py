"""credroam-agent on the lab's client hosts: the zipapp under Debian's /usr/bin/python3, as the
user, against the lab's Samba DCs.

The lab's hosts have no SSSD or winbind: each host's users are local accounts of the same name
as the AD users (the agent's default mapping: local ``alice`` roams as ``alice@LAB.EXAMPLE``),
made here with useradd. The agent finds the DC from the lab DNS (``_ldap._tcp.lab.example``)
unless a test names DCs; it binds with the logon password at ``login`` and with the user's
Kerberos ticket (kinit against the lab KDC) in the background. The hosts share the machine's
/usr and the repository folder, so every host runs the same ``dist/credroam-agent.pyz``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from credroam.roaming.certelement import thumbprint
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES, read_roaming
from tests.integration.roaming_lab import clear_everywhere, connect_as, replicate, self_signed
from tests.integration.test_schema import run_schema_playbook
from tests.lab import REPO, Account, ClientHost, DomainController, Lab

sys.path.insert(0, str(REPO / "agent"))
import build_zipapp

pytestmark = pytest.mark.integration

PYZ = REPO / "dist" / "credroam-agent.pyz"
PEM = serialization.Encoding.PEM
STORE = ".local/share/credroam/store"
CONFIG = """[directory]
domain = "lab.example"
ca_file = "/etc/credroam/ca.pem"
timeout = 5
{dcs}"""
CONFIG_PATH = "/etc/credroam/agent.toml"  # the default the role renders
DC1_ONLY = "/etc/credroam/dc1-only.toml"
BOTH_DCS = "/etc/credroam/both-dcs.toml"
ENROLLING = "/etc/credroam/enrolling.toml"
WITH_NSS = "/etc/credroam/with-nss.toml"  # the file store and its NSS mirror (~/.pki/nssdb)
WAIT = 120.0  # seconds: a generous bound for what the watch tests wait for (a loaded machine)
# Samba has no certificate authority: the lab's enrollment command signs the CSR on stdin with
# the lab CA (its key readable by the lab users on the lab hosts only) and prints the PEM.
LAB_ENROLL = (REPO / "roles" / "lab_forest" / "files" / "lab-enroll.py").read_text()


@pytest.fixture(scope="module")
def pyz() -> Path:
    """The zipapp as `make agent` builds it, where every lab host can read it."""
    return build_zipapp.build(PYZ)


def prepare_host(lab: Lab, host: ClientHost) -> None:
    """Local accounts alice and bob, the agent's configuration and the lab CA on ``host``."""
    public_key = Path(lab.ssh_private_key + ".pub").read_text().strip()
    configs = {
        "agent.toml": CONFIG.format(dcs=""),
        "dc1-only.toml": CONFIG.format(dcs='dcs = ["dc1.lab.example"]\n'),
        "both-dcs.toml": CONFIG.format(dcs='dcs = ["dc1.lab.example", "dc2.lab.example"]\n'),
        "with-nss.toml": 'stores = ["file", "nss"]\n' + CONFIG.format(dcs=""),
        "enrolling.toml": CONFIG.format(dcs="")
        + '[enrollment]\ncommand = ["/usr/bin/python3", "/etc/credroam/lab-enroll.py"]\n',
        "lab-enroll.py": LAB_ENROLL,
    }
    writes = "".join(
        f"cat > /etc/credroam/{name} <<'EOF'\n{text}EOF\n" for name, text in configs.items()
    )
    host.ssh(
        # The lab makes /home 0700 for root; a host's users must reach their own homes.
        "chmod 755 /home && mkdir -p /etc/credroam && "
        "for u in alice bob; do id $u >/dev/null 2>&1 || useradd -m -s /bin/sh $u; done && "
        f"cp {lab.ca_cert} /etc/credroam/ca.pem && cp {lab.krb5_conf} /etc/krb5.conf && "
        "install -d -o alice -g alice -m 700 ~alice/.ssh && "
        f"echo '{public_key}' > ~alice/.ssh/authorized_keys && "
        "chown alice: ~alice/.ssh/authorized_keys && chmod 600 ~alice/.ssh/authorized_keys\n"
        f"{writes}chmod 644 /etc/credroam/* /etc/krb5.conf && "
        f"install -m 640 -g alice {lab.state_dir}/ca.key /etc/credroam/lab-ca.key"
    )


@pytest.fixture(scope="module")
def agent_lab(lab: Lab, pyz: Path) -> Lab:
    applied = run_schema_playbook(lab)
    assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-2000:]
    for host in lab.clients[:2]:
        prepare_host(lab, host)
    return lab


def forget_user(lab: Lab, account: Account) -> None:
    """The user's roaming values gone from every DC, and the user's agent files from the hosts."""
    clear_everywhere(lab, account)
    for host in lab.clients[:2]:
        host.ssh(
            f"rm -rf ~{account.name}/.local ~{account.name}/.cache ~{account.name}/.pki "
            f"/run/user/$(id -u {account.name})"
        )


@pytest.fixture
def alice(agent_lab: Lab) -> Account:
    account = agent_lab.user("alice")
    forget_user(agent_lab, account)
    return account


@pytest.fixture
def bob(agent_lab: Lab) -> Account:
    account = agent_lab.user("bob")
    forget_user(agent_lab, account)
    return account


def uid(host: ClientHost, name: str) -> int:
    return int(host.ssh(f"id -u {name}").stdout)


def agent(
    host: ClientHost,
    *args: str,
    user: str = "alice",
    password: str | None = None,
    config: str | None = None,
    env: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run the zipapp on ``host`` as root for ``user`` (it drops to the user), as PAM would."""
    options = f"--config {config} " if config else ""
    command = f"{env} /usr/bin/python3 {PYZ} {options}--user {user} {' '.join(args)}"
    stdin = f"{password}\0" if password is not None else ""
    return subprocess.run(
        [*host.ssh_argv(), command.strip()],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def events(run: subprocess.CompletedProcess[str]) -> list[int]:
    return [
        int(line.split("event=", 1)[1].split()[0])
        for line in run.stderr.splitlines()
        if line.startswith("credroam-agent event=")
    ]


def kinit(host: ClientHost, account: Account) -> str:
    """A Kerberos ticket for the user from the lab KDC, as SSSD or winbind get one at logon;
    the environment setting that names its cache."""
    cache = f"KRB5CCNAME=FILE:/run/user/{uid(host, account.name)}/krb5cc"
    done = subprocess.run(
        [
            *host.ssh_argv(),
            f"runuser -u {account.name} -- env {cache} kinit {account.name}@LAB.EXAMPLE",
        ],
        input=account.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return cache


class AgentWatch:
    """``credroam-agent watch`` as the user on a host, started as the systemd user unit starts
    it (``credroam-agent --config <file> watch`` in the user's session: HOME, XDG_RUNTIME_DIR,
    the ticket cache). Its stderr (one line per event) is read as it comes."""

    def __init__(self, host: ClientHost, account: Account, config: str, ticket: str) -> None:
        user = account.name
        session = [
            f"HOME=/home/{user}", f"XDG_RUNTIME_DIR=/run/user/{uid(host, user)}", ticket,
            "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            [*host.exec, "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
             "env", "-i", *session, "/usr/bin/python3", str(PYZ), "--config", config, "watch"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, wanted: Callable[[str], bool], what: str, timeout: float = WAIT) -> str:
        """The next stderr line ``wanted`` accepts; fails naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {what} within {timeout:g} s; the agent said: {self.seen[-20:]}")
            self.seen.append(line)
            if wanted(line):
                return line

    def wait_for_sync(self, summary: str, what: str) -> str:
        """The next "sync done" event (ID 1) whose summary holds ``summary``."""
        return self.wait_for(
            lambda line: line.startswith("credroam-agent event=1 ") and summary in line, what
        )

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


@contextmanager
def watching(host: ClientHost, account: Account, config: str) -> Iterator[AgentWatch]:
    """The user's watch running (its first sync done) after a login, stopped afterwards."""
    login = agent(host, "login", user=account.name, password=account.password, config=config)
    assert login.returncode == 0, login.stderr
    watch = AgentWatch(host, account, config, kinit(host, account))
    try:
        watch.wait_for_sync("sync done", "the watch's first sync")
        yield watch
    finally:
        code = watch.stop()
    assert code == 0, watch.seen[-20:]


def put(host: ClientHost, user: str, path: str, data: bytes) -> None:
    """Write a file as ``user`` on ``host`` (folders 0700, file 0600), as the user's tools do."""
    subprocess.run(
        [
            *host.ssh_argv(),
            f'runuser -u {user} -- sh -c \'umask 077; mkdir -p "$(dirname ~/{path})" && '
            f"cat > ~/{path}'",
        ],
        input=data,
        check=True,
        capture_output=True,
        timeout=60,
    )


def new_certificate(
    host: ClientHost, user: str, common_name: str, *, at_once: bool = False
) -> tuple[str, bytes]:
    """A certificate and its key placed in ``user``'s store on ``host``; (thumbprint, DER).

    ``at_once``: both files appear in the store together (written outside it, then renamed
    in by one command), as one change for a watching agent.
    """
    der, pkcs8 = self_signed(common_name)
    certificate = x509.load_der_x509_certificate(der)
    thumb = thumbprint(der)
    key = serialization.load_der_private_key(pkcs8, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {
        f"{thumb}.cert.pem": certificate.public_bytes(serialization.Encoding.PEM),
        f"{thumb}.key.pem": key,
    }
    folder = ".credroam-staged" if at_once else f"{STORE}/MY"
    for name, data in files.items():
        put(host, user, f"{folder}/{name}", data)
    if at_once:
        host.ssh(
            f"runuser -u {user} -- sh -c 'mkdir -p ~/{STORE}/MY && mv ~/{folder}/* ~/{STORE}/MY/'"
        )
    return thumb, der


def store_files(lab: Lab, host: ClientHost, user: str) -> dict[str, bytes]:
    """The user's store on ``host`` as the machine sees the host's /home (read as root)."""
    root = lab.state_dir / host.name / "home" / user / STORE
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and path.name != ".lock"
    }


def directory_keys(lab: Lab, account: Account, dc: int = 0) -> set[str]:
    conn = connect_as(lab, account, dc)
    try:
        record = read_roaming(conn, account.dn)
    finally:
        conn.unbind()
    return {
        key
        for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES)
        for key, stored in record.stored(attribute).items()
        if not stored.token.is_tombstone
    }


def tombstones(lab: Lab, account: Account, dc: int = 0) -> set[str]:
    conn = connect_as(lab, account, dc)
    try:
        record = read_roaming(conn, account.dn)
    finally:
        conn.unbind()
    return {
        key
        for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES)
        for key, stored in record.stored(attribute).items()
        if stored.token.is_tombstone
    }


def pem_key(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@contextmanager
def stopped(dc: DomainController) -> Iterator[None]:
    """Every process of the DC stopped (SIGSTOP), as a hung or unplugged DC looks to clients."""
    namespace = os.readlink(f"/proc/{dc.pid}/ns/net")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == namespace:
                    pids.append(int(entry.name))
            except OSError:
                continue
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_login_as_alice_uploads_and_a_second_host_downloads(agent_lab, alice):
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    thumb, der = new_certificate(first, "alice", "alice")

    login = agent(first, "login", password=alice.password)
    assert login.returncode == 0, login.stderr
    assert events(login) == [1]
    assert "dc=dc1.lab.example bind=simple" in login.stderr  # from DNS SRV; no ticket yet
    assert alice.password not in login.stderr + login.stdout
    assert directory_keys(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    alice_uid = uid(first, "alice")
    modes = first.ssh(
        f"stat -c '%a %U' /run/user/{alice_uid} /run/user/{alice_uid}/credroam/roaming.key"
    )
    assert modes.stdout.split("\n")[:2] == ["700 alice", "600 alice"]

    # On the second host alice logs in over real SSH; the runtime folder is what PAM provides.
    second.ssh(f"install -d -o alice -g alice -m 700 /run/user/{uid(second, 'alice')}")
    ssh_as_alice = [*second.ssh_argv()[:-1], f"alice@{second.ip}"]
    command = f"XDG_RUNTIME_DIR=/run/user/$(id -u) /usr/bin/python3 {PYZ} login && id -un"
    login = subprocess.run(
        [*ssh_as_alice, command], input=alice.password, capture_output=True, text=True, timeout=180
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "alice"
    downloaded = store_files(lab, second, "alice")
    assert (
        x509.load_pem_x509_certificate(downloaded[f"MY/{thumb}.cert.pem"]).public_bytes(
            serialization.Encoding.DER
        )
        == der
    )
    key = serialization.load_pem_private_key(downloaded[f"MY/{thumb}.key.pem"], None)
    assert key.public_key() == x509.load_der_x509_certificate(der).public_key()


def test_a_background_sync_binds_with_alices_kerberos_ticket(agent_lab, alice):
    host = agent_lab.client(0)
    assert agent(host, "login", password=alice.password).returncode == 0
    thumb, _ = new_certificate(host, "alice", "renewed")
    cache = kinit(host, alice)

    sync = agent(host, "sync", env=cache)
    assert sync.returncode == 0, sync.stderr
    assert "bind=gssapi" in sync.stderr and events(sync) == [1]
    assert f"%3\\{thumb}" in directory_keys(agent_lab, alice)

    status = agent(host, "status", "--json", env=cache)
    report = json.loads(status.stdout)
    assert status.returncode == 0, status.stdout
    assert report["healthy"] is True and report["dc"] == "dc1.lab.example"
    assert report["pending"]["upload"] == report["pending"]["download"] == 0
    assert report["key_cache"].startswith("present")
    assert report["policy"]["tombstone_days"]["source"] == "default"


def test_the_dc_stopped_leaves_the_store_logs_1010_and_syncs_once_it_is_back(agent_lab, alice):
    lab = agent_lab
    host = lab.client(0)
    assert agent(host, "login", password=alice.password, config=DC1_ONLY).returncode == 0
    thumb, _ = new_certificate(host, "alice", "made while the DC is down")
    before = store_files(lab, host, "alice")

    with stopped(lab.dc(0)):
        down = agent(host, "login", password=alice.password, config=DC1_ONLY)
    assert down.returncode == 3, down.stderr
    assert events(down) == [1010]
    assert "dc1.lab.example" in down.stderr
    assert store_files(lab, host, "alice") == before

    back = agent(host, "login", password=alice.password, config=DC1_ONLY)
    assert back.returncode == 0, back.stderr
    assert f"%3\\{thumb}" in directory_keys(lab, alice)


def test_with_dc1_stopped_the_agent_fails_over_to_dc2_and_says_so(agent_lab, alice):
    host = agent_lab.client(0)
    new_certificate(host, "alice", "failover")
    with stopped(agent_lab.dc(0)):
        login = agent(host, "login", password=alice.password, config=BOTH_DCS)
    assert login.returncode == 0, login.stderr
    assert "dc=dc2.lab.example" in login.stderr.splitlines()[-1]


def test_two_users_on_one_host_never_see_each_others_key_or_policy_caches_or_stores(
    agent_lab, alice, bob
):
    lab = agent_lab
    host = lab.client(0)
    alice_thumb, _ = new_certificate(host, "alice", "alice")
    bob_thumb, _ = new_certificate(host, "bob", "bob")
    assert agent(host, "login", password=alice.password).returncode == 0
    assert agent(host, "login", user="bob", password=bob.password).returncode == 0

    alice_uid = uid(host, "alice")
    peek = host.ssh(
        f"runuser -u bob -- cat /run/user/{alice_uid}/credroam/roaming.key; echo rc=$?; "
        f"runuser -u bob -- ls ~alice/{STORE}/MY; echo rc=$?; "
        "runuser -u bob -- ls ~alice/.cache/credroam/policy; echo rc=$?",
        check=False,
    )
    assert peek.stdout.split() == ["rc=1", "rc=2", "rc=2"], peek
    assert "Permission denied" in peek.stderr

    # The agent started as bob refuses alice's store outright.
    as_bob = host.ssh(f"runuser -u bob -- /usr/bin/python3 {PYZ} --user alice sync", check=False)
    assert as_bob.returncode == 2
    assert "refusing to work on the store of alice" in as_bob.stderr

    assert {name.split(".")[0] for name in store_files(lab, host, "alice")} - {"index"} == {
        f"MY/{alice_thumb}"
    }
    assert {name.split(".")[0] for name in store_files(lab, host, "bob")} - {"index"} == {
        f"MY/{bob_thumb}"
    }
    assert directory_keys(lab, bob) == {f"%3\\{bob_thumb}", f"%9\\{bob_thumb}"}


@contextmanager
def password_changed(lab: Lab, account: Account, new_password: str) -> Iterator[None]:
    """The user's AD password reset to ``new_password`` on dc1, restored afterwards (and the
    restore replicated at once, so no DC is left with the changed one)."""
    dc = lab.dc(0)
    dc.run("samba-tool", "user", "setpassword", account.name, f"--newpassword={new_password}")
    try:
        yield
    finally:
        dc.run(
            "samba-tool", "user", "setpassword", account.name, f"--newpassword={account.password}"
        )
        for other in range(1, len(lab.dcs)):
            replicate(lab, 0, other)


def test_a_password_change_loses_nothing(agent_lab, alice):
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    thumb, _ = new_certificate(first, "alice", "before the change")
    assert agent(first, "login", password=alice.password).returncode == 0
    new_password = "Alice-Changed-Pass2!"
    with password_changed(lab, alice, new_password):
        # A new host cannot open the key wrapped under the old password: the certificate
        # roams, its key is held (nothing lost, nothing overwritten).
        early = agent(second, "login", password=new_password)
        assert early.returncode == 1 and 1007 in events(early), early.stderr
        assert f"MY/{thumb}.cert.pem" in store_files(lab, second, "alice")
        assert f"MY/{thumb}.key.pem" not in store_files(lab, second, "alice")

        # The host holding the key from a session rewraps it once the new password binds.
        rewrap = agent(first, "login", password=new_password)
        assert rewrap.returncode == 0, rewrap.stderr
        later = agent(second, "login", password=new_password)
        assert later.returncode == 0, later.stderr
        key = store_files(lab, second, "alice")[f"MY/{thumb}.key.pem"]
        assert key == store_files(lab, first, "alice")[f"MY/{thumb}.key.pem"]


def test_an_outstanding_request_is_enrolled_with_the_lab_ca_and_the_certificate_roams(
    agent_lab, alice
):
    lab = agent_lab
    host = lab.client(0)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    request_id = thumbprint(csr.public_bytes(serialization.Encoding.DER))
    put(host, "alice", f"{STORE}/REQUEST/{request_id}.csr.pem", csr.public_bytes(PEM))
    put(host, "alice", f"{STORE}/REQUEST/{request_id}.key.pem", pem_key(key))

    login = agent(host, "login", password=alice.password, config=ENROLLING)
    # The first sync roams the request and its key, the request is enrolled, and the sync
    # after it roams what was issued and tombstones the request and its key.
    assert login.returncode == 0, login.stderr
    assert events(login) == [1, 1, 1], login.stderr
    (enrolled,) = [line for line in login.stderr.splitlines() if "enrolled:" in line]
    issued = enrolled.rsplit(" issued as ", 1)[1].strip()
    thumb = issued.split("\\", 1)[1]
    files = store_files(lab, host, "alice")
    assert not [name for name in files if name.startswith("REQUEST/")]
    certificate = x509.load_pem_x509_certificate(files[f"MY/{thumb}.cert.pem"])
    ca = x509.load_pem_x509_certificate(Path(lab.ca_cert).read_bytes())
    assert certificate.issuer == ca.subject
    assert spki(certificate.public_key()) == spki(key.public_key())
    assert files[f"MY/{thumb}.key.pem"] == pem_key(key)
    # The issued certificate and its key roam; the request reached the directory and is now
    # tombstoned there with its key.
    assert directory_keys(lab, alice) == {f"%3\\{thumb}", f"%9\\{thumb}"}
    assert tombstones(lab, alice) == {f"%4\\{request_id}", f"%9\\{request_id}"}


def test_in_watch_mode_a_certificate_added_to_the_store_roams_with_no_other_trigger(
    agent_lab, alice
):
    lab = agent_lab
    first, second = lab.client(0), lab.client(1)
    with watching(first, alice, CONFIG_PATH) as watch:
        thumb, der = new_certificate(first, "alice", "seen by the watch", at_once=True)

        watch.wait_for_sync("2 uploaded", "the sync of the new certificate and key")

        assert {f"%3\\{thumb}", f"%9\\{thumb}"} <= directory_keys(lab, alice)
    login = agent(second, "login", password=alice.password)
    assert login.returncode == 0, login.stderr
    roamed = store_files(lab, second, "alice")
    assert (
        x509.load_pem_x509_certificate(roamed[f"MY/{thumb}.cert.pem"]).public_bytes(
            serialization.Encoding.DER
        )
        == der
    )
    assert f"MY/{thumb}.key.pem" in roamed
