// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {AnchorLeaf} from "./AnchorLeaf.sol";
import {IAnchorRegistry} from "./IAnchorRegistry.sol";

/**
 * @title Vellum anchor registry
 * @notice See {IAnchorRegistry}. One `anchor` call costs one new storage slot (the batch
 * record, packed), one update of the batch counter and one event, whatever the number of
 * leaves: about 56,000 gas with a CIDv1 manifest.
 */
contract AnchorRegistry is IAnchorRegistry, AccessControl {
    /// @inheritdoc IAnchorRegistry
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    /// @notice The domain tag of the leaf encoding {leafHash} implements.
    bytes32 public constant LEAF_DOMAIN = AnchorLeaf.DOMAIN;

    /// What the registry keeps per root, packed into one storage slot.
    struct Batch {
        uint64 id;
        uint64 timestamp;
        uint64 blockNumber;
        uint32 leafCount;
    }

    mapping(bytes32 root => Batch) private _batches;

    /// The id the next batch will get. Starts at 1 (set in the constructor) so that id 0
    /// means "not anchored" and so that every anchor updates a non-zero slot, which costs
    /// 17,100 gas less than writing a zero one.
    uint64 private _nextBatchId;

    /**
     * @notice Deploys the registry with `admin` as its administrator (who grants and revokes
     * {ANCHORER_ROLE}) and, unless it is the zero address, `anchorer` as its first anchorer.
     *
     * Requirements:
     *
     * - `admin` must not be the zero address ({AnchorRegistryZeroAdmin}).
     */
    constructor(address admin, address anchorer) {
        if (admin == address(0)) revert AnchorRegistryZeroAdmin();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (anchorer != address(0)) _grantRole(ANCHORER_ROLE, anchorer);
        _nextBatchId = 1;
    }

    /// @inheritdoc IAnchorRegistry
    function anchor(
        bytes32 root,
        uint32 leafCount,
        string calldata manifestCid
    ) external onlyRole(ANCHORER_ROLE) returns (uint256 batchId) {
        if (root == bytes32(0)) revert AnchorRegistryZeroRoot();
        if (leafCount == 0) revert AnchorRegistryEmptyBatch();
        if (bytes(manifestCid).length == 0) revert AnchorRegistryEmptyManifest();

        Batch storage batch = _batches[root];
        if (batch.id != 0) revert AnchorRegistryDuplicateRoot(root);

        uint64 id = _nextBatchId;
        _nextBatchId = id + 1;
        batch.id = id;
        batch.timestamp = uint64(block.timestamp);
        batch.blockNumber = uint64(block.number);
        batch.leafCount = leafCount;

        emit BatchAnchored(id, root, leafCount, manifestCid);
        return id;
    }

    /// @inheritdoc IAnchorRegistry
    function anchoredAt(bytes32 root) external view returns (uint256 batchId, uint64 timestamp, uint64 blockNumber) {
        Batch storage batch = _batches[root];
        return (batch.id, batch.timestamp, batch.blockNumber);
    }

    /// @inheritdoc IAnchorRegistry
    function leafCountOf(bytes32 root) external view returns (uint32) {
        return _batches[root].leafCount;
    }

    /// @inheritdoc IAnchorRegistry
    function isAnchored(bytes32 root) public view returns (bool) {
        return _batches[root].id != 0;
    }

    /// @inheritdoc IAnchorRegistry
    function batchCount() external view returns (uint256) {
        return _nextBatchId - 1;
    }

    /// @inheritdoc IAnchorRegistry
    function verifyLeaf(bytes32 root, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        return isAnchored(root) && MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @inheritdoc IAnchorRegistry
    function leafHash(
        bytes32 pseudonym,
        uint64 versionId,
        bytes32 contentDigest,
        bytes32 cidDigest
    ) external pure returns (bytes32) {
        return AnchorLeaf.hash(pseudonym, versionId, contentDigest, cidDigest);
    }

    /// @notice ERC-165: also answers for {IAnchorRegistry}.
    function supportsInterface(bytes4 interfaceId) public view virtual override returns (bool) {
        return interfaceId == type(IAnchorRegistry).interfaceId || super.supportsInterface(interfaceId);
    }
}
