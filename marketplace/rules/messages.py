"""What crosses a boundary, as frozen, validated models: the chain's views and inputs, the
task spec, scores and payouts."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from marketplace.rules.schedule import RoundSchedule

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_EVALUATORS = 8


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Phase(IntEnum):
    """Where a task is in its lifecycle (mirrors `IGradientMarketplaceTypes.Phase`)."""

    NONE = 0
    ROUNDS = 1
    REVEAL = 2
    EVALUATION = 3
    CHALLENGE = 4
    CLAIMS = 5
    CLOSED = 6
    UNREVEALED = 7
    UNSETTLED = 8
    CANCELLED = 9


class NodeKind(IntEnum):
    """What a node of the model DAG is (mirrors `IGradientMarketplaceTypes.Kind`)."""

    NONE = 0
    ARCHITECTURE = 1
    UPDATE = 2
    MERGE = 3


class TaskParams(Frozen):
    """The arguments of `createTask`. Times are seconds; `start=0` means "now"."""

    token: str = ZERO_ADDRESS
    bounty: int = Field(gt=0, lt=2**128)
    deposit: int = Field(default=0, ge=0, lt=2**96)
    validation_commit: bytes = Field(min_length=32, max_length=32)
    spec_digest: bytes = Field(default=bytes(32), min_length=32, max_length=32)
    spec_cid: str = ""
    start: int = Field(default=0, ge=0, lt=2**40)
    round_duration: int = Field(gt=0, lt=2**32)
    rounds: int = Field(gt=0, lt=256)
    reveal_window: int = Field(gt=0, lt=2**32)
    evaluation_window: int = Field(gt=0, lt=2**32)
    challenge_window: int = Field(ge=0, lt=2**32)
    claim_window: int = Field(gt=0, lt=2**32)
    evaluators: tuple[str, ...] = Field(min_length=1, max_length=MAX_EVALUATORS)
    quorum: int = Field(default=1, gt=0, le=MAX_EVALUATORS)

    def as_abi(self) -> tuple[Any, ...]:
        """The tuple `createTask` takes, in the struct's field order."""
        return (
            self.token,
            self.bounty,
            self.deposit,
            self.validation_commit,
            self.spec_digest,
            self.spec_cid,
            self.start,
            self.round_duration,
            self.rounds,
            self.reveal_window,
            self.evaluation_window,
            self.challenge_window,
            self.claim_window,
            list(self.evaluators),
            self.quorum,
        )


class TaskState(Frozen):
    """A task as the contract stores it, with its derived deadlines (`getTask`)."""

    task_id: int
    sponsor: str
    token: str
    bounty: int
    deposit: int
    start: int
    round_duration: int
    rounds: int
    evaluator_count: int
    quorum: int
    node_count: int
    submission_count: int
    revealed: bool
    finalized: bool
    cancelled: bool
    posted: int
    agreed_at: int  # when a root reached the quorum (the challenge window runs from it); 0 before
    finalized_at: int  # when the agreed root became final (claims run from it); 0 before
    reveal_window: int
    evaluation_window: int
    challenge_window: int
    claim_window: int
    payout_total: int
    claimed: int
    reclaimed: int
    validation_commit: bytes
    payout_root: bytes
    rounds_end: int
    reveal_deadline: int
    evaluation_deadline: int
    challenge_end: int
    claim_deadline: int
    escrow: int
    revealed_at: int  # 0 until the reveal; the evaluation window runs from it
    kept_updates: int  # updates kept in merges the quorum confirmed: a withheld bounty's shares
    shares_paid: int
    join_count: int  # secure aggregation joins, each with a deposit in the escrow

    @property
    def is_eth(self) -> bool:
        return self.token == ZERO_ADDRESS

    @property
    def schedule(self) -> RoundSchedule:
        """When its rounds open, merge, reach their midpoints and close."""
        return RoundSchedule(self.start, self.round_duration, self.rounds)

    def round_end(self, round_index: int) -> int:
        """When round `round_index` closes."""
        return self.schedule.closes(round_index)


class NodeState(Frozen):
    """One node of the model DAG as stored (`getNode`)."""

    task_id: int
    node_id: int
    author: str
    parent: int
    samples: int
    round: int
    kind: NodeKind
    confirmations: int
    plaintext_digest: bytes
    kept: bool  # an update kept in a merge the quorum confirmed


