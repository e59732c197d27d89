"""The agent's unit tests import ``credroam_agent`` from agent/, as the zipapp lays it out."""

from __future__ import annotations

import sys
from pathlib import Path

AGENT = str(Path(__file__).resolve().parents[3] / "agent")
if AGENT not in sys.path:
    sys.path.insert(0, AGENT)
