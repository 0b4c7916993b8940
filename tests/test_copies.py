"""Issue 15: one update, one voice. An update with the same weights as an earlier one (a sybil
submitting its shard's update from a second account, or a copier that got the bytes) is
invalid `copy`: it forfeits its deposit and earns nothing, and the first to submit keeps what
it earned, whichever order the evaluator reads them in."""

from __future__ import annotations

from pathlib import Path

from marketplace.protocol.tasks import nodes_by_id
from marketplace.rules.messages import NodeKind
from marketplace.runtime.state import StateFile
from miner.config import MinerConfig
from miner.trainer import Trainer
from miner.worker import Miner
from tests.market import DEPOSIT, new_market


def test_a_second_account_submitting_the_same_weights_is_a_copy_and_forfeits(
    tmp_path: Path,
) -> None:
    market = new_market(tmp_path)
    market.create(rounds=1)
    market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=5)
    honest = market.miners[0]
    # The same shard, seed and training from another account: bit-identical weights.
    sybil = Miner(
        market.connection(market.keys[8]),
        Trainer(),
        market.folder / "private" / "miner-0.csv",
        StateFile(market.folder / "state" / "sybil.json"),
        MinerConfig(epochs=5, seed=0),
    )
    first = market.submit(honest)
    market.submit(market.miners[1])
    copy = market.submit(sybil)
    assert first is not None and copy is not None
    market.end_round(0)
    market.reveal()
    evaluator.step(market.task_id)
    report = evaluator.evaluate(market.task_id)

    verdicts = {n.node_id: n for n in report.nodes}
    assert verdicts[copy.node_id].reason == (
        f"copy: the same weights as update {first.node_id}, submitted earlier"
    )
    assert verdicts[first.node_id].valid
    assert report.entry_for(sybil.address) is None  # no credit, and its deposit forfeited
    honest_entry = report.entry_for(honest.address)
    assert honest_entry is not None and honest_entry.deposits == DEPOSIT
    merges = [
        r for r in nodes_by_id(market.chain, market.task_id).values() if r.kind is NodeKind.MERGE
    ]
    assert merges and all(copy.node_id not in merge.parents for merge in merges)
