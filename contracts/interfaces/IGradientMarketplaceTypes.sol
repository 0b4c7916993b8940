// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The gradient marketplace's types: its phases, node kinds and the structs its calls
/// take and its views return
interface IGradientMarketplaceTypes {
    /// @notice Where a task is in its lifecycle (derived from stored times and flags).
    enum Phase {
        None,        // no such task
        Rounds,      // architectures and updates are accepted
        Reveal,      // rounds are over; waiting for the sponsor to reveal the validation set
        Evaluation,  // revealed; evaluators post payout roots
        Challenge,   // a root reached the quorum; after the challenge window anyone may finalize
        Claims,      // finalized: claims are open for claimWindow from finalization
        Closed,      // the claim period is over; the sponsor may reclaim the rest
        Unrevealed,  // the sponsor missed the reveal: kept updates share the bounty (see `refund`)
        Unsettled,   // no root reached the quorum in time: the same; deposits go back
        Cancelled    // cancelled before the rounds opened or before any submission
    }

    /// @notice What a node of the model DAG is.
    enum Kind {
        None,
        Architecture, // child of the root: a declarative model spec plus initial weights
        Update,       // one parent: trained by a data owner
        Merge         // several parents: an evaluator's aggregate of a round
    }

    /// @notice Parameters of `createTask`, one struct so the call stays readable.
    struct TaskParams {
        address token;            // address(0) for ETH, else an ERC-20
        uint128 bounty;           // escrowed at creation
        uint96 deposit;           // per submission, in the bounty's currency, refunded to valid ones
        bytes32 validationCommit; // keccak256(sha256(validation file) || salt)
        bytes32 specDigest;       // sha256 of the task spec JSON (recorded in the event)
        string specCid;           // IPFS CID of the task spec JSON (recorded in the event)
        uint40 start;             // the first round opens
        uint32 roundDuration;     // seconds per round
        uint8 rounds;             // number of rounds
        uint32 revealWindow;      // after the last round, for the sponsor's reveal
        uint32 evaluationWindow;  // after the reveal, for posting payout roots
        uint32 challengeWindow;   // after a root reaches the quorum, before it is final
        uint32 claimWindow;       // after the challenge window, for claims
        // Every window above and the round duration are at least `minWindow`.
        address[] evaluators;     // 1..MAX_EVALUATORS distinct accounts, never the sponsor
        uint8 quorum;             // a strict majority of the evaluators (1-of-1 allowed)
    }

    /// @notice A task as stored, plus the deadlines derived from it.
    struct TaskView {
        address sponsor;
        address token;
        uint128 bounty;
        uint96 deposit;
        uint40 start;
        uint32 roundDuration;
        uint8 rounds;
        uint8 evaluatorCount;
        uint8 quorum;
        uint32 nodeCount;
        uint32 submissionCount;
        bool revealed;
        bool finalized;
        bool cancelled;
        uint8 posted;             // bitmap of evaluators who posted a payout root
        uint40 agreedAt;          // when a root reached the quorum; 0 before
        uint40 finalizedAt;       // when the agreed root became final; 0 before
        uint32 revealWindow;
        uint32 evaluationWindow;
        uint32 challengeWindow;
        uint32 claimWindow;
        uint128 payoutTotal;
        uint128 claimed;
        uint128 reclaimed;
        bytes32 validationCommit;
        bytes32 payoutRoot;
        uint64 roundsEnd;
        uint64 revealDeadline;
        uint64 evaluationDeadline; // revealedAt + evaluationWindow; before the reveal, the latest it can be
        uint64 challengeEnd;      // while a root is agreed but not final; 0 before and after
        uint64 claimDeadline;     // 0 until the root is final
        uint256 escrow;           // bounty + deposits taken (submissions and joins)
        uint40 revealedAt;        // 0 until the reveal
        uint32 keptUpdates;       // updates kept in merges that reached the quorum
        uint32 sharesPaid;        // shares of a withheld bounty paid so far
        uint24 joinCount;         // secure aggregation joins (each paid the deposit)
    }

    /// @notice One node of the model DAG as stored (one slot; a merge has a second one).
    struct NodeView {
        address author;
        uint32 parent;            // the only parent of an update; a merge's first parent; 0 = root
        uint32 samples;           // declared training samples (a merge: their sum)
        uint8 round;
        Kind kind;
        uint8 confirmations;      // bitmap of evaluators who attested a merge's plaintext digest
        bytes32 plaintextDigest;  // merges only
        bool kept;                // an update that is a parent of a merge that reached the quorum
    }
}
