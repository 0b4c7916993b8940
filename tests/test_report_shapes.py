"""The payout parts and a node's place are declared once (`messages.PayoutParts`,
`messages.NodePlace`); every shape that carries them keeps the field order its bytes had, since
the report's digest, the API's JSON and `sponsor task show --json` depend on it."""

from __future__ import annotations

import sqlite3

from marketplace.rules.messages import PAYOUT_PARTS, NodeKind, NodeRecord, Payout
from marketplace.service.api_common import PayoutRow
from marketplace.service.index_schema import SCHEMA
from marketplace.wire.report import VERDICT_FIELDS, NodeVerdict, PayoutEntry, payout_entries

PARTS = ["expertise", "data", "compute", "deposits"]


def test_payout_shapes_keep_their_field_order() -> None:
    assert list(PAYOUT_PARTS) == PARTS
    assert list(Payout.model_fields) == ["account", "amount", "points", *PARTS]
    assert list(PayoutEntry.model_fields) == [
        "index",
        "account",
        "amount",
        "points",
        *PARTS,
        "proof",
    ]
    assert list(PayoutRow.model_fields) == [
        "leaf",
        "account",
        "amount",
        "points",
        *PARTS,
        "proof",
        "claimed",
    ]


def test_node_shapes_keep_their_field_order() -> None:
    place = ["node_id", "kind", "author", "parents"]
    assert list(NodeVerdict.model_fields) == [*place, "valid", "reason", "score", "gain"]
    assert list(VERDICT_FIELDS) == ["valid", "reason", "score", "gain"]
    assert list(NodeRecord.model_fields) == [
        "task_id", *place, "round", "samples", "digest", "cid", "plaintext_digest",
        "epsilon_millis", "block_number",
    ]  # fmt: skip


def test_index_columns_follow_the_declared_parts_and_verdict() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    payouts = [row[1] for row in db.execute("PRAGMA table_info(report_payouts)")]
    verdicts = [(row[1], row[2]) for row in db.execute("PRAGMA table_info(report_nodes)")]
    assert payouts[5:10] == ["points", *PARTS]
    assert verdicts[3:7] == [
        ("valid", "INTEGER"), ("reason", "TEXT"), ("score", "INTEGER"), ("gain", "INTEGER")
    ]  # fmt: skip


def test_payout_entry_json_is_the_reports_bytes() -> None:
    payout = Payout(account="0x" + "11" * 20, amount=10, points=3, expertise=1, data=2, compute=3,
                    deposits=4)  # fmt: skip
    (entry,), _, total = payout_entries([payout])
    assert total == 10
    assert entry.model_dump_json() == (
        '{"index":0,"account":"0x1111111111111111111111111111111111111111","amount":10,'
        '"points":3,"expertise":1,"data":2,"compute":3,"deposits":4,"proof":[]}'
    )
    verdict = NodeVerdict(node_id=1, kind=NodeKind.MERGE, author="0x", parents=(2,), valid=True)
    assert verdict.model_dump_json() == (
        '{"node_id":1,"kind":3,"author":"0x","parents":[2],"valid":true,"reason":"","score":0,'
        '"gain":0}'
    )
