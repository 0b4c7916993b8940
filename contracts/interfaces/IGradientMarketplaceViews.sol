// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGradientMarketplaceTypes} from "./IGradientMarketplaceTypes.sol";

/// @title The gradient marketplace's views: tasks, nodes, phases, claims and reputation
interface IGradientMarketplaceViews is IGradientMarketplaceTypes {
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
