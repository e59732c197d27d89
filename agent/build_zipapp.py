"""Build ``dist/credroam-agent.pyz``: the agent, what a host needs of the core, and the pure-Python
libraries Debian 12 lacks, in one reproducible zipapp.

Reproducible: the same inputs give the same bytes. Members are written in sorted order with a
fixed timestamp (1980-01-01, the zip epoch), fixed permissions and no extra fields; the stdlib's
``zipapp`` then prefixes the interpreter line. Nothing is fetched: the vendored libraries are
copied from the installed, pinned distributions (requirements.txt), with their licences.

    .venv/bin/python agent/build_zipapp.py dist/credroam-agent.pyz    (what `make agent` runs)
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zipapp
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "agent" / "credroam_agent"
CORE = REPO / "module_utils" / "credroam"
INTERPRETER = "/usr/bin/python3"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# What a host needs of the core: the shared top level, roaming/, and the read-only Group Policy
# pieces. Never gpo/engine.py or gpo/sysvol.py (the modules' write side) nor schema/.
CORE_PARTS = ("*.py", "roaming/**/*.py")
GPO_PARTS = ("__init__.py", "model.py", "settings.py", "preg.py", "secdesc.py", "resolve.py")
# Pure-Python libraries Debian 12 does not package, at the versions requirements.txt pins.
VENDORED = {"smbprotocol": "1.17.0", "pyspnego": "0.12.4"}
MAIN = "import sys\n\nfrom credroam_agent.cli import main\n\nsys.exit(main())\n"


class BuildError(RuntimeError):
    pass


def _python_files(root: Path, patterns: tuple[str, ...]) -> Iterator[Path]:
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def _members_from_repo() -> dict[str, bytes]:
    members = {}
    for path in _python_files(AGENT, ("*.py",)):
        members[f"credroam_agent/{path.relative_to(AGENT).as_posix()}"] = path.read_bytes()
    for path in _python_files(CORE, CORE_PARTS):
        members[f"credroam/{path.relative_to(CORE).as_posix()}"] = path.read_bytes()
    for name in GPO_PARTS:
        path = CORE / "gpo" / name
        if path.is_file():  # resolve.py arrives with the policy discovery
            members[f"credroam/gpo/{name}"] = path.read_bytes()
    return members


def _members_vendored() -> dict[str, bytes]:
    members = {}
    for name, pinned in VENDORED.items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BuildError(f"{name}=={pinned} is not installed (make deps)") from None
        if distribution.version != pinned:
            raise BuildError(f"{name} {distribution.version} is installed, {pinned} is pinned")
        licences = []
        for file in distribution.files or ():
            posix = file.as_posix()
            if ".dist-info/" in posix:
                if "LICENSE" in file.name.upper() or "COPYING" in file.name.upper():
                    licences.append(file)
                continue
            if posix.startswith("..") or "__pycache__" in posix or not posix.endswith(".py"):
                continue
            members[posix] = Path(distribution.locate_file(file)).read_bytes()
        if not licences:
            raise BuildError(f"{name} {pinned} ships no licence file")
        for file in licences:
            text = Path(distribution.locate_file(file)).read_bytes()
            members[f"LICENSES/{name}-{pinned}-{file.name}"] = text
    return members


def members() -> dict[str, bytes]:
    """Every file of the zipapp by its name inside it."""
    found = {**_members_vendored(), **_members_from_repo()}
    found["__main__.py"] = MAIN.encode()
    forbidden = [
        n
        for n in found
        if n.startswith(("credroam/schema/", "credroam/gpo/engine", "credroam/gpo/sysvol"))
    ]
    if forbidden:
        raise BuildError(f"modules a host must not get: {', '.join(forbidden)}")
    return found


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the permissions below are read as such
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name], compresslevel=9)
    return buffer.getvalue()


def build(target: Path) -> Path:
    """Write the zipapp to ``target`` by rename: a run reading it meanwhile (another play of
    a sliced or parallel rollout building the same bytes) never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = io.BytesIO(zip_bytes(members()))
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        zipapp.create_archive(source, partial, interpreter=INTERPRETER)
        partial.chmod(0o755)  # runnable as a command (the PAM hook's --agent), by every user
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "target", type=Path, nargs="?", default=REPO / "dist" / "credroam-agent.pyz"
    )
    args = parser.parse_args()
    try:
        print(build(args.target))
    except BuildError as exc:
        print(f"build_zipapp: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