class OfTask(Frozen):
    """The task a model belongs to, the first field of its dumps (a base: see `NodeRecord`)."""

    task_id: int


class NodePlace(Frozen):
    """Where a node sits in its task's tree and who made it: what the chain's record of a node
    and an evaluator's verdict on it (`report.NodeVerdict`) both carry, declared once."""

    node_id: int
    kind: NodeKind
    author: str
    parents: tuple[int, ...]


class NodeRecord(NodePlace, OfTask):
    """One node as its event recorded it: the pointers to its bytes and all its parents.

    Fields dump in the order of the bases reversed (task_id, the place, then these): `sponsor
    task show --json` prints them so."""

    round: int
    samples: int
    digest: bytes
    cid: str
    plaintext_digest: bytes | None = None
    epsilon_millis: int = 0  # an update's declared DP spend, thousandths of epsilon (0: no DP)
    block_number: int


# ------------------------------------------------------------------ task spec (JSON on IPFS)

MIB = 1024 * 1024
DEFAULT_SCORING_MACS = 10**10  # one scoring: about 3 s at the 3.2 G multiply-adds/s issue 14 saw
DEFAULT_SCORING_SECONDS = 300.0  # 100x that: a net for a slow machine, not the budget


class Metric(StrEnum):
    """How a node is scored, always as an integer so every evaluator agrees bit for bit."""

    ACCURACY = "accuracy"  # validation rows predicted right
    NEGATED_SSE = "negated_sse"  # -(sum of squared errors) in fixed point (see evaluation.py)


class DataSchema(Frozen):
    """The shape of the task's data files (CSV or .npz): numeric features plus one label."""

    input: Literal["features", "tokens"] = "features"
    num_features: int = Field(gt=0, le=65_536)  # feature columns, or token positions
    label_column: str = Field(default="label", min_length=1, max_length=64)
    num_classes: int | None = Field(default=None, ge=2, le=100_000)  # None: regression
    vocab_size: int | None = Field(default=None, ge=2, le=1_000_000)  # tokens only


class RewardSplit(Frozen):
    """The sponsor's split of the bounty in basis points; what is not split stays theirs."""

    expertise_bps: int = Field(ge=0, le=10_000)
    data_bps: int = Field(ge=0, le=10_000)
    compute_bps: int = Field(ge=0, le=10_000)

    @model_validator(mode="after")
    def _at_most_the_bounty(self) -> RewardSplit:
        if self.expertise_bps + self.data_bps + self.compute_bps > 10_000:
            raise ValueError("expertise + data + compute must not exceed 10,000 basis points")
        return self


class Aggregation(Frozen):
    """Secure aggregation (marketplace.protocol.aggregation): rounds whose merge is computed from
    updates encrypted under the key holder's Paillier key and masked pairwise, so the key holder
    sees the round's sum and nobody sees an update alone."""

    key_holder: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")  # the evaluator holding the key
    paillier_n: str = Field(pattern=r"^[0-9a-f]+$", min_length=256, max_length=1024)  # n, hex
    rounds: tuple[int, ...] = Field(default=(), max_length=255)  # which rounds; (): every round
    clip: float = Field(default=0.05, gt=0, le=1000)  # each update value is clipped to +-clip
    fraction_bits: int = Field(default=16, ge=0, le=40)  # fixed point: steps of 2**-fraction_bits
    max_miners: int = Field(default=16, ge=2, le=256)  # a round's masked set; slot headroom

    def applies(self, round_index: int) -> bool:
        return not self.rounds or round_index in self.rounds


