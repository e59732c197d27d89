"""The agent's configuration file: defaults, checks naming the key at fault, GPO precedence."""

from __future__ import annotations

import pytest

from credroam.gpo.resolve import GpoSettings, GpoSource
from credroam_agent.config import ConfigError, PolicyInForce, load_config, parse_config

MINIMAL = '[directory]\ndomain = "Lab.Example."\n'


def test_a_minimal_file_derives_realm_base_dn_and_defaults():
    config = parse_config(MINIMAL, "/etc/credroam/agent.toml")
    assert config.directory.domain == "lab.example"
    assert config.directory.realm == "LAB.EXAMPLE"
    assert config.directory.base_dn == "DC=lab,DC=example"
    assert config.directory.dcs == ()  # DNS SRV then
    assert config.directory.bind_method == "gssapi"
    assert config.directory.tls_mode == "ldaps"
    assert config.enrollment_command == ()
    assert config.policy == {}
    assert config.stores == ("file",)  # no mirror unless asked for


def test_stores_name_the_mirrors_beside_the_file_store():
    config = parse_config('stores = ["file", "nss", "networkmanager"]\n' + MINIMAL, "f")
    assert config.stores == ("file", "nss", "networkmanager")


def test_users_map_local_names_to_accounts_in_a_realm():
    config = parse_config(
        MINIMAL + '[users]\nrealm = "CORP.EXAMPLE"\nmap = { jdoe = "john.doe" }\n', "f"
    )
    assert config.principal_for("jdoe") == "john.doe@CORP.EXAMPLE"
    assert config.principal_for("alice") == "alice@CORP.EXAMPLE"  # unlisted: the same name


def test_paths_expand_home_and_runtime_folder_per_user():
    config = parse_config(MINIMAL, "f")
    assert config.path_for("store", "/home/alice", "/run/user/1000") == (
        "/home/alice/.local/share/credroam/store"
    )
    assert config.path_for("key_cache", "/home/alice", "/run/user/1000") == (
        "/run/user/1000/credroam/roaming.key"
    )
    assert config.path_for("key_cache", "/home/alice", None) is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[directory]\n", "directory.domain"),
        (MINIMAL + 'bind_method = "ntlm"\n', "directory.bind_method"),
        (MINIMAL + 'tls_mode = "plain"\n', "directory.tls_mode"),
        (MINIMAL + "port = 70000\n", "directory.port"),
        (MINIMAL + 'timeout = "10"\n', "directory.timeout"),
        (MINIMAL + 'dcs = "dc1"\n', "directory.dcs"),
        (MINIMAL + "colour = 1\n", "colour"),
        (MINIMAL + "[policy]\ntombstone_days = 0\n", "policy.tombstone_days"),
        (MINIMAL + "[policy]\nenabled = 1\n", "policy.enabled"),
        (MINIMAL + "[policy]\nmax_tokens = true\n", "policy.max_tokens"),
        (MINIMAL + '[paths]\nstore = "relative/store"\n', "paths.store"),
        (MINIMAL + '[enrollment]\ncommand = "certmonger"\n', "enrollment.command"),
        (MINIMAL + "[users]\nmap = { a = 1 }\n", "users.map"),
        ("not = [toml", "not valid TOML"),
        ('stores = ["file", "firefox"]\n' + MINIMAL, "'firefox'"),
        ('stores = ["nss"]\n' + MINIMAL, "'file'"),
        ('stores = ["file", "nss", "nss"]\n' + MINIMAL, "named twice"),
        ('stores = "nss"\n' + MINIMAL, "stores"),
    ],
)
def test_a_bad_value_is_refused_naming_the_file_and_the_key(text, named):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "/etc/credroam/agent.toml")
    assert "/etc/credroam/agent.toml" in str(raised.value)
    assert named in str(raised.value)


def test_a_missing_file_is_a_configuration_error_naming_it(tmp_path):
    missing = tmp_path / "agent.toml"
    with pytest.raises(ConfigError, match=str(missing)):
        load_config(str(missing))


def _gpo(**values) -> GpoSettings:
    source = GpoSource("{31B2F340-016D-11D2-945F-00C04FB984F9}", "Credential Roaming", 5, "OU=R")
    return GpoSettings(values, dict.fromkeys(values, source))


def test_group_policy_wins_over_the_config_file_which_wins_over_defaults():
    config = parse_config(MINIMAL + "[policy]\ntombstone_days = 30\nmax_tokens = 500\n", "cfg")
    in_force = PolicyInForce(config, _gpo(tombstone_days=90))
    assert in_force.value("tombstone_days") == 90
    assert in_force.source("tombstone_days") == (
        "GPO Credential Roaming {31B2F340-016D-11D2-945F-00C04FB984F9} version 5"
    )
    assert in_force.value("max_tokens") == 500
    assert in_force.source("max_tokens") == "config cfg"
    assert in_force.value("max_token_size") == 65535
    assert in_force.source("max_token_size") == "default"
    policy = in_force.roaming_policy()
    assert (policy.tombstone_days, policy.max_tokens) == (90, 500)


def test_a_cached_gpo_value_says_so():
    in_force = PolicyInForce(parse_config(MINIMAL, "cfg"), _gpo(enabled=False), "cached: no DC")
    assert not in_force.enabled
    assert in_force.source("enabled").endswith("version 5, cached: no DC")


def test_without_group_policy_the_config_file_is_in_force():
    config = parse_config(MINIMAL + "[policy]\nenabled = false\n", "cfg")
    in_force = PolicyInForce(config)
    assert not in_force.enabled
    assert in_force.source("enabled") == "config cfg"
