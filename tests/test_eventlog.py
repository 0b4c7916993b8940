"""A client's copy of the contract's events: each read fetches only the blocks mined since the
last one, in batches; a reorg (eth-tester's snapshot and revert) leaves the copy equal to a
fresh client's; filters behave as web3's argument filters."""

from __future__ import annotations

import pytest
from web3 import Web3

from marketplace.chain import eventlog
from marketplace.chain.client import ChainClient
from marketplace.chain.events import ChainEvent, TaskCreated, UpdateSubmitted
from marketplace.dev.devchain import tester_of as chain_tester
from marketplace.wire.crypto import sha256
from tests.test_indexer import CID, create, submit


class CountingClient(ChainClient):
    """A client that records every block range it asks the node for."""

    def __init__(self, w3: Web3, address: str, start_block: int = 0) -> None:
        self.fetched: list[tuple[int, int]] = []
        super().__init__(w3, address, start_block=start_block)

    def logs(
        self, from_block: int, to_block: int | str, topics: list[object] | None = None
    ) -> list[ChainEvent]:
        assert isinstance(to_block, int)
        self.fetched.append((from_block, to_block))
        return super().logs(from_block, to_block, topics)


def task(market: ChainClient, accounts: list[str], deposit: int = 0) -> int:
    """A task with an architecture (node 1) for updates to name as their parent."""
    task_id = create(market, accounts, deposit)
    market.propose_architecture(accounts[2], task_id, sha256(b"arch"), CID)
    return task_id


def reader(market: ChainClient, w3: Web3) -> CountingClient:
    return CountingClient(w3, market.address)


def test_a_read_fetches_only_the_blocks_mined_since_the_last(
    market: ChainClient, accounts: list[str], w3: Web3
) -> None:
    task_id = task(market, accounts)
    client = reader(market, w3)
    first = w3.eth.block_number
    assert [e.task_id for e in client.events(TaskCreated)] == [task_id]
    assert client.fetched == [(0, first)]

    nodes = [submit(market, accounts[4], task_id, f"u{i}") for i in range(3)]
    assert [r.node_id for r in client.nodes(task_id)] == [1, *nodes]
    assert [r.node_id for r in client.nodes(task_id)] == [1, *nodes]  # no new block: no fetch
    assert client.fetched == [(0, first), (first + 1, first + 3)]


def test_reads_in_batches_of_batch_blocks_equal_one_read(
    market: ChainClient, accounts: list[str], w3: Web3
) -> None:
    task_id = task(market, accounts)
    for i in range(4):
        submit(market, accounts[4], task_id, f"u{i}")
    client = reader(market, w3)
    client._log = eventlog.EventLog(
        client.logs, client.block_hash, lambda: int(w3.eth.block_number), batch_blocks=3
    )
    head = w3.eth.block_number
    assert client.nodes(task_id) == ChainClient(w3, market.address).nodes(task_id)
    assert all(last - first < 3 for first, last in client.fetched)
    assert client.fetched[0][0] == 0 and client.fetched[-1][1] == head
    assert all(b[0] == a[1] + 1 for a, b in zip(client.fetched, client.fetched[1:], strict=False))


def test_after_a_reorg_the_copy_equals_a_fresh_clients(
    market: ChainClient, accounts: list[str], w3: Web3
) -> None:
    task_id = task(market, accounts)
    client = reader(market, w3)
    client.nodes(task_id)
    fork = client.fetched[-1][1]  # the copy's last block, where the chain will fork
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()
    for i in range(4):  # the branch the chain abandons
        submit(market, accounts[4], task_id, f"old{i}")
    task(market, accounts)
    assert len(client.nodes(task_id)) == 5 and len(client.events(TaskCreated)) == 2

    tester.revert_to_snapshot(fork_point)
    for i in range(3):  # the branch that wins, one block longer
        submit(market, accounts[5], task_id, f"new{i}")
    tester.mine_blocks(3)

    fresh = ChainClient(w3, market.address)
    assert client.nodes(task_id) == fresh.nodes(task_id)
    assert {r.author for r in client.nodes(task_id)[1:]} == {accounts[5]}
    assert client.events(TaskCreated) == fresh.events(TaskCreated)
    assert client._log.unwound == 1
    assert client.fetched[-1] == (fork + 1, w3.eth.block_number)  # from the fork, not block 0


def test_a_reorg_older_than_every_kept_hash_reads_again_from_the_start(
    market: ChainClient, accounts: list[str], w3: Web3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventlog, "KEEP_HASHES", 1)
    tester = chain_tester(w3)
    fork_point = tester.take_snapshot()
    task_id = task(market, accounts)
    submit(market, accounts[4], task_id, "old")
    client = reader(market, w3)
    assert len(client.nodes(task_id)) == 2

    tester.revert_to_snapshot(fork_point)
    other = create(market, accounts, deposit=5)
    tester.mine_blocks(4)

    assert client.nodes(task_id) == []
    assert [e.task_id for e in client.events(TaskCreated)] == [other]
    assert client.fetched[-1][0] == 0


def test_filters_match_as_web3s_argument_filters(
    market: ChainClient, accounts: list[str], w3: Web3
) -> None:
    first, second = task(market, accounts), task(market, accounts)
    a = submit(market, accounts[4], first, "a")
    b = submit(market, accounts[5], second, "b")
    client = reader(market, w3)

    def ids(**filters: object) -> list[int]:
        return [e.node_id for e in client.events(UpdateSubmitted, **filters)]

    assert ids() == [a, b]
    assert ids(task_id=[first, second]) == [a, b]
    assert ids(task_id=second) == [b]
    assert ids(author=accounts[4].lower()) == [a]  # addresses in any case
    assert ids(author=[accounts[5], accounts[6]]) == [b]
    assert ids(task_id=first, author=accounts[5]) == []
    block_of_b = client.events(UpdateSubmitted, task_id=second)[0].block_number
    assert ids(to_block=block_of_b - 1) == [a]
    assert ids(from_block=block_of_b) == [b]
