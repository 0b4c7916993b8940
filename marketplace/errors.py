"""Every failure the marketplace reports, under one root, one class each.

Contract reverts arrive as the custom error the contract raised, with its values:
`except NotSponsor as e: e.values["caller"]`.
"""

from __future__ import annotations

from typing import Any

from marketplace.rules.messages import Phase


class MarketplaceError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(MarketplaceError):
    """A setting or an argument is missing or malformed."""


class StorageError(MarketplaceError):
    """A blob could not be stored or fetched."""


class BlobNotFound(StorageError):
    """No blob is stored under this CID (or the node did not find it in time)."""


class BlobTooLarge(StorageError):
    """A blob is larger than the cap the reader set; it was not read into memory."""


class IntegrityError(StorageError):
    """The bytes read do not hash to the CID they were asked for."""


class NoMatchingReport(IntegrityError):
    """No posted payout report matches the task's agreed root (each is missing or lies)."""


class StoreUnavailable(StorageError):
    """The IPFS node could not be reached, even after retries."""


class SpecError(MarketplaceError):
    """A model spec or task spec is refused (unknown layer, too large, malformed)."""


class OverBudget(SpecError):
    """Scoring the model on the task's validation rows costs more than the task's budget."""


class ScoringTimeout(MarketplaceError):
    """Scoring one node took longer than the task's `scoring_seconds`."""


class WeightsError(MarketplaceError):
    """Weights bytes are refused: not safetensors, wrong names, shapes or dtypes, non-finite."""


class EnvelopeError(MarketplaceError):
    """An envelope cannot be opened: not a recipient, tampered, or not bound to its author."""


class DataFormatError(MarketplaceError):
    """A data file is malformed; the message names the row and column."""


class ExportError(MarketplaceError):
    """A model cannot be exported to ONNX, or its exported graph disagrees with torch."""


class ValidationUnavailable(MarketplaceError):
    """No copy of the task's validation set this evaluator can read matches the commitment."""


class DeliveryError(MarketplaceError):
    """The sponsor's model cannot be had yet, or what was delivered is not what was scored."""


class DagError(MarketplaceError):
    """The model tree handed to the reward rule is inconsistent (unknown parent, cycle...)."""


class ChainError(MarketplaceError):
    """Talking to the chain failed."""


class ChainUnavailable(ChainError):
    """An engine (the Ethereum node, or IPFS) stayed unreachable for longer than allowed."""


class TransactionReverted(ChainError):
    """A mined transaction reverted without a decodable reason (state changed, or out of gas)."""


class ContractRevert(ChainError):
    """The contract reverted with a custom error; `values` holds its arguments by name."""

    def __init__(self, **values: Any) -> None:
        self.values = values
        shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
        super().__init__(f"{type(self).__name__}({shown})")


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


class UnknownRevert(ContractRevert):
    """The contract reverted with data this client cannot decode."""


class UnknownTask(ContractRevert):
    """No task has this id."""


class ZeroBounty(ContractRevert):
    """A task's bounty is zero."""


class ZeroRounds(ContractRevert):
    """A task has no rounds."""


class ZeroRoundDuration(ContractRevert):
    """A task's rounds last zero seconds."""


class ZeroWindow(ContractRevert):
    """A task's reveal, evaluation or claim window is zero."""


class BadEvaluatorCount(ContractRevert):
    """A task names no evaluator, or more than the contract's maximum."""


class BadEvaluator(ContractRevert):
    """An evaluator is the zero address, or named twice."""


class BadQuorum(ContractRevert):
    """The quorum is not a strict majority of the task's evaluators."""


class StartInPast(ContractRevert):
    """A task's explicit start is before the block it is created in."""


class TokenNotAContract(ContractRevert):
    """A task's ERC-20 token address holds no code."""


class WrongValue(ContractRevert):
    """The ETH sent does not match what the call requires."""


class FeeOnTransferToken(ContractRevert):
    """The token delivered less than was transferred."""


class NotSponsor(ContractRevert):
    """Only the task's sponsor may do this."""


