"""Roaming: what a host runs to keep a user's certificates and keys in step with the directory.

``model`` (items, policy, base, plan), ``reconcile`` (the pure decision), ``sync`` (read, decide,
write), ``directory`` (the user's roaming attributes over LDAP), ``roamingkey`` and ``envelope``
(the per-user key and the sealing of private keys), ``certelement`` (the serialized store element
of certificate tokens), ``state`` (the last-synced base), ``store`` (local stores) and ``fsutil``.

This package and the shared top level (``tokens``, ``timestamps``, ``connection``, ``errors``)
are what the sync agent ships; nothing here imports ``gpo`` engine code or ``schema``.
"""
