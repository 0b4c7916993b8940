"""`make demo` as a test: its quick configuration runs the whole market and ends with DEMO OK."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from marketplace.compiler import PROJECT_ROOT


def test_quick_demo_runs_the_market_and_reports_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--quick", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"DEMO OK accuracy_ratio=([0-9.]+) overhead_per_update_s=([0-9.]+) wall_s=([0-9.]+)", last
    )
    assert match, last
    ratio, overhead, wall = (float(g) for g in match.groups())
    assert 0.7 <= ratio <= 1.1  # 2 short rounds; the full demo reaches about 0.96
    assert 0 < overhead < 5
    assert 0 < wall < 300
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("who earned what", "gas spent per role", "winner: node"):
        assert heading in done.stdout
