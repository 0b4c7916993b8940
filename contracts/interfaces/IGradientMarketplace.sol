// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The gradient marketplace: bounties, a model DAG, committed validation, Merkle payouts
/// @notice Storage holds only what the contract itself must check. Pointers to off-chain bytes
/// (IPFS CIDs, blob digests, the task spec) are recorded in events: they are as permanent as
/// storage and cost about 8 gas a byte instead of 22,100 a slot.
interface IGradientMarketplace {
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
        uint40 settledAt;         // when a root reached the quorum; once final, when it became final
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

    // ---------------------------------------------------------------- errors

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

    // ---------------------------------------------------------------- events

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

    // ---------------------------------------------------------------- calls

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

    // ---------------------------------------------------------------- views

    /// @notice The shortest round or phase window a task may set (fixed at deployment).
    function minWindow() external view returns (uint32);
    /// @notice How many tasks were created; task ids run from 1 to this.
    function taskCount() external view returns (uint256);
    /// @notice A task's parameters, ledger and derived deadlines (see `TaskView`); reverts
    /// `UnknownTask` for an id never created.
    function getTask(uint256 taskId) external view returns (TaskView memory);
    /// @notice A node of the task's model DAG, with whether it is a kept parent of a confirmed
    /// merge; reverts `InvalidParent` for a node that does not exist.
    function getNode(uint256 taskId, uint256 nodeId) external view returns (NodeView memory);
    /// @notice The task's evaluators, in the order their bits appear in `posted` and in a
    /// merge's `confirmations`; reverts `UnknownTask`.
    function evaluatorsOf(uint256 taskId) external view returns (address[] memory);
    /// @notice Where the task is in its lifecycle now; `Phase.None` for an unknown id.
    function phase(uint256 taskId) external view returns (Phase);
    /// @notice The round open now: 0 before the start, `rounds` once they are all over;
    /// reverts `UnknownTask`.
    function currentRound(uint256 taskId) external view returns (uint256);
    /// @notice Whether the payout leaf `index` of the task's root was claimed.
    function isClaimed(uint256 taskId, uint256 index) external view returns (bool);
    /// @notice Whether node `nodeId`'s deposit (and withheld-bounty share) was refunded.
    function isRefunded(uint256 taskId, uint256 nodeId) external view returns (bool);
    /// @notice The reputation `account` was credited by its claims, summed over all tasks.
    function reputationOf(address account) external view returns (uint256);
    /// @notice How many times `evaluator` posted a root other than the one finalized.
    function strikesOf(address evaluator) external view returns (uint256);
}
