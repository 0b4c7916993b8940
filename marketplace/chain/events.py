"""The marketplace contract's events as typed values: one frozen model per event, and `TxResult`.

Each model's fields are the event's arguments in the ABI's order, in snake_case, typed as the
ABI says (uint -> int, address -> checksummed str, bytes32 -> bytes, string -> str, T[] ->
tuple), after where the log is (block, transaction, log index). A log is decoded into its model
once, by `marketplace.chain.abi.LogDecoder`; everything downstream reads attributes. The ABI's
own names are the fields' aliases, which the index stores (`abi_arguments`).
`tests/test_events.py` checks every event of the ABI against its model.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ChainEvent(BaseModel):
    """One decoded event of the marketplace contract: where its log is, and its task (every
    event of the contract names its task first). Subclasses add the other arguments."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, alias_generator=to_camel, validate_by_name=True
    )

    block_number: int
    tx_hash: str
    log_index: int
    block_hash: str = ""  # "" where a log came without it
    task_id: int

    @property
    def name(self) -> str:
        """The event's name in the ABI."""
        return type(self).__name__

    def arguments(self) -> dict[str, Any]:
        """The event's arguments by field name, in the ABI's order."""
        return self.model_dump(exclude=_LOCATION)

    def abi_arguments(self) -> dict[str, Any]:
        """The event's arguments by their names in the ABI (what the index stores)."""
        return self.model_dump(exclude=_LOCATION, by_alias=True)


_LOCATION = {
    "block_number",
    "tx_hash",
    "log_index",
    "block_hash",
}  # where the log is, not what it says

E = TypeVar("E", bound=ChainEvent)


class TaskCreated(ChainEvent):
    sponsor: str
    token: str
    bounty: int
    deposit: int
    validation_commit: bytes
    spec_digest: bytes
    spec_cid: str
    evaluators: tuple[str, ...]
    quorum: int


class ArchitectureProposed(ChainEvent):
    node_id: int
    author: str
    round: int
    digest: bytes
    cid: str


class UpdateSubmitted(ChainEvent):
    node_id: int
    author: str
    parent: int
    round: int
    samples: int
    epsilon: int  # thousandths of epsilon spent on DP (0: none)
    digest: bytes
    cid: str


class EncryptionKeyRegistered(ChainEvent):
    account: str
    public_key: bytes


class RoundJoined(ChainEvent):
    round: int
    account: str
    base: int
    mask_key: bytes


class MaskSeedsRevealed(ChainEvent):
    round: int
    account: str
    base: int
    seeds: tuple[bytes, ...]


class MergePosted(ChainEvent):
    node_id: int
    evaluator: str
    round: int
    parents: tuple[int, ...]
    samples: int
    digest: bytes
    plaintext_digest: bytes
    cid: str


class MergeConfirmed(ChainEvent):
    node_id: int
    evaluator: str
    confirmations: int


class ValidationRevealed(ChainEvent):
    file_digest: bytes
    salt: bytes
    cid: str


class PayoutRootPosted(ChainEvent):
    evaluator: str
    root: bytes
    total: int
    votes: int
    report_cid: str


class PayoutRootAgreed(ChainEvent):
    root: bytes
    total: int


class EvaluatorOverruled(ChainEvent):
    evaluator: str
    strikes: int


class TaskFinalized(ChainEvent):
    root: bytes
    total: int


class Claimed(ChainEvent):
    index: int
    account: str
    amount: int
    points: int


class Refunded(ChainEvent):
    node_id: int
    author: str
    amount: int


class TaskCancelled(ChainEvent):
    refunded: int


class Reclaimed(ChainEvent):
    sponsor: str
    amount: int


EVENTS: dict[str, type[ChainEvent]] = {
    kind.__name__: kind
    for kind in (
        TaskCreated,
        ArchitectureProposed,
        UpdateSubmitted,
        EncryptionKeyRegistered,
        RoundJoined,
        MaskSeedsRevealed,
        MergePosted,
        MergeConfirmed,
        ValidationRevealed,
        PayoutRootPosted,
        PayoutRootAgreed,
        EvaluatorOverruled,
        TaskFinalized,
        Claimed,
        Refunded,
        TaskCancelled,
        Reclaimed,
    )
}
"""Every event of the contract, by its ABI name."""

NODE_EVENTS: tuple[type[ArchitectureProposed | UpdateSubmitted | MergePosted], ...] = (
    ArchitectureProposed,
    UpdateSubmitted,
    MergePosted,
)
"""The events that add a node to a task's tree."""


class TxResult(BaseModel):
    """A mined transaction: its gas, its events, and the id it created (if any)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tx_hash: str
    gas_used: int
    block_number: int
    events: tuple[ChainEvent, ...]
    value: int | None = None

    def event(self, kind: type[E]) -> E:
        """The first event of type `kind` (KeyError if there is none)."""
        for event in self.events:
            if isinstance(event, kind):
                return event
        raise KeyError(kind.__name__)
