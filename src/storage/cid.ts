/**
 * IPFS content addressing, identical to Kubo's `ipfs add --cid-version=1 --raw-leaves`
 * (Kubo's classic "unixfs-v0-2015" DAG parameters with CIDv1 and raw leaves):
 *
 * - up to 256 KiB: one raw block, CIDv1 / raw codec / sha2-256 (`bafk…`);
 * - larger: 262144-byte fixed-size chunks stored as raw leaves under a balanced DAG of
 *   dag-pb UnixFS `file` nodes with at most 174 links each (`bafy…` root).
 *
 * The multi-block layout is produced by ipfs-unixfs-importer with every parameter given
 * explicitly (its own defaults differ: 1 MiB chunks / 1024 links under the 2025 profile),
 * so a library upgrade cannot silently change our CIDs.
 */
import { hash as nodeHash } from 'node:crypto';
import * as dagPb from '@ipld/dag-pb';
import { importer, type ImporterOptions } from 'ipfs-unixfs-importer';
import { fixedSize } from 'ipfs-unixfs-importer/chunker';
import { balanced } from 'ipfs-unixfs-importer/layout';
import { UnixFS } from 'ipfs-unixfs';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { storageError } from './errors.ts';

/** Kubo's default fixed chunk size (bytes). */
export const CHUNK_SIZE = 262_144;
/** Kubo's default maximum number of links per UnixFS file node. */
export const MAX_LINKS_PER_NODE = 174;

const SHA2_256 = 0x12;

/** One content-addressed block: its CID string (CIDv1, base32) and bytes. */
export interface Block {
  cid: string;
  bytes: Uint8Array;
}

/** The CID of a blob and every block needed to serve it. */
export interface BlobBlocks {
  /** Root CID string (CIDv1, base32): `bafk…` for one raw block, `bafy…` for a dag-pb root. */
  root: string;
  /** Distinct blocks of the DAG (identical chunks appear once); the root block is last. */
  blocks: Block[];
}

/** Compute the Kubo-compatible CID of `bytes` and the blocks (raw leaves + dag-pb nodes) that make it up. */
export async function cidForBytes(bytes: Uint8Array): Promise<BlobBlocks> {
  if (bytes.byteLength <= CHUNK_SIZE) {
    const cid = rawCid(bytes).toString();
    return { root: cid, blocks: [{ cid, bytes }] };
  }
  const { root, blocks } = await importKubo(bytes, true);
  return { root, blocks };
}

/**
 * Root CID of the same content under Kubo's legacy `ipfs add` (CIDv0, dag-pb wrapped leaves,
 * same chunker and layout). Only for cross-checks with tools that cannot emit raw leaves.
 */
export async function cidV0ForBytes(bytes: Uint8Array): Promise<string> {
  return (await importKubo(bytes, false)).root;
}

/** True when `bytes` hash to the sha2-256 multihash inside `cid` (a CID string or object); false for anything else. */
export function verifyBlock(cid: string | CID, bytes: Uint8Array): boolean {
  let parsed: CID;
  try {
    parsed = typeof cid === 'string' ? CID.parse(cid) : cid;
  } catch {
    return false;
  }
  const mh = parsed.multihash;
  if (mh.code !== SHA2_256 || mh.size !== 32) return false;
  const actual = sha256(bytes);
  const expected = mh.digest;
  if (expected.byteLength !== actual.byteLength) return false;
  for (let i = 0; i < actual.byteLength; i++) if (actual[i] !== expected[i]) return false;
  return true;
}

/**
 * Canonical string form of a CID (CIDv1, base32), so CIDv0 `Qm…` and other spellings of the
 * same block find the same key. Raises StorageError `VLM_BLOB_CID_INVALID` (invalid).
 */
export function canonicalCid(cid: string): string {
  const key = cidKey(cid);
  if (key === undefined) throw storageError('VLM_BLOB_CID_INVALID', 'invalid', 'not a valid CID string');
  return key;
}

/** The canonical CIDv1 string of `cid`, or undefined when it is not a CID (a store's `has` answers false). */
export function cidKey(cid: string): string | undefined {
  try {
    return CID.parse(cid).toV1().toString();
  } catch {
    return undefined;
  }
}

/** Source of blocks for {@link assembleBlob}: returns the stored bytes, or undefined when absent. */
export type BlockSource = (cid: string) => Uint8Array | undefined | Promise<Uint8Array | undefined>;

/**
 * Read a whole blob from its root CID by walking dag-pb/UnixFS links in order, verifying every
 * block. Missing root → `VLM_BLOB_NOT_FOUND` (not-found); bad hash, undecodable node or missing
 * child block → `VLM_BLOB_CORRUPT` (fault); an unsupported codec or UnixFS type → `VLM_BLOB_UNSUPPORTED` (invalid).
 */