class NotEvaluator(ContractRevert):
    """Only one of the task's evaluators may do this."""


def phase_mask(*phases: Phase) -> int:
    """The bitmap `WrongPhase` names its allowed phases by: bit p set for each `Phase` p."""
    return sum(1 << phase for phase in set(phases))


class WrongPhase(ContractRevert):
    """The task is not in a phase this call is allowed in: `values["allowed"]` has a bit per
    allowed `Phase` (`phase_mask`), and the message names them."""

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        task, current, allowed = values["taskId"], Phase(values["current"]), self.allowed
        needs = "this needs " + " or ".join(map(_phase_name, allowed))
        Exception.__init__(
            self,
            f"task {task} is in phase {_phase_name(current)}; "
            + (needs if allowed else "no phase allows this any more"),
        )

    @property
    def allowed(self) -> tuple[Phase, ...]:
        """The phases the call would have been accepted in, in lifecycle order."""
        return tuple(p for p in Phase if int(self.values["allowed"]) >> p & 1)


def _phase_name(phase: Phase) -> str:
    return phase.name.title()


class RoundNotOpen(ContractRevert):
    """Submissions are accepted only while a round is open."""


class JoinWindowClosed(ContractRevert):
    """A secure aggregation round is joined only in its first half, before the masks are fixed."""


class InvalidSeedCount(ContractRevert):
    """Mask seeds are revealed one or more at a time, at most a group's size."""


class WindowTooShort(ContractRevert):
    """A round or phase window is shorter than the deployment's minimum window."""


class SponsorIsEvaluator(ContractRevert):
    """A sponsor cannot be one of its own task's evaluators."""


class MergeParentsMismatch(ContractRevert):
    """A merge is confirmed with the same parents it was posted with."""


class RoundNotClosed(ContractRevert):
    """A round's merge may be posted only after that round closed."""


class InvalidParent(ContractRevert):
    """The parent is not an existing node of this task."""


class InvalidMergeParents(ContractRevert):
    """A merge's parents must be existing nodes, strictly increasing, within the cap."""


class MergeNotConfirmed(ContractRevert):
    """The parent is a merge the evaluator quorum has not confirmed yet."""


class NotAMerge(ContractRevert):
    """The node is not a merge."""


class MergeDigestMismatch(ContractRevert):
    """The confirming evaluator recomputed a different merge."""


class AlreadyConfirmed(ContractRevert):
    """This evaluator already confirmed this merge."""


class CommitmentMismatch(ContractRevert):
    """The revealed digest and salt do not match the validation commitment."""


class AlreadyPosted(ContractRevert):
    """This evaluator already posted a payout root for the task."""


class TotalExceedsEscrow(ContractRevert):
    """A payout total larger than the task's escrow."""


class ChallengeWindowOpen(ContractRevert):
    """The challenge window has not passed yet."""


class AlreadyClaimed(ContractRevert):
    """The payout leaf was already claimed."""


class InvalidProof(ContractRevert):
    """The Merkle proof does not prove this leaf under the final root."""


class ClaimExceedsTotal(ContractRevert):
    """Paying this claim would pass the posted total."""


class HasSubmissions(ContractRevert):
    """The task has submissions and can no longer be cancelled."""


class AlreadyRefunded(ContractRevert):
    """This node's refund was already paid."""


class NotRefundable(ContractRevert):
    """Merges carry no deposit and get no refund."""


class NothingToReclaim(ContractRevert):
    """There is nothing left for the sponsor to reclaim now."""


class PaymentFailed(ContractRevert):
    """The recipient refused an ETH transfer."""


class ReentrancyGuardReentrantCall(ContractRevert):
    """A guarded function was re-entered."""


class SafeERC20FailedOperation(ContractRevert):
    """An ERC-20 transfer failed or returned false."""


def revert_class(name: str) -> type[ContractRevert]:
    """The class for the contract's custom error `name` (UnknownRevert if there is none)."""
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, ContractRevert):
        return found
    return UnknownRevert
