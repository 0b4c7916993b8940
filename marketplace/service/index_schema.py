"""The index's SQLite schema: its tables, the version a file records, and which tables hold
rows that events made (each with the `block_number` a reorg's unwind deletes above).

The columns of a report's verdicts and payout parts are named after the report's own fields
(`report.VERDICT_FIELDS`, `messages.PAYOUT_PARTS`), so a new part is a new column here without
an edit (and a new SCHEMA_VERSION, by hand: an old file lacks the column).
"""

from __future__ import annotations

from marketplace.rules.messages import PAYOUT_PARTS
from marketplace.wire.report import VERDICT_FIELDS, NodeVerdict

SCHEMA_VERSION = 4
"""2: nodes.epsilon; 3: reveals (the evaluation window runs from the reveal); 4: cards."""

_SQL_TYPES = {bool: "INTEGER", int: "INTEGER", str: "TEXT"}


def _verdict_columns() -> str:
    """One column per verdict field, typed as its annotation."""
    fields = NodeVerdict.model_fields
    return ", ".join(
        f"{name} {_SQL_TYPES[fields[name].annotation]} NOT NULL"  # type: ignore[index]
        for name in VERDICT_FIELDS
    )


def _part_columns() -> str:
    """One column per payout part, decimal text (wei pass SQLite's 64-bit integers)."""
    return ", ".join(f"{part} TEXT NOT NULL" for part in PAYOUT_PARTS)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    block_number INTEGER NOT NULL, log_index INTEGER NOT NULL, tx_hash TEXT NOT NULL,
    name TEXT NOT NULL, task_id INTEGER, args TEXT NOT NULL,
    PRIMARY KEY (block_number, log_index));
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, name);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY, sponsor TEXT NOT NULL, token TEXT NOT NULL,
    bounty TEXT NOT NULL, deposit TEXT NOT NULL, spec_cid TEXT NOT NULL,
    spec_digest TEXT NOT NULL, validation_commit TEXT NOT NULL, evaluators TEXT NOT NULL,
    quorum INTEGER NOT NULL, start INTEGER NOT NULL, round_duration INTEGER NOT NULL,
    rounds INTEGER NOT NULL, reveal_window INTEGER NOT NULL,
    evaluation_window INTEGER NOT NULL, challenge_window INTEGER NOT NULL,
    claim_window INTEGER NOT NULL, block_number INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_sponsor ON tasks (sponsor);
CREATE TABLE IF NOT EXISTS nodes (
    task_id INTEGER NOT NULL, node_id INTEGER NOT NULL, kind TEXT NOT NULL,
    author TEXT NOT NULL, parent INTEGER NOT NULL, parents TEXT NOT NULL,
    round INTEGER NOT NULL, samples INTEGER NOT NULL,
    epsilon INTEGER NOT NULL, -- an update's declared DP spend, thousandths (0: none)
    digest TEXT NOT NULL, cid TEXT NOT NULL,
    block_number INTEGER NOT NULL, PRIMARY KEY (task_id, node_id));
CREATE INDEX IF NOT EXISTS nodes_author ON nodes (author);
CREATE TABLE IF NOT EXISTS roots (
    task_id INTEGER NOT NULL, evaluator TEXT NOT NULL, root TEXT NOT NULL, total TEXT NOT NULL,
    votes INTEGER NOT NULL, report_cid TEXT NOT NULL, block_number INTEGER NOT NULL,
    PRIMARY KEY (task_id, evaluator));
CREATE TABLE IF NOT EXISTS claims (
    task_id INTEGER NOT NULL, leaf INTEGER NOT NULL, account TEXT NOT NULL,
    amount TEXT NOT NULL, points TEXT NOT NULL, block_number INTEGER NOT NULL,
    PRIMARY KEY (task_id, leaf));
CREATE INDEX IF NOT EXISTS claims_account ON claims (account);
CREATE TABLE IF NOT EXISTS settlements (
    task_id INTEGER PRIMARY KEY, root TEXT NOT NULL, total TEXT NOT NULL,
    settled_at INTEGER NOT NULL, block_number INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reveals (
    task_id INTEGER PRIMARY KEY, revealed_at INTEGER NOT NULL, block_number INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS finalizations (
    task_id INTEGER PRIMARY KEY, finalized_at INTEGER NOT NULL, block_number INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    task_id INTEGER NOT NULL, evaluator TEXT NOT NULL, report_cid TEXT NOT NULL,
    matches INTEGER NOT NULL, winner INTEGER, block_number INTEGER NOT NULL,
    PRIMARY KEY (task_id, evaluator));
CREATE TABLE IF NOT EXISTS report_nodes (
    task_id INTEGER NOT NULL, evaluator TEXT NOT NULL, node_id INTEGER NOT NULL,
    {_verdict_columns()},
    block_number INTEGER NOT NULL, PRIMARY KEY (task_id, evaluator, node_id));
CREATE TABLE IF NOT EXISTS report_payouts (
    task_id INTEGER NOT NULL, evaluator TEXT NOT NULL, leaf INTEGER NOT NULL,
    account TEXT NOT NULL, amount TEXT NOT NULL, points TEXT NOT NULL,
    {_part_columns()}, proof TEXT NOT NULL,
    block_number INTEGER NOT NULL, PRIMARY KEY (task_id, evaluator, leaf));
CREATE INDEX IF NOT EXISTS report_payouts_account ON report_payouts (account);
CREATE TABLE IF NOT EXISTS refunds (
    task_id INTEGER NOT NULL, node_id INTEGER NOT NULL, author TEXT NOT NULL,
    amount TEXT NOT NULL, block_number INTEGER NOT NULL, PRIMARY KEY (task_id, node_id));
CREATE TABLE IF NOT EXISTS cards (
    task_id INTEGER PRIMARY KEY,
    card TEXT, -- the public model card's JSON; NULL: none could be built (the log says why)
    finalized INTEGER NOT NULL, -- built once the index had the task's TaskFinalized
    block_number INTEGER NOT NULL); -- the agreement's block, or the finalize's
"""
ROW_TABLES = (
    "events",
    "tasks",
    "nodes",
    "roots",
    "claims",
    "refunds",
    "settlements",
    "reveals",
    "finalizations",
    "reports",
    "report_nodes",
    "report_payouts",
    "cards",
)
"""The tables of indexed rows, each with the `block_number` of the event that made the row."""
