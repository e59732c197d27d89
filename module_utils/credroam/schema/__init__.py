"""Schema: credroam's attribute and class definitions, their comparison with the live schema,
the plan of writes, and the directory steps around them (schema master, forest DCs,
replication). Used by ``ad_schema`` and the compliance run; never by the agent.
"""
