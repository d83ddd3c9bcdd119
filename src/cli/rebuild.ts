/**
 * `vellum rebuild` — reconstruct the index database from nothing but the chain (BatchAnchored
 * events), IPFS (batch manifests, envelopes, wrapped data-key blocks) and the master key,
 * verifying every leaf on the way (DESIGN.md: "the index is a cache, the chain is the log").
 * This is also how a second site joins: same master key, same chain and IPFS, replay the log.
 *
 * For every batch the registry's events list, in chain order:
 *
 * 1. ask the contract (view call) that the root is anchored;
 * 2. fetch the manifest by CID, check its root against the event and recompute the Merkle root
 *    from its leaves;
 * 3. per leaf: open the sealed locator (type, id, version, key scope, interaction, data-key CID;
 *    `src/storage/locator.ts`), fetch and unwrap the scope's data key, fetch the envelope (CID
 *    checked), decrypt it (binding checked), and recompute the leaf from the content, salt,
 *    pseudonym and CID — it must equal the manifest's leaf;
 * 4. commit the batch's versions with their search rows, then its plan and receipt, so every
 *    rebuilt version has its proof.
 *
 * Any mismatch stops the rebuild with a coded RebuildError; nothing is left half-built: the
 * index is written to `vellum.db.rebuild` and renamed to `vellum.db` only once complete.
 * Versions written but not yet anchored when the old index was lost are not on the log, so
 * they cannot come back; the report says how many versions were restored.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from '../config.ts';
import { ConfigError, loadConfig } from '../config.ts';
import type { BatchManifest } from '../chain/batcher.ts';
import { MANIFEST_TYPE } from '../chain/batcher.ts';
import { canonicalJson, cidDigest, contentDigest, leafFromParts, pseudonym } from '../chain/leaf.ts';
import type { Ledger } from '../chain/ledger.ts';
import { buildTree, fromHex, toHex } from '../chain/merkle.ts';
import type { FhirResource } from '../fhir/request.ts';
import { createExtractor } from '../fhir/search/extract.ts';
import { createSearchRegistry } from '../fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../fhir/validation/resource-types.ts';
import { ANCHOR_SALT_EXTENSION, deletionContent } from '../fhir/writer.ts';
import { openLedger } from '../server.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { canonicalCid } from '../storage/cid.ts';
import type { IndexWrite } from '../storage/index-store.ts';
import { openVersion as openEnvelope } from '../storage/envelope-group.ts';
import { JweCipher, unwrapDataKey } from '../storage/jwe-cipher.ts';
import { KEY_PURPOSE, deriveKey, loadMasterKey } from '../storage/keys.ts';
import { KuboBlobStore } from '../storage/kubo-blob-store.ts';
import { openLocator, type Locator } from '../storage/locator.ts';
import { SqliteBlobStore } from '../storage/sqlite/sqlite-blob-store.ts';
import { SqliteIndexStore } from '../storage/sqlite/sqlite-index.ts';
import type { Io } from './verify.ts';

export type RebuildErrorCode =
  /** The data dir already has an index database. */
  | 'VLM_REBUILD_INDEX_EXISTS'
  /** Neither VELLUM_MASTER_KEY nor the data dir's master.key: nothing can be decrypted. */
  | 'VLM_REBUILD_NO_KEY'
  /** VELLUM_CHAIN=off, or an embedded chain with no transaction log: there is no log to replay. */
  | 'VLM_REBUILD_CHAIN_OFF'
  /** A block (manifest, envelope or key) is in none of the block sources. */
  | 'VLM_REBUILD_BLOCK_MISSING'
  /** A block's bytes do not match its CID. */
  | 'VLM_REBUILD_BLOCK_CORRUPT'
  /** A manifest is malformed or does not match its anchored root. */
  | 'VLM_REBUILD_MANIFEST'
  /** The contract does not report a logged root as anchored. */
  | 'VLM_REBUILD_NOT_ANCHORED'
  /** A manifest entry has no locator, or it does not open under this master key. */
  | 'VLM_REBUILD_LOCATOR'
  /** A scope's wrapped data key does not unwrap for that scope. */
  | 'VLM_REBUILD_KEY'
  /** An envelope does not decrypt for its locator, or its content does not give its leaf. */
  | 'VLM_REBUILD_LEAF'
  /** Versions on the log do not follow each other (a version is missing). */
  | 'VLM_REBUILD_ORDER';

