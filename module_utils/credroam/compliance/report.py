"""The report document of one compliance run (JSON, schema ``roles/compliance/files/
report.schema.json``, version :data:`~.checks.REPORT_VERSION`). The role renders its JUnit XML
and HTML from this document alone, so the three outputs cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..roaming.model import Policy
from .checks import (
    CHECKS,
    REPORT_VERSION,
    UNKNOWN,
    HostFacts,
    Result,
    Sizing,
    blocking,
    summarize,
)

__all__ = ["HOSTS_NOT_CHECKED", "build_report", "hosts_section"]

HOSTS_NOT_CHECKED = (
    "no agent hosts were given, so no host was checked (playbooks/compliance.yml reads the "
    "hosts of the inventory's credroam_agents group, else clients)"
)


def hosts_section(hosts: Sequence[HostFacts] | None) -> dict[str, Any]:
    """Per agent host: the agent version it reports (or recorded), why it could not be read,
    and each user's last successful sync there (None: never)."""
    if hosts is None:
        return {"checked": False, "note": HOSTS_NOT_CHECKED, "hosts": []}
    rows = []
    for facts in sorted(hosts, key=lambda f: f.host):
        version = (facts.reports or facts.recorded[0]).strip() or None
        rows.append(
            {
                "host": facts.host,
                "error": facts.error,
                "agent": version,
                "last_syncs": facts.last_syncs(),
            }
        )
    return {"checked": True, "note": f"{len(rows)} agent host(s) read", "hosts": rows}


def build_report(
    *,
    forest: Mapping[str, Any],
    results: Sequence[Result],
    users: Sequence[Mapping[str, Any]],
    policy: Policy,
    sizing: Sizing,
    threshold: str,
    unknown_blocks: bool,
    generated_at: str,
    hosts: Sequence[HostFacts] | None = None,
) -> dict[str, Any]:
    """``forest``: domain, server and dcs; ``users``: per user {user, tokens, bytes};
    ``hosts``: the agent hosts read (None: hosts were not checked)."""
    items = [r.as_dict() for r in sorted(results, key=lambda r: (r.check, r.subject))]
    failing = blocking(items, threshold, unknown_blocks)
    return {
        "schema_version": REPORT_VERSION,
        "generated_at": generated_at,
        "forest": dict(forest),
        "verdict": {
            "passed": not failing,
            "fail_on_severity": threshold,
            "unknown_blocks": unknown_blocks,
            "blocking": len(failing),
        },
        "summary": summarize(results),
        "checks": {
            check.id: {
                "title": check.title,
                "severity": check.severity,
                "what": check.what,
                "fix": check.fix,
            }
            for check in CHECKS.values()
        },
        "results": items,
        "unreadable": [
            {"check": i["check"], "subject": i["subject"], "message": i["message"]}
            for i in items
            if i["status"] == UNKNOWN
        ],
        "users": {
            "limits": {
                "max_tokens": policy.max_tokens,
                "max_token_size": policy.max_token_size,
                "max_total_bytes": policy.max_tokens * policy.max_token_size,
                "tombstone_days": policy.tombstone_days,
                "estimate_tokens": sizing.tokens,
                "estimate_bytes": sizing.total_bytes,
            },
            "stats": [dict(u) for u in users],
        },
        "hosts": hosts_section(hosts),
    }
