"""The embedded chain: eth-tester (py-evm) in-process, with funded dev accounts and a clock
that tests and the demo can move forward instead of waiting."""

from __future__ import annotations

import codecs
from typing import Any

from eth.exceptions import TransactionNotFound as EvmTransactionNotFound
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import _get_transaction_by_hash
from eth_tester.backends.pyevm.serializers import (
    serialize_transaction,
    serialize_transaction_receipt,
)
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCResponse

from marketplace.chain.client import block_time


class DevProvider(EthereumTesterProvider):
    """eth-tester that reports a revert as a JSON-RPC node does: code 3 with the revert data.

    web3's own tester provider turns revert bytes into the text of their Python repr, so custom
    errors could not be decoded; with this provider the embedded chain fails exactly like anvil
    or geth, and the client has one decoding path for every engine.
    """

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        namespace, _, endpoint = method.partition("_")
        delegator = (self.api_endpoints or {}).get(namespace, {}).get(endpoint)
        if delegator is None:
            return super().make_request(method, params)
        request_id = self._current_request_id
        self._current_request_id += 1
        try:
            result = delegator(self.ethereum_tester, params)
        except TransactionFailed as exc:
            data, message = _revert_data(exc)
            error = {"code": 3, "message": message, "data": "0x" + data.hex()}
            return {"id": request_id, "jsonrpc": "2.0", "error": error}  # type: ignore[typeddict-item]
        return {"id": request_id, "jsonrpc": "2.0", "result": result}


def _revert_data(exc: TransactionFailed) -> tuple[bytes, str]:
    """The revert bytes eth-tester's py-evm backend reports as the text of their repr."""
    reason: Any = exc.args[0] if exc.args else b""
    if isinstance(reason, Exception) and reason.args:
        reason = reason.args[0]
    if isinstance(reason, bytes):
        return reason, "execution reverted"
    text = str(reason)
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        # Undo the escapes of a bytes repr (\xNN, \n, \\ ...): decoding, not evaluation.
        return codecs.escape_decode(text[2:-1])[0], "execution reverted"
    return b"", f"execution reverted: {text}"


class IndexedBackend(PyEVMBackend):  # type: ignore[misc]  # eth-tester is untyped
    """eth-tester's py-evm backend finding a mined transaction through py-evm's hash index.

    eth-tester finds a transaction by walking every block from the head down, for each receipt
    and for each log `eth_getLogs` returns, so reading a chain's whole log cost the square of its
    length (a fresh client reading a 1,000-update task: 175 s). py-evm keeps a hash -> (block,
    index) lookup of the canonical chain; it is checked against the block (a reverted snapshot
    can leave a stale entry) and the walk stays the fallback.
    """

    def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
        block, transaction, index = self._find(transaction_hash)
        pending = block.number == self.chain.get_block().number
        return serialize_transaction(block, transaction, index, pending)

    def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
        block, transaction, index = self._find(transaction_hash)
        pending = block.number == self.chain.get_block().number
        receipts = block.get_receipts(self.chain.chaindb)
        vm = self.chain.get_vm()
        return serialize_transaction_receipt(block, receipts, transaction, index, pending, vm)

    def _find(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
        try:
            number, index = self.chain.chaindb.get_transaction_index(transaction_hash)
            block = self.chain.get_canonical_block_by_number(number)
            if (
                index < len(block.transactions)
                and block.transactions[index].hash == transaction_hash
            ):
                return block, block.transactions[index], index
        except EvmTransactionNotFound:  # pending, or not there: eth-tester's own search
            pass
        return _get_transaction_by_hash(self.chain, transaction_hash)  # type: ignore[no-any-return]


def local_web3() -> Web3:
    """A fresh in-process chain whose ten dev accounts hold 1,000,000 ETH each."""
    return Web3(DevProvider(EthereumTester(IndexedBackend())))


def tester_of(w3: Web3) -> EthereumTester:
    provider = w3.provider
    if not isinstance(provider, EthereumTesterProvider):
        raise TypeError("time travel needs the in-process eth-tester chain")
    tester: EthereumTester = provider.ethereum_tester
    return tester


now = block_time  # the tests' and the dev tools' name for chain time


def advance_time(w3: Web3, seconds: int) -> int:
    """Move the chain's clock forward by `seconds` (a block is mined); returns the new time."""
    return advance_to(w3, now(w3) + seconds)


def advance_to(w3: Web3, timestamp: int) -> int:
    """Mine a block at `timestamp` (if that is in the future); returns the latest block's time.

    Views then read the chain at `timestamp`, and the next transaction runs one second later.
    """
    if timestamp > now(w3):
        # eth-tester mines the travel block one second before the time it is given.
        tester_of(w3).time_travel(timestamp + 1)
    return now(w3)