export class RebuildError extends Error {
  override readonly name = 'RebuildError';
  constructor(
    readonly code: RebuildErrorCode,
    message: string,
    readonly where?: { batchId?: number; leafIndex?: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface RebuildOptions {
  config: Config;
  /**
   * Extra embedded block stores (vellum.db files or data dirs holding one) to fetch blocks from
   * when the configured store lacks them; blocks found there are copied (CID-checked) into the
   * new store. With VELLUM_IPFS_URL the configured Kubo node is the source.
   */
  blocksFrom?: string[];
  /** Called after each batch. */
  onBatch?: (progress: { batchId: number; leaves: number; batches: number; versions: number }) => void;
}

export interface RebuildReport {
  batches: number;
  versions: number;
  resources: number;
  /** Blocks copied from `blocksFrom` into the new store. */
  blocksCopied: number;
  chainId: number;
  contract: string;
}

const DB_FILE = 'vellum.db';
const SQLITE_SUFFIXES = ['', '-wal', '-shm'];

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

async function removeDatabase(file: string): Promise<void> {
  for (const suffix of SQLITE_SUFFIXES) await fs.rm(file + suffix, { force: true });
}

/** Rebuild the index of `config.dataDir` from the log. Raises RebuildError. */
export async function rebuildIndex(options: RebuildOptions): Promise<RebuildReport> {
  const { config } = options;
  if (config.chain.mode === 'off') throw new RebuildError('VLM_REBUILD_CHAIN_OFF', 'VELLUM_CHAIN=off: there is no anchor log to rebuild from');
  const dbPath = path.join(config.dataDir, DB_FILE);
  if (await exists(dbPath)) {
    throw new RebuildError(
      'VLM_REBUILD_INDEX_EXISTS',
      `${dbPath} exists; move it away first (an embedded store can then be given as --blocks-from)`,
    );
  }
  const keyFile = path.join(config.dataDir, 'master.key');
  if (config.masterKey === undefined && !(await exists(keyFile))) {
    throw new RebuildError('VLM_REBUILD_NO_KEY', `set VELLUM_MASTER_KEY or put the master key in ${keyFile}`);
  }
  const chainLog = path.join(config.dataDir, 'chain', 'transactions.log');
  if (config.chain.mode === 'embedded' && !(await exists(chainLog))) {
    throw new RebuildError('VLM_REBUILD_CHAIN_OFF', `the embedded chain has no log at ${chainLog}; copy the chain directory of the source data dir`);
  }
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const masterKey = await loadMasterKey({ env: config.masterKey, keyFile });

  const building = `${dbPath}.rebuild`;
  await removeDatabase(building); // a previous run that was interrupted
  const sources: SqliteBlobStore[] = [];
  let index: SqliteIndexStore | undefined;
  let blobs: BlobStore | undefined;
  let ledger: Ledger | undefined;
  let complete = false;
  try {
    for (const from of options.blocksFrom ?? []) {
      const file = (await fs.stat(from)).isDirectory() ? path.join(from, DB_FILE) : from;
      if (!(await exists(file))) throw new RebuildError('VLM_REBUILD_BLOCK_MISSING', `no block store at ${file}`);
      sources.push(SqliteBlobStore.open(file));
    }
    index = SqliteIndexStore.open(building);
    blobs = config.ipfsUrl ? await KuboBlobStore.open({ url: config.ipfsUrl }) : SqliteBlobStore.open(building, { groupCommit: true });
    ledger = await openLedger(config);
    if (!ledger) throw new RebuildError('VLM_REBUILD_CHAIN_OFF', 'no ledger');
    const report = await replay({ masterKey, config, index, blobs, sources, ledger, onBatch: options.onBatch });
    complete = true;
    return report;
  } finally {
    await ledger?.close().catch(() => undefined);
    await index?.close().catch(() => undefined);
    await blobs?.close().catch(() => undefined);
    for (const source of sources) await source.close().catch(() => undefined);
    if (complete) {
      await fs.rename(building, dbPath);
      for (const suffix of SQLITE_SUFFIXES.slice(1)) await fs.rm(building + suffix, { force: true });
    } else {
      await removeDatabase(building);
    }
  }
}

interface ReplayContext {
  masterKey: Uint8Array;
  config: Config;
  index: SqliteIndexStore;
  blobs: BlobStore;
  sources: SqliteBlobStore[];
  ledger: Ledger;
  onBatch: RebuildOptions['onBatch'];
}

async function replay(ctx: ReplayContext): Promise<RebuildReport> {
  const { masterKey, index, blobs, sources, ledger } = ctx;
  const leafKey = deriveKey(masterKey, KEY_PURPOSE.leafPseudonym);
  const locatorKey = deriveKey(masterKey, KEY_PURPOSE.manifestLocator);
  const cipher = new JweCipher(masterKey, index.dataKeys);
  const extractor = createExtractor(createSearchRegistry(R4_RESOURCE_TYPES), { baseUrl: ctx.config.baseUrl });
  const decoder = new TextDecoder();
  let blocksCopied = 0;
  const resources = new Set<string>();

  /** A blob from the configured store, else from a source (copied into the configured store). */
  const fetchBlob = async (cid: string, what: string, where: RebuildError['where']): Promise<Uint8Array> => {
    try {
      return await blobs.get(cid);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'VLM_BLOB_CORRUPT') throw new RebuildError('VLM_REBUILD_BLOCK_CORRUPT', `${what} ${cid} does not match its CID`, where, { cause: err });
      if (code !== 'VLM_BLOB_NOT_FOUND') throw err;
    }
    for (const source of sources) {
      let bytes: Uint8Array;
      try {
        bytes = await source.get(cid); // every block checked against its CID
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'VLM_BLOB_NOT_FOUND') continue;
        if (code === 'VLM_BLOB_CORRUPT') throw new RebuildError('VLM_REBUILD_BLOCK_CORRUPT', `${what} ${cid} does not match its CID`, where, { cause: err });
        throw err;
      }
      const stored = await blobs.put(bytes);
      if (stored !== canonicalCid(cid)) throw new RebuildError('VLM_REBUILD_BLOCK_MISSING', `${what} ${cid} re-stored under another CID`, where);
      blocksCopied++;
      return bytes;
    }
    throw new RebuildError('VLM_REBUILD_BLOCK_MISSING', `${what} ${cid} is in no block store`, where);
  };

  let batches = 0;
  let versions = 0;
  for (const receipt of await ledger.batches()) {
    const where = { batchId: receipt.batchId };
    const root = fromHex(receipt.root, 32);
    if (!(await ledger.anchoredAt(root))) {
      throw new RebuildError('VLM_REBUILD_NOT_ANCHORED', `batch ${receipt.batchId}: the contract does not report its root as anchored`, where);
    }
    const manifest = parseManifest(decoder.decode(await fetchBlob(receipt.manifestCid, 'manifest', where)), receipt.batchId);
    if (manifest.root !== receipt.root.toLowerCase() || manifest.leaves.length !== receipt.leafCount) {
      throw new RebuildError('VLM_REBUILD_MANIFEST', `batch ${receipt.batchId}: the manifest is not the anchored batch`, where);
    }
    const leaves = manifest.leaves.map((entry) => fromHex(entry.leaf, 32));
    const tree = buildTree(leaves);
    if (toHex(tree.root) !== receipt.root.toLowerCase()) {
      throw new RebuildError('VLM_REBUILD_MANIFEST', `batch ${receipt.batchId}: the manifest's leaves do not give the anchored root`, where);
    }

    const writes: IndexWrite[] = [];
    for (const [leafIndex, entry] of manifest.leaves.entries()) {
      const at = { batchId: receipt.batchId, leafIndex };
      const leaf = leaves[leafIndex]!;
      if (!entry.loc) {
        throw new RebuildError('VLM_REBUILD_LOCATOR', `batch ${receipt.batchId} leaf ${leafIndex} has no locator (written before locators existed?)`, at);
      }
      let locator: Locator;
      try {
        locator = openLocator(locatorKey, leaf, entry.loc);
      } catch (err) {
        throw new RebuildError('VLM_REBUILD_LOCATOR', `batch ${receipt.batchId} leaf ${leafIndex}: the locator does not open under this master key`, at, { cause: err });
      }
      if (!(await index.dataKeys.getWrappedKey(locator.keyScope))) {
        const wrapped = await fetchBlob(locator.keyCid, 'data key', at);
        try {
          unwrapDataKey(masterKey, locator.keyScope, wrapped);
        } catch (err) {
          throw new RebuildError('VLM_REBUILD_KEY', `batch ${receipt.batchId} leaf ${leafIndex}: the data key does not unwrap for its scope`, at, { cause: err });
        }
        await index.dataKeys.putWrappedKeyIfAbsent(locator.keyScope, wrapped);
      }
      const envelope = await fetchBlob(entry.cid, 'envelope', at);
      const { resource, salt, lastUpdated } = await openVersion(cipher, envelope, locator, decoder, at);
      const recomputed = leafFromParts({
        pseudonym: pseudonym(leafKey, locator.type, locator.id),
        versionId: BigInt(locator.versionId),
        contentDigest: contentDigest(salt, canonicalJson(resource ?? deletionContent(locator.type, locator.id, locator.versionId))),
        cidDigest: cidDigest(entry.cid),
      });
      if (toHex(recomputed) !== toHex(leaf)) {
        throw new RebuildError('VLM_REBUILD_LEAF', `batch ${receipt.batchId} leaf ${leafIndex}: the envelope's content does not give the anchored leaf`, at);
      }
      writes.push({
        type: locator.type,
        id: locator.id,
        versionId: locator.versionId,
        expectedVersion: locator.versionId - 1,
        lastUpdated,
        deleted: locator.method === 'delete',
        method: locator.method,
        cid: canonicalCid(entry.cid),
        keyScope: locator.keyScope,
        searchRows: resource ? extractor.extract(resource) : [],
        anchor: { leaf, salt, locator: entry.loc },
      });
      resources.add(`${locator.type}/${locator.id}`);
    }

    let records;
    try {
      records = await index.commit(writes);
    } catch (err) {
      if ((err as { code?: string }).code === 'VLM_INDEX_VERSION_CONFLICT') {
        throw new RebuildError('VLM_REBUILD_ORDER', `batch ${receipt.batchId}: a version does not follow the one before it on the log`, where, { cause: err });
      }
      throw err;
    }
    const batch = await index.planBatch({ root, leafCount: leaves.length, manifestCid: receipt.manifestCid, seqs: records.map((r) => r.seq) });
    await index.recordAnchor(batch.id, {
      chainBatchId: receipt.batchId,
      txHash: receipt.txHash,
      blockNumber: receipt.blockNumber,
      blockTimestamp: receipt.blockTimestamp,
      chainId: receipt.chainId,
      contract: receipt.contract,
    });
    batches++;
    versions += records.length;
    ctx.onBatch?.({ batchId: receipt.batchId, leaves: records.length, batches, versions });
  }
  await blobs.flush?.();
  await index.flush();
  return { batches, versions, resources: resources.size, blocksCopied, chainId: ledger.chainId, contract: ledger.contract };
}

function parseManifest(text: string, batchId: number): BatchManifest {
  const bad = () => new RebuildError('VLM_REBUILD_MANIFEST', `batch ${batchId}: the manifest is malformed`, { batchId });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw bad();
  }
  const m = value as Partial<BatchManifest>;
  if (m?.type !== MANIFEST_TYPE || typeof m.root !== 'string' || !Array.isArray(m.leaves)) throw bad();
  for (const entry of m.leaves) {
    if (typeof entry?.leaf !== 'string' || typeof entry.cid !== 'string' || (entry.loc !== undefined && typeof entry.loc !== 'string')) throw bad();
  }
  return m as BatchManifest;
}

