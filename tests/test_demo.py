"""`make demo` as a test: its quick configuration runs the whole market and ends with DEMO OK,
on the embedded defaults and on the real engines (anvil and an IPFS daemon), with the same
tree, payouts and accuracy on both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from marketplace.compiler import PROJECT_ROOT

OUTCOMES: dict[str, tuple[list[str], float]] = {}  # setup -> (payout rows, accuracy ratio)


@pytest.mark.parametrize("setup", ["embedded", pytest.param("engines", marks=pytest.mark.engines)])
def test_quick_demo_runs_the_market_and_reports_its_figures(tmp_path: Path, setup: str) -> None:
    flags = ["--engines"] if setup == "engines" else []
    done = subprocess.run(
        [sys.executable, "scripts/demo.py", "--quick", "--out", str(tmp_path), *flags],
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
    expected = "anvil + IPFS daemon" if setup == "engines" else "eth-tester + local store"
    assert f"setup: {expected}" in done.stdout

    # Every account earns the same on both setups (rows sorted: addresses, hence order, differ).
    table = done.stdout.split("who earned what")[1].split("the sponsor reclaimed")[0]
    rows = sorted(line for line in table.splitlines() if line.startswith("│"))
    assert len(rows) == 6  # two scientists, four miners
    OUTCOMES[setup] = (rows, ratio)
    for other, outcome in OUTCOMES.items():
        assert outcome == (rows, ratio), f"{other} and {setup} disagree"
