"""The contract's custom errors, one class each, GENERATED from the GradientMarketplace ABI by
`scripts/gen_reverts.py` (`make build`). Do not edit: change the contract and rebuild.

A revert arrives as an instance with its arguments by name: `except NotSponsor as e:
e.values["caller"]`. `BY_SELECTOR` is what the client decodes revert data with. Over 400 lines
because it is generated: one short class per error, nothing to split by responsibility.
"""

from __future__ import annotations

from marketplace.errors import ContractRevert, PhaseRevert


class AlreadyClaimed(ContractRevert):
    """The leaf was already claimed.

    `error AlreadyClaimed(uint256 taskId, uint256 index)`, selector 0x6bd4745f."""

    SELECTOR = bytes.fromhex("6bd4745f")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("index", "uint256"),
    )


class AlreadyConfirmed(ContractRevert):
    """This evaluator already confirmed this merge.

    `error AlreadyConfirmed(uint256 taskId, uint256 nodeId, address evaluator)`, selector
    0x305e95c3."""

    SELECTOR = bytes.fromhex("305e95c3")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
        ("evaluator", "address"),
    )


class AlreadyPosted(ContractRevert):
    """This evaluator already posted a payout root for the task.

    `error AlreadyPosted(uint256 taskId, address evaluator)`, selector 0xd390a851."""

    SELECTOR = bytes.fromhex("d390a851")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("evaluator", "address"),
    )


class AlreadyRefunded(ContractRevert):
    """This node's refund was already paid.

    `error AlreadyRefunded(uint256 taskId, uint256 nodeId)`, selector 0xe1410927."""

    SELECTOR = bytes.fromhex("e1410927")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
    )


class BadEvaluator(ContractRevert):
    """An evaluator is the zero address, or named twice.

    `error BadEvaluator(address evaluator)`, selector 0xcb8a5e6e."""

    SELECTOR = bytes.fromhex("cb8a5e6e")
    ARGUMENTS = (("evaluator", "address"),)


class BadEvaluatorCount(ContractRevert):
    """A task names no evaluator, or more than `MAX_EVALUATORS`.

    `error BadEvaluatorCount(uint256 count)`, selector 0x26c0b641."""

    SELECTOR = bytes.fromhex("26c0b641")
    ARGUMENTS = (("count", "uint256"),)


class BadQuorum(ContractRevert):
    """The quorum is not a strict majority of the `evaluators` (zero, or above their count).

    `error BadQuorum(uint256 quorum, uint256 evaluators)`, selector 0x8aeaa69b."""

    SELECTOR = bytes.fromhex("8aeaa69b")
    ARGUMENTS = (
        ("quorum", "uint256"),
        ("evaluators", "uint256"),
    )


class ChallengeWindowOpen(ContractRevert):
    """The challenge window has not passed yet.

    `error ChallengeWindowOpen(uint256 taskId, uint64 endsAt)`, selector 0x18c02f41."""

    SELECTOR = bytes.fromhex("18c02f41")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("endsAt", "uint64"),
    )


class ClaimExceedsTotal(ContractRevert):
    """Paying this claim would pass the posted total.

    `error ClaimExceedsTotal(uint256 taskId, uint256 amount, uint256 remaining)`, selector
    0xaf1d9239."""

    SELECTOR = bytes.fromhex("af1d9239")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("amount", "uint256"),
        ("remaining", "uint256"),
    )


class CommitmentMismatch(ContractRevert):
    """The revealed file digest and salt do not match the commitment.

    `error CommitmentMismatch(uint256 taskId, bytes32 commitment, bytes32 computed)`, selector
    0x8a7bc153."""

    SELECTOR = bytes.fromhex("8a7bc153")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("commitment", "bytes32"),
        ("computed", "bytes32"),
    )


class FeeOnTransferToken(ContractRevert):
    """The token delivered less than was transferred (fee-on-transfer tokens are refused).

    `error FeeOnTransferToken(address token, uint256 expected, uint256 received)`, selector
    0x825ab413."""

    SELECTOR = bytes.fromhex("825ab413")
    ARGUMENTS = (
        ("token", "address"),
        ("expected", "uint256"),
        ("received", "uint256"),
    )


class HasSubmissions(ContractRevert):
    """The task has submissions; it can no longer be cancelled.

    `error HasSubmissions(uint256 taskId, uint256 submissions)`, selector 0x1e673308."""

    SELECTOR = bytes.fromhex("1e673308")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("submissions", "uint256"),
    )


class InvalidMergeParents(ContractRevert):
    """A merge's parents must be 1..MAX_MERGE_PARENTS existing nodes, strictly increasing.

    `error InvalidMergeParents(uint256 taskId, uint256 count)`, selector 0x3356858f."""

    SELECTOR = bytes.fromhex("3356858f")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("count", "uint256"),
    )


class InvalidParent(ContractRevert):
    """The parent is not an existing node of this task that the new node may build on.

    `error InvalidParent(uint256 taskId, uint256 parent)`, selector 0xfc6e9ecf."""

    SELECTOR = bytes.fromhex("fc6e9ecf")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("parent", "uint256"),
    )