/** Decrypt a version's envelope and take out its resource (none for a deletion), salt and time. */
async function openVersion(
  cipher: JweCipher,
  envelope: Uint8Array,
  locator: Locator,
  decoder: { decode(bytes: Uint8Array): string },
  at: { batchId: number; leafIndex: number },
): Promise<{ resource: FhirResource | undefined; salt: Uint8Array; lastUpdated: number }> {
  const fail = (what: string, cause?: unknown) =>
    new RebuildError('VLM_REBUILD_LEAF', `batch ${at.batchId} leaf ${at.leafIndex}: ${what}`, at, cause === undefined ? undefined : { cause });
  let bundle: {
    timestamp?: string;
    meta?: { extension?: { url?: string; valueBase64Binary?: string }[] };
    entry?: { resource?: FhirResource }[];
  };
  try {
    // Alone, or a member of a group envelope of its key scope (storage/envelope-group.ts).
    const plaintext = await openEnvelope(cipher, envelope, {
      resourceType: locator.type,
      id: locator.id,
      versionId: String(locator.versionId),
      keyScope: locator.keyScope,
    });
    bundle = JSON.parse(decoder.decode(plaintext));
  } catch (err) {
    throw fail('the envelope does not decrypt for its locator', err);
  }
  const saltText = bundle.meta?.extension?.find((e) => e.url === ANCHOR_SALT_EXTENSION)?.valueBase64Binary;
  const salt = saltText === undefined ? undefined : new Uint8Array(Buffer.from(saltText, 'base64'));
  if (!salt || salt.length !== 32) throw fail('the envelope carries no anchor salt');
  let resource: FhirResource | undefined;
  let time = bundle.timestamp;
  if (locator.method !== 'delete') {
    resource = bundle.entry?.[0]?.resource;
    const meta = resource?.meta as { versionId?: string; lastUpdated?: string } | undefined;
    if (!resource || resource.resourceType !== locator.type || resource.id !== locator.id || meta?.versionId !== String(locator.versionId)) {
      throw fail('the envelope holds another resource version than its locator names');
    }
    time = meta.lastUpdated;
  }
  const lastUpdated = time === undefined ? Number.NaN : Date.parse(time);
  if (!Number.isFinite(lastUpdated)) throw fail('the envelope has no time');
  return { resource, salt, lastUpdated };
}

