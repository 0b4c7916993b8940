"""`make bench-scale --quick` in-process on eth-tester: every task runs its rounds and settles,
the tables show rounds 1 and the last next to round 1, and every figure is a positive, finite
number of seconds (the settlement's fresh evaluator and both verifications agree inside)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_quick_bench_scale_reports_rounds_and_settlements_with_sane_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the script imports `demo_steps` as its neighbour
    import bench_scale

    figures = tmp_path / "scale.json"
    runs = bench_scale.main(["--quick", "--engine", "tester", "--json", str(figures)])

    shapes = [(run.engine, run.shape.miners, run.shape.rounds) for run in runs]
    assert shapes == [("tester", 4, 5), ("tester", 4, 3), ("tester", 6, 4)]
    for run in runs:
        assert [cost.round for cost in run.rounds] == list(range(1, run.shape.rounds + 1))
        assert all(cost.updates == run.shape.miners for cost in run.rounds)
        for cost in run.rounds:
            for seconds in (cost.overhead_s, cost.chain_s, cost.evaluator_s, cost.wall_s):
                assert 0 < seconds < 60 and math.isfinite(seconds)
        settled = run.settlement
        assert settled is not None and settled.updates == run.shape.updates
        # the architecture, every update, and at most one merge a round
        assert run.shape.updates + 1 < settled.nodes <= run.shape.updates + 1 + run.shape.rounds
        for seconds in (
            settled.warm_s,
            settled.cold_s,
            settled.verify_public_s,
            settled.verify_miner_s,
        ):
            assert 0 < seconds < 60 and math.isfinite(seconds)
        # A fresh evaluator runs every node once; the one that ran the rounds reuses them.
        assert settled.cold_scorings >= settled.nodes - run.shape.rounds
        assert settled.scorings < settled.cold_scorings

    out = capsys.readouterr().out
    curve = out.split("tester: rounds curve (4 miners), per round")[1]
    curve = curve.split("tester: 12 updates")[0]
    rows = [line.split("│")[1:3] for line in curve.splitlines() if line.startswith("│")]
    assert [(r.strip(), u.strip()) for r, u in rows] == [("1", "4"), ("5", "4")]
    assert "settlement, next to round 1's evaluator step" in out
    assert re.search(r"overhead per update at round 5 is [0-9.]+x round 1's", out)

    last = out.strip().splitlines()[-1]
    assert last.startswith("BENCH-SCALE ")
    pairs = dict(part.split("=") for part in last.split()[1:])
    expected = {
        f"tester.curve.{name}.r{r}" for name in ("overhead", "chain", "evaluator") for r in (1, 5)
    }
    expected |= {
        f"tester.{u}u.{name}"
        for u in (12, 24)
        for name in ("settle_warm", "evaluate_cold", "verify_public", "verify_miner")
    }
    assert set(pairs) == expected
    for value in pairs.values():
        seconds, to_first = (float(x) for x in value.split("/"))
        assert seconds > 0 and to_first > 0
    for name in ("overhead", "chain", "evaluator"):
        assert pairs[f"tester.curve.{name}.r1"].endswith("/1.00")
    assert [run["shape"]["miners"] for run in json.loads(figures.read_text())] == [4, 4, 6]
    sys.modules.pop("bench_scale", None)