class InvalidProof(ContractRevert):
    """The Merkle proof does not prove this leaf under the task's final root.

    `error InvalidProof(uint256 taskId, uint256 index)`, selector 0x832d3d6e."""

    SELECTOR = bytes.fromhex("832d3d6e")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("index", "uint256"),
    )


class InvalidSeedCount(ContractRevert):
    """A list of mask seeds that is empty or longer than a round's group can be.

    `error InvalidSeedCount(uint256 taskId, uint256 count)`, selector 0xf4b6d93d."""

    SELECTOR = bytes.fromhex("f4b6d93d")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("count", "uint256"),
    )


class JoinWindowClosed(ContractRevert):
    """A round's join window (its first half) is not open now.

    `error JoinWindowClosed(uint256 taskId, uint64 opens, uint64 closes)`, selector 0xdc59acba."""

    SELECTOR = bytes.fromhex("dc59acba")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("opens", "uint64"),
        ("closes", "uint64"),
    )


class MergeDigestMismatch(ContractRevert):
    """The evaluator recomputed a different merge.

    `error MergeDigestMismatch(uint256 taskId, uint256 nodeId, bytes32 posted, bytes32
    confirmed)`, selector 0x83dce2f6."""

    SELECTOR = bytes.fromhex("83dce2f6")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
        ("posted", "bytes32"),
        ("confirmed", "bytes32"),
    )


class MergeNotConfirmed(ContractRevert):
    """The parent is a merge that has not yet been confirmed by the quorum.

    `error MergeNotConfirmed(uint256 taskId, uint256 nodeId, uint256 confirmations, uint256
    quorum)`, selector 0x06848eb3."""

    SELECTOR = bytes.fromhex("06848eb3")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
        ("confirmations", "uint256"),
        ("quorum", "uint256"),
    )


class MergeParentsMismatch(ContractRevert):
    """A confirmation named other parents than the merge was posted with.

    `error MergeParentsMismatch(uint256 taskId, uint256 nodeId)`, selector 0x4a835289."""

    SELECTOR = bytes.fromhex("4a835289")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
    )


class NotAMerge(ContractRevert):
    """The node is not a merge.

    `error NotAMerge(uint256 taskId, uint256 nodeId)`, selector 0xe9fa68d7."""

    SELECTOR = bytes.fromhex("e9fa68d7")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
    )


class NotEvaluator(ContractRevert):
    """Only one of the task's evaluators may do this.

    `error NotEvaluator(uint256 taskId, address caller)`, selector 0xf5998165."""

    SELECTOR = bytes.fromhex("f5998165")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("caller", "address"),
    )


class NotRefundable(ContractRevert):
    """Merges carry no deposit and get no refund.

    `error NotRefundable(uint256 taskId, uint256 nodeId)`, selector 0x201c8497."""

    SELECTOR = bytes.fromhex("201c8497")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("nodeId", "uint256"),
    )


class NotSponsor(ContractRevert):
    """Only the task's sponsor may do this.

    `error NotSponsor(uint256 taskId, address caller)`, selector 0x50339a90."""

    SELECTOR = bytes.fromhex("50339a90")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("caller", "address"),
    )


class NothingToReclaim(ContractRevert):
    """There is nothing left for the sponsor to reclaim right now.

    `error NothingToReclaim(uint256 taskId)`, selector 0x2d924c8b."""

    SELECTOR = bytes.fromhex("2d924c8b")
    ARGUMENTS = (("taskId", "uint256"),)


class PaymentFailed(ContractRevert):
    """An ETH transfer was refused by the recipient.

    `error PaymentFailed(address to, uint256 amount)`, selector 0xa09e6165."""

    SELECTOR = bytes.fromhex("a09e6165")
    ARGUMENTS = (
        ("to", "address"),
        ("amount", "uint256"),
    )


class ReentrancyGuardReentrantCall(ContractRevert):
    """A guarded function was re-entered (OpenZeppelin ReentrancyGuardTransient).

    `error ReentrancyGuardReentrantCall()`, selector 0x3ee5aeb5."""

    SELECTOR = bytes.fromhex("3ee5aeb5")


class RoundNotClosed(ContractRevert):
    """A merge of round `round` may be posted only after that round closed.

    `error RoundNotClosed(uint256 taskId, uint8 round, uint64 closes)`, selector 0x38450ce3."""

    SELECTOR = bytes.fromhex("38450ce3")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("round", "uint8"),
        ("closes", "uint64"),
    )


class RoundNotOpen(ContractRevert):
    """Submissions are accepted only while a round is open.

    `error RoundNotOpen(uint256 taskId, uint64 opens, uint64 closes)`, selector 0x28af5175."""

    SELECTOR = bytes.fromhex("28af5175")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("opens", "uint64"),
        ("closes", "uint64"),
    )


class SafeERC20FailedOperation(ContractRevert):
    """An ERC-20 transfer failed or returned false (OpenZeppelin SafeERC20).

    `error SafeERC20FailedOperation(address token)`, selector 0x5274afe7."""

    SELECTOR = bytes.fromhex("5274afe7")
    ARGUMENTS = (("token", "address"),)


