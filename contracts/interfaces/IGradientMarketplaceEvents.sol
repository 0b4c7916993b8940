// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The gradient marketplace's events: the log the indexer and every role read
/// @notice Pointers to off-chain bytes (IPFS CIDs, blob digests, the task spec) live here, not
/// in storage: as permanent, at about 8 gas a byte instead of 22,100 a slot.
interface IGradientMarketplaceEvents {
    /// @notice Emitted when a task is created and its bounty escrowed.
    event TaskCreated(
        uint256 indexed taskId,
        address indexed sponsor,
        address indexed token,
        uint256 bounty,
        uint256 deposit,
        bytes32 validationCommit,
        bytes32 specDigest,
        string specCid,
        address[] evaluators,
        uint8 quorum
    );
    /// @notice Emitted when a data scientist proposed an architecture (a child of the root).
    event ArchitectureProposed(
        uint256 indexed taskId, uint256 indexed nodeId, address indexed author, uint256 round, bytes32 digest, string cid
    );
    /// @notice Emitted when a data owner submitted an update of `parent`.
    event UpdateSubmitted(
        uint256 indexed taskId,
        uint256 indexed nodeId,
        address indexed author,
        uint256 parent,
        uint256 round,
        uint256 samples,
        uint256 epsilon,
        bytes32 digest,
        string cid
    );
    /// @notice Emitted when a data owner joined a secure aggregation round on `base` with the
    /// X25519 key its pairwise masks are agreed with.
    event RoundJoined(uint256 indexed taskId, uint256 indexed round, address indexed account, uint256 base, bytes32 maskKey);
    /// @notice Emitted when a member of a secure aggregation group that submitted revealed its
    /// pairwise mask seeds with the members that did not, so the group's sum can still be opened.
    event MaskSeedsRevealed(uint256 indexed taskId, uint256 indexed round, address indexed account, uint256 base, bytes32[] seeds);
    /// @notice Emitted when an account registered its encryption public key for a task.
    event EncryptionKeyRegistered(uint256 indexed taskId, address indexed account, bytes32 publicKey);
    /// @notice Emitted when an evaluator posted the merge of a round.
    event MergePosted(
        uint256 indexed taskId,
        uint256 indexed nodeId,
        address indexed evaluator,
        uint256 round,
        uint32[] parents,
        uint256 samples,
        bytes32 digest,
        bytes32 plaintextDigest,
        string cid
    );
    /// @notice Emitted when an evaluator confirmed a merge's plaintext digest.
    event MergeConfirmed(uint256 indexed taskId, uint256 indexed nodeId, address indexed evaluator, uint256 confirmations);
    /// @notice Emitted when the sponsor revealed the validation set.
    event ValidationRevealed(uint256 indexed taskId, bytes32 fileDigest, bytes32 salt, string cid);
    /// @notice Emitted when an evaluator posted a payout root and its total.
    event PayoutRootPosted(
        uint256 indexed taskId,
        address indexed evaluator,
        bytes32 root,
        uint256 total,
        uint256 votes,
        string reportCid
    );
    /// @notice Emitted when a payout root reached the quorum.
    event PayoutRootAgreed(uint256 indexed taskId, bytes32 root, uint256 total);
    /// @notice Emitted when the agreed root became final.
    event TaskFinalized(uint256 indexed taskId, bytes32 root, uint256 total);
    /// @notice Emitted when an evaluator whose root lost the vote was recorded.
    event EvaluatorOverruled(uint256 indexed taskId, address indexed evaluator, uint256 strikes);
    /// @notice Emitted when `account` claimed `amount` and was credited `points` of reputation.
    event Claimed(uint256 indexed taskId, uint256 indexed index, address indexed account, uint256 amount, uint256 points);
    /// @notice Emitted when a node's author was refunded (its deposit, plus its share of a withheld bounty).
    event Refunded(uint256 indexed taskId, uint256 indexed nodeId, address indexed author, uint256 amount);
    /// @notice Emitted when the sponsor cancelled a task (before its rounds, or without submissions).
    event TaskCancelled(uint256 indexed taskId, uint256 refunded);
    /// @notice Emitted when the sponsor reclaimed what was not earned.
    event Reclaimed(uint256 indexed taskId, address indexed sponsor, uint256 amount);
}
