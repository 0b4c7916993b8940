"""Calling and sending to the marketplace contract: `Transactor`, the gas limits, and what the
node's failures say.

Every transaction is first simulated with `eth_call`, so a revert surfaces as the contract's own
custom error (a class in `marketplace.errors`, with its values) on any node, then sent with an
explicit gas limit (no estimation round-trips) and awaited; its receipt's events come back typed.
"""

from __future__ import annotations

from typing import Any

import requests
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception, Web3RPCError
from web3.types import BlockIdentifier, TxParams, Wei

from marketplace import errors
from marketplace.chain.abi import LogDecoder, RevertDecoder
from marketplace.chain.events import TxResult

NODE_ERRORS: tuple[type[Exception], ...] = (
    Web3Exception,  # the node's refusals (Web3RPCError), timeouts, web3's own ValueErrors
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
"""What web3 raises when the node refuses, cannot be reached or does not mine in time: a
command line shows it as one line (`describe_node_error`), never as a traceback."""

# Explicit gas limits: measured use (see the README's gas table) with generous headroom, plus the
# ERC-20 calls a token task makes. Per-item terms cover the only loops (parents, evaluators).
GAS_LIMITS = {
    "createTask": 420_000,
    "proposeArchitecture": 200_000,
    "submitUpdate": 200_000,
    "joinRound": 60_000,
    "revealMaskSeeds": 60_000,
    "postMerge": 160_000,
    "confirmMerge": 90_000,
    "revealValidation": 100_000,
    "postPayoutRoot": 180_000,
    "finalize": 120_000,
    "claim": 160_000,
    "refund": 140_000,
    "cancelTask": 120_000,
    "reclaim": 120_000,
}
GAS_PER_EVALUATOR = 30_000
GAS_PER_KEPT_PARENT = 9_000  # read the parent, mark it kept, plus its calldata
GAS_PER_SEED = 1_500
GAS_PER_PROOF_STEP = 1_500


class Transactor:
    """Calls and transactions to one contract, its reverts raised as the contract's errors.

    Args:
        w3: the node (accounts that send must be unlocked there or signed by a middleware).
        contract: the contract, with the ABI `reverts` and `logs` decode by.
        receipt_timeout: seconds to wait for a transaction to be mined.
    """

    def __init__(
        self,
        w3: Web3,
        contract: Contract,
        reverts: RevertDecoder,
        logs: LogDecoder,
        receipt_timeout: float,
    ) -> None:
        self.w3 = w3
        self.contract = contract
        self._reverts = reverts
        self._logs = logs
        self._receipt_timeout = receipt_timeout

    def call(self, fn_name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        """The view `fn_name(*args)` at `block`."""
        try:
            return self.contract.functions[fn_name](*args).call(block_identifier=block)
        except ContractLogicError as exc:
            raise self._revert(exc) from None

    def transact(
        self, sender: str, fn_name: str, args: list[Any], value: int = 0, gas: int | None = None
    ) -> TxResult:
        """Simulate `fn_name(*args)` from `sender`, then send it and await its receipt."""
        tx: TxParams = {"from": to_checksum_address(sender), "value": Wei(value)}
        fn = self.contract.functions[fn_name](*args)
        try:
            fn.call(tx, block_identifier="pending")  # surfaces a revert as its custom error, unsent
        except ContractLogicError as exc:
            raise self._revert(exc) from None
        tx["gas"] = gas if gas is not None else GAS_LIMITS[fn_name]
        return self.wait(fn.transact(tx))

    def wait(self, tx_hash: HexBytes) -> TxResult:
        """The mined transaction with this contract's events (TransactionReverted if it failed)."""
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._receipt_timeout)
        if receipt["status"] != 1:
            shown = HexBytes(tx_hash).to_0x_hex()
            raise errors.TransactionReverted(
                f"transaction {shown} reverted (gas used {receipt['gasUsed']})"
            )
        mine = [e for e in receipt["logs"] if e["address"] == self.contract.address]
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            gas_used=receipt["gasUsed"],
            block_number=receipt["blockNumber"],
            events=tuple(event for e in mine if (event := self._logs.decode(e)) is not None),
        )

    def _revert(self, exc: ContractLogicError) -> errors.ChainError:
        data = exc.data if isinstance(exc.data, str) else None
        if data and data.startswith("0x") and len(data) >= 10:
            return self._reverts.decode(data)
        return errors.TransactionReverted(str(exc.message or exc))


def describe_node_error(exc: Exception) -> str:
    """One line for an error of `NODE_ERRORS`: what the node said, without web3's wrapping."""
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error")
        said = error.get("message") if isinstance(error, dict) else None
        return f"the node refused: {said or exc.message}"
    if isinstance(exc, ContractLogicError):
        return f"the contract refused: {exc.message or exc.data}"
    if isinstance(exc, TimeExhausted):
        return f"the transaction was not mined in time (it may still be): {exc}"
    if isinstance(exc, requests.exceptions.RequestException):
        return f"cannot reach the Ethereum node: {type(exc).__name__}"
    return f"the node or web3 refused: {exc}"
