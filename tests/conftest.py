"""Test-wide setup: one import identity for the core, and module_utils served the way Ansible does.

The core is one package, ``credroam`` (``module_utils/credroam``, on pytest's pythonpath).
Modules and the Ansible glue import it as ``ansible.module_utils.credroam``; left alone, Python
would load the same files a second time under that name, with different classes, so an
``isinstance`` or a monkeypatch on one name would miss the other. An import alias makes every
``ansible.module_utils.credroam[.X]`` the very module object ``credroam[.X]``.

Ansible finds the rest of ``module_utils/`` (``credroam_ansible`` ...) through ansible.cfg and
serves it as ``ansible.module_utils.*``; here the same folder is put on that package's path, so
``library/*.py`` imports work unchanged. Without Ansible (Debian's python3, ``make
unit-system``) only the core's tests run: the others skip themselves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import tests.hypothesis_profiles  # noqa: F401  (registers and loads the hypothesis profile)

CORE = "credroam"
ALIAS = "ansible.module_utils.credroam"
MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")


class CoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``ansible.module_utils.credroam[.X]`` to the already importable ``credroam[.X]``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = importlib.import_module(CORE + fullname[len(ALIAS) :])
        spec = importlib.util.spec_from_loader(fullname, self, is_package=hasattr(real, "__path__"))
        assert spec is not None
        spec.loader_state = (real, real.__spec__)
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return spec.loader_state[0]

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run (the module ran once, under its own name); give its own spec back.

        The import system set ``__spec__`` to the alias's; relative imports and tools read it.
        """
        assert module.__spec__ is not None
        module.__spec__ = module.__spec__.loader_state[1]


sys.meta_path.insert(0, CoreAlias())

if importlib.util.find_spec("ansible") is not None:
    import ansible.module_utils

    if MODULE_UTILS not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(MODULE_UTILS)
