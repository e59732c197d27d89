"""Schema: credroam's attribute and class definitions (``definitions``), their comparison with
the live schema and the plan of writes (``plan``, pure), and the directory steps around them
(``directory``: schema master, forest DCs, reading, applying, replication). Used by
``ad_schema`` and the compliance run; never by the agent.
"""
