"""The embedded chain: reverts reported with their exact bytes, a clock tests can move, and
transactions found by hash through py-evm's index."""

from __future__ import annotations

import pytest
from eth_tester import PyEVMBackend
from eth_tester.exceptions import TransactionFailed, TransactionNotFound
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from marketplace.chain.client import ChainClient
from marketplace.dev.devchain import (
    IndexedBackend,
    _revert_data,
    advance_time,
    advance_to,
    now,
)
from marketplace.dev.devchain import (
    tester_of as chain_tester,
)


@given(st.binary(max_size=200))
def test_revert_bytes_survive_eth_testers_repr_exactly(data: bytes) -> None:
    # py-evm's backend reports revert data as the text of the bytes' repr.
    assert _revert_data(TransactionFailed(str(data))) == (data, "execution reverted")


def test_a_plain_revert_reason_is_kept_as_the_message() -> None:
    assert _revert_data(TransactionFailed("out of gas")) == (b"", "execution reverted: out of gas")


def test_advance_to_mines_a_block_at_the_time_and_the_next_transaction_runs_after_it(
    w3: Web3, accounts: list[str]
) -> None:
    target = now(w3) + 1000

    assert advance_to(w3, target) == target
    tx_hash = w3.eth.send_transaction({"from": accounts[0], "to": accounts[1], "value": 1})
    mined = w3.eth.get_block(w3.eth.get_transaction_receipt(tx_hash)["blockNumber"])
    assert mined["timestamp"] == target + 1
    assert advance_to(w3, target) == target + 1  # the past is left alone
    assert advance_time(w3, 60) == target + 61


def test_a_transaction_is_found_through_py_evms_index_as_eth_testers_walk_finds_it(
    w3: Web3, accounts: list[str]
) -> None:
    tester = chain_tester(w3)
    backend = tester.backend
    assert isinstance(backend, IndexedBackend)

    def send(value: int) -> bytes:
        tx = {"from": accounts[0], "to": accounts[1], "value": value}
        return bytes(w3.eth.send_transaction(tx))  # type: ignore[arg-type]

    sent = [send(value) for value in (1, 2, 3)]
    fork_point = tester.take_snapshot()
    abandoned = send(4)
    tester.revert_to_snapshot(fork_point)
    replacing = send(5)  # mined at the abandoned one's height

    for tx_hash in [*sent, replacing]:
        assert backend.get_transaction_receipt(tx_hash) == PyEVMBackend.get_transaction_receipt(
            backend, tx_hash
        )
        assert backend.get_transaction_by_hash(tx_hash) == PyEVMBackend.get_transaction_by_hash(
            backend, tx_hash
        )
    assert backend.get_transaction_by_hash(replacing)["value"] == 5
    with pytest.raises(TransactionNotFound):
        backend.get_transaction_receipt(abandoned)


def test_the_chain_client_reads_chain_time_as_the_clock_moves(
    w3: Web3, market: ChainClient
) -> None:
    start = market.now()
    assert start == now(w3)
    assert advance_time(w3, 3600) == start + 3600 == market.now()
