"""credroam core: pure Python shared by the Ansible modules and the sync agent.

Importable as ``ansible.module_utils.credroam`` inside modules and as ``credroam`` in tests and
in the agent. Modules here import only the standard library, ``cryptography`` and ``ldap3``, and
each other with relative imports, so the same files work in both places.
"""
