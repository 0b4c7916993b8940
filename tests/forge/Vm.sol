// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice The few forge cheatcodes the invariant suite uses (forge-std is not installable here).
interface Vm {
    function warp(uint256 timestamp) external;
    function deal(address account, uint256 balance) external;
    function prank(address sender) external;
    /// @dev Deploys a contract from forge's build output (`file.sol:Name`).
    function deployCode(string calldata artifactPath) external returns (address deployed);
    /// @dev The same, with ABI-encoded constructor arguments.
    function deployCode(string calldata artifactPath, bytes calldata constructorArgs)
        external
        returns (address deployed);
}

/// @dev Where forge answers cheatcodes.
Vm constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice What forge reads from `targetSelectors()` (the same layout as forge-std's StdInvariant).
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}
