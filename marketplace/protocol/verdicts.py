"""Verdicts: what an evaluator decides about a node, and the stable codes of a refusal.

An evaluator decides every node before scoring it; an invalid node forfeits its deposit
(DESIGN.md, "The reward rule, and why"). A refusal is an invalid `Verdict` whose `reason`
starts with a stable code (`Verdict.code`), then ": " and a readable detail. The checks of a
node's bytes (`marketplace.protocol.checks`) give these verdicts; so does the scorer, for what
it finds past them.

Reason codes, in the order an update is checked:

    blob-missing     no blob under the CID (or the CID is not a base32 CIDv1)
    too-large        the blob is over the size cap (the store stops reading at the cap)
    cid-mismatch     the bytes do not hash to the CID (a CID not made the way the market
                     makes them: CIDv1, raw leaves, 256 KiB chunks, balanced layout)
    digest-mismatch  sha256 of the blob is not the digest the chain recorded
    undecryptable    not an envelope, truncated, malformed, tampered, or not sealed to us
    author-binding   signed by an account other than the node's author
    binding          sealed for another task, parent, kind or chain
    spec             (architectures) no spec in the bundle, a spec that is refused, or one
                     that does not fit the task's data schema and metric (`check_schema_fits`);
                     (updates, merges) built on an invalid architecture
    over-budget      (architectures) scoring it once costs more multiply-adds than the task's
                     budget (`evaluation.check_budget`): refused before anyone trains it
    weights          not safetensors, wrong names, shapes or dtypes
    non-finite       a NaN or an infinity in the weights
    no-update        every weight within `tolerance` of the parent's

Two more codes come from the evaluator, not from a node's bytes: `over-cap` (an account's
update past the task's `max_submissions_per_round` in its round, in node id order) and
`scoring-timeout` (scoring the node took longer than the task's `scoring_seconds`).

Past its check, a node's bytes can still fail when they are used (scored, merged): `NODE_ERRORS`
are the errors such bytes raise, and `refusal` turns one into the node's invalid verdict, so
a caller catches exactly those at the node's boundary and lets every other error through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from marketplace.errors import (
    BlobNotFound,
    BlobTooLarge,
    EnvelopeError,
    IntegrityError,
    OverBudget,
    ScoringTimeout,
    SpecError,
    WeightsError,
)
from marketplace.wire.secagg_packing import SecAggError

if TYPE_CHECKING:
    import torch


class Refusal(StrEnum):
    """Why a node is invalid: the stable code a `Verdict.reason` starts with."""

    BLOB_MISSING = "blob-missing"
    TOO_LARGE = "too-large"
    CID_MISMATCH = "cid-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    UNDECRYPTABLE = "undecryptable"
    AUTHOR_BINDING = "author-binding"
    BINDING = "binding"
    SPEC = "spec"
    WEIGHTS = "weights"
    NON_FINITE = "non-finite"
    NO_UPDATE = "no-update"
    COPY = "copy"  # the same weights as an earlier update (issue 15: one update, one voice)
    OVER_BUDGET = "over-budget"
    OVER_CAP = "over-cap"
    SCORING_TIMEOUT = "scoring-timeout"


_CODES = frozenset(code.value for code in Refusal)


@dataclass(frozen=True)
class Verdict:
    """An evaluator's decision on one node.

    Attributes:
        node_id: the node decided.
        valid: whether the node keeps its deposit and may be scored.
        reason: "" when valid; else a `Refusal` code, ": " and a detail.
        weights: the decoded weights (parameter order) when valid, else None.
    """

    node_id: int
    valid: bool
    reason: str = ""
    weights: dict[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)
    sealed: bool = False  # a valid secure aggregation update: well-formed, never seen alone

    def __post_init__(self) -> None:
        if self.valid != (self.reason == ""):
            raise ValueError("a verdict has a reason exactly when it is invalid")
        if self.sealed and (not self.valid or self.weights is not None):
            raise ValueError("a sealed verdict is valid and carries no weights")
        if not self.sealed and self.valid != (self.weights is not None):
            raise ValueError("a verdict carries weights exactly when it is valid")
        if self.reason and self.reason.partition(":")[0] not in _CODES:
            raise ValueError(f"a reason starts with a Refusal code, not {self.reason!r}")

    @classmethod
    def accepted(cls, node_id: int, weights: dict[str, torch.Tensor]) -> Verdict:
        return cls(node_id, True, "", weights)

    @classmethod
    def sealed_update(cls, node_id: int) -> Verdict:
        return cls(node_id, True, "", None, sealed=True)

    @classmethod
    def refused(cls, node_id: int, code: Refusal, detail: str = "") -> Verdict:
        return cls(node_id, False, f"{code.value}: {detail}" if detail else code.value)

    @property
    def code(self) -> Refusal | None:
        """The reason's code (None when valid)."""
        return Refusal(self.reason.partition(":")[0]) if self.reason else None


NODE_ERRORS = (
    BlobNotFound,
    BlobTooLarge,
    IntegrityError,
    SpecError,
    WeightsError,
    EnvelopeError,
    SecAggError,
    ScoringTimeout,
)
"""What a node's bytes can raise when used (or take too long to score); any other error (a
store that cannot be reached, the chain, a bug) is not the node's fault and must propagate."""


def refusal(node_id: int, exc: Exception) -> Verdict:
    """The invalid verdict of a node whose bytes raised `exc`, one of `NODE_ERRORS`."""
    if isinstance(exc, WeightsError):
        return Verdict.refused(node_id, weights_code(exc), str(exc))
    codes: tuple[tuple[type[Exception], Refusal], ...] = (
        (BlobNotFound, Refusal.BLOB_MISSING),
        (BlobTooLarge, Refusal.TOO_LARGE),
        (IntegrityError, Refusal.CID_MISMATCH),
        (OverBudget, Refusal.OVER_BUDGET),  # before SpecError, its base
        (SpecError, Refusal.SPEC),
        (EnvelopeError, Refusal.UNDECRYPTABLE),
        (SecAggError, Refusal.WEIGHTS),
        (ScoringTimeout, Refusal.SCORING_TIMEOUT),
    )
    for kind, code in codes:
        if isinstance(exc, kind):
            return Verdict.refused(node_id, code, str(exc))
    raise TypeError(f"{type(exc).__name__} is not one of the node errors") from exc


def weights_code(exc: WeightsError) -> Refusal:
    """codec reports every refusal as WeightsError; non-finite values and sizes over the cap
    get their own codes."""
    message = str(exc)
    if "non-finite" in message:
        return Refusal.NON_FINITE
    if "over the cap" in message:
        return Refusal.TOO_LARGE
    return Refusal.WEIGHTS
