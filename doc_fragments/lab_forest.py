"""Doc fragments for the embedded lab forest's modules (roles/lab_forest/library).

DOCUMENTATION: the options every lab-wide module shares (lab, state, state_dir, subnet).
HOST: the options of a module that makes one lab host (lab_forest_dc, lab_forest_host).
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  lab:
    description: Lab name (C([a-z0-9]{1,8})); prefixes every kernel object name.
    type: str
    required: true
  state:
    description: Wanted state.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description: The lab's state folder (C(.lab/<lab>) under the repository).
    type: path
    required: true
  subnet:
    description: The lab subnet (IPv4 CIDR).
    type: str
    required: true
attributes:
  check_mode:
    support: full
    details: Check mode starts, makes and removes nothing; the result says what would be done.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux as root, with the Debian packages C(make deps) installs.
notes:
  - The lab is for tests and demonstrations on one machine; its passwords are known by design.
"""

    HOST = r"""
options:
  host:
    description: Host name in the lab, e.g. C(dc1), C(client1); it lives in C(<state_dir>/<host>).
    type: str
    required: true
  hosts:
    description: Every lab host name to its IP, for the lab hosts file.
    type: dict
    required: true
  nameservers:
    description: Resolver IPs written to the host's resolv.conf (the lab DCs).
    type: list
    elements: str
    required: true
"""
