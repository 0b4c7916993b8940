"""The market as separate processes: `marketplace devnet` (or the real engines: anvil and an
IPFS daemon), then the `sponsor`, `miner` and `marketplace` programs against it, each killed at
its crash points and restarted. Every setup must give the same scores and payouts."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.chain.events import Claimed, PayoutRootPosted
from marketplace.dev.devnet import advance_chain_to, free_port
from marketplace.dev.engines import Engines
from marketplace.dev.shards import digits_splits
from marketplace.protocol.reports import agreed_report
from marketplace.rules.datafiles import to_csv
from marketplace.rules.messages import NodeKind, Phase
from marketplace.runtime.config import Settings
from marketplace.runtime.connect import open_store
from marketplace.runtime.devnet_info import read_devnet_info
from tests.programs import BIN, create_task, ok, program_env, run, write_inputs

KILLED = -signal.SIGKILL
OUTCOMES: dict[str, object] = {}  # setup -> (scores, payouts by dev account index)


@pytest.fixture(params=["tester", "anvil", pytest.param("anvil+ipfs", marks=pytest.mark.engines)])
def folder(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    write_inputs(tmp_path)
    if request.param == "anvil+ipfs":
        engines = Engines(tmp_path / "engines", free_port(), free_port())
        engines.start(tmp_path / "d")
        yield tmp_path
        engines.stop()
        return
    devnet = subprocess.Popen(
        [
            BIN / "marketplace",
            "devnet",
            "--port",
            "0",
            "--engine",
            request.param,
            "--data-dir",
            tmp_path / "d",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "d" / "devnet.json").exists():
        assert devnet.poll() is None and time.monotonic() < deadline, "devnet did not start"
        time.sleep(0.1)
    yield tmp_path
    devnet.send_signal(signal.SIGTERM)
    assert devnet.wait(timeout=20) == 0
    assert not (tmp_path / "d" / "devnet.json").exists()


def test_the_market_survives_kills_at_every_crash_point(folder: Path) -> None:
    info = read_devnet_info(folder / "d" / "devnet.json")
    w3 = Web3(Web3.HTTPProvider(info.rpc_url))
    chain = ChainClient(w3, info.contract)
    miner = ["--task", "1", "--epochs", "2"]

    create_task(folder)

    # Round 0: miner 5 is killed between upload and submit, then restarted.
    ok(run(folder, "miner", "run", *miner, "--data", "shard0.csv", "--account", "4", "--once"))
    killed = run(
        folder,
        "miner",
        "run",
        *miner,
        "--data",
        "shard1.csv",
        "--account",
        "5",
        "--once",
        crash="miner:uploaded",
    )
    assert killed.returncode == KILLED
    assert [r.kind for r in chain.nodes(1)] == [NodeKind.ARCHITECTURE, NodeKind.UPDATE]
    resumed = ok(
        run(folder, "miner", "run", *miner, "--data", "shard1.csv", "--account", "5", "--once")
    )
    assert "sealed earlier (no retraining)" in resumed
    advance_chain_to(w3, chain.task(1).round_end(0))
    assert "posted merge" in ok(
        run(folder, "marketplace", "evaluate", "--task", "1", "--account", "1", "--once")
    )

    # Round 1: miner 5 runs to the end, killed between submit and claim, then restarted.
    ok(run(folder, "miner", "run", *miner, "--data", "shard0.csv", "--account", "4", "--once"))
    killed = run(
        folder,
        "miner",
        "run",
        *miner,
        "--data",
        "shard1.csv",
        "--account",
        "5",
        crash="miner:submitted",
    )
    assert killed.returncode == KILLED
    restarted = subprocess.Popen(
        [
            BIN / "miner",
            "run",
            *miner,
            "--data",
            "shard1.csv",
            "--account",
            "5",
            "--poll",
            "0.2",
            "--data-dir",
            str(folder / "d"),
        ],
        cwd=folder,
        env=program_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    advance_chain_to(w3, chain.task(1).round_end(1))
    ok(run(folder, "marketplace", "evaluate", "--task", "1", "--account", "1", "--once"))
    ok(run(folder, "sponsor", "task", "reveal", "1", "--account", "0"))

    # The evaluator is killed between scoring and posting, then restarted.
    killed = run(
        folder, "marketplace", "evaluate", "--task", "1", "--account", "1", crash="evaluator:scored"
    )
    assert killed.returncode == KILLED
    assert chain.events(PayoutRootPosted, task_id=1) == []
    assert "posted the payout root" in ok(
        run(folder, "marketplace", "evaluate", "--task", "1", "--account", "1")
    )
    advance_chain_to(w3, chain.task(1).challenge_end)
    ok(run(folder, "sponsor", "task", "finalize", "1", "--account", "0"))

    assert "claimed" in ok(run(folder, "miner", "claim", "--task", "1", "--account", "4"))
    out, _ = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, out
    ok(run(folder, "sponsor", "claim", "--task", "1", "--account", "2"))
    assert "matches" in ok(run(folder, "marketplace", "verify", "--task", "1"))
    _pull_and_predict(folder)

    updates = [r for r in chain.nodes(1) if r.kind is NodeKind.UPDATE]
    assert sorted((u.round, u.author) for u in updates) == sorted(
        (r, info.accounts[a].address) for r in (0, 1) for a in (4, 5)
    )
    assert len(chain.events(PayoutRootPosted, task_id=1)) == 1
    claimed = {e.account for e in chain.events(Claimed, task_id=1)}
    assert claimed == {info.accounts[a].address for a in (2, 4, 5)}
    assert chain.phase(1) is Phase.CLAIMS
    assert (
        chain.reputation(info.accounts[4].address) + chain.reputation(info.accounts[5].address) > 0
    )

    # The same market on the other engine gives the same scores and payouts, account for account.
    index = {account.address: i for i, account in enumerate(info.accounts)}
    store = open_store(Settings(data_dir=folder / "d"))
    if info.ipfs_url:  # on the real engines every blob is on IPFS, none in the local folder
        assert not (folder / "d" / "blobs").exists()
    report = agreed_report(chain, store, 1)
    outcome = (
        [(n.node_id, n.kind, n.valid, n.score, n.gain) for n in report.nodes],
        sorted((index[p.account], p.amount, p.points) for p in report.payouts),
    )
    setup = info.engine + ("+ipfs" if info.ipfs_url else "")
    OUTCOMES[setup] = outcome
    for other_setup, other in OUTCOMES.items():
        assert other == outcome, f"{other_setup} and {setup} disagree"


def _pull_and_predict(folder: Path) -> None:
    """Issue 17: the sponsor pulls the model it paid for and predicts with it; a miner cannot
    open it; the card holds against the chain, line by line."""
    (folder / "test.csv").write_bytes(to_csv(digits_splits(seed=0)[2]))
    pull = ["sponsor", "model", "pull", "--task", "1", "-o", "model", "--test", "test.csv"]
    pulled = ok(run(folder, *pull, "--account", "0"))
    assert "model card: model/MODEL_CARD.md" in pulled
    refused = run(folder, *pull[:-2], "-o", "stolen", "--account", "4")
    assert refused.returncode == 1 and "not a recipient" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and not (folder / "stolen").exists()
    checked = ok(run(folder, "marketplace", "verify", "--card", "model/MODEL_CARD.md"))
    assert "every line of model/MODEL_CARD.md holds against the chain" in checked
    card = json.loads((folder / "model" / "model_card.json").read_text())
    paid = card["contributors"][0]["amount"]
    card["contributors"][0]["amount"] = str(int(paid) + 1)
    (folder / "altered.json").write_text(json.dumps(card))
    altered = run(folder, "marketplace", "verify", "--card", "altered.json")
    assert altered.returncode == 2, altered.stdout + altered.stderr
    said = f"contributors[0].amount: the card says {int(paid) + 1}, the chain {paid}"
    assert said in " ".join(altered.stdout.split())
    predicted = subprocess.run(
        [BIN / "sponsor", "model", "predict", "--model", "model", "--data", "test.csv"],
        cwd=folder,
        env=program_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    right, rows = card["test"]["score"], card["test"]["rows"]
    assert f"({right:,} of {rows:,} rows)" in ok(predicted)
