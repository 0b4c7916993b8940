"""Named crash and pause points, for the tests that kill a program at an exact moment (or
stop an engine under it) and restart it.

`crash_point("miner:uploaded")` kills the process with SIGKILL (no clean-up, no `finally`)
when the environment variable GM_CRASH_AT names that point; otherwise it does nothing.
`pause_point("miner:uploading")` waits while the file GM_PAUSE_FILE exists, when GM_PAUSE_AT
names that point: the test creates the file, sees the program arrive (it writes the file's
name with `.reached` appended), does what it wants, then deletes the file to let it go on.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CRASH_ENV = "GM_CRASH_AT"
PAUSE_ENV = "GM_PAUSE_AT"
PAUSE_FILE_ENV = "GM_PAUSE_FILE"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name or PAUSE_FILE_ENV not in os.environ:
        return
    gate = Path(os.environ[PAUSE_FILE_ENV])
    Path(f"{gate}.reached").touch()
    while gate.exists():
        time.sleep(0.02)
