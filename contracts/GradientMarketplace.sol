// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IGradientMarketplace} from "./interfaces/IGradientMarketplace.sol";
import {IGradientMarketplaceActions} from "./interfaces/IGradientMarketplaceActions.sol";
import {IGradientMarketplaceViews} from "./interfaces/IGradientMarketplaceViews.sol";

/// @title GradientMarketplace
/// @notice Escrows bounties, records the model DAG, commits to validation sets, settles payouts
/// by Merkle root (O(1) gas whatever the tree size) and keeps on-chain reputation.
/// @dev Money moves only by pull (`claim`, `refund`, `reclaim`, `cancelTask`), effects before
/// interactions, behind a transient reentrancy guard. No loop runs over an unbounded set: the
/// only loops are over a merge's parents (capped) and a task's evaluators (capped).
/// Once anything was submitted, the bounty can only leave through a settled root or, when the
/// sponsor or the evaluators withhold settlement, as shares to the authors of the updates kept
/// in confirmed merges: withholding never returns it to the sponsor.
contract GradientMarketplace is IGradientMarketplace, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using BitMaps for BitMaps.BitMap;

    uint256 public constant MAX_EVALUATORS = 8;
    uint256 public constant MAX_MERGE_PARENTS = 256;

    /// @inheritdoc IGradientMarketplaceViews
    uint32 public immutable minWindow;

    uint8 private constant REVEALED = 1;
    uint8 private constant FINALIZED = 2;
    uint8 private constant CANCELLED = 4;
    uint8 private constant RECLAIMED_UNALLOCATED = 8; // in Claims: escrow - payoutTotal
    uint8 private constant RECLAIMED_REST = 16;       // in Closed or Unsettled: all but the claims

    // The phases a call is allowed in, a bit per `Phase` value (the `allowed` of `WrongPhase`).
    uint256 private constant MERGING = (1 << uint256(Phase.Rounds)) | (1 << uint256(Phase.Reveal));
    uint256 private constant REVEALING = 1 << uint256(Phase.Reveal);
    uint256 private constant SETTLING = (1 << uint256(Phase.Evaluation)) | (1 << uint256(Phase.Challenge));
    uint256 private constant CHALLENGED = 1 << uint256(Phase.Challenge);
    uint256 private constant CLAIMING = 1 << uint256(Phase.Claims);
    uint256 private constant REFUNDING =
        (1 << uint256(Phase.Unrevealed)) | (1 << uint256(Phase.Unsettled)) | (1 << uint256(Phase.Cancelled));
    uint256 private constant CANCELLABLE = (1 << uint256(Phase.Rounds)) | (1 << uint256(Phase.Reveal))
        | (1 << uint256(Phase.Evaluation)) | (1 << uint256(Phase.Unrevealed)) | (1 << uint256(Phase.Unsettled));
    uint256 private constant RECLAIMING = (1 << uint256(Phase.Claims)) | (1 << uint256(Phase.Closed));

    struct Task {
        // slot 0: what every submission and every claim reads
        address sponsor;
        uint40 start;
        uint32 roundDuration;
        uint8 rounds;
        uint8 flags;            // REVEALED | FINALIZED | CANCELLED | RECLAIMED_*
        uint8 evaluatorCount;
        // slot 1: currency, the claim period, joins
        address token;          // address(0): ETH
        uint40 finalizedAt;     // the agreed root became final: claims run claimWindow from here
        uint32 claimWindow;
        uint24 joinCount;       // secure aggregation joins, each with a deposit
        // slot 2: escrow inputs, rewritten by every submission
        uint128 bounty;
        uint96 deposit;
        uint32 nodeCount;
        // slot 3: windows, the reveal, what a merge writes, the vote
        uint32 revealWindow;
        uint32 evaluationWindow;
        uint32 challengeWindow;
        uint32 mergeCount;      // submissions = nodeCount - mergeCount
        uint40 revealedAt;      // the evaluation window runs from here
        uint32 keptUpdates;     // updates kept in a merge that reached the quorum
        uint40 agreedAt;        // a root reached the quorum: the challenge window runs from here
        uint8 posted;           // bitmap of evaluators who posted a payout root
        uint8 quorum;
        // slot 4: the payout ledger (what the sponsor reclaimed is derived: `_reclaimed`)
        uint128 payoutTotal;
        uint128 claimed;
        // slot 5
        bytes32 validationCommit;
        // slot 6
        bytes32 payoutRoot;
        // slot 7: only a withheld bounty's refunds touch it (slots 0-6 are full)
        uint32 sharesPaid;      // withheld-bounty shares paid so far
    }

    struct Node {
        // slot 0
        address author;
        uint32 parent;          // an update's parent; a merge's first parent; 0 = the task root
        uint32 samples;
        uint8 round;
        Kind kind;
        uint8 confirmations;    // bitmap of evaluators who attested a merge's plaintext digest
        // slot 1: merges only
        bytes32 plaintextDigest;
    }

    /// @dev Starts at 1 so that the first task pays for a warm counter like every other one.
    uint256 private _nextTaskId = 1;
    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(uint256 nodeId => Node)) private _nodes;
    mapping(uint256 taskId => mapping(uint256 index => address)) private _evaluators;
    /// @dev keccak256(taskId, root, total) => bitmap of the evaluators who posted it.
    mapping(bytes32 vote => uint256) private _votes;
    /// @dev A bitmap is a mapping of 256-bit words: the same slots as the nested mappings it replaced.
    mapping(uint256 taskId => BitMaps.BitMap) private _claimed;
    mapping(uint256 taskId => BitMaps.BitMap) private _refunded;
    mapping(address account => uint256) private _reputation;
    mapping(address evaluator => uint256) private _strikes;
    /// @dev Parents of merges that reached the quorum, a bit per node: a withheld bounty's shares.
    mapping(uint256 taskId => BitMaps.BitMap) private _kept;
    /// @dev keccak256 of a merge's parents, for tasks whose quorum is above one (confirmations
    /// must name the same parents).
    mapping(uint256 taskId => mapping(uint256 nodeId => bytes32)) private _mergeParents;
    /// @dev What the open tasks hold of each ERC-20, in the units they were paid in: a payout
    /// is scaled by balance / held, so a rebase or a fee shifts every task alike, never one
    /// task's escrow into another's.
    mapping(address token => uint256) private _held;

    /// @param minimumWindow The shortest round and phase window a task may set, in seconds (an
    /// hour on a public chain; lower only on a devnet, whose clock the tests move).
    constructor(uint32 minimumWindow) {
        minWindow = minimumWindow;
    }

    // ------------------------------------------------------------------ external

    /// @inheritdoc IGradientMarketplaceActions
    function createTask(TaskParams calldata p) external payable nonReentrant returns (uint256 taskId) {
        _checkParams(p);
        uint40 start = p.start == 0 ? uint40(block.timestamp) : p.start;
        taskId = _nextTaskId++;
        Task storage t = _tasks[taskId];
        t.sponsor = msg.sender;
        t.start = start;
        t.roundDuration = p.roundDuration;
        t.rounds = p.rounds;
        t.quorum = p.quorum;
        t.token = p.token;
        t.claimWindow = p.claimWindow;
        t.evaluatorCount = uint8(p.evaluators.length);
        t.bounty = p.bounty;
        t.deposit = p.deposit;
        t.revealWindow = p.revealWindow;
        t.evaluationWindow = p.evaluationWindow;
        t.challengeWindow = p.challengeWindow;
        t.validationCommit = p.validationCommit;
        _setEvaluators(taskId, p.evaluators);
        emit TaskCreated(
            taskId, msg.sender, p.token, p.bounty, p.deposit, p.validationCommit, p.specDigest, p.specCid,
            p.evaluators, p.quorum
        );
        _collect(p.token, p.bounty);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function proposeArchitecture(uint256 taskId, bytes32 digest, string calldata cid)
        external
        payable
        nonReentrant
        returns (uint256 nodeId)
    {
        Task storage t = _existing(taskId);
        uint64 roundsEnd = _roundsEnd(t);
        if (block.timestamp >= roundsEnd || t.flags & CANCELLED != 0) {
            revert RoundNotOpen(taskId, t.start, roundsEnd);
        }
        // Safe cast: before the rounds end the round index is below `rounds`, a uint8.
        uint8 round = uint8(_roundOf(t, block.timestamp));
        nodeId = _addNode(t);
        _nodes[taskId][nodeId] = Node(msg.sender, 0, 0, round, Kind.Architecture, 0, bytes32(0));
        emit ArchitectureProposed(taskId, nodeId, msg.sender, round, digest, cid);
        _collect(t.token, t.deposit);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function submitUpdate(
        uint256 taskId,
        uint256 parent,
        uint32 samples,
        uint32 epsilon,
        bytes32 digest,
        bytes32 encryptionKey,
        string calldata cid
    ) external payable nonReentrant returns (uint256 nodeId) {
        Task storage t = _existing(taskId);
        uint64 roundsEnd = _roundsEnd(t);
        if (block.timestamp < t.start || block.timestamp >= roundsEnd || t.flags & CANCELLED != 0) {
            revert RoundNotOpen(taskId, t.start, roundsEnd);
        }
        if (parent == 0 || parent > t.nodeCount) revert InvalidParent(taskId, parent);
        Node storage p = _nodes[taskId][parent];
        if (p.kind == Kind.Merge) {
            uint256 confirmations = _popcount(p.confirmations);
            if (confirmations < t.quorum) revert MergeNotConfirmed(taskId, parent, confirmations, t.quorum);
        }
        // Safe cast: the round index is below `rounds`, a uint8.
        uint8 round = uint8(_roundOf(t, block.timestamp));
        nodeId = _addNode(t);
        _nodes[taskId][nodeId] = Node(msg.sender, uint32(parent), samples, round, Kind.Update, 0, bytes32(0));
        if (encryptionKey != bytes32(0)) emit EncryptionKeyRegistered(taskId, msg.sender, encryptionKey);
        emit UpdateSubmitted(taskId, nodeId, msg.sender, parent, round, samples, epsilon, digest, cid);
        _collect(t.token, t.deposit);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function joinRound(uint256 taskId, uint256 base, bytes32 maskKey) external payable nonReentrant {
        Task storage t = _existing(taskId);
        uint64 roundsEnd = _roundsEnd(t);
        if (block.timestamp < t.start || block.timestamp >= roundsEnd || t.flags & CANCELLED != 0) {
            revert RoundNotOpen(taskId, t.start, roundsEnd);
        }
        uint256 round = _roundOf(t, block.timestamp);
        // The masked set is fixed at the round's midpoint, so every miner seals against the same one.
        uint64 opens = _roundOpens(t, round);
        uint64 closes = opens + t.roundDuration / 2;
        if (block.timestamp >= closes) revert JoinWindowClosed(taskId, opens, closes);
        if (base == 0 || base > t.nodeCount) revert InvalidParent(taskId, base);
        ++t.joinCount; // checked: a task takes at most 2**24 - 1 joins
        emit RoundJoined(taskId, round, msg.sender, base, maskKey);
        _collect(t.token, t.deposit);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function revealMaskSeeds(uint256 taskId, uint8 round, uint256 base, bytes32[] calldata seeds) external {
        Task storage t = _existing(taskId);
        // A round past the last never closes.
        uint64 closes = round < t.rounds ? _roundOpens(t, uint256(round) + 1) : type(uint64).max;
        if (block.timestamp < closes) revert RoundNotClosed(taskId, round, closes);
        if (seeds.length == 0 || seeds.length > MAX_MERGE_PARENTS) revert InvalidSeedCount(taskId, seeds.length);
        emit MaskSeedsRevealed(taskId, round, msg.sender, base, seeds);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function postMerge(
        uint256 taskId,
        uint8 round,
        uint32[] calldata parents,
        uint32 samples,
        bytes32 digest,
        bytes32 plaintextDigest,
        string calldata cid
    ) external returns (uint256 nodeId) {
        Task storage t = _existing(taskId);
        _requirePhase(taskId, t, MERGING);
        uint256 bit = 1 << _evaluatorIndex(taskId, t, msg.sender);
        uint64 closes = _roundOpens(t, uint256(round) + 1);
        if (round >= t.rounds || block.timestamp < closes) revert RoundNotClosed(taskId, round, closes);
        uint256 count = parents.length;
        if (count == 0 || count > MAX_MERGE_PARENTS) revert InvalidMergeParents(taskId, count);
        uint256 nodeCount = t.nodeCount;
        uint256 previous;
        for (uint256 i; i < count; ++i) {
            uint256 id = parents[i];
            // Strictly increasing ids: no duplicates, and every parent exists and precedes the merge.
            if (id <= previous || id > nodeCount) revert InvalidParent(taskId, id);
            previous = id;
        }
        nodeId = _addNode(t);
        unchecked {
            ++t.mergeCount; // never above nodeCount, which _addNode bounds by uint32
        }
        _nodes[taskId][nodeId] =
            Node(msg.sender, parents[0], samples, round, Kind.Merge, uint8(bit), plaintextDigest);
        emit MergePosted(taskId, nodeId, msg.sender, round, parents, samples, digest, plaintextDigest, cid);
        if (t.quorum == 1) _keepParents(taskId, t, parents);
        else _mergeParents[taskId][nodeId] = keccak256(abi.encodePacked(parents));
    }

    /// @inheritdoc IGradientMarketplaceActions
    function confirmMerge(uint256 taskId, uint256 nodeId, bytes32 plaintextDigest, uint32[] calldata parents)
        external
    {
        Task storage t = _existing(taskId);
        // Like posting: until the reveal, so the kept set (a withheld bounty's shares) is final
        // before any share can be paid.
        _requirePhase(taskId, t, MERGING);
        uint256 bit = 1 << _evaluatorIndex(taskId, t, msg.sender);
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind != Kind.Merge) revert NotAMerge(taskId, nodeId);
        if (n.plaintextDigest != plaintextDigest) {
            revert MergeDigestMismatch(taskId, nodeId, n.plaintextDigest, plaintextDigest);
        }
        if (n.confirmations & bit != 0) revert AlreadyConfirmed(taskId, nodeId, msg.sender);
        if (_mergeParents[taskId][nodeId] != keccak256(abi.encodePacked(parents))) {
            revert MergeParentsMismatch(taskId, nodeId);
        }
        uint8 confirmations = n.confirmations | uint8(bit);
        n.confirmations = confirmations;
        uint256 count = _popcount(confirmations);
        emit MergeConfirmed(taskId, nodeId, msg.sender, count);
        if (count == t.quorum) _keepParents(taskId, t, parents);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function revealValidation(uint256 taskId, bytes32 fileDigest, bytes32 salt, string calldata cid) external {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        _requirePhase(taskId, t, REVEALING);
        bytes32 computed = keccak256(abi.encodePacked(fileDigest, salt));
        if (computed != t.validationCommit) revert CommitmentMismatch(taskId, t.validationCommit, computed);
        t.flags |= REVEALED;
        t.revealedAt = uint40(block.timestamp);
        emit ValidationRevealed(taskId, fileDigest, salt, cid);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function postPayoutRoot(uint256 taskId, bytes32 root, uint128 total, string calldata reportCid)
        external
    {
        Task storage t = _existing(taskId);
        _requirePhase(taskId, t, SETTLING);
        uint256 bit = 1 << _evaluatorIndex(taskId, t, msg.sender);
        if (t.posted & bit != 0) revert AlreadyPosted(taskId, msg.sender);
        uint256 escrow = _escrow(t);
        if (total > escrow) revert TotalExceedsEscrow(taskId, total, escrow);
        t.posted |= uint8(bit);
        uint256 votes = 1;
        if (t.quorum > 1) {
            bytes32 key = _voteKey(taskId, root, total);
            uint256 voters = _votes[key] | bit;
            _votes[key] = voters;
            votes = _popcount(voters);
        }
        emit PayoutRootPosted(taskId, msg.sender, root, total, votes, reportCid);
        // A quorum is a strict majority and each evaluator votes once, so at most one root gets here.
        if (t.agreedAt == 0 && votes >= t.quorum) {
            t.agreedAt = uint40(block.timestamp);
            t.payoutTotal = total;
            t.payoutRoot = root;
            emit PayoutRootAgreed(taskId, root, total);
        }
    }

    /// @inheritdoc IGradientMarketplaceActions
    function finalize(uint256 taskId) external {
        Task storage t = _existing(taskId);
        _requirePhase(taskId, t, CHALLENGED);
        uint64 endsAt = uint64(t.agreedAt) + t.challengeWindow;
        if (block.timestamp < endsAt) revert ChallengeWindowOpen(taskId, endsAt);
        t.flags |= FINALIZED;
        t.finalizedAt = uint40(block.timestamp);
        uint256 winners = t.quorum == 1 ? t.posted : _votes[_voteKey(taskId, t.payoutRoot, t.payoutTotal)];
        uint256 losers = t.posted & ~winners;
        for (uint256 i; losers != 0; ++i) {
            if (losers & (1 << i) != 0) {
                losers &= ~(1 << i);
                address evaluator = _evaluators[taskId][i];
                uint256 strikes = ++_strikes[evaluator];
                emit EvaluatorOverruled(taskId, evaluator, strikes);
            }
        }
        emit TaskFinalized(taskId, t.payoutRoot, t.payoutTotal);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function claim(
        uint256 taskId,
        uint256 index,
        address account,
        uint256 amount,
        uint256 points,
        bytes32[] calldata proof
    ) external nonReentrant {
        Task storage t = _tasks[taskId];
        _requirePhase(taskId, t, CLAIMING);
        // Marked now, checked below: a failed check reverts the mark with it.
        if (_markOnce(_claimed[taskId], index)) revert AlreadyClaimed(taskId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount, points))));
        if (!MerkleProof.verifyCalldata(proof, t.payoutRoot, leaf)) revert InvalidProof(taskId, index);
        uint256 remaining = t.payoutTotal - t.claimed;
        if (amount > remaining) revert ClaimExceedsTotal(taskId, amount, remaining);
        t.claimed += uint128(amount); // fits: amount <= remaining <= payoutTotal, a uint128
        uint256 credited = _reputationFor(taskId, t, account, amount, points);
        if (credited != 0) _reputation[account] += credited;
        emit Claimed(taskId, index, account, amount, credited);
        _pay(t.token, account, amount);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function refund(uint256 taskId, uint256 nodeId) external nonReentrant {
        Task storage t = _existing(taskId);
        Phase current = _requirePhase(taskId, t, REFUNDING);
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind != Kind.Architecture && n.kind != Kind.Update) revert NotRefundable(taskId, nodeId);
        if (_markOnce(_refunded[taskId], nodeId)) revert AlreadyRefunded(taskId, nodeId);
        uint256 amount = t.deposit;
        if (current != Phase.Cancelled) amount += _withheldShare(taskId, t, nodeId);
        address author = n.author;
        emit Refunded(taskId, nodeId, author, amount);
        _pay(t.token, author, amount);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function cancelTask(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        // Before the rounds open a stranger's proposal must not lock the bounty (its deposit is
        // refunded by `refund`); once they opened, work may have been done on it.
        if (t.nodeCount != 0 && block.timestamp >= t.start) {
            revert HasSubmissions(taskId, t.nodeCount - t.mergeCount);
        }
        // Without submissions a root can still be posted: once one was agreed (or the bounty
        // reclaimed, which leaves the task Unsettled: no phase then allows a cancel) the bounty
        // is accounted for, and cancelling would pay it twice. The same as
        // `_requirePhase(CANCELLABLE)` read from the flags alone, 768 gas cheaper than the phase.
        if (t.flags & (CANCELLED | RECLAIMED_REST) != 0 || t.agreedAt != 0) {
            revert WrongPhase(taskId, _phase(t), t.flags & RECLAIMED_REST != 0 ? 0 : CANCELLABLE);
        }
        uint128 amount = t.bounty;
        t.flags |= CANCELLED;
        emit TaskCancelled(taskId, amount);
        _pay(t.token, msg.sender, amount);
    }

    /// @inheritdoc IGradientMarketplaceActions
    function reclaim(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        // Unrevealed or Unsettled after submissions: the bounty goes to them by `refund`.
        uint256 allowed = t.nodeCount == 0 ? RECLAIMING | (1 << uint256(Phase.Unsettled)) : RECLAIMING;
        Phase current = _requirePhase(taskId, t, allowed);
        uint256 owed;
        uint8 flag = RECLAIMED_REST;
        if (current == Phase.Claims) {
            owed = _escrow(t) - t.payoutTotal; // what the root did not allocate
            flag = RECLAIMED_UNALLOCATED;
        } else if (current == Phase.Closed) {
            owed = _escrow(t) - t.claimed; // plus what was allocated but not claimed in time
        } else {
            owed = t.bounty; // nobody worked (escrow = bounty, claimed = 0): the bounty returns
        }
        uint256 amount = owed - _reclaimed(t);
        if (amount == 0) revert NothingToReclaim(taskId);
        t.flags |= flag;
        emit Reclaimed(taskId, msg.sender, amount);
        _pay(t.token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IGradientMarketplaceViews
    function taskCount() external view returns (uint256) {
        return _nextTaskId - 1;
    }

    /// @inheritdoc IGradientMarketplaceViews
    function getTask(uint256 taskId) external view returns (TaskView memory v) {
        Task storage t = _existing(taskId);
        v.sponsor = t.sponsor;
        v.token = t.token;
        v.bounty = t.bounty;
        v.deposit = t.deposit;
        v.start = t.start;
        v.roundDuration = t.roundDuration;
        v.rounds = t.rounds;
        v.evaluatorCount = t.evaluatorCount;
        v.quorum = t.quorum;
        v.nodeCount = t.nodeCount;
        v.submissionCount = t.nodeCount - t.mergeCount;
        v.revealed = t.flags & REVEALED != 0;
        v.finalized = t.flags & FINALIZED != 0;
        v.cancelled = t.flags & CANCELLED != 0;
        v.posted = t.posted;
        v.agreedAt = t.agreedAt;
        v.finalizedAt = t.finalizedAt;
        v.revealWindow = t.revealWindow;
        v.evaluationWindow = t.evaluationWindow;
        v.challengeWindow = t.challengeWindow;
        v.claimWindow = t.claimWindow;
        v.payoutTotal = t.payoutTotal;
        v.claimed = t.claimed;
        v.reclaimed = uint128(_reclaimed(t)); // at most the escrow, bounty plus deposits
        v.validationCommit = t.validationCommit;
        v.payoutRoot = t.payoutRoot;
        v.roundsEnd = _roundsEnd(t);
        v.revealDeadline = v.roundsEnd + t.revealWindow;
        // From the reveal; before it, the latest it can be.
        v.evaluationDeadline = (v.revealed ? uint64(t.revealedAt) : v.revealDeadline) + t.evaluationWindow;
        if (v.finalized) v.claimDeadline = uint64(t.finalizedAt) + t.claimWindow;
        else if (t.agreedAt != 0) v.challengeEnd = uint64(t.agreedAt) + t.challengeWindow;
        v.escrow = _escrow(t);
        v.revealedAt = t.revealedAt;
        v.keptUpdates = t.keptUpdates;
        v.sharesPaid = t.sharesPaid;
        v.joinCount = t.joinCount;
    }

    /// @inheritdoc IGradientMarketplaceViews
    function getNode(uint256 taskId, uint256 nodeId) external view returns (NodeView memory) {
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind == Kind.None) revert InvalidParent(taskId, nodeId);
        bool kept = _kept[taskId].get(nodeId);
        return NodeView(n.author, n.parent, n.samples, n.round, n.kind, n.confirmations, n.plaintextDigest, kept);
    }

    /// @inheritdoc IGradientMarketplaceViews
    function evaluatorsOf(uint256 taskId) external view returns (address[] memory evaluators) {
        Task storage t = _existing(taskId);
        evaluators = new address[](t.evaluatorCount);
        for (uint256 i; i < evaluators.length; ++i) {
            evaluators[i] = _evaluators[taskId][i];
        }
    }

    /// @inheritdoc IGradientMarketplaceViews
    function phase(uint256 taskId) external view returns (Phase) {
        return _phase(_tasks[taskId]);
    }

    /// @inheritdoc IGradientMarketplaceViews
    function currentRound(uint256 taskId) external view returns (uint256) {
        Task storage t = _existing(taskId);
        return Math.min(_roundOf(t, block.timestamp), t.rounds);
    }

    /// @inheritdoc IGradientMarketplaceViews
    function isClaimed(uint256 taskId, uint256 index) external view returns (bool) {
        return _claimed[taskId].get(index);
    }

    /// @inheritdoc IGradientMarketplaceViews
    function isRefunded(uint256 taskId, uint256 nodeId) external view returns (bool) {
        return _refunded[taskId].get(nodeId);
    }

    /// @inheritdoc IGradientMarketplaceViews
    function reputationOf(address account) external view returns (uint256) {
        return _reputation[account];
    }

    /// @inheritdoc IGradientMarketplaceViews
    function strikesOf(address evaluator) external view returns (uint256) {
        return _strikes[evaluator];
    }

    // ------------------------------------------------------------------ internal

    function _checkParams(TaskParams calldata p) internal view {
        if (p.bounty == 0) revert ZeroBounty();
        if (p.rounds == 0) revert ZeroRounds();
        if (p.roundDuration == 0) revert ZeroRoundDuration();
        if (p.revealWindow == 0 || p.evaluationWindow == 0 || p.claimWindow == 0) revert ZeroWindow();
        uint256 shortest = Math.min(
            Math.min(p.roundDuration, p.revealWindow),
            Math.min(Math.min(p.evaluationWindow, p.challengeWindow), p.claimWindow)
        );
        if (shortest < minWindow) revert WindowTooShort(shortest, minWindow);
        uint256 n = p.evaluators.length;
        if (n == 0 || n > MAX_EVALUATORS) revert BadEvaluatorCount(n);
        for (uint256 i; i < n; ++i) {
            if (p.evaluators[i] == address(0)) revert BadEvaluator(address(0));
            if (p.evaluators[i] == msg.sender) revert SponsorIsEvaluator(msg.sender);
            for (uint256 j; j < i; ++j) {
                if (p.evaluators[i] == p.evaluators[j]) revert BadEvaluator(p.evaluators[i]);
            }
        }
        // A strict majority: two different roots can never both reach it.
        if (p.quorum == 0 || p.quorum > n || 2 * uint256(p.quorum) <= n) revert BadQuorum(p.quorum, n);
        if (p.start != 0 && p.start < block.timestamp) revert StartInPast(p.start, block.timestamp);
        if (p.token != address(0) && p.token.code.length == 0) revert TokenNotAContract(p.token);
    }

    function _existing(uint256 taskId) internal view returns (Task storage t) {
        t = _tasks[taskId];
        if (t.sponsor == address(0)) revert UnknownTask(taskId);
    }

    /// @dev Checked arithmetic: past 2**32 - 1 nodes a task panics rather than wrap.
    function _addNode(Task storage t) internal returns (uint256 nodeId) {
        uint32 id = t.nodeCount + 1;
        t.nodeCount = id;
        return id;
    }

    function _evaluatorIndex(uint256 taskId, Task storage t, address account) internal view returns (uint256) {
        uint256 n = t.evaluatorCount;
        for (uint256 i; i < n; ++i) {
            if (_evaluators[taskId][i] == account) return i;
        }
        revert NotEvaluator(taskId, account);
    }

    /// @dev The one place a task's evaluator set is written, so that how evaluators are chosen can
    /// change without touching the calls that check them (`_evaluatorIndex`).
    function _setEvaluators(uint256 taskId, address[] calldata evaluators) internal {
        for (uint256 i; i < evaluators.length; ++i) {
            _evaluators[taskId][i] = evaluators[i];
        }
    }

    /// @dev Marks the parents of a merge that just reached the quorum as kept: each holds one share
    /// of the bounty if settlement is withheld. Parents are strictly increasing (`postMerge`
    /// checked them; a confirmation names the same ones), so neighbours share a bitmap word and
    /// each word is written once. An honest quorum merges only updates; a merge kept as a parent
    /// (which only a dishonest quorum would post) holds a share nobody can refund.
    function _keepParents(uint256 taskId, Task storage t, uint32[] calldata parents) internal {
        // Word by word, which `BitMaps.set` (a bit at a time) cannot do.
        mapping(uint256 word => uint256) storage words = _kept[taskId]._data;
        uint256 added;
        uint256 count = parents.length;
        for (uint256 i; i < count;) {
            uint256 word = uint256(parents[i]) >> 8;
            uint256 mask;
            for (; i < count && uint256(parents[i]) >> 8 == word; ++i) {
                mask |= 1 << (parents[i] & 0xff);
            }
            uint256 stored = words[word];
            added += _popcount(mask & ~stored);
            words[word] = stored | mask;
        }
        t.keptUpdates += uint32(added); // checked: at most nodeCount, a uint32
    }

    /// @dev A submission's share of a withheld bounty: with kept submissions, one share each
    /// (others get none); with none, one per submission. Shares are paid in order and the k-th is
    /// floor(B(k+1)/N) - floor(Bk/N), so together they are exactly B: no dust is stranded. The
    /// kept set is final by then: merges are posted and confirmed only until the reveal. B is the
    /// bounty plus the join deposits: without a settled root nobody judged which joins were
    /// followed by a well-formed submission, so all of them are forfeited to the shares.
    function _withheldShare(uint256 taskId, Task storage t, uint256 nodeId) internal returns (uint256) {
        uint256 shares = t.keptUpdates;
        if (shares == 0) shares = t.nodeCount - t.mergeCount;
        else if (!_kept[taskId].get(nodeId)) return 0;
        uint256 k = t.sharesPaid;
        t.sharesPaid = uint32(k + 1); // k < shares, a uint32
        uint256 pool = uint256(t.bounty) + uint256(t.deposit) * t.joinCount;
        return (pool * (k + 1)) / shares - (pool * k) / shares;
    }

    /// @dev Reputation is money someone else paid for verified gain: at most the leaf's amount,
    /// and nothing to the task's sponsor or to its evaluators, who posted the root.
    function _reputationFor(uint256 taskId, Task storage t, address account, uint256 amount, uint256 points)
        internal
        view
        returns (uint256)
    {
        if (points == 0 || account == t.sponsor) return 0;
        uint256 n = t.evaluatorCount;
        for (uint256 i; i < n; ++i) {
            if (_evaluators[taskId][i] == account) return 0;
        }
        return Math.min(points, amount);
    }

    function _phase(Task storage t) internal view returns (Phase) {
        if (t.sponsor == address(0)) return Phase.None;
        uint8 flags = t.flags;
        if (flags & CANCELLED != 0) return Phase.Cancelled;
        if (flags & FINALIZED != 0) {
            return block.timestamp < uint256(t.finalizedAt) + t.claimWindow ? Phase.Claims : Phase.Closed;
        }
        if (t.agreedAt != 0) return Phase.Challenge;
        uint256 roundsEnd = _roundsEnd(t);
        if (block.timestamp < roundsEnd) return Phase.Rounds;
        uint256 revealDeadline = roundsEnd + t.revealWindow;
        if (flags & REVEALED == 0) return block.timestamp < revealDeadline ? Phase.Reveal : Phase.Unrevealed;
        return block.timestamp < uint256(t.revealedAt) + t.evaluationWindow ? Phase.Evaluation : Phase.Unsettled;
    }

    /// @dev The one phase check: reverts unless the task's phase is in `allowed` (a bit per
    /// `Phase` value, as OpenZeppelin Governor's `_validateStateBitmap`), and returns it.
    function _requirePhase(uint256 taskId, Task storage t, uint256 allowed) internal view returns (Phase current) {
        current = _phase(t);
        if (allowed & (1 << uint256(current)) == 0) revert WrongPhase(taskId, current, allowed);
    }

    // The round schedule, written once (`marketplace/rules/schedule.py` mirrors it): round r opens at
    // start + r * roundDuration and closes when round r + 1 opens; the rounds end when round
    // `rounds` would open. Unchecked, as the bounds hold: start < 2**40, every caller's r <= 256,
    // duration < 2**32 (nonzero: `_checkParams`), so the sum fits a uint64.

    /// @dev The round `timestamp` falls in: 0 before the start, `rounds` or more after the end.
    function _roundOf(Task storage t, uint256 timestamp) internal view returns (uint256) {
        uint256 start = t.start;
        if (timestamp < start) return 0;
        unchecked {
            return (timestamp - start) / t.roundDuration;
        }
    }

    function _roundOpens(Task storage t, uint256 round) internal view returns (uint64) {
        unchecked {
            return uint64(t.start + round * t.roundDuration);
        }
    }

    function _roundsEnd(Task storage t) internal view returns (uint64) {
        return _roundOpens(t, t.rounds);
    }

    /// @dev What the sponsor has taken back so far, from the flags its withdrawals set.
    function _reclaimed(Task storage t) internal view returns (uint256) {
        uint8 flags = t.flags;
        if (flags & CANCELLED != 0) return t.bounty;
        if (flags & RECLAIMED_REST != 0) return _escrow(t) - t.claimed;
        if (flags & RECLAIMED_UNALLOCATED != 0) return _escrow(t) - t.payoutTotal;
        return 0;
    }

    function _escrow(Task storage t) internal view returns (uint256) {
        return uint256(t.bounty) + uint256(t.deposit) * (t.nodeCount - t.mergeCount + t.joinCount);
    }

    /// @dev Sets bit `index` and returns whether it was set already: the word is read once, where
    /// `BitMaps.get` then `BitMaps.set` would read it twice (about 100 gas more per claim).
    function _markOnce(BitMaps.BitMap storage bitmap, uint256 index) internal returns (bool wasSet) {
        mapping(uint256 bucket => uint256) storage words = bitmap._data;
        uint256 word = words[index >> 8];
        uint256 mask = 1 << (index & 0xff);
        if (word & mask != 0) return true;
        words[index >> 8] = word | mask;
    }

    function _voteKey(uint256 taskId, bytes32 root, uint256 total) internal pure returns (bytes32) {
        return keccak256(abi.encode(taskId, root, total));
    }

    /// @dev Takes `amount` from the sender: exactly `msg.value` for ETH, or an ERC-20 transfer
    /// that must arrive in full.
    function _collect(address token, uint256 amount) internal {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongValue(msg.value, amount);
            return;
        }
        if (msg.value != 0) revert WrongValue(msg.value, 0);
        if (amount == 0) return;
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received != amount) revert FeeOnTransferToken(token, amount, received);
        _held[token] += amount;
    }

    function _pay(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert PaymentFailed(to, amount);
        } else {
            // Scaled by what the token's balance is now worth per unit the tasks hold.
            uint256 held = _held[token];
            uint256 value = Math.mulDiv(amount, IERC20(token).balanceOf(address(this)), held);
            _held[token] = held - amount;
            IERC20(token).safeTransfer(to, value);
        }
    }

    function _popcount(uint256 x) internal pure returns (uint256 count) {
        // One iteration per set bit: at most MAX_EVALUATORS, or a merge's parents (bounded).
        while (x != 0) {
            x &= x - 1;
            unchecked {
                ++count;
            }
        }
    }
}
