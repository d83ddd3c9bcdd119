// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/**
 * @title Vellum anchor registry
 * @notice A public, append-only log of Merkle roots. Each root commits to one batch of
 * FHIR resource versions written to a Vellum server; the leaves and the IPFS CIDs of the
 * encrypted versions are listed in the batch manifest, whose CID the {BatchAnchored} event
 * carries. Anyone can therefore replay every batch from the event logs alone, and check
 * that a given resource version was written before a given block with {verifyLeaf}.
 *
 * Trees are OpenZeppelin {MerkleProof} trees (sorted-pair keccak-256), so any other
 * contract can verify an inclusion proof against a root this registry has anchored. Leaves
 * are hashed twice (see {leafHash}), as OpenZeppelin's `StandardMerkleTree` does, so that
 * an inner node of a tree can never be passed off as a leaf.
 *
 * Nothing here identifies a patient or a resource: a leaf is a hash over a keyed
 * pseudonym and a salted digest, and only roots are stored on chain.
 */
interface IAnchorRegistry {
    /**
     * @notice Batch `batchId` with Merkle root `root` and `leafCount` leaves was anchored;
     * its manifest (leaves and envelope CIDs, in tree order) is at IPFS CID `manifestCid`.
     * Batch ids are sequential from 1 with no gaps, so a reader can tell whether it has
     * missed any.
     */
    event BatchAnchored(uint256 indexed batchId, bytes32 indexed root, uint32 leafCount, string manifestCid);

    /// @notice The root is zero, which no tree of hashed leaves can have.
    error AnchorRegistryZeroRoot();

    /// @notice `root` has already been anchored; a root is anchored once, in one batch.
    error AnchorRegistryDuplicateRoot(bytes32 root);

    /// @notice A batch must contain at least one leaf.
    error AnchorRegistryEmptyBatch();

    /// @notice A batch must name its manifest, or it could not be replayed.
    error AnchorRegistryEmptyManifest();

    /// @notice The registry was deployed without an administrator.
    error AnchorRegistryZeroAdmin();

    /**
     * @notice The role allowed to call {anchor}. Granted and revoked by the administrator
     * through OpenZeppelin `AccessControl`'s `grantRole` / `revokeRole`.
     */
    function ANCHORER_ROLE() external view returns (bytes32);

    /**
     * @notice Anchors the Merkle root of a batch of `leafCount` leaves whose manifest is at
     * IPFS CID `manifestCid`, and returns the batch id it was given.
     *
     * Emits a {BatchAnchored} event.
     *
     * Requirements:
     *
     * - the caller must have {ANCHORER_ROLE} (else `AccessControlUnauthorizedAccount`);
     * - `root` must not be zero ({AnchorRegistryZeroRoot});
     * - `root` must not have been anchored before ({AnchorRegistryDuplicateRoot});
     * - `leafCount` must not be zero ({AnchorRegistryEmptyBatch});
     * - `manifestCid` must not be empty ({AnchorRegistryEmptyManifest}).
     */
    function anchor(bytes32 root, uint32 leafCount, string calldata manifestCid) external returns (uint256 batchId);

    /**
     * @notice When `root` was anchored: its batch id and the timestamp and number of the
     * block that anchored it. All three are zero if `root` was never anchored (batch ids
     * start at 1).
     */
    function anchoredAt(bytes32 root) external view returns (uint256 batchId, uint64 timestamp, uint64 blockNumber);

    /**
     * @notice The number of leaves the anchorer declared for `root`'s batch (the contract
     * cannot check it: compare with the manifest); zero if `root` is unknown.
     */
    function leafCountOf(bytes32 root) external view returns (uint32);

    /// @notice Whether `root` has been anchored.
    function isAnchored(bytes32 root) external view returns (bool);

    /// @notice How many batches have been anchored; also the id of the latest batch.
    function batchCount() external view returns (uint256);

    /**
     * @notice Whether `leaf` belongs to the anchored tree with root `root`: true only if
     * `root` has been anchored and `proof` (sibling hashes from the leaf up, as produced by
     * OpenZeppelin-compatible tree builders) leads from `leaf` to `root`.
     */
    function verifyLeaf(bytes32 root, bytes32 leaf, bytes32[] calldata proof) external view returns (bool);

    /**
     * @notice The leaf Vellum anchors for one resource version, so that a verifier can
     * recompute it on chain:
     * `keccak256(bytes.concat(keccak256(abi.encode(LEAF_DOMAIN, pseudonym, versionId, contentDigest, cidDigest))))`.
     *
     * - `pseudonym`: HMAC-SHA-256 of the resource type and id under the server's key;
     * - `versionId`: the resource's `meta.versionId`;
     * - `contentDigest`: keccak-256 of a random 32-byte salt followed by the version's
     *   RFC 8785 canonical JSON;
     * - `cidDigest`: keccak-256 of the binary CID of the version's encrypted envelope.
     */
    function leafHash(
        bytes32 pseudonym,
        uint64 versionId,
        bytes32 contentDigest,
        bytes32 cidDigest
    ) external pure returns (bytes32);
}
