"""The lab_forest_dc module's slow steps, with Samba and the DC's processes faked: a joined DC's
service principals, and provision and join run with no time limit of the lab's.

A module test: it needs Ansible (the module imports ansible.module_utils.basic), so Debian's
python3 (`make unit-system`) skips it; the role's pure helpers are tested in test_lab_forest.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="a module test: needs Ansible (.venv/bin/pytest runs it)")

from tests.unit.test_lab_forest import COMMON, lf

# --- a DC's slow steps (lab_forest_dc, with Samba and the DC's processes faked) -------------


def _load_dc_module():
    """The lab_forest_dc module, its role-local module_utils served from the file loaded above."""
    sys.modules.setdefault("ansible.module_utils.lab_forest_common", lf)
    path = COMMON.parents[1] / "library" / "lab_forest_dc.py"
    spec = importlib.util.spec_from_file_location("lab_forest_dc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lab_dc = _load_dc_module()


def _dc(tmp_path: Path, host: str) -> lab_dc.DomainController:
    params = {
        "lab": "t",
        "host": host,
        "state_dir": str(tmp_path),
        "subnet": "172.29.9.0/24",
        "realm": "LAB.EXAMPLE",
        "domain": "LAB",
        "admin_password": "Lab-Admin-Pass1!",
        "start_timeout": 0,  # no waiting for what Samba may do later
    }
    return lab_dc.DomainController(params, check_mode=False)


class JoinedDC:
    """dc2 just started: whether it holds ldap/dc2.lab.example, and the commands run in it.
    ``update``: what samba_spnupdate does here (rc, stderr, whether the names are then held)."""

    def __init__(self, tmp_path: Path, monkeypatch, held: bool, update=(0, "", True)) -> None:
        self.dc = _dc(tmp_path, "dc2")
        self.held = held
        self.update = update
        self.commands: list[list[str]] = []
        monkeypatch.setattr(self.dc, "_holds_own_ldap_principal", lambda: self.held)
        monkeypatch.setattr(self.dc, "sandbox_exec", self._exec)

    def _exec(self, argv: list[str], check: bool = True):
        self.commands.append(argv)
        rc, stderr = 0, ""
        if argv[0] == "samba_spnupdate":
            rc, stderr, self.held = self.update
        return lf.subprocess.CompletedProcess(argv, rc, "", stderr)

    def programs(self) -> list[str]:
        return [argv[0] for argv in self.commands]


def test_a_joined_dc_whose_own_spn_update_samba_gave_up_on_still_reaches_dc1(
    tmp_path, monkeypatch
) -> None:
    # On a loaded machine Samba kills its own samba_spnupdate (error code 110) and tries again
    # only minutes later: the lab registers the names itself, then dc1 pulls them.
    world = JoinedDC(tmp_path, monkeypatch, held=False)
    world.dc._replicate_to_first()
    assert world.programs() == ["samba_spnupdate", "samba-tool"]
    assert world.commands[0][1:] == ["-s", str(world.dc.smb_conf)]
    assert world.commands[1][:6] == [
        "samba-tool",
        "drs",
        "replicate",
        "dc1",
        "dc2",
        "DC=lab,DC=example",
    ]


def test_a_joined_dc_that_registered_its_names_itself_is_only_replicated(
    tmp_path, monkeypatch
) -> None:
    world = JoinedDC(tmp_path, monkeypatch, held=True)
    world.dc._replicate_to_first()
    assert world.programs() == ["samba-tool"]


def test_the_labs_spn_update_losing_a_race_with_sambas_own_is_no_error(
    tmp_path, monkeypatch
) -> None:
    raced = (1, "ERROR(ldb): attribute or value exists", True)
    world = JoinedDC(tmp_path, monkeypatch, held=False, update=raced)
    world.dc._replicate_to_first()
    assert world.programs() == ["samba_spnupdate", "samba-tool"]


def test_a_dc_still_without_its_ldap_principal_is_named_with_the_update_output(
    tmp_path, monkeypatch
) -> None:
    world = JoinedDC(tmp_path, monkeypatch, held=False, update=(1, "ERROR(ldb): no such", False))
    with pytest.raises(lf.LabError) as refused:
        world.dc._replicate_to_first()
    assert str(refused.value) == (
        "samba_spnupdate on dc2 (rc=1) did not register ldap/dc2.lab.example: ERROR(ldb): no such"
    )
    assert world.programs() == ["samba_spnupdate"]  # nothing replicated


@pytest.mark.parametrize(("host", "verb"), [("dc1", "provision"), ("dc2", "join")])
def test_provision_and_join_run_to_their_end_however_long_the_load_makes_them(
    tmp_path, monkeypatch, host: str, verb: str
) -> None:
    # 120 s was once the limit; a provision takes longer on a loaded machine, and no limit of
    # the lab's tells slow from stuck (each command fails by itself when it cannot go on).
    runs: list[tuple[list[str], float | None]] = []
    monkeypatch.setattr(
        lf.Sandbox, "run", lambda self, argv, timeout=120: runs.append((argv, timeout))
    )
    monkeypatch.setattr(lf.Sandbox, "running_pid", lambda self: 4242)  # dc1 is up for a join
    dc = _dc(tmp_path, host)
    monkeypatch.setattr(dc, "_configure", lambda: None)
    dc._provision() if verb == "provision" else dc._join()
    ((argv, timeout),) = runs
    assert argv[1:3] == ["domain", verb]
    assert timeout is None
