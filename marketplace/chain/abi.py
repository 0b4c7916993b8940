"""The marketplace contract's ABI, and decoding by it: raw logs into typed events, revert data
into the contract's custom errors (the classes generated from the ABI into `chain.reverts`).

Both decoders read the committed artifact (`contract_artifact`) once and decode with eth_abi
directly: web3's per-log formatters cost about 1 ms a log, this about a tenth of that (the
indexer runs on it).
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from eth_abi.abi import decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from marketplace import errors
from marketplace.chain import reverts
from marketplace.chain.artifacts import load_artifact
from marketplace.chain.events import EVENTS, ChainEvent

CONTRACT_NAME = "GradientMarketplace"

# The two ERC-20 functions a token task needs: the sponsor's approval, balances.
ERC20_ABI: list[dict[str, Any]] = [
    {
        "name": "approve",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]


@cache
def contract_artifact() -> dict[str, Any]:
    """The committed ABI and bytecode of the marketplace contract."""
    return load_artifact(CONTRACT_NAME)


def signature(item: dict[str, Any]) -> str:
    """An event's or error's canonical signature, `Name(type,...)`, as its selector hashes."""
    return f"{item['name']}({','.join(_abi_type(i) for i in item['inputs'])})"


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return f"({','.join(_abi_type(c) for c in item['components'])}){item['type'][5:]}"
    return str(item["type"])


def plain(value: Any) -> Any:
    """web3 values as plain Python: bytes for HexBytes, checksummed addresses, lists for tuples."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class RevertDecoder:
    """Revert data (`0x` + selector + ABI-encoded values) into the contract's error class, as
    generated from the ABI into `marketplace.chain.reverts`."""

    def decode(self, data: str) -> errors.ChainError:
        """The error `data` encodes, with its values, or UnknownRevert for a selector the
        contract does not declare."""
        raw = bytes.fromhex(data[2:])
        revert = reverts.BY_SELECTOR.get(raw[:4])
        if revert is None:
            return errors.UnknownRevert(data=data)
        names = [name for name, _ in revert.ARGUMENTS]
        values = decode([abi_type for _, abi_type in revert.ARGUMENTS], raw[4:])
        return revert(**dict(zip(names, plain(values), strict=True)))


class _EventSpec:
    """How one event's log decodes: its model, its indexed and its data arguments."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.kind = EVENTS[item["name"]]  # KeyError: an event of the ABI without a model
        field_of = {f.alias: name for name, f in self.kind.model_fields.items()}
        self.indexed = [(field_of[i["name"]], _abi_type(i)) for i in item["inputs"] if i["indexed"]]
        data = [i for i in item["inputs"] if not i["indexed"]]
        self.fields = [field_of[i["name"]] for i in data]
        self.types = [_abi_type(i) for i in data]


class LogDecoder:
    """This contract's raw logs (JSON hex strings, or web3's formatted values from a receipt)
    into their typed events: one ABI decode of the data per log, cached address checksums."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._specs = {
            bytes(keccak(text=signature(item))): _EventSpec(item)
            for item in abi
            if item["type"] == "event"
        }

    def decode(self, entry: Any) -> ChainEvent | None:
        """The event `entry` logged, None if it is none of this ABI's."""
        topics = [bytes(HexBytes(t)) for t in entry["topics"]]
        spec = self._specs.get(topics[0]) if topics else None
        if spec is None:
            return None
        args = {
            field: _topic_value(topic, kind)
            for (field, kind), topic in zip(spec.indexed, topics[1:], strict=True)
        }
        values = decode(spec.types, bytes(HexBytes(entry["data"])))
        for field, kind, value in zip(spec.fields, spec.types, values, strict=True):
            args[field] = _typed(value, kind)
        block_hash = entry.get("blockHash")
        return spec.kind(
            block_number=_quantity(entry["blockNumber"]),
            tx_hash=HexBytes(entry["transactionHash"]).to_0x_hex(),
            log_index=_quantity(entry["logIndex"]),
            block_hash=HexBytes(block_hash).to_0x_hex() if block_hash is not None else "",
            **args,
        )


def _topic_value(topic: bytes, kind: str) -> Any:
    """An indexed argument from its 32-byte topic (the common static types read directly)."""
    if kind == "address":
        return _checksum("0x" + topic[12:].hex())
    if kind.startswith("uint"):
        return int.from_bytes(topic, "big")
    return _typed(decode([kind], topic)[0], kind)


@lru_cache(maxsize=65_536)
def _checksum(address: str) -> str:
    return to_checksum_address(address)


def _typed(value: Any, kind: str) -> Any:
    """eth_abi's value of ABI type `kind` as the event models take it: addresses checksummed
    (by their type, never by their look), arrays as tuples."""
    if kind == "address":
        return _checksum(value)
    if kind.endswith("]"):
        element = kind[: kind.rindex("[")]
        return tuple(_typed(v, element) for v in value)
    return value


def _quantity(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)
