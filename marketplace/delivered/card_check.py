"""Checking a model card against the chain: a card handed over is built again from public data
and compared line by line (`check_card`, `marketplace verify --card`); the index's public card
(`public_card`); and the check that a report's delivery is the winner it scored
(`checked_delivery`), which a card is built only after."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from marketplace.chain.client import ChainClient
from marketplace.delivered.card import CardScore, ModelCard, build_card
from marketplace.delivered.card_markdown import render_markdown
from marketplace.delivered.delivery import delivery_mismatch, scored_digest
from marketplace.errors import ChainError, DeliveryError, MarketplaceError, StoreUnavailable
from marketplace.protocol.reports import agreed_checks
from marketplace.protocol.tasks import architecture_spec, nodes_by_id, read_spec
from marketplace.rules.messages import NodeRecord, TaskSpec
from marketplace.rules.models import ModelSpec
from marketplace.storage.stores import BlobStore
from marketplace.wire.report import Delivery, PayoutReport, ReportCheck

log = logging.getLogger(__name__)


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
