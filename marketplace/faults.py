"""Named crash points, for the tests that kill a program at an exact moment and restart it.

`crash_point("miner:uploaded")` kills the process with SIGKILL (no clean-up, no `finally`)
when the environment variable GM_CRASH_AT names that point; otherwise it does nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "GM_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
