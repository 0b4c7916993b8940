"""The chain indexer: the marketplace's events, from any JSON-RPC node, into SQLite.

`Indexer.sync()` indexes every block up to `head - confirmations` in batches (one
`eth_getLogs` each, committed with the cursor in one transaction, so a kill loses at most the
batch in flight and a restart resumes after the last committed block).

Reorgs: the index keeps the hash of the cursor block and of the recent blocks it took events
from. Each sync first checks the cursor's hash against the chain; if it changed, the index walks
back to the newest kept block whose hash still matches (a block hash commits to all of its
ancestors, so everything up to it is still valid), deletes every row above it, and indexes the
new branch. A reorg older than every kept hash rebuilds from the start block.

Every row records the block of the event that made it, which is all the rollback needs; no row
is ever updated in place but a task's model card, replaced once by the card built after the
finalize (whose block it then carries). Rebuilding from block 0 therefore gives the same rows
as following the chain live, reorgs included (`tests/test_indexer.py` compares whole
databases).

Model cards: once a task's root is agreed and the index holds a report of that root which names
a winner, `sync` builds the task's public card (`card_check.public_card`, from the chain and the
store) and keeps its JSON for the API, whose workers have neither; once more after the
finalize, for its transaction. A card that cannot be built is kept as absent (the log says
why) and tried again only after the finalize.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketplace.chain.client import ChainClient
from marketplace.delivered.card import ModelCard
from marketplace.delivered.card_check import public_card
from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    ChainError,
    ConfigError,
    StorageError,
    StoreUnavailable,
)
from marketplace.service.index_rows import (
    TIMED_EVENTS,
    event_row,
    fits_index,
    payout_rows,
    placeholders,
    row_of,
    verdict_rows,
)
from marketplace.service.index_schema import ROW_TABLES, SCHEMA, SCHEMA_VERSION
from marketplace.storage.stores import BlobStore
from marketplace.wire.report import MAX_REPORT_BYTES, PayoutReport, PostedRoot, check_report_bytes

log = logging.getLogger(__name__)

KEEP_BLOCKS = 256
"""Block hashes older than this many blocks behind the cursor are let go (a reorg deeper than
this is handled by a full rebuild)."""
KEEP_LOG_BLOCKS = 16
"""...but the newest this many blocks with events are always kept, however old."""


@dataclass(frozen=True)
class SyncResult:
    """What one `sync` did."""

    events: int  # indexed by this sync
    cursor: int  # the last indexed block
    head: int  # the chain's head when the sync began
    unwound: int = 0  # blocks rolled back after a reorg


class Indexer:
    """Follows one marketplace contract into one SQLite file.

    Args:
        chain: the contract and the node to read it from.
        path: the SQLite file (created if missing); ":memory:" for a throw-away index.
        confirmations: blocks behind the head a block must be before it is indexed.
        batch_blocks: blocks per `eth_getLogs` (and per committed transaction).
        start_block: the first block to index (the contract's deploy block, say).
        store: where payout reports are fetched from (each posted root's report: its scores,
            gains and payout leaves with proofs); None: roots are indexed without them.
    """

    def __init__(
        self,
        chain: ChainClient,
        path: Path | str,
        confirmations: int = 2,
        batch_blocks: int = 2_000,
        start_block: int = 0,
        store: BlobStore | None = None,
    ) -> None:
        if confirmations < 0 or batch_blocks < 1 or start_block < 0:
            raise ConfigError("confirmations and start_block must be >= 0, batch_blocks >= 1")
        self.chain = chain
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.start_block = start_block
        self.store = store
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # a new data dir, say
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process kill
        self.db.executescript(SCHEMA)
        self._check_meta()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ bookkeeping

    def _check_meta(self) -> None:
        """Bind the file to this contract and chain; refuse a file made for another."""
        wanted = {
            "schema": str(SCHEMA_VERSION),
            "contract": self.chain.address,
            "chain_id": str(self.chain.w3.eth.chain_id),
            "start_block": str(self.start_block),
        }
        stored = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        for key, value in wanted.items():
            if key in stored and stored[key] != value:
                raise ConfigError(
                    f"the index was built with {key} {stored[key]}, not {value}: "
                    "give another --index file"
                )
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", sorted(wanted.items()))
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('cursor', ?)", (str(self.start_block - 1),)
            )
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('unwinds', '0')")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def cursor(self) -> int:
        """The last indexed block (start_block - 1 before the first)."""
        (value,) = self.db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return int(value)

    def _chain_hash(self, number: int) -> str | None:
        return self.chain.block_hash(number)

    # ------------------------------------------------------------------ following

    def sync(
        self, on_batch: Callable[[int, int], None] = lambda cursor, target: None
    ) -> SyncResult:
        """Index up to `head - confirmations` (after undoing a reorg, if one happened)."""
        head = int(self.chain.w3.eth.block_number)
        unwound = self._unwind_reorg()
        target = head - self.confirmations
        indexed = 0
        while self.cursor < target:
            first = self.cursor + 1
            last = min(target, first + self.batch_blocks - 1)
            count = self._index(first, last)
            if count is None:
                break  # the chain moved under the read: the next sync undoes the reorg
            indexed += count
            on_batch(last, target)
        if self.store is not None:
            self._fetch_reports(self.store)
            self._build_cards(self.store)
        return SyncResult(indexed, self.cursor, head, unwound)

    def _fetch_reports(self, store: BlobStore) -> None:
        """Each posted root's report, once: its rows if it parses and hashes to the root, else
        a row saying it does not match. One the store cannot deliver now is tried next sync."""
        pending = self.db.execute(
            """SELECT r.task_id, r.evaluator, r.root, r.total, r.report_cid, r.block_number
               FROM roots r
               LEFT JOIN reports p ON p.task_id = r.task_id AND p.evaluator = r.evaluator
               WHERE p.task_id IS NULL ORDER BY r.block_number, r.task_id"""
        ).fetchall()
        for task_id, evaluator, root, total, cid, block in pending:
            try:
                data = store.get(cid, MAX_REPORT_BYTES) if cid else b""
            except (BlobNotFound, StoreUnavailable, BlobTooLarge) as exc:
                log.info("report %s of task %d not fetched yet: %s", cid, task_id, exc)
                continue
            except StorageError:
                data = b""  # malformed CID, or bytes that are not the CID's: never a report
            posted = PostedRoot(evaluator, bytes.fromhex(root.removeprefix("0x")), int(total), cid)
            # Anything the report's author wrote is a row saying it does not match, never an
            # exception: one lying report must not stop the index (or `serve`'s follower).
            check = check_report_bytes(data, posted, task_id) if data else None
            report = check.report if check is not None and check.matches else None
            if report is not None and not fits_index(report):
                log.warning("report %s of task %d: a value passes 64 bits", cid, task_id)
                report = None
            with self._transaction():
                winner = None if report is None else report.winner
                self.db.execute(
                    "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?)",
                    (task_id, evaluator, cid, report is not None, winner, block),
                )
                if report is not None:
                    self._insert_report(task_id, evaluator, report, block)

    def _build_cards(self, store: BlobStore) -> None:
        """The model card of each task whose agreed root has a report naming a winner in the
        index, once, and once more after its finalize (`cards`)."""
        pending = self.db.execute(
            """SELECT s.task_id, f.task_id IS NOT NULL AS finalized,
                 max(s.block_number, coalesce(f.block_number, 0)) AS block,
                 (SELECT e.tx_hash FROM events e WHERE e.task_id = s.task_id
                    AND e.name = 'TaskFinalized') AS finalized_tx
               FROM settlements s LEFT JOIN finalizations f USING (task_id)
               LEFT JOIN cards c USING (task_id)
               WHERE (c.task_id IS NULL OR (c.finalized = 0 AND f.task_id IS NOT NULL))
                 AND EXISTS (SELECT 1 FROM reports p JOIN roots r
                   ON r.task_id = p.task_id AND r.evaluator = p.evaluator
                   WHERE p.task_id = s.task_id AND p.matches = 1 AND p.winner IS NOT NULL
                     AND r.root = s.root AND r.total = s.total)
               ORDER BY s.task_id"""
        ).fetchall()
        for task_id, finalized, block, finalized_tx in pending:
            try:
                card = self._card(store, task_id, finalized_tx or "")
            except (ChainError, StoreUnavailable) as exc:  # the engines, not the card: tried
                # again next sync
                log.warning("model card of task %d not built yet: %s", task_id, exc)
                continue
            with self._transaction():
                self.db.execute(
                    "INSERT OR REPLACE INTO cards VALUES (?, ?, ?, ?)",
                    (task_id, None if card is None else card.model_dump_json(), finalized, block),
                )

    def _card(self, store: BlobStore, task_id: int, finalized_tx: str) -> ModelCard | None:
        """The task's public card as of the indexed blocks (its finalize transaction is the
        index's, "" before it: the chain's head may be ahead), or None, logged."""
        try:
            card = public_card(self.chain, store, task_id)
        except (ChainError, StoreUnavailable):
            raise
        except Exception:  # whatever others sent: the card is absent, the index goes on
            log.exception("no model card for task %d", task_id)
            return None
        if card is None:
            log.warning(
                "no model card for task %d: no report of its agreed root delivers a model that "
                "holds (`marketplace verify --task %d` says why)",
                task_id,
                task_id,
            )
            return None
        settlement = card.settlement.model_copy(update={"finalized_tx": finalized_tx})
        return card.model_copy(update={"settlement": settlement})

    def _insert_report(
        self, task_id: int, evaluator: str, report: PayoutReport, block: int
    ) -> None:
        for table, rows in (
            ("report_nodes", verdict_rows(task_id, evaluator, report, block)),
            ("report_payouts", payout_rows(task_id, evaluator, report, block)),
        ):
            if rows:
                marks = placeholders(len(rows[0]))
                self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def _index(self, first: int, last: int) -> int | None:
        """Index blocks first..last in one transaction; the number of events, or None if the
        chain changed while they were read (nothing is written then)."""
        before = self._chain_hash(last)
        events = self.chain.logs(first, last)
        if before is None or self._chain_hash(last) != before:
            return None
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in ROW_TABLES}
        for event in events:
            rows["events"].append(event_row(event))
            stored = None
            if event.name in TIMED_EVENTS:  # rare
                stored = self.chain.task(event.task_id, block=event.block_number)
            derived = row_of(event, stored)
            if derived is not None:
                rows[derived[0]].append(derived[1])
        hashes = {event.block_number: event.block_hash for event in events}
        hashes[last] = before
        with self._transaction():
            for table, values in rows.items():
                if values:
                    marks = placeholders(len(values[0]))
                    self.db.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
            # The previous cursor's hash was kept as the cursor; now only if it held events.
            self.db.execute(
                """DELETE FROM blocks WHERE number = ?
                   AND NOT EXISTS (SELECT 1 FROM events WHERE block_number = ?)""",
                (first - 1, first - 1),
            )
            self.db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?)", hashes.items())
            self._prune(last)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (str(last),))
        log.debug("indexed blocks %d-%d: %d events", first, last, len(events))
        return len(events)

    def _prune(self, cursor: int) -> None:
        """Drop hashes older than KEEP_BLOCKS behind `cursor`, except the newest log blocks."""
        self.db.execute(
            """DELETE FROM blocks WHERE number < ? AND number != ? AND number NOT IN (
                 SELECT DISTINCT block_number FROM events ORDER BY block_number DESC LIMIT ?)""",
            (cursor - KEEP_BLOCKS, cursor, KEEP_LOG_BLOCKS),
        )

    def _unwind_reorg(self) -> int:
        """Undo what a reorg replaced; the number of blocks rolled back."""
        cursor = self.cursor
        if cursor < self.start_block:
            return 0
        kept = self.db.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchall()
        ancestor = self.start_block - 1
        for number, stored in kept:
            if self._chain_hash(number) == stored:
                ancestor = number
                break
        if ancestor == cursor:
            return 0
        log.warning("reorg: rolling the index back from block %d to %d", cursor, ancestor)
        with self._transaction():
            for table in ROW_TABLES:
                self.db.execute(f"DELETE FROM {table} WHERE block_number > ?", (ancestor,))
            self.db.execute("DELETE FROM blocks WHERE number > ?", (ancestor,))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (str(ancestor),))
            # Readers' caches key on a task's row counts; a replaced block can keep them equal.
            self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'unwinds'")
        return cursor - ancestor

    # ------------------------------------------------------------------ reading

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows, sorted: two indexes of the same chain dump equal (the count of
        reorgs survived is history, not content, and is left out)."""
        tables = ["meta", "blocks", *ROW_TABLES]
        dumped = {t: sorted(self.db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        dumped["meta"] = [row for row in dumped["meta"] if row[0] != "unwinds"]
        return dumped

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(sql, tuple(params)).fetchall()
        finally:
            self.db.row_factory = None
