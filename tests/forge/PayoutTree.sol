// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";

/// @title A small payout Merkle tree, as the evaluators build it off chain
/// @notice Leaves are `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount, points))))`
/// (what `claim` hashes); pairs hash sorted, as OpenZeppelin's MerkleProof verifies them.
library PayoutTree {
    struct Leaf {
        uint256 index;
        address account;
        uint256 amount;
        uint256 points;
    }

    function root(Leaf[] memory leaves) internal pure returns (bytes32) {
        bytes32[] memory level = _hashes(leaves);
        while (level.length > 1) level = _up(level);
        return level[0];
    }

    /// @notice The siblings from leaf `index` up to the root.
    function proof(Leaf[] memory leaves, uint256 index) internal pure returns (bytes32[] memory siblings) {
        bytes32[] memory level = _hashes(leaves);
        siblings = new bytes32[](8); // enough for 256 leaves
        uint256 n;
        while (level.length > 1) {
            if ((index ^ 1) < level.length) siblings[n++] = level[index ^ 1];
            level = _up(level);
            index /= 2;
        }
        assembly ("memory-safe") {
            mstore(siblings, n) // shorten to the siblings found
        }
    }

    function _hashes(Leaf[] memory leaves) private pure returns (bytes32[] memory level) {
        level = new bytes32[](leaves.length);
        for (uint256 i; i < leaves.length; ++i) {
            Leaf memory l = leaves[i];
            level[i] = keccak256(bytes.concat(keccak256(abi.encode(l.index, l.account, l.amount, l.points))));
        }
    }

    /// @dev A node without a sibling goes up unchanged (it then has no sibling in the proof).
    function _up(bytes32[] memory level) private pure returns (bytes32[] memory next) {
        next = new bytes32[]((level.length + 1) / 2);
        for (uint256 i; i < level.length; i += 2) {
            next[i / 2] = i + 1 < level.length ? Hashes.commutativeKeccak256(level[i], level[i + 1]) : level[i];
        }
    }
}
