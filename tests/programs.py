"""Running the market's programs and scripts as separate processes, for the tests that do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from marketplace.dev.shards import digits_splits, dirichlet_shards, subset
from marketplace.rules.datafiles import to_csv

BIN = Path(sys.executable).parent
MLP = {
    "input_shape": [64],
    "layers": [
        {"type": "linear", "in_features": 64, "out_features": 32},
        {"type": "relu"},
        {"type": "linear", "in_features": 32, "out_features": 10},
    ],
}


def write_inputs(folder: Path, miners: int = 2) -> None:
    """The demo's smaller configuration: digits, `miners` label-skewed shards, the MLP spec."""
    train, validation, _ = digits_splits(seed=0)
    for i, rows in enumerate(dirichlet_shards(train.labels, miners, 0.5, seed=1, min_size=20)):
        (folder / f"shard{i}.csv").write_bytes(to_csv(subset(train, rows)))
    (folder / "val.csv").write_bytes(to_csv(validation))
    (folder / "mlp.json").write_text(json.dumps(MLP))


def program_env(**extra: str) -> dict[str, str]:
    """This environment without any GM_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GM_")}
    return {**env, "COLUMNS": "200", **extra}


def run(
    folder: Path, program: str, *args: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `program` to its end with `folder/d` as its data folder."""
    from marketplace.runtime.faults import CRASH_ENV

    return subprocess.run(
        [BIN / program, *args, "--data-dir", str(folder / "d")],
        cwd=folder,
        env=program_env(**({CRASH_ENV: crash} if crash else {})),
        capture_output=True,
        text=True,
        timeout=180,
    )


def start(folder: Path, program: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start `program` in the background (stdout and stderr together, as text)."""
    return subprocess.Popen(
        [BIN / program, *args, "--data-dir", str(folder / "d")],
        cwd=folder,
        env=program_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def script_output(name: str, *args: str, timeout: float = 300) -> str:
    """Run `scripts/<name>` to its end (failing the test on a non-zero exit); its stdout."""
    from marketplace.dev.compiler import PROJECT_ROOT

    done = subprocess.run(
        [sys.executable, f"scripts/{name}", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def create_task(folder: Path, rounds: int = 2) -> None:
    """Task 1 (sponsor: dev account 0, evaluator 1) and its architecture (account 2)."""
    ok(
        run(
            folder,
            "sponsor",
            "task",
            "create",
            "--validation",
            "val.csv",
            "--bounty",
            "10",
            "--evaluator",
            "dev:1",
            "--rounds",
            str(rounds),
            "--account",
            "0",
        )
    )
    ok(
        run(
            folder,
            "sponsor",
            "arch",
            "propose",
            "--task",
            "1",
            "--spec",
            "mlp.json",
            "--seed",
            "1",
            "--account",
            "2",
        )
    )
