// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice A mintable ERC-20 for local chains (devnet, demo, tests). Anyone can mint: never
/// deploy it where its balance means anything.
contract DevToken is ERC20 {
    constructor() ERC20("Dev Token", "DEV") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