export async function assembleBlob(root: string, getBlock: BlockSource, signal?: AbortSignal): Promise<Uint8Array> {
  const rootCid = parseCid(root);
  const rootBytes = await getBlock(rootCid.toString());
  if (rootBytes === undefined) throw storageError('VLM_BLOB_NOT_FOUND', 'not-found', `blob ${rootCid} not found`);
  checkBlock(rootCid, rootBytes);
  if (rootCid.code === raw.code) return rootBytes;

  const rootNode = decodeFileNode(rootCid, rootBytes);
  const total = rootNode.unixfs.fileSize();
  if (total > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(rootCid, 'declared size too large');
  const out = new Uint8Array(Number(total));
  let offset = 0;

  const write = (chunk: Uint8Array, at: CID): void => {
    if (offset + chunk.byteLength > out.byteLength) throw corrupt(at, 'more data than the declared file size');
    out.set(chunk, offset);
    offset += chunk.byteLength;
  };

  const walk = async (node: FileNode): Promise<void> => {
    if (node.unixfs.data !== undefined && node.unixfs.data.byteLength > 0) write(node.unixfs.data, node.cid);
    for (const link of node.links) {
      if (signal?.aborted) throw storageError('VLM_BLOB_ABORTED', 'unavailable', 'blob read aborted', signal.reason);
      const childCid = link.Hash;
      const child = await getBlock(childCid.toV1().toString());
      if (child === undefined) throw corrupt(childCid, `block missing under ${root}`);
      checkBlock(childCid, child);
      if (childCid.code === raw.code) write(child, childCid);
      else await walk(decodeFileNode(childCid, child));
    }
  };
  await walk(rootNode);
  if (offset !== out.byteLength) throw corrupt(rootCid, 'less data than the declared file size');
  return out;
}

interface FileNode {
  cid: CID;
  unixfs: UnixFS;
  links: dagPb.PBLink[];
}

function decodeFileNode(cid: CID, bytes: Uint8Array): FileNode {
  if (cid.code !== dagPb.code) {
    throw storageError('VLM_BLOB_UNSUPPORTED', 'invalid', `block ${cid} has codec 0x${cid.code.toString(16)}, expected raw or dag-pb`);
  }
  let node: dagPb.PBNode;
  let unixfs: UnixFS;
  try {
    node = dagPb.decode(bytes);
    if (node.Data === undefined) throw new Error('dag-pb node without UnixFS data');
    unixfs = UnixFS.unmarshal(node.Data);
  } catch (err) {
    throw corrupt(cid, 'undecodable dag-pb/UnixFS node', err);
  }
  if (unixfs.type !== 'file' && unixfs.type !== 'raw') {
    throw storageError('VLM_BLOB_UNSUPPORTED', 'invalid', `block ${cid} is a UnixFS ${unixfs.type}, not a file`);
  }
  return { cid, unixfs, links: node.Links };
}

function checkBlock(cid: CID, bytes: Uint8Array): void {
  if (!verifyBlock(cid, bytes)) throw corrupt(cid, 'block bytes do not match their CID');
}

function corrupt(cid: CID, what: string, cause?: unknown) {
  return storageError('VLM_BLOB_CORRUPT', 'fault', `block ${cid}: ${what}`, cause);
}

function parseCid(cid: string): CID {
  try {
    return CID.parse(cid).toV1();
  } catch (err) {
    throw storageError('VLM_BLOB_CID_INVALID', 'invalid', 'not a valid CID string', err);
  }
}

function sha256(bytes: Uint8Array): Uint8Array {
  return nodeHash('sha256', bytes, 'buffer');
}

function rawCid(bytes: Uint8Array): CID {
  return CID.createV1(raw.code, Digest.create(SHA2_256, sha256(bytes)));
}

async function importKubo(bytes: Uint8Array, rawLeaves: boolean): Promise<{ root: string; blocks: Block[] }> {
  const options: ImporterOptions = {
    cidVersion: rawLeaves ? 1 : 0,
    rawLeaves,
    leafType: 'file',
    chunker: fixedSize({ chunkSize: CHUNK_SIZE }),
    layout: balanced({ maxChildrenPerNode: MAX_LINKS_PER_NODE }),
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
  };
  const byCid = new Map<string, Uint8Array>();
  const sink = {
    put(cid: CID, block: Uint8Array): CID {
      byCid.set(cid.toV1().toString(), block);
      return cid;
    },
  };
  let root: CID | undefined;
  for await (const entry of importer([{ content: bytes }], sink, options)) root = entry.cid;
  if (root === undefined) throw storageError('VLM_BLOB_IMPORT', 'fault', 'importer produced no root');
  const rootKey = root.toV1().toString();
  const rootBytes = byCid.get(rootKey);
  if (rootBytes === undefined) throw storageError('VLM_BLOB_IMPORT', 'fault', 'importer did not emit the root block');
  byCid.delete(rootKey);
  const blocks: Block[] = [...byCid].map(([cid, b]) => ({ cid, bytes: b }));
  blocks.push({ cid: rootKey, bytes: rootBytes });
  return { root: root.toString(), blocks };
}
