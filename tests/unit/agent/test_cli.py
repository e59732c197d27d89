"""The command line end to end against a fake directory: exit codes, events, key cache."""

from __future__ import annotations

import json
import stat
import struct
import sys
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import credroam_agent
from credroam.gpo.resolve import GpoSettings, GpoSource
from credroam.roaming.certelement import thumbprint
from credroam.roaming.directory import ACCOUNT_CREDENTIALS, KEY_ENVELOPES
from credroam.roaming.envelope import read_key_cache
from credroam.roaming.fsutil import atomic_write, ensure_private_dir
from credroam.tokens import decode_token, format_dn_binary, parse_dn_binary
from credroam_agent import cli
from tests.unit.agent.agent_fixtures import (
    PASSWORD,
    certificate_and_key,
    files,
    install,
    make_host,
    signer,
)
from tests.unit.test_sync import USER_DN

SUBCOMMANDS = ("login", "sync", "status", "watch", "purge")


def events(err: str) -> list[int]:
    return [
        int(line.split("event=", 1)[1].split()[0]) for line in err.splitlines() if "event=" in line
    ]


def test_help_gives_each_subcommand_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        (line,) = [text for text in out.splitlines() if text.strip().startswith(command + " ")]
        assert len(line.split(command, 1)[1].strip()) > 10
    assert "3 directory unreachable" in " ".join(out.split())


def test_login_uploads_caches_the_key_0600_and_a_second_host_downloads(
    host, other_host, directory, capsys
):
    thumb = install(host.store, *certificate_and_key())
    code, _, err = host.run("login", stdin=PASSWORD.encode() + b"\0", capsys=capsys)
    assert code == 0, err
    assert events(err) == [1]
    assert stat.S_IMODE(host.key_cache.stat().st_mode) == 0o600
    assert directory.binds[-1][:2] == ("dc1.lab.example", "simple")  # no ticket: the password
    assert PASSWORD not in err

    code, _, err = other_host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 0, err
    assert (other_host.store / "MY" / f"{thumb}.cert.pem").read_bytes() == (
        host.store / "MY" / f"{thumb}.cert.pem"
    ).read_bytes()
    assert (other_host.store / "MY" / f"{thumb}.key.pem").exists()
    assert read_key_cache(other_host.key_cache) == read_key_cache(host.key_cache)


