"""The model card: what the sponsor's model is, how well it does, who made it and what each of
them was paid, and the chain transactions that settle it.

`build_card` makes it from public data only (the chain's events and the agreed payout report),
so anyone handed a card can make it again and compare (`check_card`, `marketplace verify
--card`). The one line the chain cannot check is the test score: the sponsor's test file is
its own, and the card says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import zip_longest
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, ValidationError

from marketplace.chain.client import ChainClient
from marketplace.delivered.delivery import Delivery, delivery_mismatch, scored_digest
from marketplace.errors import (
    ChainError,
    DeliveryError,
    MarketplaceError,
    SpecError,
    StoreUnavailable,
)
from marketplace.protocol.tasks import architecture_spec, nodes_by_id, read_spec
from marketplace.rules.dag import architecture_of
from marketplace.rules.evaluation import SSE_SCALE
from marketplace.rules.messages import DataSchema, Frozen, Metric, NodeKind, NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.storage.stores import BlobStore
from marketplace.wire.crypto import sha256
from marketplace.wire.report import PayoutReport, ReportCheck, agreed_checks

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


_PAYOUT_PARTS = ("amount", "points", "expertise", "data", "compute", "deposits")


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
            entry.model_dump(include=set(_PAYOUT_PARTS))
            if entry is not None
            else dict.fromkeys(_PAYOUT_PARTS, 0)
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

    def tx(name: str) -> str:
        events = chain.events(name, taskId=task_id)
        return events[0].tx_hash if events else ""

    roots = [
        e.tx_hash
        for e in chain.events("PayoutRootPosted", taskId=task_id)
        if bytes(e.args["root"]) == root and int(e.args["total"]) == agreed.posted.total
    ]
    return CardSettlement(
        chain_id=int(chain.w3.eth.chain_id),
        contract=chain.address,
        payout_root="0x" + root.hex(),
        payout_total=agreed.posted.total,
        report_cid=agreed.posted.cid,
        report_evaluator=agreed.posted.evaluator,
        created_tx=tx("TaskCreated"),
        revealed_tx=tx("ValidationRevealed"),
        root_txs=tuple(roots),
        finalized_tx=tx("TaskFinalized"),
    )


# ------------------------------------------------------------------------------ checking


def check_card(
    chain: ChainClient, store: BlobStore, card: ModelCard, markdown: str | None = None
) -> list[str]:
    """Every way `card` (and `markdown`, its MODEL_CARD.md, if given) differs from the card
    the chain and the agreed report give; [] when every line holds. The test score is the
    sponsor's word and is taken as it is. Never raises for what the card or others sent."""
    try:
        rebuilt = _rebuild(chain, store, card)
    except MarketplaceError as exc:
        return [str(exc)]
    problems = _differences(card.model_dump(mode="json"), rebuilt.model_dump(mode="json"), "")
    if markdown is not None:
        expected = render_markdown(card).splitlines()
        for number, (said, meant) in enumerate(zip_longest(markdown.splitlines(), expected), 1):
            if said != meant:
                problems.append(f"MODEL_CARD.md line {number}: {said!r} is not {meant!r}")
    return problems


def public_card(chain: ChainClient, store: BlobStore, task_id: int) -> ModelCard | None:
    """The card of the task's delivered model from public data, without a test score (None
    until a root is agreed whose report delivers a model that holds; the log says why not).
    An engine that does not answer (ChainError, StoreUnavailable) is raised: try again."""
    if chain.task(task_id).agreed_at == 0:
        return None
    for agreed in agreed_checks(chain, store, task_id):
        try:
            return _card_of(chain, store, task_id, agreed)
        except (ChainError, StoreUnavailable):
            raise
        except MarketplaceError as exc:
            log.info(
                "task %d: the report of %s gives no card: %s", task_id, agreed.posted.evaluator, exc
            )
    return None


def _rebuild(chain: ChainClient, store: BlobStore, card: ModelCard) -> ModelCard:
    """The card of the report `card` names, built again from the chain."""
    named = card.settlement
    agreed = next(
        (
            check
            for check in agreed_checks(chain, store, card.task_id)
            if check.posted.cid == named.report_cid
            and check.posted.evaluator.lower() == named.report_evaluator.lower()
        ),
        None,
    )
    if agreed is None:
        raise DeliveryError(
            f"{named.report_evaluator} posted no report {named.report_cid} with the agreed root"
        )
    return _card_of(chain, store, card.task_id, agreed, card.test)


def _card_of(
    chain: ChainClient,
    store: BlobStore,
    task_id: int,
    agreed: ReportCheck,
    test: CardScore | None = None,
) -> ModelCard:
    """The card of the model `agreed` delivers, once its delivery is checked."""
    spec = read_spec(chain, store, task_id)
    records = nodes_by_id(chain, task_id)
    delivered = checked_delivery(store, spec, records, agreed)
    return build_card(chain, spec, records, agreed, delivered.model, test)


@dataclass(frozen=True)
class Delivered:
    """A delivery that holds against the winner its report scored, from public data."""

    report: PayoutReport
    winner: int
    delivery: Delivery
    model: ModelSpec  # the winner's architecture


