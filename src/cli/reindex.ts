/**
 * `vellum reindex` — re-extract the search rows of every current resource from its stored
 * version (http://hl7.org/fhir/R4/search.html: a resource is found by the SearchParameters in
 * force, so rows written under an older registry must be redone after a SearchParameter change).
 * Rows are maintained on every write; this is the offline command for the rare change of the
 * parameters themselves, so that no start ever pays for it.
 *
 * With the server stopped, it opens the data dir's index and block store like the server does,
 * walks every current, non-deleted resource in index order, decrypts its version (CID and
 * binding checked), extracts its rows with the server's extractor, and replaces its rows —
 * one index transaction per chunk. Versions, history, anchors and proofs are untouched, and so
 * are key scopes: an envelope stays sealed under the scope it was written with.
 * Running it twice gives the same rows (idempotent); an interrupted run can simply be re-run.
 *
 * Coded errors (ReindexError): `VLM_REINDEX_NO_INDEX`, `VLM_REINDEX_NO_KEY`,
 * `VLM_REINDEX_UNKNOWN_TYPE` (usage, exit 2); `VLM_REINDEX_READ` (a version cannot be read or
 * decrypted: exit 1, chunks already replaced stay replaced and are correct).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from '../config.ts';
import { ConfigError, loadConfig } from '../config.ts';
import type { FhirResource } from '../fhir/request.ts';
import { createExtractor } from '../fhir/search/extract.ts';
import { createSearchRegistry } from '../fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../fhir/validation/resource-types.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { isStorageError } from '../storage/errors.ts';
import type { SearchRowsReplacement } from '../storage/index-store.ts';
import { JweCipher } from '../storage/jwe-cipher.ts';
import { loadMasterKey } from '../storage/keys.ts';
import { KuboBlobStore } from '../storage/kubo-blob-store.ts';
import { Repository } from '../storage/repository.ts';
import { SqliteBlobStore } from '../storage/sqlite/sqlite-blob-store.ts';
import { SqliteIndexStore } from '../storage/sqlite/sqlite-index.ts';
import type { Io } from './verify.ts';

export type ReindexErrorCode =
  /** The data dir has no index database: there is nothing to reindex (`vellum rebuild` makes one). */
  | 'VLM_REINDEX_NO_INDEX'
  /** Neither VELLUM_MASTER_KEY nor the data dir's master.key: nothing can be decrypted. */
  | 'VLM_REINDEX_NO_KEY'
  /** A `--type` that is not an R4 resource type. */
  | 'VLM_REINDEX_UNKNOWN_TYPE'
  /** A `--chunk` that is not a whole number between 1 and 10,000. */
  | 'VLM_REINDEX_BAD_CHUNK'
  /** A current version's envelope is missing, corrupt, or does not decrypt under this master key. */
  | 'VLM_REINDEX_READ';

