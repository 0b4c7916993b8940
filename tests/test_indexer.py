"""The indexer: the contract's events into SQLite, exactly; confirmations; resuming after a kill;
reorgs (eth-tester's snapshot and revert) leave the index equal to a rebuild from block 0."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hexbytes import HexBytes
from web3 import Web3

from marketplace.chain.abi import plain
from marketplace.chain.client import DEV_MIN_WINDOW, ChainClient
from marketplace.chain.events import (
    EVENTS,
    ChainEvent,
    PayoutRootAgreed,
    TaskFinalized,
    UpdateSubmitted,
)
from marketplace.delivered.card_check import public_card
from marketplace.dev.devchain import tester_of as chain_tester
from marketplace.dev.rpc_server import RpcServer
from marketplace.errors import ConfigError
from marketplace.protocol.reports import agreed_report
from marketplace.service import indexer as indexer_module
from marketplace.service.indexer import Indexer
from marketplace.wire.crypto import sha256
from tests.helpers import eth_task
from tests.market import Market, new_market
from tests.programs import script_output

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def create(market: ChainClient, accounts: list[str], deposit: int = 0) -> int:
    task_id = market.create_task(accounts[0], eth_task(accounts[1], deposit=deposit)).value
    assert task_id is not None
    return task_id


def submit(market: ChainClient, sender: str, task_id: int, label: str) -> int:
    node = market.submit_update(
        sender, task_id, parent=1, samples=7, digest=sha256(label.encode()), cid=CID
    ).value
    assert node is not None
    return node


def fresh_dump(market: ChainClient, path: Path, **options: int) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """The index a new indexer builds from block 0 at the chain's current head."""
    rebuilt = Indexer(market, path, **options)
    rebuilt.sync()
    try:
        return rebuilt.dump()
    finally:
        rebuilt.close()


def test_events_become_rows_with_their_values(
    market: ChainClient, accounts: list[str], tmp_path: Path
) -> None:
    task_id = create(market, accounts)
    market.propose_architecture(accounts[2], task_id, sha256(b"arch"), CID)
    node = market.submit_update(
        accounts[4], task_id, 1, 7, sha256(b"u"), CID, epsilon_millis=2500
    ).value
    index = Indexer(market, tmp_path / "index.sqlite", confirmations=0)

    result = index.sync()

    assert (result.events, result.cursor, result.head) == (
        3,
        market.w3.eth.block_number,
        result.head,
    )
    (task,) = index.rows("SELECT * FROM tasks")
    assert dict(task) | {"block_number": 0} == {
        "task_id": 1,
        "sponsor": accounts[0],
        "token": "0x" + "00" * 20,
        "bounty": str(10**19),
        "deposit": "0",
        "spec_cid": eth_task(accounts[1]).spec_cid,
        "spec_digest": "0x" + eth_task(accounts[1]).spec_digest.hex(),
        "validation_commit": "0x" + eth_task(accounts[1]).validation_commit.hex(),
        "evaluators": json.dumps([accounts[1]]),
        "quorum": 1,
        "start": market.task(1).start,
        "round_duration": 3600,
        "rounds": 2,
        "reveal_window": 3600,
        "evaluation_window": 3600,
        "challenge_window": 600,
        "claim_window": 7 * 24 * 3600,
        "block_number": 0,
    }
    nodes = [tuple(row)[:11] for row in index.rows("SELECT * FROM nodes ORDER BY node_id")]
    assert nodes == [
        (1, 1, "architecture", accounts[2], 0, "[0]", 0, 0, 0, "0x" + sha256(b"arch").hex(), CID),
        (1, node, "update", accounts[4], 1, "[1]", 0, 7, 2500, "0x" + sha256(b"u").hex(), CID),
    ]
    names = [row["name"] for row in index.rows("SELECT name FROM events ORDER BY 1")]
    assert names == ["ArchitectureProposed", "TaskCreated", "UpdateSubmitted"]
    assert index.sync().events == 0  # nothing new


def test_a_block_is_indexed_only_once_it_has_its_confirmations(
    market: ChainClient, accounts: list[str], w3: Web3, tmp_path: Path
) -> None:
    index = Indexer(market, tmp_path / "i.sqlite", confirmations=2)
    create(market, accounts)
    assert index.sync().events == 0
    assert index.cursor == w3.eth.block_number - 2
    chain_tester(w3).mine_blocks(2)
    assert index.sync().events == 1
    assert index.cursor == w3.eth.block_number - 2