def checked_delivery(
    store: BlobStore, spec: TaskSpec, records: Mapping[int, NodeRecord], agreed: ReportCheck
) -> Delivered:
    """The delivery of `agreed` (a checked report of the agreed root), once it is shown to be
    the winner it scored, sealed to the sponsor alone by the report's poster (DeliveryError
    saying why it is not)."""
    report = agreed.report
    if report is None or not agreed.matches:
        raise DeliveryError(f"the report does not match the agreed root: {agreed.reason}")
    if report.winner is None or report.delivery is None:
        raise DeliveryError("the report delivers no model")
    _, model, arch_weights = architecture_spec(records, report.winner, store, spec.max_blob_bytes)
    scored = scored_digest(records[report.winner], arch_weights)
    reason = delivery_mismatch(
        report.delivery, report.winner, spec, agreed.posted.evaluator, scored, store
    )
    if reason is not None:
        raise DeliveryError(f"the report's delivery: {reason}")
    return Delivered(report, report.winner, report.delivery, model)


def _differences(said: Any, meant: Any, where: str) -> list[str]:
    """Each path at which two JSON values differ, with both values."""
    if isinstance(said, dict) and isinstance(meant, dict) and said.keys() == meant.keys():
        return [p for key in said for p in _differences(said[key], meant[key], f"{where}.{key}")]
    if isinstance(said, list) and isinstance(meant, list) and len(said) == len(meant):
        return [
            p
            for index, (a, b) in enumerate(zip(said, meant, strict=True))
            for p in _differences(a, b, f"{where}[{index}]")
        ]
    if said == meant:
        return []
    return [f"{where.lstrip('.')}: the card says {said}, the chain {meant}"]


# ------------------------------------------------------------------------------ MODEL_CARD.md


def render_markdown(card: ModelCard) -> str:
    """MODEL_CARD.md: the card for people, one fact per line, every number in full (so that
    `check_card` can hold each line to the JSON twin, and the twin to the chain)."""
    metric, data = card.metric, card.data
    kind = f"{data.num_classes} classes" if data.num_classes else "regression"
    lines = [
        f"# Model card: task {card.task_id}, {card.task_name}",
        "",
        f"The model the sponsor of task {card.task_id} paid for: node {card.model.winner} "
        f"({card.model.kind}), scored by {metric.value} on {data.num_features} "
        f"{data.input} with label column `{data.label_column}` ({kind}).",
        "",
        "## Scores",
        "",
        _score_line("validation", card.validation, metric, "the evaluators' score"),
    ]
    if card.test is not None:
        lines.append(
            _score_line("test", card.test, metric, "the sponsor's own file: not on the chain")
        )
    model = card.model
    lines += [
        "",
        "## Model",
        "",
        f"- architecture: node {model.architecture} by {model.architecture_author}",
        f"- spec sha256: {model.spec_sha256}",
        f"- weights sha256: {model.weights_sha256}",
        f"- delivered by {model.delivered_by} as {model.delivery_cid}",
        "",
        "## Lineage, from the architecture to the winner",
        "",
        "| node | kind | round | author | parents | samples | DP epsilon | score | gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in card.lineage:
        epsilon = "-" if n.epsilon is None else f"{n.epsilon:g}"
        parents = ",".join(map(str, n.parents)) or "-"
        lines.append(
            f"| {n.node_id} | {n.kind} | {n.round} | {n.author} | {parents} | {n.samples} "
            f"| {epsilon} | {n.score} | {n.gain} |"
        )
    lines += [
        "",
        "## Contributors and what each was paid (wei)",
        "",
        "| account | made | nodes | credited gain | paid | expertise | data | compute | deposits "
        "| points |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in card.contributors:
        lines.append(
            f"| {c.account} | {', '.join(c.kinds)} | {','.join(map(str, c.nodes))} | {c.gain} "
            f"| {c.amount} "
            f"| {c.expertise} | {c.data} | {c.compute} | {c.deposits} | {c.points} |"
        )
    s = card.settlement
    lines += [
        "",
        "## Settlement",
        "",
        f"- chain {s.chain_id}, contract {s.contract}",
        f"- payout root {s.payout_root}, total {s.payout_total} wei",
        f"- report {s.report_cid}, posted by {s.report_evaluator}",
        f"- created in {s.created_tx or '-'}",
        f"- validation revealed in {s.revealed_tx or '-'}",
        *(f"- root posted in {tx}" for tx in s.root_txs),
        f"- finalized in {s.finalized_tx or '- (not yet)'}",
        "",
        "Check every line against the chain: `marketplace verify --card model_card.json`.",
    ]
    return "\n".join(lines) + "\n"


def _score_line(name: str, score: CardScore, metric: Metric, whose: str) -> str:
    shown = describe_score(metric, score.score, score.rows)
    return f"- {name}: {shown}, file sha256 {score.file_sha256} ({whose})"


def describe_score(metric: Metric, score: int, rows: int) -> str:
    """'accuracy 0.9532 (1,234 of 1,295 rows)' or 'negated SSE -12.500000 (1,295 rows)'."""
    if Metric(metric) is Metric.ACCURACY:
        return f"accuracy {score / rows if rows else 0:.4f} ({score:,} of {rows:,} rows)"
    return f"negated SSE {score / SSE_SCALE:,.6f} ({rows:,} rows)"
