"""Test-wide setup: modules under test import the project's module_utils the way Ansible does.

Ansible finds `module_utils/` through ansible.cfg and serves it as `ansible.module_utils.*`; in
pytest the same files are put on that package's path, so `library/*.py` imports work unchanged.
"""

from __future__ import annotations

from pathlib import Path

import ansible.module_utils

MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
