// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IGradientMarketplace} from "../../contracts/interfaces/IGradientMarketplace.sol";
import {IGradientMarketplaceTypes} from "../../contracts/interfaces/IGradientMarketplaceTypes.sol";
import {PayoutTree} from "./PayoutTree.sol";
import {VM} from "./Vm.sol";

/// @title MarketHandler
/// @notice Drives the marketplace with bounded random actions for forge's invariant fuzzer: one
/// sponsor creates small ETH tasks, three actors submit, three evaluators merge and post payout
/// roots the handler builds (so it can prove their leaves), time moves forward. Ghost variables
/// record every wei that goes in and out, per task and per recipient, measured by balances.
/// @dev One external function per contract call (listed in `actions()`); a call the contract
/// refuses reverts the whole action, ghosts included, and forge discards it. To add an action,
/// write its function and add its selector to `actions()`.
contract MarketHandler {
    // Phases as bits, for picking a task where an action can succeed (`_taskIn`).
    uint256 internal constant ROUNDS = 1 << uint256(IGradientMarketplaceTypes.Phase.Rounds);
    uint256 internal constant REVEAL = 1 << uint256(IGradientMarketplaceTypes.Phase.Reveal);
    uint256 internal constant EVALUATION = 1 << uint256(IGradientMarketplaceTypes.Phase.Evaluation);
    uint256 internal constant CHALLENGE = 1 << uint256(IGradientMarketplaceTypes.Phase.Challenge);
    uint256 internal constant CLAIMS = 1 << uint256(IGradientMarketplaceTypes.Phase.Claims);
    uint256 internal constant CLOSED = 1 << uint256(IGradientMarketplaceTypes.Phase.Closed);
    uint256 internal constant UNREVEALED = 1 << uint256(IGradientMarketplaceTypes.Phase.Unrevealed);
    uint256 internal constant UNSETTLED = 1 << uint256(IGradientMarketplaceTypes.Phase.Unsettled);
    uint256 internal constant CANCELLED = 1 << uint256(IGradientMarketplaceTypes.Phase.Cancelled);

    uint256 public constant MAX_TASKS = 6;
    uint256 public constant MIN_WINDOW = 20;
    uint256 public constant MAX_WINDOW = 100;
    uint256 public constant SHORT_WARP = 15;

    IGradientMarketplace public immutable market;
    address public immutable sponsor = _account("sponsor");
    address[3] internal _actors = [_account("actor0"), _account("actor1"), _account("actor2")];
    address[3] internal _evaluators = [_account("evaluator0"), _account("evaluator1"), _account("evaluator2")];

    /// @notice The time every action runs at; `warp` moves it (forge may not carry a handler's
    /// warp over to the next call, so each action warps here first).
    uint256 public clock = block.timestamp;
    uint256[] public taskIds;
    mapping(uint256 taskId => bytes32) internal _fileDigest;
    mapping(uint256 taskId => bytes32) internal _salt;
    mapping(uint256 taskId => uint256[]) internal _merges;
    mapping(uint256 taskId => mapping(uint256 nodeId => bytes32)) internal _plaintext;
    mapping(uint256 taskId => mapping(uint256 nodeId => uint32[])) internal _parents;
    /// @dev The leaves of every root an evaluator posted, so a final one can be claimed.
    mapping(bytes32 root => PayoutTree.Leaf[]) internal _leaves;

    // ghosts: wei sent by successful calls, and wei that left the market, per task
    mapping(uint256 taskId => uint256) public paidIn;
    mapping(uint256 taskId => uint256) public paidOut;
    /// @notice What the sponsor received from a task (`reclaim`, `cancelTask`).
    mapping(uint256 taskId => uint256) public sponsorReceived;
    /// @notice Whether anything was submitted once the task's rounds were open.
    mapping(uint256 taskId => bool) public workedInRounds;
    /// @notice What each account received from the market, by its balance.
    mapping(address account => uint256) public received;
    uint256 public totalReceived;
    /// @notice Payments whose recipient did not get exactly what left the market, or whose amount
    /// broke the rule the interface states (a claim pays its leaf, a refund its deposit...).
    uint256 public wrongPayments;
    bytes32 public lastWrongPayment;
    /// @dev Leaves and nodes the market already paid (a second payment is a wrong one).
    mapping(uint256 taskId => mapping(uint256 id => bool)) internal _leafPaid;
    mapping(uint256 taskId => mapping(uint256 id => bool)) internal _nodeRefunded;

    modifier atClock() {
        VM.warp(clock);
        _;
    }

    constructor(IGradientMarketplace market_) {
        market = market_;
    }

    /// @notice The selectors forge may call.
    function actions() external pure returns (bytes4[] memory selectors) {
        selectors = new bytes4[](15);
        selectors[0] = this.createTask.selector;
        selectors[1] = this.proposeArchitecture.selector;
        selectors[2] = this.submitUpdate.selector;
        selectors[3] = this.postMerge.selector;
        selectors[4] = this.confirmMerge.selector;
        selectors[5] = this.revealValidation.selector;
        selectors[6] = this.postPayoutRoot.selector;
        selectors[7] = this.finalize.selector;
        selectors[8] = this.claim.selector;
        selectors[9] = this.refund.selector;
        selectors[10] = this.reclaim.selector;
        selectors[11] = this.cancelTask.selector;
        selectors[12] = this.warp.selector;
        // Twice: a quorum takes up to three posts in one evaluation window.
        selectors[13] = this.postPayoutRoot.selector;
        selectors[14] = this.joinRound.selector;
    }

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    function accounts() external view returns (address[] memory all) {
        all = new address[](7);
        all[0] = sponsor;
        for (uint256 i; i < 3; ++i) {
            all[1 + i] = _actors[i];
            all[4 + i] = _evaluators[i];
        }
    }

    // ------------------------------------------------------------------ actions

    /// @notice The sponsor escrows a small ETH bounty: 1-3 rounds and windows of 20-100 s (a
    /// challenge window may be 0), 1-3 evaluators with a strict-majority quorum, a deposit of
    /// 0-0.3 ether.
    function createTask(uint256 seed) external atClock {
        require(taskIds.length < MAX_TASKS, "enough tasks");
        IGradientMarketplaceTypes.TaskParams memory p;
        p.bounty = uint128(1 ether + _pick(seed, 0, 1 ether)); // not round: shares leave dust
        p.deposit = uint96(_pick(seed >> 64, 0, 3) * 0.1 ether);
        p.start = seed & 1 == 0 ? 0 : uint40(clock + _pick(seed >> 8, 1, 60));
        p.roundDuration = uint32(_pick(seed >> 16, MIN_WINDOW, MAX_WINDOW));
        p.rounds = uint8(_pick(seed >> 24, 1, 3));
        p.revealWindow = uint32(_pick(seed >> 32, MIN_WINDOW, MAX_WINDOW));
        p.evaluationWindow = uint32(_pick(seed >> 40, MIN_WINDOW, MAX_WINDOW));
        p.challengeWindow = uint32(_pick(seed >> 48, 0, MAX_WINDOW));
        p.claimWindow = uint32(_pick(seed >> 56, MIN_WINDOW, MAX_WINDOW));
        uint256 n = _pick(seed >> 72, 1, 3);
        p.evaluators = new address[](n);
        for (uint256 i; i < n; ++i) {
            p.evaluators[i] = _evaluators[(seed + i) % 3];
        }
        p.quorum = uint8(n / 2 + 1 + (n == 3 ? _pick(seed >> 80, 0, 1) : 0));
        bytes32 fileDigest = keccak256(abi.encode("file", seed));
        bytes32 salt = keccak256(abi.encode("salt", seed));
        p.validationCommit = keccak256(abi.encodePacked(fileDigest, salt));
        p.specCid = "spec";
        VM.deal(sponsor, sponsor.balance + p.bounty);
        VM.prank(sponsor);
        uint256 taskId = market.createTask{value: p.bounty}(p);
        taskIds.push(taskId);
        _fileDigest[taskId] = fileDigest;
        _salt[taskId] = salt;
        paidIn[taskId] += p.bounty;
    }

    function proposeArchitecture(uint256 taskSeed, uint256 actorSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, ROUNDS);
        uint256 deposit = market.getTask(taskId).deposit;
        address actor = _actors[actorSeed % 3];
        VM.deal(actor, actor.balance + deposit);
        VM.prank(actor);
        market.proposeArchitecture{value: deposit}(taskId, keccak256(abi.encode(actorSeed)), "arch");
        paidIn[taskId] += deposit;
        if (clock >= market.getTask(taskId).start) workedInRounds[taskId] = true;
    }

    function submitUpdate(uint256 taskSeed, uint256 actorSeed, uint256 parentSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, ROUNDS);
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        uint256 parent = _nodeWhere(taskId, v, parentSeed, _isParent);
        address actor = _actors[actorSeed % 3];
        VM.deal(actor, actor.balance + v.deposit);
        VM.prank(actor);
        market.submitUpdate{value: v.deposit}(
            taskId, parent, uint32(1 + parentSeed % 500), 0, keccak256(abi.encode(parentSeed)), bytes32(0), "update"
        );
        paidIn[taskId] += v.deposit;
        workedInRounds[taskId] = true; // updates are taken only while a round is open
    }

    /// @notice An actor joins a secure aggregation round on an existing node, paying the deposit.
    function joinRound(uint256 taskSeed, uint256 actorSeed, uint256 baseSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, ROUNDS);
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        require(v.nodeCount != 0, "nothing to join on");
        address actor = _actors[actorSeed % 3];
        VM.deal(actor, actor.balance + v.deposit);
        VM.prank(actor);
        market.joinRound{value: v.deposit}(taskId, 1 + baseSeed % v.nodeCount, bytes32(baseSeed));
        paidIn[taskId] += v.deposit;
    }

    /// @notice An evaluator merges up to three existing nodes (strictly increasing ids).
    function postMerge(uint256 taskSeed, uint256 evaluatorSeed, uint256 parentsSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, ROUNDS | REVEAL);
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        uint256 first = v.nodeCount == 0 ? 1 : 1 + parentsSeed % v.nodeCount;
        uint256 count = 1;
        uint32[] memory parents = new uint32[](3);
        parents[0] = uint32(first);
        for (uint256 id = first + 1 + (parentsSeed >> 8) % 2; id <= v.nodeCount && count < 3; id += 1) {
            parents[count++] = uint32(id);
        }
        assembly ("memory-safe") {
            mstore(parents, count)
        }
        bytes32 plaintext = keccak256(abi.encode(taskId, v.nodeCount, parentsSeed));
        // The last closed round if one is, else any (the contract refuses it).
        uint256 closed = clock < v.start ? 0 : (clock - v.start) / v.roundDuration;
        uint8 round = uint8(closed == 0 ? (parentsSeed >> 16) % v.rounds : _min(closed, v.rounds) - 1);
        VM.prank(_evaluatorOf(taskId, evaluatorSeed));
        uint256 nodeId = market.postMerge(taskId, round, parents, 0, plaintext, plaintext, "merge");
        _merges[taskId].push(nodeId);
        _plaintext[taskId][nodeId] = plaintext;
        _parents[taskId][nodeId] = parents;
    }

    /// @notice An evaluator confirms a merge's plaintext digest (preferring a merge and an
    /// evaluator that still lack that confirmation, in any task: the call checks the phase).
    function confirmMerge(uint256 taskSeed, uint256 evaluatorSeed, uint256 mergeSeed) external atClock {
        (uint256 taskId, uint256 nodeId, address evaluator) = _unconfirmed(taskSeed, evaluatorSeed, mergeSeed);
        VM.prank(evaluator);
        market.confirmMerge(taskId, nodeId, _plaintext[taskId][nodeId], _parents[taskId][nodeId]);
    }

    function revealValidation(uint256 taskSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, REVEAL);
        VM.prank(sponsor);
        market.revealValidation(taskId, _fileDigest[taskId], _salt[taskId], "validation");
    }

    /// @notice An evaluator posts a root of 1-4 leaves. Most posts are the task's agreed tree (so
    /// quorums form); one in four is the evaluator's own, whose leaves may add up to more than
    /// its total (the contract must then stop claims at the total).
    function postPayoutRoot(uint256 taskSeed, uint256 evaluatorSeed, uint256 treeSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, EVALUATION | CHALLENGE);
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        uint256 escrow = v.escrow;
        // Prefer an evaluator who has not posted yet.
        address[] memory evaluators = market.evaluatorsOf(taskId);
        uint256 e = evaluatorSeed % evaluators.length;
        for (uint256 j; j < evaluators.length && v.posted & (1 << e) != 0; ++j) {
            e = (e + 1) % evaluators.length;
        }
        address evaluator = evaluators[e];
        bool dissent = treeSeed % 4 == 0;
        uint256 seed = dissent ? uint256(keccak256(abi.encode(treeSeed, evaluator))) : taskId;
        uint256 total = dissent ? _pick(seed, 0, escrow) : escrow * _pick(seed, 50, 100) / 100;
        PayoutTree.Leaf[] memory leaves = _tree(seed, total, dissent);
        bytes32 root = PayoutTree.root(leaves);
        if (_leaves[root].length == 0) {
            for (uint256 i; i < leaves.length; ++i) {
                _leaves[root].push(leaves[i]);
            }
        }
        VM.prank(evaluator);
        market.postPayoutRoot(taskId, root, uint128(total), "report");
    }

    function finalize(uint256 taskSeed) external atClock {
        market.finalize(_taskIn(taskSeed, CHALLENGE));
    }

    /// @notice Claims a leaf of the task's final root with its proof (anyone may send it).
    function claim(uint256 taskSeed, uint256 leafSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, CLAIMS);
        PayoutTree.Leaf[] storage leaves = _leaves[market.getTask(taskId).payoutRoot];
        require(leaves.length != 0, "no known root");
        uint256 i = leafSeed % leaves.length;
        for (uint256 j; j < leaves.length && market.isClaimed(taskId, leaves[i].index); ++j) {
            i = (i + 1) % leaves.length; // prefer an unclaimed leaf
        }
        PayoutTree.Leaf memory leaf = leaves[i];
        bytes32[] memory proof = PayoutTree.proof(leaves, i);
        (uint256 before, uint256 toBefore) = (address(market).balance, leaf.account.balance);
        market.claim(taskId, leaf.index, leaf.account, leaf.amount, leaf.points, proof);
        _paid(taskId, leaf.account, before, toBefore, leaf.amount, "claim");
        if (_leafPaid[taskId][leaf.index]) _wrong("leaf paid twice");
        _leafPaid[taskId][leaf.index] = true;
    }

    /// @notice Refunds a node: its deposit, plus (unless cancelled) its share of the withheld
    /// bounty: one per kept node when merges were kept, else one per submission, the k-th share
    /// floor(B(k+1)/N) - floor(Bk/N).
    function refund(uint256 taskSeed, uint256 nodeSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, UNREVEALED | UNSETTLED | CANCELLED);
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        uint256 nodeId = _nodeWhere(taskId, v, nodeSeed, _isRefundable);
        IGradientMarketplaceTypes.Phase phase = market.phase(taskId);
        address author = market.getNode(taskId, nodeId).author;
        (uint256 before, uint256 toBefore) = (address(market).balance, author.balance);
        market.refund(taskId, nodeId);
        if (_nodeRefunded[taskId][nodeId]) _wrong("node refunded twice");
        _nodeRefunded[taskId][nodeId] = true;
        uint256 share;
        if (phase != IGradientMarketplaceTypes.Phase.Cancelled) {
            uint256 shares = v.keptUpdates == 0 ? v.submissionCount : v.keptUpdates;
            if (v.keptUpdates == 0 || market.getNode(taskId, nodeId).kept) {
                uint256 k = v.sharesPaid;
                uint256 pool = v.bounty + v.deposit * v.joinCount; // join deposits are forfeited
                share = pool * (k + 1) / shares - pool * k / shares;
            }
        }
        _paid(taskId, author, before, toBefore, v.deposit + share, "refund");
    }

    function reclaim(uint256 taskSeed) external atClock {
        uint256 taskId = _taskIn(taskSeed, CLAIMS | CLOSED | UNSETTLED);
        (uint256 before, uint256 toBefore) = (address(market).balance, sponsor.balance);
        VM.prank(sponsor);
        market.reclaim(taskId);
        sponsorReceived[taskId] += _paid(taskId, sponsor, before, toBefore, type(uint256).max, "reclaim");
    }

    /// @notice One try in four goes ahead: a task cancelled early tests little else.
    function cancelTask(uint256 taskSeed) external atClock {
        require(taskSeed % 4 == 0, "cancel: one try in four");
        uint256 taskId = _task(taskSeed >> 2);
        uint256 bounty = market.getTask(taskId).bounty;
        (uint256 before, uint256 toBefore) = (address(market).balance, sponsor.balance);
        VM.prank(sponsor);
        market.cancelTask(taskId);
        sponsorReceived[taskId] += _paid(taskId, sponsor, before, toBefore, bounty, "cancel");
    }

    /// @notice Half the time a short step, half the time just past a task's next deadline (a
    /// round's end, the reveal, evaluation, challenge or claim deadline): sequences of 100 calls
    /// then see tasks through their phases, and two such warps in a row skip a window (an
    /// unrevealed or unsettled task).
    function warp(uint256 seed) external {
        uint256 next = seed % 2 == 0 ? _nextDeadline(_task(seed >> 8)) : 0;
        clock = next != 0 ? next + (seed >> 16) % 3 : clock + _pick(seed >> 2, 1, SHORT_WARP);
        VM.warp(clock);
    }

    // ------------------------------------------------------------------ internal

    /// @dev Records a payment by balances; `expected` max means no fixed amount. Returns what
    /// the recipient got.
    function _paid(uint256 taskId, address to, uint256 before, uint256 toBefore, uint256 expected, bytes32 what)
        internal
        returns (uint256 got)
    {
        uint256 out = before - address(market).balance;
        got = to.balance - toBefore;
        paidOut[taskId] += out;
        received[to] += got;
        totalReceived += got;
        if (got != out || (expected != type(uint256).max && got != expected)) _wrong(what);
    }

    function _wrong(bytes32 what) internal {
        ++wrongPayments;
        lastWrongPayment = what;
    }

    function _task(uint256 seed) internal view returns (uint256) {
        require(taskIds.length != 0, "no task");
        return taskIds[seed % taskIds.length];
    }

    /// @dev A task whose phase is in `phases` (a bitmap) if one is, else any: picking where an
    /// action can succeed keeps sequences going, the fallback still tries it where it cannot.
    function _taskIn(uint256 seed, uint256 phases) internal view returns (uint256) {
        uint256 n = taskIds.length;
        for (uint256 j; j < n; ++j) {
            uint256 taskId = taskIds[(seed + j) % n];
            if (_bit(market.phase(taskId)) & phases != 0) return taskId;
        }
        return _task(seed);
    }

    /// @dev A node id for which `wanted` holds if one does (scanning from the seed), else any.
    function _nodeWhere(
        uint256 taskId,
        IGradientMarketplaceTypes.TaskView memory v,
        uint256 seed,
        function(uint256, uint256, uint256) view returns (bool) wanted
    ) internal view returns (uint256) {
        if (v.nodeCount == 0) return 1;
        for (uint256 j; j < v.nodeCount; ++j) {
            uint256 nodeId = 1 + (seed + j) % v.nodeCount;
            if (wanted(taskId, nodeId, v.quorum)) return nodeId;
        }
        return 1 + seed % v.nodeCount;
    }

    /// @dev Not an unconfirmed merge.
    function _isParent(uint256 taskId, uint256 nodeId, uint256 quorum) internal view returns (bool) {
        IGradientMarketplaceTypes.NodeView memory node = market.getNode(taskId, nodeId);
        return node.kind != IGradientMarketplaceTypes.Kind.Merge || _popcount(node.confirmations) >= quorum;
    }

    /// @dev A submission not refunded yet.
    function _isRefundable(uint256 taskId, uint256 nodeId, uint256) internal view returns (bool) {
        IGradientMarketplaceTypes.Kind kind = market.getNode(taskId, nodeId).kind;
        return kind != IGradientMarketplaceTypes.Kind.Merge && !market.isRefunded(taskId, nodeId);
    }

    function _bit(IGradientMarketplaceTypes.Phase phase) internal pure returns (uint256) {
        return 1 << uint256(phase);
    }

    function _popcount(uint256 x) internal pure returns (uint256 count) {
        for (; x != 0; x &= x - 1) {
            ++count;
        }
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    /// @dev A (task, merge, evaluator) whose confirmation is missing if there is one, scanning
    /// from the seeds; else the seeds' own pick.
    function _unconfirmed(uint256 taskSeed, uint256 evaluatorSeed, uint256 mergeSeed)
        internal
        view
        returns (uint256 taskId, uint256 nodeId, address evaluator)
    {
        for (uint256 t; t < taskIds.length; ++t) {
            taskId = taskIds[(taskSeed + t) % taskIds.length];
            uint256[] storage merges = _merges[taskId];
            address[] memory evaluators = market.evaluatorsOf(taskId);
            for (uint256 m; m < merges.length; ++m) {
                nodeId = merges[(mergeSeed + m) % merges.length];
                uint256 confirmations = market.getNode(taskId, nodeId).confirmations;
                for (uint256 e; e < evaluators.length; ++e) {
                    uint256 i = (evaluatorSeed + e) % evaluators.length;
                    if (confirmations & (1 << i) == 0) return (taskId, nodeId, evaluators[i]);
                }
            }
        }
        taskId = _task(taskSeed);
        require(_merges[taskId].length != 0, "no merge");
        nodeId = _merges[taskId][mergeSeed % _merges[taskId].length];
        evaluator = _evaluatorOf(taskId, evaluatorSeed);
    }

    /// @dev The first deadline of the task after `clock`, or 0 if none is left.
    function _nextDeadline(uint256 taskId) internal view returns (uint256) {
        IGradientMarketplaceTypes.TaskView memory v = market.getTask(taskId);
        if (clock < v.start) return v.start;
        uint256 roundEnd = v.start + ((clock - v.start) / v.roundDuration + 1) * v.roundDuration;
        if (roundEnd <= v.roundsEnd) return roundEnd;
        uint64[4] memory deadlines = [v.revealDeadline, v.evaluationDeadline, v.challengeEnd, v.claimDeadline];
        for (uint256 i; i < deadlines.length; ++i) {
            if (deadlines[i] > clock) return deadlines[i];
        }
        return 0;
    }

    function _evaluatorOf(uint256 taskId, uint256 seed) internal view returns (address) {
        address[] memory evaluators = market.evaluatorsOf(taskId);
        return evaluators[seed % evaluators.length];
    }

    /// @dev 1-4 leaves to the actors (and, in a dissenting tree, evaluator 0). An agreed tree
    /// splits `total` exactly; a dissenting one gives each leaf up to `total`.
    function _tree(uint256 seed, uint256 total, bool dissent) internal view returns (PayoutTree.Leaf[] memory leaves) {
        uint256 k = _pick(seed >> 8, 1, 4);
        leaves = new PayoutTree.Leaf[](k);
        uint256 left = total;
        for (uint256 i; i < k; ++i) {
            uint256 word = uint256(keccak256(abi.encode(seed, i)));
            uint256 amount;
            if (dissent) amount = _pick(word, 0, total);
            else amount = i == k - 1 ? left : _pick(word, 0, left);
            left -= dissent ? 0 : amount;
            address account = dissent && word % 4 == 0 ? _evaluators[0] : _actors[word % 3];
            leaves[i] = PayoutTree.Leaf(i, account, amount, word % 100);
        }
    }

    /// @dev A number in [lo, hi] from `seed`.
    function _pick(uint256 seed, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + seed % (hi - lo + 1);
    }

    function _account(string memory name) internal pure returns (address) {
        return address(uint160(uint256(keccak256(abi.encode("gradient-marketplace invariants", name)))));
    }
}