class SponsorIsEvaluator(ContractRevert):
    """The sponsor cannot judge its own task.

    `error SponsorIsEvaluator(address sponsor)`, selector 0x9950ab40."""

    SELECTOR = bytes.fromhex("9950ab40")
    ARGUMENTS = (("sponsor", "address"),)


class StartInPast(ContractRevert):
    """A task's explicit start is before the block it is created in.

    `error StartInPast(uint256 start, uint256 timestamp)`, selector 0x5ba9375b."""

    SELECTOR = bytes.fromhex("5ba9375b")
    ARGUMENTS = (
        ("start", "uint256"),
        ("timestamp", "uint256"),
    )


class TokenNotAContract(ContractRevert):
    """A task's ERC-20 token address holds no code.

    `error TokenNotAContract(address token)`, selector 0xb7ce6911."""

    SELECTOR = bytes.fromhex("b7ce6911")
    ARGUMENTS = (("token", "address"),)


class TotalExceedsEscrow(ContractRevert):
    """A payout total larger than the task's escrow.

    `error TotalExceedsEscrow(uint256 taskId, uint256 total, uint256 escrow)`, selector
    0x144c51bb."""

    SELECTOR = bytes.fromhex("144c51bb")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("total", "uint256"),
        ("escrow", "uint256"),
    )


class UnknownTask(ContractRevert):
    """No task has this id.

    `error UnknownTask(uint256 taskId)`, selector 0x4899e043."""

    SELECTOR = bytes.fromhex("4899e043")
    ARGUMENTS = (("taskId", "uint256"),)


class WindowTooShort(ContractRevert):
    """A round or phase window shorter than the deployment's `minWindow`.

    `error WindowTooShort(uint256 window, uint256 minimum)`, selector 0xd118da70."""

    SELECTOR = bytes.fromhex("d118da70")
    ARGUMENTS = (
        ("window", "uint256"),
        ("minimum", "uint256"),
    )


class WrongPhase(PhaseRevert):
    """The task is not in a phase this call is allowed in; `allowed` has bit `p` set for each
    allowed `Phase` p (0 when no phase would allow it, e.g. a cancel after a reclaim).

    `error WrongPhase(uint256 taskId, Phase current, uint256 allowed)`, selector 0x83edede2."""

    SELECTOR = bytes.fromhex("83edede2")
    ARGUMENTS = (
        ("taskId", "uint256"),
        ("current", "uint8"),
        ("allowed", "uint256"),
    )


class WrongValue(ContractRevert):
    """The ETH sent does not match what the call requires.

    `error WrongValue(uint256 sent, uint256 required)`, selector 0x195a3ca1."""

    SELECTOR = bytes.fromhex("195a3ca1")
    ARGUMENTS = (
        ("sent", "uint256"),
        ("required", "uint256"),
    )


class ZeroBounty(ContractRevert):
    """A task's bounty is zero.

    `error ZeroBounty()`, selector 0xd60c4e6f."""

    SELECTOR = bytes.fromhex("d60c4e6f")


class ZeroRoundDuration(ContractRevert):
    """A task's rounds last zero seconds.

    `error ZeroRoundDuration()`, selector 0x06f66257."""

    SELECTOR = bytes.fromhex("06f66257")


class ZeroRounds(ContractRevert):
    """A task has no rounds.

    `error ZeroRounds()`, selector 0xcbc4e060."""

    SELECTOR = bytes.fromhex("cbc4e060")


class ZeroWindow(ContractRevert):
    """A task's reveal, evaluation or claim window is zero.

    `error ZeroWindow()`, selector 0x4acbbb65."""

    SELECTOR = bytes.fromhex("4acbbb65")


BY_SELECTOR: dict[bytes, type[ContractRevert]] = {
    cls.SELECTOR: cls
    for cls in (
        AlreadyClaimed,
        AlreadyConfirmed,
        AlreadyPosted,
        AlreadyRefunded,
        BadEvaluator,
        BadEvaluatorCount,
        BadQuorum,
        ChallengeWindowOpen,
        ClaimExceedsTotal,
        CommitmentMismatch,
        FeeOnTransferToken,
        HasSubmissions,
        InvalidMergeParents,
        InvalidParent,
        InvalidProof,
        InvalidSeedCount,
        JoinWindowClosed,
        MergeDigestMismatch,
        MergeNotConfirmed,
        MergeParentsMismatch,
        NotAMerge,
        NotEvaluator,
        NotRefundable,
        NotSponsor,
        NothingToReclaim,
        PaymentFailed,
        ReentrancyGuardReentrantCall,
        RoundNotClosed,
        RoundNotOpen,
        SafeERC20FailedOperation,
        SponsorIsEvaluator,
        StartInPast,
        TokenNotAContract,
        TotalExceedsEscrow,
        UnknownTask,
        WindowTooShort,
        WrongPhase,
        WrongValue,
        ZeroBounty,
        ZeroRoundDuration,
        ZeroRounds,
        ZeroWindow,
    )
}
