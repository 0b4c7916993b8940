// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice The EVM side of the cross-language oracle tests: OpenZeppelin's Merkle primitives and
/// the marketplace's leaf and commitment encodings, exposed as pure views.
contract MerkleOracle {
    function leafHash(uint256 index, address account, uint256 amount, uint256 points)
        external
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(index, account, amount, points))));
    }

    function pairHash(bytes32 a, bytes32 b) external pure returns (bytes32) {
        return Hashes.commutativeKeccak256(a, b);
    }

    function processProof(bytes32[] calldata proof, bytes32 leaf) external pure returns (bytes32) {
        return MerkleProof.processProofCalldata(proof, leaf);
    }

    function verify(bytes32[] calldata proof, bytes32 root, bytes32 leaf) external pure returns (bool) {
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }

    function commitment(bytes32 fileDigest, bytes32 salt) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(fileDigest, salt));
    }
}
