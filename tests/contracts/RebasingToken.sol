// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice An ERC-20 whose balances are shares of a supply the owner can rebase (like stETH or
/// AMPL): after `rebase(1, 2)` every holder, the marketplace included, holds half as much.
contract RebasingToken {
    mapping(address => uint256) public sharesOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 public totalShares;
    uint256 public numerator = 1;
    uint256 public denominator = 1;

    function mint(address to, uint256 amount) external {
        uint256 shares = amount * denominator / numerator;
        sharesOf[to] += shares;
        totalShares += shares;
    }

    function rebase(uint256 numerator_, uint256 denominator_) external {
        (numerator, denominator) = (numerator_, denominator_);
    }

    function balanceOf(address account) public view returns (uint256) {
        return sharesOf[account] * numerator / denominator;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        uint256 shares = amount * denominator / numerator;
        sharesOf[from] -= shares;
        sharesOf[to] += shares;
    }
}
