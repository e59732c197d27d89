"""The agent on a Windows host: the [windows] section, the store it opens and whether a sync
leaves native tokens to Windows' own client. Decided here for platform "win32" on Linux: no
Windows host can run here."""

from __future__ import annotations

import pytest

from credroam.roaming.native import KEY_ROAMING_OFF
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.windows import WindowsStore
from credroam_agent import windows
from credroam_agent.config import ConfigError, parse_config

MINIMAL = '[directory]\ndomain = "lab.example"\n'


def config(windows_section: str = ""):
    return parse_config(MINIMAL + windows_section, "agent.toml")


def test_the_windows_section_defaults_to_auto_and_exportable_keys():
    assert (config().windows.native_roaming, config().windows.non_exportable_keys) == (
        "auto", False,
    )  # fmt: skip
    chosen = config('[windows]\nnative_roaming = "off"\nnon_exportable_keys = true\n').windows
    assert (chosen.native_roaming, chosen.non_exportable_keys) == ("off", True)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[windows]\nnative_roaming = "maybe"\n', "windows.native_roaming must be one of auto"),
        ("[windows]\nnon_exportable_keys = 1\n", "windows.non_exportable_keys must be a bool"),
        ("[windows]\nstore = 1\n", r"unknown key\(s\) store in \[windows\]"),
    ],
)
def test_a_bad_windows_section_names_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        config(section)


def test_windows_opens_its_certificate_store_and_linux_the_file_store(tmp_path):
    chosen = config("[windows]\nnon_exportable_keys = true\n")
    on_windows = windows.open_store(chosen, str(tmp_path / "w"), platform="win32")
    assert isinstance(on_windows, WindowsStore) and on_windows.non_exportable_keys
    assert isinstance(windows.open_store(chosen, str(tmp_path / "l"), "linux"), FileStore)


@pytest.mark.parametrize(
    ("mode", "enabled", "disabled", "expected"),
    [
        ("auto", True, None, True),
        ("auto", True, KEY_ROAMING_OFF, False),  # the user turned Windows' key roaming off
        ("auto", False, None, False),
        ("off", True, None, False),
        ("on", True, KEY_ROAMING_OFF, True),
    ],
)
def test_on_windows_the_mode_and_the_policy_decide_native_roaming(
    mode, enabled, disabled, expected
):
    chosen = config(f'[windows]\nnative_roaming = "{mode}"\n')
    decided = windows.native_roaming(chosen, enabled, "win32", read_disabled=lambda: disabled)
    assert decided is expected


def test_linux_never_leaves_anything_to_a_native_client():
    chosen = config('[windows]\nnative_roaming = "on"\n')
    assert windows.native_roaming(chosen, True, "linux", read_disabled=lambda: None) is False
    assert windows.key_roaming_disabled() is None  # no registry here
