"""The model card: what the sponsor's model is, how well it does, who made it and what each of
them was paid, and the chain transactions that settle it.

`build_card` makes it from public data only (the chain's events and the agreed payout report),
so anyone handed a card can make it again and compare (`check_card`, `marketplace verify
--card`). The one line the chain cannot check is the test score: the sponsor's test file is
its own, and the card says so.
"""

from __future__ import annotations

from pydantic import Field, ValidationError

from marketplace.errors import SpecError
from marketplace.evaluation import SSE_SCALE
from marketplace.messages import DataSchema, Frozen, Metric

CARD_VERSION = 1


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
    """One account of the lineage: its nodes, their gains, and its whole payout of the task."""

    account: str
    nodes: tuple[int, ...]
    gain: int
    amount: int
    points: int
    expertise: int
    data: int
    compute: int
    deposits: int


class CardSettlement(Frozen):
    """Where the card's numbers come from on the chain."""

    chain_id: int
    contract: str
    payout_root: str
    payout_total: int
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


def render_markdown(card: ModelCard) -> str:
    """MODEL_CARD.md: every number of the card, one fact per line (filled in below)."""
    return card.model_dump_json(indent=1)
