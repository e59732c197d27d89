"""``python -m credroam_agent`` and the zipapp's entry point."""

import sys

from credroam_agent.cli import main

sys.exit(main())
