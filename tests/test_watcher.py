"""`miner watch`'s library (`miner.watcher.Watcher`): one pass over every task submits to each
open round the data fits, says a skip once, and never raises for what a task holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marketplace.rules.datafiles import Dataset, to_csv
from marketplace.runtime.state import StateFile
from miner.config import MinerConfig
from miner.trainer import Trainer
from miner.watcher import Watcher
from miner.worker import Miner
from tests.market import new_market


def test_a_pass_submits_where_the_data_fits_and_says_each_skip_once(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.create(rounds=2)
    market.propose()
    market.add_miners(1, epochs=1)
    fitting = Watcher(market.miners[0], market.miners[0].data)

    (line,) = fitting.one_pass()
    [node] = [r for r in market.chain.nodes(market.task_id) if r.author == market.keys[4].address]
    assert line == f"task {market.task_id} round 0: node {node.node_id}"
    assert fitting.one_pass() == []  # submitted this round: nothing new to say

    narrow = tmp_path / "narrow.csv"  # 30 features: not the task's 64
    rows = Dataset(np.zeros((4, 30), dtype=np.float32), np.arange(4, dtype=np.int64), 10)
    narrow.write_bytes(to_csv(rows))
    account = market.keys[5]
    state = StateFile(tmp_path / "state" / "narrow.json")
    miner = Miner(market.connection(account), Trainer(), narrow, state, MinerConfig(epochs=1))
    skipping = Watcher(miner, narrow)
    (skipped,) = skipping.one_pass()
    assert skipped.startswith(f"task {market.task_id}: skipped, your data does not fit (")
    assert "64 feature columns" in skipped
    assert skipping.one_pass() == [] and skipping.fits == {market.task_id: False}
    assert not [r for r in market.chain.nodes(market.task_id) if r.author == account.address]