class TaskSpec(Frozen):
    """The task's public description, stored as JSON on IPFS; its sha256 is on-chain."""

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    metric: Metric
    data: DataSchema
    split: RewardSplit
    evaluator_keys: tuple[str, ...] = Field(default=(), max_length=MAX_EVALUATORS)  # X25519, hex
    max_samples_credited: int = Field(default=1_000_000, gt=0)  # cap on declared samples (compute)
    no_update_tolerance: float = Field(default=1e-6, ge=0)  # max |w - parent| that is "no update"
    max_blob_bytes: int = Field(default=64 * MIB, gt=0, le=1024 * MIB)
    # X25519, hex: the validation set and the delivered winner are sealed to it
    sponsor_key: str = Field(default="", max_length=66)
    validation_cid: str = Field(default="", max_length=128)  # the validation set, sealed
    aggregation: Aggregation | None = None  # secure aggregation rounds (None: every merge in clear)
    # Bounded evaluator work (DESIGN.md, "Bounded evaluator work"). One scoring runs a model on
    # the first `validation_rows` rows (`create_task` declares the file's count; 0: undeclared,
    # every row, and the budget is checked per row); an architecture whose multiply-adds per
    # row x those rows exceed `max_scoring_macs` is refused before anyone trains it.
    validation_rows: int = Field(default=0, ge=0, le=2**40)
    max_scoring_macs: int = Field(default=DEFAULT_SCORING_MACS, gt=0, lt=2**63)
    max_submissions_per_round: int = Field(default=1, ge=1, le=1_000)  # updates, per account
    scoring_seconds: float = Field(default=DEFAULT_SCORING_SECONDS, gt=0, le=86_400)  # a net
    # Credit for verified improvement (DESIGN.md): a gain under `min_gain` (score units:
    # validation rows for accuracy) is noise; Shapley values are exact up to
    # `shapley_exact_max` updates a merge, else from `shapley_permutations` seeded orders;
    # merges weigh updates equally or by samples clipped to the median; no account takes more
    # than `max_account_share_bps` of the data pool (the rest goes back to the sponsor).
    min_gain: int = Field(default=2, ge=1, le=2**62)
    shapley_exact_max: int = Field(default=6, ge=0, le=10)
    shapley_permutations: int = Field(default=16, ge=1, le=1_000)
    merge_weighting: Literal["equal", "median"] = "equal"
    max_account_share_bps: int = Field(default=5_000, gt=0, le=10_000)
    # The merge's class guard (accuracy tasks; 0: off): an update whose removal would cut one
    # class's validation recall by more than this many basis points is merged, if the merge
    # loses no more rows than the class gains (a label-skewed shard's only holder of a class).
    class_guard_bps: int = Field(default=2_000, ge=0, le=10_000)
    prox_mu: float = Field(default=0.0, ge=0, le=10)  # miners' default FedProx mu; off-chain only

    @model_validator(mode="after")
    def _metric_fits_labels(self) -> TaskSpec:
        classes = self.data.num_classes
        if self.metric is Metric.ACCURACY and classes is None:
            raise ValueError("the accuracy metric needs data.num_classes")
        if self.metric is Metric.NEGATED_SSE and classes is not None:
            raise ValueError("negated_sse is for regression: data.num_classes must be null")
        return self

    @property
    def budget_rows(self) -> int:
        """The validation rows one scoring is priced at (at least one)."""
        return max(self.validation_rows, 1)

    def aggregates(self, round_index: int) -> bool:
        """Whether round `round_index` is a secure aggregation round."""
        return self.aggregation is not None and self.aggregation.applies(round_index)


class Score(Frozen):
    """An evaluator's verdict on one node: valid or not (with why), and its integer score."""

    node_id: int
    valid: bool
    value: int = 0  # meaningful only when valid
    reason: str = ""  # why a node is invalid ("undecryptable", "non-finite", ...)


class Owed(Frozen):
    """What a payout leaf pays one account: money and reputation points."""

    account: str
    amount: int  # the sum of the account's `PayoutParts`, in wei or token units
    points: int  # reputation: the gains credited to the account


class PayoutParts(Frozen):
    """The parts a payout's amount adds up from (README, "Payouts"), declared once: the reward
    rule fills them (`rewards._payouts`), the report's entries and the API's rows carry them and
    the index's columns are named after them. A new part is one field here."""

    expertise: int = 0
    data: int = 0
    compute: int = 0
    deposits: int = 0


PAYOUT_PARTS: tuple[str, ...] = tuple(PayoutParts.model_fields)
"""The parts' names, in their order in every dump."""


class Payout(PayoutParts, Owed):
    """What one account is owed by a task, with the parts it is made of (fields in the order of
    the bases reversed: account, amount, points, then the parts)."""
