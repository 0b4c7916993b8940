"""`EventLog`: a program's local copy of one contract's events, extended from where it left off.

Every role reads the same few facts from the contract's log again and again (the node list, the
spec, the keys, the round's joins), and `eth_getLogs` over the whole history costs what the
history costs: eth-tester serializes every receipt in the range, a public node scans or refuses
it. So a client keeps the events it has read and, on each read, fetches only the blocks mined
since (in batches of `batch_blocks`), making a program's read cost follow the chain's new blocks
instead of its age.

Reorgs are undone the way the indexer undoes them: the hash of the last block copied (and of
the last few blocks that held events) is kept; when the chain no longer has that hash there,
the copy is cut back to the newest block whose hash still matches and read forward again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from marketplace.chain.events import ChainEvent, E

KEEP_HASHES = 64  # how deep a reorg can be undone without reading the log again from the start


class EventLog:
    """The events of one contract, in chain order, indexed by (type, task id).

    Args:
        fetch: the contract's events in blocks first..last (one `eth_getLogs`).
        block_hash: the chain's hash of block `number` (0x hex), or None if it has none.
        head: the chain's latest block number.
        start_block: the first block that can hold an event (the contract's deployment).
        batch_blocks: blocks per `fetch`, for nodes that cap a log query's range.
    """

    def __init__(
        self,
        fetch: Callable[[int, int], list[ChainEvent]],
        block_hash: Callable[[int], str | None],
        head: Callable[[], int],
        *,
        start_block: int = 0,
        batch_blocks: int = 2_000,
    ) -> None:
        self._fetch = fetch
        self._block_hash = block_hash
        self._head = head
        self._start = start_block
        self._batch = batch_blocks
        self._events: dict[tuple[type[ChainEvent], int], list[ChainEvent]] = {}
        self._hashes: dict[int, str] = {}  # block number -> hash, of the newest blocks copied
        self.synced = start_block - 1  # the last block copied
        self.unwound = 0  # how many reorgs were undone (for tests and logs)

    def sync(self) -> int:
        """Copy the events mined since the last read (after undoing a reorg, if one happened);
        the last block copied."""
        self._unwind_reorg()
        head = self._head()
        while self.synced < head:
            last = min(head, self.synced + self._batch)
            before = self._block_hash(last)
            events = self._fetch(self.synced + 1, last)
            if before is None or self._block_hash(last) != before:
                return self.synced  # the chain moved under the read: the next sync retries
            for event in events:
                self._add(event)
                self._hashes[event.block_number] = event.block_hash
            self._hashes[last] = before
            self.synced = last
            self._prune()
        return self.synced

    def select(
        self, kind: type[E], from_block: int = 0, to_block: int | None = None, **filters: Any
    ) -> list[E]:
        """The copied events of type `kind` in blocks from_block..to_block, filtered on their
        fields as web3's argument filters do (equal, addresses in any case, or any of a list).
        Call `sync` first; `task_id` is looked up directly."""
        upper = self.synced if to_block is None else min(to_block, self.synced)
        task = filters.pop("task_id", None)
        if task is None:
            pool: Iterable[ChainEvent] = sorted(
                (e for (k, _), events in self._events.items() if k is kind for e in events),
                key=_position,
            )
        elif isinstance(task, list | tuple):
            pool = sorted(
                (e for t in task for e in self._events.get((kind, int(t)), [])), key=_position
            )
        else:
            pool = self._events.get((kind, int(task)), [])
        return [
            event
            for event in pool
            if isinstance(event, kind)
            and from_block <= event.block_number <= upper
            and all(_matches(getattr(event, key), wanted) for key, wanted in filters.items())
        ]

    def _add(self, event: ChainEvent) -> None:
        self._events.setdefault((type(event), event.task_id), []).append(event)

    def _unwind_reorg(self) -> None:
        """Cut the copy back to the newest kept block the chain still has (all of it if none)."""
        if self.synced < self._start or self._block_hash(self.synced) == self._hashes.get(
            self.synced
        ):
            return
        ancestor = self._start - 1
        for number in sorted(self._hashes, reverse=True):
            if number < self.synced and self._block_hash(number) == self._hashes[number]:
                ancestor = number
                break
        for key, events in list(self._events.items()):
            kept = [e for e in events if e.block_number <= ancestor]
            if kept:
                self._events[key] = kept
            else:
                del self._events[key]
        self._hashes = {n: h for n, h in self._hashes.items() if n <= ancestor}
        self.synced = ancestor
        self.unwound += 1

    def _prune(self) -> None:
        for number in sorted(self._hashes)[:-KEEP_HASHES]:
            del self._hashes[number]


def _position(event: ChainEvent) -> tuple[int, int]:
    return event.block_number, event.log_index


def _matches(value: Any, wanted: Any) -> bool:
    """web3's argument filter: equal (addresses in any case), or any of a list."""
    if isinstance(wanted, list | tuple):
        return any(_matches(value, w) for w in wanted)
    if isinstance(value, str) and isinstance(wanted, str):
        return value.lower() == wanted.lower()
    return bool(value == wanted)
