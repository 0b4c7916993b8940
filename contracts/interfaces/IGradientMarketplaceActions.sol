// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGradientMarketplaceTypes} from "./IGradientMarketplaceTypes.sol";

/// @title The gradient marketplace's state-changing calls, in the order of a task's lifecycle
interface IGradientMarketplaceActions is IGradientMarketplaceTypes {
    /// @notice Creates a task and escrows its bounty (ETH as `msg.value`, or an ERC-20 pulled
    /// with `transferFrom`). Out-of-range parameters revert with their own error (`ZeroBounty`,
    /// `ZeroRounds`, `ZeroRoundDuration`, `ZeroWindow`, `BadEvaluatorCount`, `BadEvaluator`,
    /// `BadQuorum`, `StartInPast`, `TokenNotAContract`); a window under `minWindow` reverts
    /// `WindowTooShort`; the sponsor among the evaluators, `SponsorIsEvaluator`.
    function createTask(TaskParams calldata params) external payable returns (uint256 taskId);

    /// @notice Proposes an architecture: a child of the root, while the rounds are not over.
    function proposeArchitecture(uint256 taskId, bytes32 digest, string calldata cid)
        external
        payable
        returns (uint256 nodeId);

    /// @notice Submits an update of `parent` in the open round. A non-zero `encryptionKey`
    /// registers the sender's X25519 public key for this task (send it with the first submission).
    /// `epsilon` declares the differential-privacy budget the update spent, in thousandths
    /// (0: trained without DP); it is recorded in the event, not checked.
    function submitUpdate(
        uint256 taskId,
        uint256 parent,
        uint32 samples,
        uint32 epsilon,
        bytes32 digest,
        bytes32 encryptionKey,
        string calldata cid
    ) external payable returns (uint256 nodeId);

    /// @notice Joins the open round's secure aggregation on `base` (during the round's first
    /// half), announcing the X25519 key the round's pairwise masks are agreed with, and paying
    /// the task's deposit. Who took part is read from the log; the contract only counts joins
    /// (their deposits are in the escrow). A settled root refunds a join's deposit when the
    /// joiner's sealed submission counted (or it was not admitted to a group), else it is
    /// forfeited; without a settled root join deposits join the withheld bounty's shares.
    function joinRound(uint256 taskId, uint256 base, bytes32 maskKey) external payable;

    /// @notice After round `round` closed: reveals the sender's pairwise mask seeds with the
    /// members of its group on `base` that did not submit (in their join order), so the key
    /// holder can take those masks out of the group's sum. Recorded in the event only.
    function revealMaskSeeds(uint256 taskId, uint8 round, uint256 base, bytes32[] calldata seeds) external;

    /// @notice Posts the merge of round `round` (an evaluator, after that round closed). It counts
    /// as the poster's confirmation; once the quorum confirmed it, its update parents are kept.
    function postMerge(
        uint256 taskId,
        uint8 round,
        uint32[] calldata parents,
        uint32 samples,
        bytes32 digest,
        bytes32 plaintextDigest,
        string calldata cid
    ) external returns (uint256 nodeId);

    /// @notice Confirms a merge another evaluator posted: the same plaintext digest from the same
    /// parents (which an honest evaluator recomputed bit for bit). The confirmation that reaches
    /// the quorum marks the merge's update parents as kept.
    function confirmMerge(uint256 taskId, uint256 nodeId, bytes32 plaintextDigest, uint32[] calldata parents)
        external;

    /// @notice Reveals the validation set: its digest and salt must match the commitment.
    function revealValidation(uint256 taskId, bytes32 fileDigest, bytes32 salt, string calldata cid) external;

    /// @notice Posts a payout root: a Merkle root of (index, account, amount, points) leaves.
    /// @param reportCid IPFS CID of the evaluator's payout report JSON (every leaf with its
    /// proof, every node's score): recorded in the event only, so claimants and verifiers
    /// need nothing but the chain and IPFS.
    function postPayoutRoot(uint256 taskId, bytes32 root, uint128 total, string calldata reportCid)
        external;

    /// @notice Makes the agreed root final once the challenge window passed; records the
    /// evaluators whose roots lost.
    function finalize(uint256 taskId) external;

    /// @notice Pays a leaf of the final root to `account` and adds to its reputation
    /// min(`points`, `amount`), or nothing if `account` is the task's sponsor or an evaluator:
    /// reputation is money someone else paid for verified gain.
    function claim(
        uint256 taskId,
        uint256 index,
        address account,
        uint256 amount,
        uint256 points,
        bytes32[] calldata proof
    ) external;

    /// @notice Refunds a submission outside a settled task: its deposit, plus, when the sponsor
    /// did not reveal or no root was agreed in time, one share of the bounty per update kept in a
    /// merge that reached the quorum (one share per submission if no merge did). Not in a
    /// cancelled task's share: there only deposits return.
    function refund(uint256 taskId, uint256 nodeId) external;

    /// @notice Cancels a task before its rounds open, or later while it has no submission, and
    /// refunds its bounty (not once a payout root was agreed or the bounty reclaimed). Deposits of
    /// early proposals return by `refund`.
    function cancelTask(uint256 taskId) external;

    /// @notice Sends the sponsor what was not earned (and, after the claim period, not claimed).
    function reclaim(uint256 taskId) external;
}
