"""The model card: what the sponsor's model is, how well it does, who made it and what each of
them was paid, and the chain transactions that settle it.

This module owns the card's shape (`ModelCard`, its JSON twin) and building it:
`build_card` makes it from public data only (the chain's events and the agreed payout report),
so anyone handed a card can make it again and compare (`card_check.check_card`, `marketplace
verify --card`); `card_markdown` renders it for people. The one line the chain cannot check is
the test score: the sponsor's test file is its own, and the card says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, PlainSerializer, ValidationError

from marketplace.chain.client import ChainClient
from marketplace.chain.events import (
    ChainEvent,
    PayoutRootPosted,
    TaskCreated,
    TaskFinalized,
    ValidationRevealed,
)
from marketplace.errors import (
    SpecError,
)
from marketplace.rules.dag import architecture_of
from marketplace.rules.evaluation import SSE_SCALE
from marketplace.rules.messages import (
    PAYOUT_PARTS,
    DataSchema,
    Frozen,
    Metric,
    NodeKind,
    NodeRecord,
    TaskSpec,
)
from marketplace.rules.models import ModelSpec
from marketplace.wire.crypto import sha256
from marketplace.wire.report import PayoutReport, ReportCheck

log = logging.getLogger(__name__)

CARD_VERSION = 1
# An amount in base units: an int here, a decimal string in JSON (as the API writes amounts:
# JSON numbers lose precision past 2**53, and 10 ETH is 10**19 wei).
Wei = Annotated[int, Field(ge=0), PlainSerializer(str, return_type=str, when_used="json")]


class CardScore(Frozen):
    """A score of the model on one file: the metric's integer as the evaluators count it."""

    file_sha256: str
    rows: int
    score: int  # accuracy: rows right; negated_sse: -(sum of squared errors) in 10^-6 units

    def value(self, metric: Metric) -> float:
        """Accuracy as a fraction of the rows; negated SSE as a float."""
        if Metric(metric) is Metric.ACCURACY:
            return self.score / self.rows if self.rows else 0.0
        return self.score / SSE_SCALE


class CardNode(Frozen):
    """One node of the lineage from the architecture to the winner, as the report scored it."""

    node_id: int
    kind: str  # architecture, update or merge
    author: str
    round: int
    parents: tuple[int, ...]
    samples: int
    epsilon: float | None  # an update's declared DP epsilon (None: none declared)
    score: int
    gain: int  # credited improvement over its round's frontier (the report's)


class CardContributor(Frozen):
    """One account of the lineage: its nodes, the gain credited for them (its architecture's
    and updates'; a merge's gain is its updates', credited to them), and its whole payout."""

    account: str
    kinds: tuple[str, ...]  # what it made: architecture, update, merge
    nodes: tuple[int, ...]
    gain: int
    amount: Wei
    points: Wei
    expertise: Wei
    data: Wei
    compute: Wei
    deposits: Wei


class CardSettlement(Frozen):
    """Where the card's numbers come from on the chain."""

    chain_id: int
    contract: str
    payout_root: str
    payout_total: Wei
    report_cid: str
    report_evaluator: str
    created_tx: str
    revealed_tx: str
    root_txs: tuple[str, ...]  # every PayoutRootPosted of the agreed root
    finalized_tx: str  # "" until the task is finalized


class CardModel(Frozen):
    """The delivered model: which node, its architecture, and the digests that pin it."""

    winner: int
    kind: str
    architecture: int
    architecture_author: str
    spec_sha256: str
    weights_sha256: str  # sha256 of canonical safetensors of the weights (`weights_digest`)
    delivery_cid: str
    delivered_by: str


class ModelCard(Frozen):
    """The card, JSON twin of MODEL_CARD.md."""

    version: int = CARD_VERSION
    task_id: int
    task_name: str
    metric: Metric
    data: DataSchema
    model: CardModel
    validation: CardScore
    test: CardScore | None = None  # the sponsor's own test file: not checkable on-chain
    lineage: tuple[CardNode, ...] = Field(default=())
    contributors: tuple[CardContributor, ...] = Field(default=())
    settlement: CardSettlement

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelCard:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise SpecError(f"not a model card: {where}: {error['msg']}") from None


# ------------------------------------------------------------------------------ building