export class ReindexError extends Error {
  override readonly name = 'ReindexError';
  constructor(
    readonly code: ReindexErrorCode,
    message: string,
    readonly where?: { type: string; id: string; versionId: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ReindexOptions {
  config: Config;
  /** Only these resource types (all when absent or empty). */
  types?: readonly string[];
  /** Resources per index transaction (default 500). */
  chunk?: number;
  /** Called after each committed chunk. */
  onChunk?: (progress: { resources: number }) => void;
}

export interface ReindexReport {
  /** Current resources whose rows were replaced. */
  resources: number;
  /** Search rows written. */
  rows: number;
  /** Index transactions committed. */
  chunks: number;
  /** Resources per type. */
  byType: Record<string, number>;
  /** Current resources left as they were because their key scope was crypto-shredded. */
  shredded: number;
  ms: number;
}

const DB_FILE = 'vellum.db';
export const DEFAULT_CHUNK = 500;

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** Re-extract and replace the search rows of every current resource of `config.dataDir`. Raises ReindexError. */
export async function reindex(options: ReindexOptions): Promise<ReindexReport> {
  const started = performance.now();
  const { config } = options;
  const known = new Set(R4_RESOURCE_TYPES);
  const types = [...new Set(options.types ?? [])];
  const unknown = types.filter((type) => !known.has(type));
  if (unknown.length) throw new ReindexError('VLM_REINDEX_UNKNOWN_TYPE', `not R4 resource types: ${unknown.join(', ')}`);
  const chunk = options.chunk ?? DEFAULT_CHUNK;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 10_000) throw new ReindexError('VLM_REINDEX_BAD_CHUNK', 'the chunk size must be between 1 and 10000');

  // Never create anything: an absent index or key means the wrong data dir, not an empty store.
  const dbPath = path.join(config.dataDir, DB_FILE);
  if (!(await exists(dbPath))) throw new ReindexError('VLM_REINDEX_NO_INDEX', `${dbPath} does not exist (vellum rebuild makes an index from the log)`);
  const keyFile = path.join(config.dataDir, 'master.key');
  if (config.masterKey === undefined && !(await exists(keyFile))) {
    throw new ReindexError('VLM_REINDEX_NO_KEY', `set VELLUM_MASTER_KEY or put the master key in ${keyFile}`);
  }
  const masterKey = await loadMasterKey({ env: config.masterKey, keyFile });

  const index = SqliteIndexStore.open(dbPath);
  let blobs: BlobStore | undefined;
  try {
    blobs = config.ipfsUrl ? await KuboBlobStore.open({ url: config.ipfsUrl }) : SqliteBlobStore.open(dbPath);
  } catch (err) {
    await index.close();
    throw err;
  }
  // No cache: every version is read once.
  const repository = new Repository({ blobs, index, cipher: new JweCipher(masterKey, index.dataKeys), cacheEntries: 0 });
  const extractor = createExtractor(createSearchRegistry(R4_RESOURCE_TYPES), { baseUrl: config.baseUrl });
  const decoder = new TextDecoder();
  const report: ReindexReport = { resources: 0, rows: 0, chunks: 0, byType: {}, shredded: 0, ms: 0 };
  try {
    let afterRid = 0;
    for (;;) {
      const page = await index.currentResources({ afterRid, limit: chunk, ...(types.length ? { types } : {}) });
      if (!page.length) break;
      afterRid = page[page.length - 1]!.rid;
      const entries: SearchRowsReplacement[] = [];
      for (const { record } of page) {
        const where = { type: record.type, id: record.id, versionId: record.versionId };
        let resource: FhirResource | undefined;
        try {
          const bundle = JSON.parse(decoder.decode(await repository.load(record))) as { entry?: { resource?: FhirResource }[] };
          resource = bundle.entry?.[0]?.resource;
        } catch (err) {
          // A shredded scope is gone on purpose: its resources cannot be read, nor re-extracted.
          if (isStorageError(err, 'VLM_CIPHER_KEY_SHREDDED')) {
            report.shredded++;
            continue;
          }
          throw new ReindexError('VLM_REINDEX_READ', `${record.type}/${record.id} version ${record.versionId} cannot be read`, where, { cause: err });
        }
        if (resource?.resourceType !== record.type || resource.id !== record.id) {
          throw new ReindexError('VLM_REINDEX_READ', `${record.type}/${record.id} version ${record.versionId} holds another resource`, where);
        }
        const rows = extractor.extract(resource);
        entries.push({ type: record.type, id: record.id, rows });
        report.rows += rows.length;
        report.byType[record.type] = (report.byType[record.type] ?? 0) + 1;
      }
      report.resources += await index.replaceSearchRows(entries);
      report.chunks++;
      options.onChunk?.({ resources: report.resources });
    }
    await index.flush();
  } finally {
    await repository.close().catch(() => undefined);
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}

export const REINDEX_USAGE = `Usage: vellum reindex [--type <Type>[,<Type>…]]... [--chunk <n>] [--json]

Re-extract the search rows of every current resource of VELLUM_DATA_DIR from its stored version
(after a SearchParameter change). Uses the server's configuration (VELLUM_* variables); run it
with the server stopped. Versions, history and proofs are untouched; running it again is harmless.

Options:
  --type <Type>   only resources of this type; repeatable, or comma-separated
  --chunk <n>     resources per index transaction (default ${DEFAULT_CHUNK})
  --json          print the report as JSON

Exit status: 0 reindexed, 1 a stored version could not be read, 2 usage or I/O error.
`;

/** `vellum reindex …`: returns the exit code. */
export async function runReindex(argv: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        type: { type: 'string', multiple: true },
        chunk: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    io.stderr.write(`vellum reindex: ${(err as Error).message}\n\n${REINDEX_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(REINDEX_USAGE);
    return 0;
  }
  const fail = (err: ReindexError): number => {
    if (values.json) io.stdout.write(`${JSON.stringify({ reindexed: false, error: { code: err.code, message: err.message, ...err.where } }, null, 2)}\n`);
    io.stderr.write(`vellum reindex: ${err.code}: ${err.message}\n`);
    return err.code === 'VLM_REINDEX_READ' ? 1 : 2;
  };
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr.write(`vellum reindex: ${err.message}\n`);
    return 2;
  }
  const types = (values.type ?? []).flatMap((t) => t.split(',')).map((t) => t.trim()).filter(Boolean);
  let chunk: number | undefined;
  if (values.chunk !== undefined) {
    chunk = /^\d{1,6}$/.test(values.chunk) ? Number(values.chunk) : Number.NaN;
  }
  try {
    const report = await reindex({
      config,
      types,
      ...(chunk !== undefined ? { chunk } : {}),
      onChunk: values.json ? undefined : (p) => io.stderr.write(`${p.resources} resources reindexed\n`),
    });
    io.stdout.write(
      values.json
        ? `${JSON.stringify({ reindexed: true, ...report }, null, 2)}\n`
        : `reindexed ${report.resources} resources (${report.rows} search rows, ${report.chunks} transactions) in ${report.ms} ms` +
            (report.shredded ? `; ${report.shredded} crypto-shredded resources left as they were` : '') +
            '\n',
    );
    return 0;
  } catch (err) {
    if (err instanceof ReindexError) return fail(err);
    if (isStorageError(err, 'VLM_INDEX_OPEN') || isStorageError(err, 'VLM_INDEX_SCHEMA') || isStorageError(err, 'VLM_KEY_INVALID')) {
      const code = (err as { code: string }).code;
      if (values.json) io.stdout.write(`${JSON.stringify({ reindexed: false, error: { code, message: (err as Error).message } }, null, 2)}\n`);
      io.stderr.write(`vellum reindex: ${code}: ${(err as Error).message}\n`);
      return 2;
    }
    throw err;
  }
}
