"""What the agent does differently on a Windows host: its store, and whether Windows roams.

On Windows the local store is the user's ``CurrentUser\\My`` and ``\\REQUEST``
(``credroam.roaming.store.windows``; ``paths.store`` holds only its bookkeeping), and where
Windows' own credential roaming client is on, a sync leaves native tokens to it and brings only
credroam's sealed keys (``credroam.roaming.native``). ``[windows] native_roaming`` of the
configuration decides: "auto" asks :func:`~credroam.roaming.native.native_roaming_on` with the
policy's DIMSRoaming and the user's ``KeyRoaming\\Disabled`` value, "on" and "off" force it.
Nothing here runs on Linux, where both answers are the file store and "no".
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from credroam.roaming.native import native_roaming_on
from credroam.roaming.store import CertificateStore
from credroam.roaming.store.file import FileStore
from credroam.roaming.store.windows import WindowsStore

from .config import AgentConfig

# HKCU\<this>\Disabled: the user's switch of Windows' own key roaming (spec, section 6).
KEY_ROAMING_KEY = r"Software\Microsoft\Cryptography\DIMS\KeyRoaming"


def on_windows(platform: str = sys.platform) -> bool:
    return platform == "win32"


def open_store(config: AgentConfig, path: str, platform: str = sys.platform) -> CertificateStore:
    """The user's local store: the file store at ``path``, or on Windows the Windows store
    with its bookkeeping at ``path``. Raises StoreError naming the folder at fault."""
    if on_windows(platform):
        return WindowsStore(path, non_exportable_keys=config.windows.non_exportable_keys)
    return FileStore(path)


def key_roaming_disabled() -> int | None:
    """The user's ``KeyRoaming\\Disabled`` value (None: not set, or not on Windows)."""
    try:
        import winreg  # type: ignore[import-not-found]  # Windows only
    except ImportError:
        return None
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, KEY_ROAMING_KEY) as key:
            value, kind = winreg.QueryValueEx(key, "Disabled")
    except OSError:
        return None
    return value if kind == winreg.REG_DWORD else None


def native_roaming(
    config: AgentConfig,
    policy_enabled: bool,
    platform: str = sys.platform,
    read_disabled: Callable[[], int | None] = key_roaming_disabled,
) -> bool:
    """Whether this sync leaves native tokens to Windows (``sync_user(native_roaming=...)``)."""
    if not on_windows(platform):
        return False
    mode = config.windows.native_roaming
    if mode != "auto":
        return mode == "on"
    return native_roaming_on(
        windows=True, policy_enabled=policy_enabled, key_roaming_disabled=read_disabled()
    )
