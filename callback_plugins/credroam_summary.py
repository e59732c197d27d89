"""Print the lines a playbook left in the custom stat ``credroam_summary`` after the recap."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: credroam_summary
type: notification
short_description: Ends a run with the summary a playbook wrote for a person
description:
  - A playbook that sets the custom stat C(credroam_summary) (a list of lines, with
    M(ansible.builtin.set_stats)) ends its output with those lines, after the PLAY RECAP, as
    plain text. playbooks/summary.yml (the end of C(make run)) does so.
  - Prints nothing for a playbook that sets no such stat.
requirements: [enabled in ansible.cfg (callbacks_enabled)]
"""

from collections.abc import Sequence
from typing import Any

from ansible.plugins.callback import CallbackBase

STAT = "credroam_summary"


def summary_lines(custom_stats: dict[str, Any]) -> list[str]:
    """The run-wide (not per-host) ``credroam_summary`` lines, or [] when none were set."""
    lines = custom_stats.get("_run", {}).get(STAT) or []
    if isinstance(lines, str):
        return lines.splitlines()
    if isinstance(lines, Sequence):
        return [str(line) for line in lines]
    return [str(lines)]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "credroam_summary"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats) -> None:
        lines = summary_lines(getattr(stats, "custom", {}) or {})
        if lines:
            self._display.display("\n" + "\n".join(lines))
