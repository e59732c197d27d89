"""credroam-agent: the sync agent a user's computer runs (login, sync, status, watch, purge).

It is the core (``credroam.roaming``) as a small command, packaged as one zipapp
(``make agent`` -> ``dist/credroam-agent.pyz``) that runs on Debian's /usr/bin/python3.
"""

# The agent's version, as `credroam-agent --version` reports it and the sync_agent role records
# on each host (pyproject.toml's version of the project).
__version__ = "0.1.0"