def test_a_background_sync_binds_with_the_ticket_and_a_dry_run_changes_nothing(
    host, directory, capsys
):
    install(host.store, *certificate_and_key("first"))
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    thumb = install(host.store, *certificate_and_key("second"))
    directory.kerberos = True
    before, writes = files(host.store), directory.writes
    code, out, err = host.run("sync", "--dry-run", capsys=capsys)
    assert code == 0, err
    assert out.splitlines() == [f"upload %3\\{thumb}", f"upload %9\\{thumb}"]
    assert files(host.store) == before and directory.writes == writes
    assert directory.binds[-1][1] == "gssapi"

    code, out, err = host.run("sync", "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["events"][-1]["event"] == 1
    assert host.run("sync", "--dry-run", capsys=capsys)[1] == "nothing to do\n"


def test_a_wrong_password_binds_nowhere_and_changes_nothing(host, directory, capsys):
    install(host.store, *certificate_and_key())
    before = files(host.store)
    code, _, err = host.run("login", stdin=b"not-the-password", capsys=capsys)
    assert code == 3 and events(err) == [1010]
    assert "not-the-password" not in err
    assert files(host.store) == before


def test_a_password_change_rewraps_the_key_on_a_host_that_holds_it(
    host, other_host, directory, capsys
):
    thumb = install(host.store, *certificate_and_key())
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    directory.password = "Alice-New-Pass-2!"  # changed at the helpdesk or on another host
    code, _, err = other_host.run("login", stdin=b"Alice-New-Pass-2!", capsys=capsys)
    assert code == 1 and 1007 in events(err)  # the old wrap does not open with it
    assert not (other_host.store / "MY" / f"{thumb}.key.pem").exists()

    assert host.run("login", stdin=b"Alice-New-Pass-2!", capsys=capsys)[0] == 0  # rewraps
    code, _, err = other_host.run("login", stdin=b"Alice-New-Pass-2!", capsys=capsys)
    assert code == 0, err
    assert (other_host.store / "MY" / f"{thumb}.key.pem").exists()
    assert read_key_cache(other_host.key_cache) == read_key_cache(host.key_cache)


def test_no_dc_answering_exits_3_with_event_1010_and_leaves_the_store(host, directory, capsys):
    install(host.store, *certificate_and_key())
    before = files(host.store)
    directory.down = {"dc1.lab.example", "dc2.lab.example"}
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 3
    assert events(err) == [1010]
    assert "dc1.lab.example" in err and "dc2.lab.example" in err
    assert PASSWORD not in err
    assert files(host.store) == before
    assert directory.writes == 0


def test_the_next_dc_is_used_when_the_first_is_down_and_named(host, directory, capsys):
    install(host.store, *certificate_and_key())
    directory.down = {"dc1.lab.example"}
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 0, err
    assert "dc=dc2.lab.example" in err.splitlines()[-1]


def test_a_hostile_directory_value_is_reported_1012_and_the_sync_done_with_problems(
    host, directory, capsys
):
    name = rb"..\..\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\x.bat"
    blob = struct.pack("<3s93sQHH20sI", b"%3\\", name, 0, 0, 0, bytes(20), 0)
    directory.values[ACCOUNT_CREDENTIALS] = [format_dn_binary(blob, USER_DN).encode()]
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 1
    assert 1012 in events(err) and 1 in events(err)
    assert not (host.store / "MY").exists() or not list((host.store / "MY").iterdir())


def test_login_without_a_password_is_a_configuration_error(host, capsys):
    code, _, err = host.run("login", stdin=b"", capsys=capsys)
    assert code == 2
    assert "password on stdin" in err


def test_a_broken_config_file_exits_2_naming_it(host, capsys):
    host.config_text = "[policy]\ntombstone_days = 0\n"
    code, _, err = host.run("status", capsys=capsys)
    assert code == 2
    assert "agent.toml" in err and "policy.tombstone_days" in err


def test_status_reports_sync_key_cache_and_policy_sources_and_is_healthy(host, capsys):
    install(host.store, *certificate_and_key())
    host.config_text = "[policy]\ntombstone_days = 30\n"
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    code, out, _ = host.run("status", "--json", capsys=capsys)
    report = json.loads(out)
    # a background status cannot bind without a ticket: unhealthy, directory unreachable
    assert code == 3 and report["healthy"] is False and report["directory"] == "unreachable"
    assert report["local_items"] == 2
    assert report["last_successful_sync"]
    assert report["key_cache"].startswith("present")
    assert report["policy"]["tombstone_days"] == {
        "value": 30,
        "source": f"config {host.root}/agent.toml",
    }
    assert report["policy"]["max_tokens"]["source"] == "default"


def test_purge_removes_roamed_items_and_the_key_cache_keeps_unsynced_ones(host, directory, capsys):
    roamed = install(host.store, *certificate_and_key("roamed"))
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    unsynced = install(host.store, *certificate_and_key("new here"))
    writes = directory.writes
    code, _, _ = host.run("purge", "--always", capsys=capsys)
    assert code == 0
    left = sorted(p.name for p in (host.store / "MY").iterdir())
    assert left == sorted([f"{unsynced}.cert.pem", f"{unsynced}.key.pem"])
    assert roamed not in " ".join(left)
    assert not host.key_cache.exists() and not host.state.exists()
    assert directory.writes == writes  # the directory is never touched


def test_purge_at_logoff_keeps_everything_unless_the_policy_asks(host, capsys):
    install(host.store, *certificate_and_key())
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    before = files(host.store)
    assert host.run("purge", "--user", "alice", capsys=capsys)[0] == 0  # as the PAM hook runs it
    assert files(host.store) == before and host.key_cache.exists()
    host.config_text = "[policy]\nremove_at_logoff = true\n"
    assert host.run("purge", "--user", "alice", capsys=capsys)[0] == 0
    assert not list((host.store / "MY").iterdir()) and not host.key_cache.exists()
    assert host.asked_for[-2:] == ["alice", "alice"]


def test_user_and_config_are_taken_before_or_after_the_command(host, capsys):
    assert host.run("--user", "alice", "status", capsys=capsys)[0] == 3
    assert host.run("status", "--user", "alice", capsys=capsys)[0] == 3
    assert host.asked_for == ["alice", "alice"]


def test_watch_hands_a_sync_callable_and_the_store_folders_to_the_triggers(
    host, monkeypatch, capsys
):
    calls = {}

    def run(sync_once, *, watch_paths, policy_version, stop):
        calls.update(watch_paths=watch_paths, stop=stop)
        calls["version"] = policy_version()
        calls["first"] = sync_once("start")

    fake = types.SimpleNamespace(run=run, STORE="store")
    monkeypatch.setitem(sys.modules, "credroam_agent.triggers", fake)
    monkeypatch.setattr(credroam_agent, "triggers", fake, raising=False)
    code, _, err = host.run("watch", capsys=capsys)
    assert calls["watch_paths"] == [f"{host.store}/MY", f"{host.store}/REQUEST"]
    assert calls["version"] is None  # no policy read yet: nothing to compare
    assert calls["first"] == 3  # no ticket, no password: the fake DC cannot be bound
    assert code == 0 and events(err) == [1010]


def test_an_unexpected_failure_is_one_error_line_and_exit_1(host, monkeypatch, capsys):
    from credroam_agent import operations

    def broken(*args, **kwargs):
        raise TypeError("load_der_private_key() got an unexpected keyword argument")

    monkeypatch.setattr(operations, "run_sync", broken)
    code, _, err = host.run("sync", capsys=capsys)
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("credroam-agent level=error: internal error TypeError at ")


def test_after_the_sync_a_request_is_enrolled_and_the_certificate_roams(
    host, directory, ca, tmp_path, capsys
):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    request_id = thumbprint(csr.public_bytes(serialization.Encoding.DER))
    folder = ensure_private_dir(str(host.store / "REQUEST"))
    atomic_write(f"{folder}/{request_id}.csr.pem", csr.public_bytes(serialization.Encoding.PEM))
    atomic_write(
        f"{folder}/{request_id}.key.pem",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    host.config_text = f"[enrollment]\ncommand = {json.dumps(signer(ca, tmp_path))}\n"
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    # The first sync roams the request and its key; enrollment replaces them with the issued
    # certificate, and the sync after it uploads that and tombstones the request and its key.
    assert events(err) == [1, 1, 1], err
    assert code == 0
    assert not list((host.store / "REQUEST").iterdir())
    (cert_file,) = (host.store / "MY").glob("*.cert.pem")
    thumb = cert_file.name.split(".")[0]
    assert (host.store / "MY" / f"{thumb}.key.pem").exists()
    tokens = {
        token.key: token
        for attribute in (ACCOUNT_CREDENTIALS, KEY_ENVELOPES)
        for token in (decode_token(parse_dn_binary(v)[0]) for v in directory.values[attribute])
    }
    assert {key for key, token in tokens.items() if not token.is_tombstone} == {
        f"%3\\{thumb}",
        f"%9\\{thumb}",
    }
    assert {key for key, token in tokens.items() if token.is_tombstone} == {
        f"%4\\{request_id}",
        f"%9\\{request_id}",
    }


def test_a_store_in_a_runtime_folder_the_session_lacks_is_a_configuration_error(host, capsys):
    host.store_setting, host.has_runtime = "$XDG_RUNTIME_DIR/store", False
    code, _, err = host.run("sync", capsys=capsys)
    assert code == 2 and "paths.store" in err


def test_without_a_runtime_folder_no_key_is_cached_and_keys_are_not_uploaded(
    host, directory, capsys
):
    install(host.store, *certificate_and_key())
    host.has_runtime = False
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 1
    assert events(err)[0] == 1007 and "runtime folder" in err.splitlines()[0]
    assert not directory.values.get("credroamKeyEnvelopes")
    assert not host.key_cache.exists()


def test_a_damaged_state_file_is_reported_and_the_sync_heals_it(host, directory, capsys):
    install(host.store, *certificate_and_key())
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    host.state.write_bytes(b"{damaged")
    (host.root / "home" / "state.json.prev").unlink(missing_ok=True)
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert events(err) == [1005, 502, 2]
    assert code == 1
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert (code, events(err)) == (0, [1])


def _gpo(**values) -> GpoSettings:
    source = GpoSource("{6AC1786C-016F-11D2-945F-00C04FB984F9}", "Roaming", 7, "OU=RoamingUsers")
    return GpoSettings(values, dict.fromkeys(values, source))


def test_group_policy_read_at_login_as_the_user_wins_over_the_config_file(host, directory, capsys):
    install(host.store, *certificate_and_key())
    host.config_text = "[policy]\ntombstone_days = 30\nmax_tokens = 500\n"
    host.gpo = _gpo(tombstone_days=90)
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    ((user_dn, smb),) = host.policy_reads
    assert (user_dn, smb.server, smb.username) == (USER_DN, "dc1.lab.example", "alice@LAB.EXAMPLE")
    directory.kerberos = True
    code, out, _ = host.run("status", "--json", capsys=capsys)
    policy = json.loads(out)["policy"]
    assert code == 0
    assert policy["tombstone_days"] == {
        "value": 90,
        "source": "GPO Roaming {6AC1786C-016F-11D2-945F-00C04FB984F9} version 7",
    }
    assert policy["max_tokens"] == {"value": 500, "source": f"config {host.root}/agent.toml"}
    assert host.policy_reads[-1][1].username is None  # with the ticket, no password


def test_roaming_switched_off_by_group_policy_syncs_nothing(host, directory, capsys):
    install(host.store, *certificate_and_key())
    host.gpo = _gpo(enabled=False)
    code, _, err = host.run("login", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 0 and "roaming is off (GPO Roaming" in err
    assert not directory.values.get(ACCOUNT_CREDENTIALS)


def test_purge_at_logoff_follows_the_cached_group_policy_without_a_dc(host, directory, capsys):
    install(host.store, *certificate_and_key())
    host.gpo = _gpo(remove_at_logoff=True)
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0
    directory.down = {"dc1.lab.example", "dc2.lab.example"}
    assert host.run("purge", capsys=capsys)[0] == 0
    assert not list((host.store / "MY").iterdir())


def test_a_dry_run_login_reports_the_plan_as_json_alone_and_changes_nothing(
    host, directory, capsys
):
    thumb = install(host.store, *certificate_and_key())
    code, out, err = host.run(
        "login", "--dry-run", "--json", stdin=PASSWORD.encode(), capsys=capsys
    )
    assert code == 0, err
    report = json.loads(out)  # the roaming key's planned records do not precede it on stdout
    assert report["plan"]["upload"] == [f"%3\\{thumb}", f"%9\\{thumb}"]
    assert report["roaming_key"] and directory.writes == 0

    code, out, err = host.run("login", "--json", stdin=PASSWORD.encode(), capsys=capsys)
    assert code == 0, err
    (synced,) = json.loads(out)["synced"]  # what the real sync moved, as the plan shows it
    assert synced["upload"] == [f"%3\\{thumb}", f"%9\\{thumb}"] and directory.writes
    assert synced["full_sync_reason"] == "no header"  # a first sync compares every item


def _recovery_key(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import rsa

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "recovery.pem"
    path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_key, f'[recovery]\npublic_keys = ["{path}"]\n'


def test_after_a_reset_login_with_the_helpdesks_one_time_secret_loses_nothing(
    host, other_host, tmp_path, directory, monkeypatch, capsys
):
    from credroam.roaming.roamingkey import recover_with_recovery_key
    from credroam.timestamps import filetime_now

    private_key, recovery = _recovery_key(tmp_path)
    host.config_text = other_host.config_text = recovery
    thumb = install(host.store, *certificate_and_key())
    assert host.run("login", stdin=PASSWORD.encode(), capsys=capsys)[0] == 0  # + recovery record
    directory.password = "Reset-By-Admin-3!"
    recover_with_recovery_key(  # the helpdesk (recover.yml)
        directory,
        USER_DN,
        recovery_private_key=private_key,
        new_password="ONE-TIME-7QK4",
        now=filetime_now(),
    )
    code, _, err = other_host.run("login", stdin=b"Reset-By-Admin-3!", capsys=capsys)
    assert code == 1 and 1007 in events(err) and "--one-time-secret" in err

    secrets = b"Reset-By-Admin-3!\0ONE-TIME-7QK4\0"
    code, _, err = other_host.run("login", "--one-time-secret", stdin=secrets, capsys=capsys)
    assert code == 0, err
    assert "ONE-TIME-7QK4" not in err
    assert (other_host.store / "MY" / f"{thumb}.key.pem").read_bytes() == (
        host.store / "MY" / f"{thumb}.key.pem"
    ).read_bytes()
    # The one-time record was replaced: the password alone now opens the key on a fresh host.
    third = make_host(tmp_path / "host-c", directory, monkeypatch)
    assert third.run("login", stdin=b"Reset-By-Admin-3!", capsys=capsys)[0] == 0
    assert read_key_cache(third.key_cache) == read_key_cache(host.key_cache)


def test_one_time_secret_missing_after_the_password_is_a_configuration_error(host, capsys):
    code, _, err = host.run("login", "--one-time-secret", stdin=b"pw\0", capsys=capsys)
    assert code == 2 and "needs the secret after the password" in err


def test_a_recovery_public_key_that_is_not_one_is_a_configuration_error(host, tmp_path, capsys):
    bad = tmp_path / "recovery.pem"
    bad.write_text("not a key")
    host.config_text = f'[recovery]\npublic_keys = ["{bad}"]\n'
    code, _, err = host.run("sync", capsys=capsys)
    assert code == 2 and f"recovery.public_keys: {bad}" in err
