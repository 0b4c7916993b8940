// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IGradientMarketplace} from "../../contracts/interfaces/IGradientMarketplace.sol";
import {IGradientMarketplaceTypes} from "../../contracts/interfaces/IGradientMarketplaceTypes.sol";
import {IGradientMarketplaceActions} from "../../contracts/interfaces/IGradientMarketplaceActions.sol";

/// @notice Sponsors, reveals, submits, claims, refunds and reclaims as a contract, and on the
/// first ETH it receives once armed tries to re-enter the marketplace with the armed arguments.
contract ReentrantReceiver {
    IGradientMarketplace public immutable market;
    uint8 public mode;            // 0 none, 1 claim, 2 refund, 3 reclaim, 4 cancel
    uint256 public taskId;
    uint256 public index;
    uint256 public amount;
    uint256 public points;
    bytes32[] public proof;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(IGradientMarketplace market_) {
        market = market_;
    }

    function createTask(IGradientMarketplaceTypes.TaskParams calldata params) external payable returns (uint256) {
        return market.createTask{value: msg.value}(params);
    }

    function submitUpdate(uint256 taskId_, uint256 parent, bytes32 digest) external payable returns (uint256) {
        return market.submitUpdate{value: msg.value}(taskId_, parent, 1, 0, digest, bytes32(0), "cid");
    }

    function revealValidation(uint256 taskId_, bytes32 fileDigest, bytes32 salt) external {
        market.revealValidation(taskId_, fileDigest, salt, "cid");
    }

    function arm(uint8 mode_, uint256 taskId_, uint256 index_, uint256 amount_, uint256 points_, bytes32[] calldata proof_)
        external
    {
        (mode, taskId, index, amount, points, proof) = (mode_, taskId_, index_, amount_, points_, proof_);
    }

    function claim() external {
        market.claim(taskId, index, address(this), amount, points, proof);
    }

    function refund() external {
        market.refund(taskId, index);
    }

    function reclaim() external {
        market.reclaim(taskId);
    }

    function cancel() external {
        market.cancelTask(taskId);
    }

    receive() external payable {
        if (mode == 0 || reentryAttempts > 0) return;
        ++reentryAttempts;
        bytes memory call;
        if (mode == 1) call = abi.encodeCall(IGradientMarketplaceActions.claim, (taskId, index, address(this), amount, points, proof));
        else if (mode == 2) call = abi.encodeCall(IGradientMarketplaceActions.refund, (taskId, index));
        else if (mode == 3) call = abi.encodeCall(IGradientMarketplaceActions.reclaim, (taskId));
        else call = abi.encodeCall(IGradientMarketplaceActions.cancelTask, (taskId));
        (bool ok, bytes memory err) = address(market).call(call);
        reentrySucceeded = ok;
        reentryError = err;
    }
}

/// @notice A recipient that refuses ETH: its claims must revert with PaymentFailed and stay claimable.
contract RejectingReceiver {
    IGradientMarketplace public immutable market;

    constructor(IGradientMarketplace market_) {
        market = market_;
    }

    function submitUpdate(uint256 taskId, uint256 parent, bytes32 digest) external payable returns (uint256) {
        return market.submitUpdate{value: msg.value}(taskId, parent, 1, 0, digest, bytes32(0), "cid");
    }
}
