// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/**
 * @title Vellum leaf encoding
 * @notice How one FHIR resource version becomes a Merkle leaf. Mirrors `computeLeaf` in
 * `src/chain/leaf.ts`; the two are tested against each other.
 *
 * The leaf is hashed twice, as in OpenZeppelin's `StandardMerkleTree`: a 64-byte inner
 * node can then never be presented as a leaf (second-preimage attack on Merkle trees).
 */
library AnchorLeaf {
    /// @notice Domain tag of version 1 of the leaf encoding: `keccak256("vellum.anchor.leaf.v1")`.
    bytes32 internal constant DOMAIN = keccak256("vellum.anchor.leaf.v1");

    /**
     * @notice The leaf for one resource version. See {IAnchorRegistry-leafHash} for what each
     * argument is.
     */
    function hash(
        bytes32 pseudonym,
        uint64 versionId,
        bytes32 contentDigest,
        bytes32 cidDigest
    ) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(DOMAIN, pseudonym, versionId, contentDigest, cidDigest))));
    }
}