export const REBUILD_USAGE = `Usage: vellum rebuild [--blocks-from <vellum.db | data dir>]... [--json]

Rebuild the index database of VELLUM_DATA_DIR from the chain's anchor events, IPFS and the
master key, verifying every leaf. Uses the server's configuration (VELLUM_* variables); run it
with the server stopped. VELLUM_DATA_DIR/vellum.db must not exist.

Options:
  --blocks-from <path>  an embedded block store (a vellum.db, or a data dir holding one) to copy
                        blocks from; repeatable. With VELLUM_IPFS_URL, blocks come from Kubo.
  --json                print the report as JSON

Exit status: 0 rebuilt, 1 the log did not verify (nothing written), 2 usage or I/O error.
`;

/** `vellum rebuild …`: returns the exit code. */
export async function runRebuild(argv: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'blocks-from': { type: 'string', multiple: true },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    io.stderr.write(`vellum rebuild: ${(err as Error).message}\n\n${REBUILD_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(REBUILD_USAGE);
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr.write(`vellum rebuild: ${err.message}\n`);
    return 2;
  }
  try {
    const report = await rebuildIndex({
      config,
      blocksFrom: values['blocks-from'] ?? [],
      onBatch: values.json ? undefined : (p) => io.stderr.write(`batch ${p.batchId}: ${p.leaves} versions (${p.versions} so far)\n`),
    });
    io.stdout.write(
      values.json
        ? `${JSON.stringify({ rebuilt: true, ...report }, null, 2)}\n`
        : `rebuilt ${report.versions} versions of ${report.resources} resources from ${report.batches} batches (chain ${report.chainId}, registry ${report.contract})\n`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof RebuildError)) throw err;
    if (values.json) io.stdout.write(`${JSON.stringify({ rebuilt: false, error: { code: err.code, message: err.message, ...err.where } }, null, 2)}\n`);
    io.stderr.write(`vellum rebuild: ${err.code}: ${err.message}\n`);
    const usage: RebuildErrorCode[] = ['VLM_REBUILD_INDEX_EXISTS', 'VLM_REBUILD_NO_KEY', 'VLM_REBUILD_CHAIN_OFF'];
    return usage.includes(err.code) ? 2 : 1;
  }
}
