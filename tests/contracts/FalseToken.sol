// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice An ERC-20-like token whose transfers report failure by returning false without moving
/// anything, as some old tokens do: SafeERC20 must turn that into SafeERC20FailedOperation.
contract FalseToken {
    mapping(address account => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;
    uint256 public totalSupply;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        totalSupply += amount;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transfer(address, uint256) external pure returns (bool) {
        return false;
    }

    function transferFrom(address, address, uint256) external pure returns (bool) {
        return false;
    }
}