def build_card(
    chain: ChainClient,
    spec: TaskSpec,
    records: Mapping[int, NodeRecord],
    agreed: ReportCheck,
    model: ModelSpec,
    test: CardScore | None = None,
) -> ModelCard:
    """The card of the winner of `agreed` (a report that matches the agreed root and delivers
    a winner), from public data alone: what `check_card` builds again to compare."""
    report = agreed.report
    assert report is not None and report.winner is not None and report.delivery is not None
    task_id = report.task_id
    winner = records[report.winner]
    arch_id = architecture_of(records, winner.node_id)
    verdicts = {n.node_id: n for n in report.nodes}
    nodes = [records[node_id] for node_id in lineage(records, winner.node_id)]
    return ModelCard(
        task_id=task_id,
        task_name=spec.name,
        metric=spec.metric,
        data=spec.data,
        model=CardModel(
            winner=winner.node_id,
            kind=winner.kind.name.lower(),
            architecture=arch_id,
            architecture_author=records[arch_id].author,
            spec_sha256=sha256(model.to_json()).hex(),
            weights_sha256=report.delivery.weights_sha256,
            delivery_cid=report.delivery.cid,
            delivered_by=agreed.posted.evaluator,
        ),
        validation=CardScore(
            file_sha256=report.validation_digest,
            rows=spec.validation_rows or report.ceiling,  # 0: every row (accuracy's ceiling)
            score=verdicts[winner.node_id].score,
        ),
        test=test,
        lineage=tuple(
            CardNode(
                node_id=r.node_id,
                kind=r.kind.name.lower(),
                author=r.author,
                round=r.round,
                parents=tuple(p for p in r.parents if p),  # an architecture's parent is 0
                samples=r.samples,
                epsilon=r.epsilon_millis / 1000 if r.epsilon_millis else None,
                score=verdicts[r.node_id].score,
                gain=verdicts[r.node_id].gain,
            )
            for r in nodes
        ),
        contributors=_contributors(report, nodes),
        settlement=_settlement(chain, task_id, agreed),
    )


def lineage(records: Mapping[int, NodeRecord], winner: int) -> list[int]:
    """The winner and every node it was built from, down to its architecture, by id."""
    seen: set[int] = set()
    todo = [winner]
    while todo:
        node_id = todo.pop()
        if node_id not in seen and node_id in records:  # an architecture's parent is 0
            seen.add(node_id)
            todo.extend(records[node_id].parents)
    return sorted(seen)


_PAID = ("amount", "points", *PAYOUT_PARTS)  # what a contributor was paid, part by part


def _contributors(report: PayoutReport, nodes: list[NodeRecord]) -> tuple[CardContributor, ...]:
    """Each author of the lineage, in the order of its first node, with its whole payout."""
    credited = {n.node_id: n.gain for n in report.nodes if n.kind is not NodeKind.MERGE}
    by_author: dict[str, list[NodeRecord]] = {}
    for record in nodes:
        by_author.setdefault(record.author, []).append(record)
    contributors = []
    for account, made in by_author.items():
        entry = report.entry_for(account)
        parts = (
            entry.model_dump(include=set(_PAID)) if entry is not None else dict.fromkeys(_PAID, 0)
        )
        contributors.append(
            CardContributor(
                account=account,
                kinds=tuple(dict.fromkeys(r.kind.name.lower() for r in made)),
                nodes=tuple(r.node_id for r in made),
                gain=sum(credited.get(r.node_id, 0) for r in made),
                **parts,
            )
        )
    return tuple(contributors)


def _settlement(chain: ChainClient, task_id: int, agreed: ReportCheck) -> CardSettlement:
    """The chain, the contract and the transactions that created, revealed, agreed and
    finalized the task."""
    root = agreed.posted.root

    def tx(kind: type[ChainEvent]) -> str:
        events = chain.events(kind, task_id=task_id)
        return events[0].tx_hash if events else ""

    roots = [
        e.tx_hash
        for e in chain.events(PayoutRootPosted, task_id=task_id)
        if e.root == root and e.total == agreed.posted.total
    ]
    return CardSettlement(
        chain_id=int(chain.w3.eth.chain_id),
        contract=chain.address,
        payout_root="0x" + root.hex(),
        payout_total=agreed.posted.total,
        report_cid=agreed.posted.cid,
        report_evaluator=agreed.posted.evaluator,
        created_tx=tx(TaskCreated),
        revealed_tx=tx(ValidationRevealed),
        root_txs=tuple(roots),
        finalized_tx=tx(TaskFinalized),
    )
