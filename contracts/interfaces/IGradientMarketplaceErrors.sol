// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGradientMarketplaceTypes} from "./IGradientMarketplaceTypes.sol";

/// @title The gradient marketplace's custom errors: each carries the values that refused the call
/// @dev `marketplace/chain/reverts.py` is generated from them (`scripts/gen_reverts.py`).
interface IGradientMarketplaceErrors is IGradientMarketplaceTypes {
    /// @dev No task has this id.
    error UnknownTask(uint256 taskId);
    /// @dev A task's bounty is zero.
    error ZeroBounty();
    /// @dev A task has no rounds.
    error ZeroRounds();
    /// @dev A task's rounds last zero seconds.
    error ZeroRoundDuration();
    /// @dev A task's reveal, evaluation or claim window is zero.
    error ZeroWindow();
    /// @dev A task names no evaluator, or more than `MAX_EVALUATORS`.
    error BadEvaluatorCount(uint256 count);
    /// @dev An evaluator is the zero address, or named twice.
    error BadEvaluator(address evaluator);
    /// @dev The quorum is not a strict majority of the `evaluators` (zero, or above their count).
    error BadQuorum(uint256 quorum, uint256 evaluators);
    /// @dev A task's explicit start is before the block it is created in.
    error StartInPast(uint256 start, uint256 timestamp);
    /// @dev A task's ERC-20 token address holds no code.
    error TokenNotAContract(address token);
    /// @dev The ETH sent does not match what the call requires.
    error WrongValue(uint256 sent, uint256 required);
    /// @dev The token delivered less than was transferred (fee-on-transfer tokens are refused).
    error FeeOnTransferToken(address token, uint256 expected, uint256 received);
    /// @dev Only the task's sponsor may do this.
    error NotSponsor(uint256 taskId, address caller);
    /// @dev Only one of the task's evaluators may do this.
    error NotEvaluator(uint256 taskId, address caller);
    /// @dev The task is not in a phase this call is allowed in; `allowed` has bit `p` set for
    /// each allowed `Phase` p (0 when no phase would allow it, e.g. a cancel after a reclaim).
    error WrongPhase(uint256 taskId, Phase current, uint256 allowed);
    /// @dev Submissions are accepted only while a round is open.
    error RoundNotOpen(uint256 taskId, uint64 opens, uint64 closes);
    /// @dev A merge of round `round` may be posted only after that round closed.
    error RoundNotClosed(uint256 taskId, uint8 round, uint64 closes);
    /// @dev The parent is not an existing node of this task that the new node may build on.
    error InvalidParent(uint256 taskId, uint256 parent);
    /// @dev A merge's parents must be 1..MAX_MERGE_PARENTS existing nodes, strictly increasing.
    error InvalidMergeParents(uint256 taskId, uint256 count);
    /// @dev The parent is a merge that has not yet been confirmed by the quorum.
    error MergeNotConfirmed(uint256 taskId, uint256 nodeId, uint256 confirmations, uint256 quorum);
    /// @dev The node is not a merge.
    error NotAMerge(uint256 taskId, uint256 nodeId);
    /// @dev The evaluator recomputed a different merge.
    error MergeDigestMismatch(uint256 taskId, uint256 nodeId, bytes32 posted, bytes32 confirmed);
    /// @dev This evaluator already confirmed this merge.
    error AlreadyConfirmed(uint256 taskId, uint256 nodeId, address evaluator);
    /// @dev The revealed file digest and salt do not match the commitment.
    error CommitmentMismatch(uint256 taskId, bytes32 commitment, bytes32 computed);
    /// @dev This evaluator already posted a payout root for the task.
    error AlreadyPosted(uint256 taskId, address evaluator);
    /// @dev A payout total larger than the task's escrow.
    error TotalExceedsEscrow(uint256 taskId, uint256 total, uint256 escrow);
    /// @dev The challenge window has not passed yet.
    error ChallengeWindowOpen(uint256 taskId, uint64 endsAt);
    /// @dev The leaf was already claimed.
    error AlreadyClaimed(uint256 taskId, uint256 index);
    /// @dev The Merkle proof does not prove this leaf under the task's final root.
    error InvalidProof(uint256 taskId, uint256 index);
    /// @dev Paying this claim would pass the posted total.
    error ClaimExceedsTotal(uint256 taskId, uint256 amount, uint256 remaining);
    /// @dev The task has submissions; it can no longer be cancelled.
    error HasSubmissions(uint256 taskId, uint256 submissions);
    /// @dev This node's refund was already paid.
    error AlreadyRefunded(uint256 taskId, uint256 nodeId);
    /// @dev Merges carry no deposit and get no refund.
    error NotRefundable(uint256 taskId, uint256 nodeId);
    /// @dev There is nothing left for the sponsor to reclaim right now.
    error NothingToReclaim(uint256 taskId);
    /// @dev An ETH transfer was refused by the recipient.
    error PaymentFailed(address to, uint256 amount);
    /// @notice A round's join window (its first half) is not open now.
    error JoinWindowClosed(uint256 taskId, uint64 opens, uint64 closes);
    /// @notice A list of mask seeds that is empty or longer than a round's group can be.
    error InvalidSeedCount(uint256 taskId, uint256 count);
    /// @dev A round or phase window shorter than the deployment's `minWindow`.
    error WindowTooShort(uint256 window, uint256 minimum);
    /// @dev The sponsor cannot judge its own task.
    error SponsorIsEvaluator(address sponsor);
    /// @dev A confirmation named other parents than the merge was posted with.
    error MergeParentsMismatch(uint256 taskId, uint256 nodeId);
}