def test_a_restart_resumes_after_the_last_committed_batch(
    market: ChainClient,
    accounts: list[str],
    w3: Web3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task_id = create(market, accounts)
    market.propose_architecture(accounts[2], task_id, sha256(b"a"), CID)
    for i in range(6):
        submit(market, accounts[4 + i % 3], task_id, f"u{i}")
    index = Indexer(market, tmp_path / "i.sqlite", confirmations=0, batch_blocks=3)
    real_logs = market.logs
    calls = []

    def dies_on_the_third_batch(first: int, last: int):  # type: ignore[no-untyped-def]
        calls.append(first)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_logs(first, last)

    monkeypatch.setattr(market, "logs", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        index.sync()
    assert index.cursor == calls[2] - 1  # two whole batches, nothing of the third
    index.close()
    monkeypatch.setattr(market, "logs", real_logs)

    resumed = Indexer(market, tmp_path / "i.sqlite", confirmations=0, batch_blocks=3)
    resumed.sync()
    assert resumed.cursor == w3.eth.block_number
    assert resumed.dump() == fresh_dump(
        market, tmp_path / "r.sqlite", confirmations=0, batch_blocks=3
    )
    assert len(resumed.rows("SELECT * FROM nodes")) == 7


@pytest.mark.parametrize("confirmations", [0, 2])
def test_after_a_reorg_the_index_equals_a_rebuild_from_block_0(
    market: ChainClient, accounts: list[str], w3: Web3, tmp_path: Path, confirmations: int
) -> None:
    task_id = create(market, accounts)
    market.propose_architecture(accounts[2], task_id, sha256(b"a"), CID)
    index = Indexer(market, tmp_path / "live.sqlite", confirmations=confirmations, batch_blocks=2)
    index.sync()
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()
    for i in range(4):  # the branch the chain will abandon: 4 updates, a new task
        submit(market, accounts[4], task_id, f"old{i}")
    create(market, accounts)
    tester.mine_blocks(confirmations)
    index.sync()
    assert len(index.rows("SELECT * FROM tasks")) == 2

    tester.revert_to_snapshot(fork_point)
    for i in range(3):  # the branch that wins: other updates, by another miner, one block longer
        submit(market, accounts[5], task_id, f"new{i}")
    tester.mine_blocks(3 + confirmations)
    result = index.sync()

    assert result.unwound >= 5 - confirmations
    assert index.dump() == fresh_dump(
        market, tmp_path / "rebuilt.sqlite", confirmations=confirmations, batch_blocks=7
    )
    authors = {row["author"] for row in index.rows("SELECT author FROM nodes WHERE kind='update'")}
    assert authors == {accounts[5]}
    assert len(index.rows("SELECT * FROM tasks")) == 1


def test_a_reorg_older_than_every_kept_hash_rebuilds_from_the_start(
    market: ChainClient,
    accounts: list[str],
    w3: Web3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from marketplace.service import indexer as indexer_module

    monkeypatch.setattr(indexer_module, "KEEP_BLOCKS", 1)
    monkeypatch.setattr(indexer_module, "KEEP_LOG_BLOCKS", 0)
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()
    task_id = create(market, accounts)
    market.propose_architecture(accounts[2], task_id, sha256(b"a"), CID)
    tester.mine_blocks(5)
    index = Indexer(market, tmp_path / "i.sqlite", confirmations=0)
    index.sync()
    assert len(index.rows("SELECT * FROM blocks")) == 1  # the cursor's hash alone

    tester.revert_to_snapshot(fork_point)
    create(market, accounts, deposit=5)
    tester.mine_blocks(8)
    index.sync()

    assert index.dump() == fresh_dump(market, tmp_path / "r.sqlite", confirmations=0)
    assert [row["deposit"] for row in index.rows("SELECT deposit FROM tasks")] == ["5"]


def test_an_index_in_a_folder_not_made_yet_makes_it(
    market: ChainClient, accounts: list[str], tmp_path: Path
) -> None:
    create(market, accounts)
    index = Indexer(market, tmp_path / "new" / "data" / "i.sqlite", confirmations=0)
    index.sync()
    assert len(index.rows("SELECT * FROM tasks")) == 1
    index.close()


def test_a_file_built_for_another_contract_is_refused(
    market: ChainClient, w3: Web3, accounts: list[str], tmp_path: Path
) -> None:
    Indexer(market, tmp_path / "i.sqlite").close()
    other = ChainClient.deploy(w3, accounts[9], min_window=DEV_MIN_WINDOW)
    with pytest.raises(ConfigError, match="built with contract"):
        Indexer(other, tmp_path / "i.sqlite")


def web3_event(entry: Any) -> ChainEvent:
    """An event as web3's own decoder reads it (`process_log`), in its model: the oracle the
    project's decoder (`marketplace.chain.abi.LogDecoder`) is checked against."""
    args = {name: plain(value) for name, value in entry["args"].items()}  # by ABI name
    return EVENTS[entry["event"]].model_validate(
        {
            **args,
            "block_number": entry["blockNumber"],
            "tx_hash": HexBytes(entry["transactionHash"]).to_0x_hex(),
            "log_index": entry["logIndex"],
        },
        strict=False,  # web3 gives arrays as lists
    )


def test_logs_decoded_from_json_equal_web3s_events_for_a_whole_market(tmp_path: Path) -> None:
    market = new_market(tmp_path)
    market.run_to_claims(miners=2, claimants=2)
    server = RpcServer(provider=market.w3.provider)  # type: ignore[arg-type]  # the same chain
    server.start()
    try:
        over_http = ChainClient(Web3(Web3.HTTPProvider(server.url)), market.chain.address)
        decoded = over_http.logs(0, market.w3.eth.block_number)
    finally:
        server.stop()

    names = {item["name"] for item in market.chain.contract.abi if item["type"] == "event"}
    web3s = market.chain.contract.events  # web3's own decoding, log by log
    expected = sorted(
        (web3_event(entry) for name in names for entry in web3s[name]().get_logs(from_block=0)),
        key=lambda e: (e.block_number, e.log_index),
    )
    assert {e.name for e in expected} >= {
        "TaskCreated",
        "UpdateSubmitted",
        "EncryptionKeyRegistered",
        "MergePosted",
        "PayoutRootPosted",
        "Claimed",
    }
    assert [e.model_copy(update={"block_hash": ""}) for e in decoded] == expected
    assert market.chain.events(UpdateSubmitted) == [  # the client's kept copy: the same
        e for e in decoded if e.name == "UpdateSubmitted"
    ]
    hashes = {e.block_number: market.w3.eth.get_block(e.block_number)["hash"] for e in decoded}
    assert all(e.block_hash == hashes[e.block_number].to_0x_hex() for e in decoded)


@pytest.mark.engines
def test_the_indexer_benchmark_runs_on_anvil_and_reports_its_rate() -> None:
    output = script_output("bench_indexer.py", "--events", "300", "--batch", "2")
    last = output.strip().splitlines()[-1]
    match = re.fullmatch(
        r"INDEXER events=302 events_per_s=(\d+) baseline_events_per_s=(\d+) ratio=([0-9.]+)", last
    )
    assert match, last
    assert int(match[1]) > 0 and 0 < float(match[3]) < 1.5


def settled_market(folder: Path) -> Market:
    """One round of two miners, revealed and settled (not finalized)."""
    market = new_market(folder)
    market.create(rounds=1)
    market.propose()
    evaluator = market.make_evaluator()
    market.add_miners(2, epochs=1)
    market.run_rounds(1)
    market.reveal()
    evaluator.step(market.task_id)
    return market


def cards(index: Indexer) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in index.rows("SELECT * FROM cards")]


def test_a_card_is_built_once_agreed_again_at_the_finalize_and_a_reorg_undoes_the_second(
    tmp_path: Path,
) -> None:
    market = settled_market(tmp_path)
    chain, w3 = market.chain, market.w3
    index = Indexer(chain, tmp_path / "i.sqlite", confirmations=0, store=market.store)
    index.sync()
    agreed = public_card(chain, market.store, 1)
    assert agreed is not None and agreed.settlement.finalized_tx == ""
    [settled] = chain.events(PayoutRootAgreed, task_id=1)
    assert cards(index) == [(1, agreed.model_dump_json(), 0, settled.block_number)]
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()

    market.finalize()
    index.sync()
    final = public_card(chain, market.store, 1)
    [finalized] = chain.events(TaskFinalized, task_id=1)
    assert final is not None and final.settlement.finalized_tx == finalized.tx_hash
    assert final.model_copy(update={"settlement": agreed.settlement}) == agreed
    assert cards(index) == [(1, final.model_dump_json(), 1, finalized.block_number)]
    rebuilt = Indexer(chain, tmp_path / "r.sqlite", confirmations=0, store=market.store)
    rebuilt.sync()
    assert rebuilt.dump() == index.dump()

    tester.revert_to_snapshot(fork_point)  # the finalize is undone
    tester.mine_blocks(3)
    assert index.sync().unwound > 0
    assert cards(index) == [(1, agreed.model_dump_json(), 0, settled.block_number)]


def test_a_card_that_cannot_be_built_is_absent_and_logged_and_the_index_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = settled_market(tmp_path)
    report = agreed_report(market.chain, market.store, 1)
    assert report.delivery is not None
    market.store._path(report.delivery.cid).unlink()  # the sealed delivery is gone
    index = Indexer(market.chain, tmp_path / "i.sqlite", confirmations=0, store=market.store)
    index.sync()
    [settled] = market.chain.events(PayoutRootAgreed, task_id=1)
    assert cards(index) == [(1, None, 0, settled.block_number)]
    assert "no model card for task 1: no report of its agreed root delivers" in caplog.text
    assert index.sync().events == 0 and cards(index) == [(1, None, 0, settled.block_number)]

    def breaks(*args: object) -> None:
        raise ValueError("a bug, or bytes nobody expected")

    monkeypatch.setattr(indexer_module, "public_card", breaks)
    market.finalize()  # tried once more, for the finalize
    index.sync()
    [finalized] = market.chain.events(TaskFinalized, task_id=1)
    assert cards(index) == [(1, None, 1, finalized.block_number)]
    assert "ValueError: a bug, or bytes nobody expected" in caplog.text
