"""The compliance run: what is checked (``checks``, pure), how a forest is read for it (``read``).

``checks`` turns plain data read from the directory and SYSVOL into results (one per check and
subject); ``keyscan`` finds plaintext private keys in attribute values and ``access`` tells
whether the bound account may read a user's confidential attributes, both pure. ``read`` is the
only part that talks to DCs. Used by the ``credroam_info`` module; never by the agent.
"""
