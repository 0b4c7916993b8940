// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IGradientMarketplace} from "./interfaces/IGradientMarketplace.sol";

/// @title GradientMarketplace
/// @notice Escrows bounties, records the model DAG, commits to validation sets, settles payouts
/// by Merkle root (O(1) gas whatever the tree size) and keeps on-chain reputation.
/// @dev Money moves only by pull (`claim`, `refund`, `reclaim`, `cancelTask`), effects before
/// interactions, behind a transient reentrancy guard. No loop runs over an unbounded set: the
/// only loops are over a merge's parents (capped) and a task's evaluators (capped).
contract GradientMarketplace is IGradientMarketplace, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    uint256 public constant MAX_EVALUATORS = 8;
    uint256 public constant MAX_MERGE_PARENTS = 256;

    uint8 private constant REVEALED = 1;
    uint8 private constant FINALIZED = 2;
    uint8 private constant CANCELLED = 4;

    struct Task {
        // slot 0: what every submission reads
        address sponsor;
        uint40 start;
        uint32 roundDuration;
        uint8 rounds;
        uint8 quorum;
        // slot 1: currency and settlement state
        address token;          // address(0): ETH
        uint40 settledAt;       // a root reached the quorum; finalize overwrites it with its own time
        uint32 claimWindow;
        uint8 evaluatorCount;
        uint8 posted;           // bitmap of evaluators who posted a payout root
        uint8 flags;            // REVEALED | FINALIZED | CANCELLED
        // slot 2: escrow inputs, rewritten by every submission
        uint128 bounty;
        uint96 deposit;
        uint32 nodeCount;
        // slot 3: windows and the sponsor's withdrawals
        uint32 revealWindow;
        uint32 evaluationWindow;
        uint32 challengeWindow;
        uint32 mergeCount;      // submissions = nodeCount - mergeCount
        uint128 reclaimed;
        // slot 4: the payout ledger
        uint128 payoutTotal;
        uint128 claimed;
        // slot 5
        bytes32 validationCommit;
        // slot 6
        bytes32 payoutRoot;
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
    mapping(uint256 taskId => mapping(uint256 word => uint256)) private _claimedWords;
    mapping(uint256 taskId => mapping(uint256 word => uint256)) private _refundedWords;
    mapping(address account => uint256) private _reputation;
    mapping(address evaluator => uint256) private _strikes;

    // ------------------------------------------------------------------ external

    /// @inheritdoc IGradientMarketplace
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
        for (uint256 i; i < p.evaluators.length; ++i) {
            _evaluators[taskId][i] = p.evaluators[i];
        }
        emit TaskCreated(
            taskId, msg.sender, p.token, p.bounty, p.deposit, p.validationCommit, p.specDigest, p.specCid,
            p.evaluators, p.quorum
        );
        _collect(p.token, p.bounty);
    }

    /// @inheritdoc IGradientMarketplace
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
        uint8 round = block.timestamp < t.start ? 0 : uint8((block.timestamp - t.start) / t.roundDuration);
        nodeId = _addNode(t);
        _nodes[taskId][nodeId] = Node(msg.sender, 0, 0, round, Kind.Architecture, 0, bytes32(0));
        emit ArchitectureProposed(taskId, nodeId, msg.sender, round, digest, cid);
        _collect(t.token, t.deposit);
    }

    /// @inheritdoc IGradientMarketplace
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
        uint8 round = uint8((block.timestamp - t.start) / t.roundDuration);
        nodeId = _addNode(t);
        _nodes[taskId][nodeId] = Node(msg.sender, uint32(parent), samples, round, Kind.Update, 0, bytes32(0));
        if (encryptionKey != bytes32(0)) emit EncryptionKeyRegistered(taskId, msg.sender, encryptionKey);
        emit UpdateSubmitted(taskId, nodeId, msg.sender, parent, round, samples, epsilon, digest, cid);
        _collect(t.token, t.deposit);
    }

    /// @inheritdoc IGradientMarketplace
    function joinRound(uint256 taskId, uint256 base, bytes32 maskKey) external {
        Task storage t = _existing(taskId);
        uint64 roundsEnd = _roundsEnd(t);
        if (block.timestamp < t.start || block.timestamp >= roundsEnd || t.flags & CANCELLED != 0) {
            revert RoundNotOpen(taskId, t.start, roundsEnd);
        }
        uint256 round = (block.timestamp - t.start) / t.roundDuration;
        // The masked set is fixed at the round's midpoint, so every miner seals against the same one.
        uint64 opens = uint64(t.start) + uint64(round) * t.roundDuration;
        uint64 closes = opens + t.roundDuration / 2;
        if (block.timestamp >= closes) revert JoinWindowClosed(taskId, opens, closes);
        if (base == 0 || base > t.nodeCount) revert InvalidParent(taskId, base);
        emit RoundJoined(taskId, round, msg.sender, base, maskKey);
    }

    /// @inheritdoc IGradientMarketplace
    function revealMaskSeeds(uint256 taskId, uint8 round, uint256 base, bytes32[] calldata seeds) external {
        Task storage t = _existing(taskId);
        // A round past the last never closes.
        uint64 closes = round < t.rounds ? uint64(t.start) + (uint64(round) + 1) * t.roundDuration : type(uint64).max;
        if (block.timestamp < closes) revert RoundNotClosed(taskId, round, closes);
        if (seeds.length == 0 || seeds.length > MAX_MERGE_PARENTS) revert InvalidSeedCount(taskId, seeds.length);
        emit MaskSeedsRevealed(taskId, round, msg.sender, base, seeds);
    }

    /// @inheritdoc IGradientMarketplace
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
        Phase current = _phase(t);
        if (current != Phase.Rounds && current != Phase.Reveal) revert WrongPhase(taskId, current);
        uint256 bit = 1 << _evaluatorIndex(taskId, t, msg.sender);
        uint64 closes = uint64(t.start) + (uint64(round) + 1) * t.roundDuration;
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
    }

    /// @inheritdoc IGradientMarketplace
    function confirmMerge(uint256 taskId, uint256 nodeId, bytes32 plaintextDigest) external {
        Task storage t = _existing(taskId);
        uint256 bit = 1 << _evaluatorIndex(taskId, t, msg.sender);
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind != Kind.Merge) revert NotAMerge(taskId, nodeId);
        if (n.plaintextDigest != plaintextDigest) {
            revert MergeDigestMismatch(taskId, nodeId, n.plaintextDigest, plaintextDigest);
        }
        if (n.confirmations & bit != 0) revert AlreadyConfirmed(taskId, nodeId, msg.sender);
        uint8 confirmations = n.confirmations | uint8(bit);
        n.confirmations = confirmations;
        emit MergeConfirmed(taskId, nodeId, msg.sender, _popcount(confirmations));
    }

    /// @inheritdoc IGradientMarketplace
    function revealValidation(uint256 taskId, bytes32 fileDigest, bytes32 salt, string calldata cid) external {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        Phase current = _phase(t);
        if (current != Phase.Reveal) revert WrongPhase(taskId, current);
        bytes32 computed = keccak256(abi.encodePacked(fileDigest, salt));
        if (computed != t.validationCommit) revert CommitmentMismatch(taskId, t.validationCommit, computed);
        t.flags |= REVEALED;
        emit ValidationRevealed(taskId, fileDigest, salt, cid);
    }

    /// @inheritdoc IGradientMarketplace
    function postPayoutRoot(uint256 taskId, bytes32 root, uint128 total, string calldata reportCid)
        external
    {
        Task storage t = _existing(taskId);
        Phase current = _phase(t);
        if (current != Phase.Evaluation && current != Phase.Challenge) revert WrongPhase(taskId, current);
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
        if (t.settledAt == 0 && votes >= t.quorum) {
            t.settledAt = uint40(block.timestamp);
            t.payoutTotal = total;
            t.payoutRoot = root;
            emit PayoutRootAgreed(taskId, root, total);
        }
    }

    /// @inheritdoc IGradientMarketplace
    function finalize(uint256 taskId) external {
        Task storage t = _existing(taskId);
        Phase current = _phase(t);
        if (current != Phase.Challenge) revert WrongPhase(taskId, current);
        uint64 endsAt = uint64(t.settledAt) + t.challengeWindow;
        if (block.timestamp < endsAt) revert ChallengeWindowOpen(taskId, endsAt);
        t.flags |= FINALIZED;
        t.settledAt = uint40(block.timestamp);
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

    /// @inheritdoc IGradientMarketplace
    function claim(
        uint256 taskId,
        uint256 index,
        address account,
        uint256 amount,
        uint256 points,
        bytes32[] calldata proof
    ) external nonReentrant {
        Task storage t = _tasks[taskId];
        Phase current = _phase(t);
        if (current != Phase.Claims) revert WrongPhase(taskId, current);
        (uint256 word, uint256 mask) = (index >> 8, 1 << (index & 0xff));
        uint256 claimedWord = _claimedWords[taskId][word];
        if (claimedWord & mask != 0) revert AlreadyClaimed(taskId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount, points))));
        if (!MerkleProof.verifyCalldata(proof, t.payoutRoot, leaf)) revert InvalidProof(taskId, index);
        uint256 remaining = t.payoutTotal - t.claimed;
        if (amount > remaining) revert ClaimExceedsTotal(taskId, amount, remaining);
        _claimedWords[taskId][word] = claimedWord | mask;
        t.claimed += uint128(amount); // fits: amount <= remaining <= payoutTotal, a uint128
        if (points != 0) _reputation[account] += points;
        emit Claimed(taskId, index, account, amount, points);
        _pay(t.token, account, amount);
    }

    /// @inheritdoc IGradientMarketplace
    function refund(uint256 taskId, uint256 nodeId) external nonReentrant {
        Task storage t = _existing(taskId);
        Phase current = _phase(t);
        if (current != Phase.Unrevealed && current != Phase.Unsettled) revert WrongPhase(taskId, current);
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind != Kind.Architecture && n.kind != Kind.Update) revert NotRefundable(taskId, nodeId);
        (uint256 word, uint256 mask) = (nodeId >> 8, 1 << (nodeId & 0xff));
        uint256 refundedWord = _refundedWords[taskId][word];
        if (refundedWord & mask != 0) revert AlreadyRefunded(taskId, nodeId);
        _refundedWords[taskId][word] = refundedWord | mask;
        uint256 amount = t.deposit;
        // A sponsor who withheld the validation set shares the bounty equally per submission;
        // every submission carried the same deposit, so this is pro rata to deposits.
        if (current == Phase.Unrevealed) amount += t.bounty / (t.nodeCount - t.mergeCount);
        address author = n.author;
        emit Refunded(taskId, nodeId, author, amount);
        _pay(t.token, author, amount);
    }

    /// @inheritdoc IGradientMarketplace
    function cancelTask(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        if (t.nodeCount != 0) revert HasSubmissions(taskId, t.nodeCount - t.mergeCount);
        // Without submissions a root can still be posted (and the bounty reclaimed when none is
        // agreed): once either happened, the bounty is accounted for and cancelling would pay it twice.
        if (t.flags & CANCELLED != 0 || t.settledAt != 0 || t.reclaimed != 0) {
            revert WrongPhase(taskId, _phase(t));
        }
        uint128 amount = t.bounty;
        t.flags |= CANCELLED;
        t.reclaimed = amount;
        emit TaskCancelled(taskId, amount);
        _pay(t.token, msg.sender, amount);
    }

    /// @inheritdoc IGradientMarketplace
    function reclaim(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.sponsor) revert NotSponsor(taskId, msg.sender);
        Phase current = _phase(t);
        uint256 owed;
        if (current == Phase.Claims) {
            owed = _escrow(t) - t.payoutTotal; // what the root did not allocate
        } else if (current == Phase.Closed) {
            owed = _escrow(t) - t.claimed; // plus what was allocated but not claimed in time
        } else if (current == Phase.Unsettled) {
            owed = t.bounty; // the evaluators failed: the bounty returns, deposits go by `refund`
        } else {
            revert WrongPhase(taskId, current);
        }
        uint256 amount = owed - t.reclaimed;
        if (amount == 0) revert NothingToReclaim(taskId);
        t.reclaimed = uint128(owed); // owed <= escrow, which is bounded by the uint128 bounty plus deposits
        emit Reclaimed(taskId, msg.sender, amount);
        _pay(t.token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IGradientMarketplace
    function taskCount() external view returns (uint256) {
        return _nextTaskId - 1;
    }

    /// @inheritdoc IGradientMarketplace
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
        v.settledAt = t.settledAt;
        v.revealWindow = t.revealWindow;
        v.evaluationWindow = t.evaluationWindow;
        v.challengeWindow = t.challengeWindow;
        v.claimWindow = t.claimWindow;
        v.payoutTotal = t.payoutTotal;
        v.claimed = t.claimed;
        v.reclaimed = t.reclaimed;
        v.validationCommit = t.validationCommit;
        v.payoutRoot = t.payoutRoot;
        v.roundsEnd = _roundsEnd(t);
        v.revealDeadline = v.roundsEnd + t.revealWindow;
        v.evaluationDeadline = v.revealDeadline + t.evaluationWindow;
        if (t.settledAt != 0) {
            if (v.finalized) v.claimDeadline = uint64(t.settledAt) + t.claimWindow;
            else v.challengeEnd = uint64(t.settledAt) + t.challengeWindow;
        }
        v.escrow = _escrow(t);
    }

    /// @inheritdoc IGradientMarketplace
    function getNode(uint256 taskId, uint256 nodeId) external view returns (NodeView memory) {
        Node storage n = _nodes[taskId][nodeId];
        if (n.kind == Kind.None) revert InvalidParent(taskId, nodeId);
        return NodeView(n.author, n.parent, n.samples, n.round, n.kind, n.confirmations, n.plaintextDigest);
    }

    /// @inheritdoc IGradientMarketplace
    function evaluatorsOf(uint256 taskId) external view returns (address[] memory evaluators) {
        Task storage t = _existing(taskId);
        evaluators = new address[](t.evaluatorCount);
        for (uint256 i; i < evaluators.length; ++i) {
            evaluators[i] = _evaluators[taskId][i];
        }
    }

    /// @inheritdoc IGradientMarketplace
    function phase(uint256 taskId) external view returns (Phase) {
        return _phase(_tasks[taskId]);
    }

    /// @inheritdoc IGradientMarketplace
    function currentRound(uint256 taskId) external view returns (uint256) {
        Task storage t = _existing(taskId);
        if (block.timestamp < t.start) return 0;
        uint256 round = (block.timestamp - t.start) / t.roundDuration;
        return round < t.rounds ? round : t.rounds;
    }

    /// @inheritdoc IGradientMarketplace
    function isClaimed(uint256 taskId, uint256 index) external view returns (bool) {
        return _claimedWords[taskId][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @inheritdoc IGradientMarketplace
    function isRefunded(uint256 taskId, uint256 nodeId) external view returns (bool) {
        return _refundedWords[taskId][nodeId >> 8] & (1 << (nodeId & 0xff)) != 0;
    }

    /// @inheritdoc IGradientMarketplace
    function reputationOf(address account) external view returns (uint256) {
        return _reputation[account];
    }

    /// @inheritdoc IGradientMarketplace
    function strikesOf(address evaluator) external view returns (uint256) {
        return _strikes[evaluator];
    }

    // ------------------------------------------------------------------ internal

    function _checkParams(TaskParams calldata p) internal view {
        if (p.bounty == 0) revert InvalidTaskParams(1);
        if (p.rounds == 0) revert InvalidTaskParams(2);
        if (p.roundDuration == 0) revert InvalidTaskParams(3);
        if (p.revealWindow == 0 || p.evaluationWindow == 0 || p.claimWindow == 0) revert InvalidTaskParams(4);
        uint256 n = p.evaluators.length;
        if (n == 0 || n > MAX_EVALUATORS) revert InvalidTaskParams(5);
        for (uint256 i; i < n; ++i) {
            if (p.evaluators[i] == address(0)) revert InvalidTaskParams(6);
            for (uint256 j; j < i; ++j) {
                if (p.evaluators[i] == p.evaluators[j]) revert InvalidTaskParams(6);
            }
        }
        // A strict majority: two different roots can never both reach it.
        if (p.quorum == 0 || p.quorum > n || 2 * uint256(p.quorum) <= n) revert InvalidTaskParams(7);
        if (p.start != 0 && p.start < block.timestamp) revert InvalidTaskParams(8);
        if (p.token != address(0) && p.token.code.length == 0) revert InvalidTaskParams(9);
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

    function _phase(Task storage t) internal view returns (Phase) {
        if (t.sponsor == address(0)) return Phase.None;
        uint8 flags = t.flags;
        if (flags & CANCELLED != 0) return Phase.Cancelled;
        if (flags & FINALIZED != 0) {
            return block.timestamp < uint256(t.settledAt) + t.claimWindow ? Phase.Claims : Phase.Closed;
        }
        if (t.settledAt != 0) return Phase.Challenge;
        uint256 roundsEnd = _roundsEnd(t);
        if (block.timestamp < roundsEnd) return Phase.Rounds;
        uint256 revealDeadline = roundsEnd + t.revealWindow;
        if (flags & REVEALED == 0) return block.timestamp < revealDeadline ? Phase.Reveal : Phase.Unrevealed;
        return block.timestamp < revealDeadline + t.evaluationWindow ? Phase.Evaluation : Phase.Unsettled;
    }

    function _roundsEnd(Task storage t) internal view returns (uint64) {
        return uint64(t.start) + uint64(t.rounds) * t.roundDuration;
    }

    function _escrow(Task storage t) internal view returns (uint256) {
        return uint256(t.bounty) + uint256(t.deposit) * (t.nodeCount - t.mergeCount);
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
    }

    function _pay(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert PaymentFailed(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    function _popcount(uint256 x) internal pure returns (uint256 count) {
        // x is at most MAX_EVALUATORS bits wide: a handful of iterations.
        while (x != 0) {
            x &= x - 1;
            unchecked {
                ++count;
            }
        }
    }
}
