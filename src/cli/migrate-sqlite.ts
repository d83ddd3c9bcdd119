/**
 * `vellum migrate --from-sqlite data/vellum.db --to postgres://…`: move an embedded deployment's
 * index and blocks into an empty PostgreSQL database (its schema applied first), in one
 * transaction — a failure leaves the target as it was. Row ids, sequence numbers and batch ids are
 * kept, so search rows, anchors, paging cursors and subscription event numbers stay valid. On the
 * way every version is checked: its envelope's blocks are read back from PostgreSQL and must hash
 * to its CID (when the blocks are in the file: not with an IPFS block store), and its anchor leaf,
 * in an anchored batch, must prove against the batch's root rebuilt from the batch's leaves.
 * Progress goes to stderr (a line per table, a counter for versions); `--json` prints one summary
 * line. The authorization store (`auth.db`) and the audit queue stay as they are: point
 * VELLUM_DATABASE_URL at the database and start Vellum (the auth store starts empty on PostgreSQL:
 * enrol clients again, or keep VELLUM_AUTH_KEYS_FILE / VELLUM_ADMIN_CLIENT_FILE).
 */
import { DatabaseSync } from 'node:sqlite';
import type pg from 'pg';
import { buildTree, verifyProof, type MerkleTree } from '../chain/merkle.ts';
import { storageError, isStorageError } from '../storage/errors.ts';
import { migrate, openPostgres } from '../storage/postgres/database.ts';
import { PgBlobStore } from '../storage/postgres/pg-blob-store.ts';
import { pgText } from '../storage/postgres/pg-search.ts';
import type { Io } from './verify.ts';

/** Tables copied as they are, in an order that satisfies the foreign keys. */
const TABLES = [
  'resources',
  'versions',
  'anchor_batches',
  'anchor_leaves',
  'data_keys',
  'export_jobs',
  'subscription_events',
  'subscription_state',
  'search_string',
  'search_token',
  'search_date',
  'search_reference',
  'search_number',
  'search_quantity',
  'search_uri',
  'search_composite',
  'blocks',
] as const;

/** Sequences to move past the copied ids. */
const SEQUENCES: Record<string, string> = { resources: 'rid', versions: 'seq', anchor_batches: 'id' };

/** Rows per INSERT. */
const CHUNK = 500;

export interface MigrateSummary {
  rows: Record<string, number>;
  versions: number;
  cidsChecked: number;
  leavesChecked: number;
}

export async function migrateFromSqlite(from: string, to: string, progress: (line: string, final: boolean) => void): Promise<MigrateSummary> {
  let source: DatabaseSync;
  try {
    source = new DatabaseSync(from, { readOnly: true });
  } catch (err) {
    throw storageError('VLM_MIGRATE_SOURCE', 'invalid', `cannot open ${from} as a Vellum SQLite database`, err);
  }
  const pool = await openPostgres({ url: to, maxConnections: 2 });
  try {
    await migrate(pool);
    const present = new Set((source.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
    if (!present.has('versions') || !present.has('resources')) throw storageError('VLM_MIGRATE_SOURCE', 'invalid', `${from} holds no Vellum index`);
    const summary: MigrateSummary = { rows: {}, versions: 0, cidsChecked: 0, leavesChecked: 0 };
    const client = await pool.connect();
    try {
      const { rows: existing } = await client.query('SELECT 1 FROM versions LIMIT 1');
      if (existing.length) throw storageError('VLM_MIGRATE_TARGET_NOT_EMPTY', 'conflict', 'the target database already holds versions: migrate into an empty one');
      await client.query('BEGIN');
      try {
        for (const table of TABLES) {
          if (!present.has(table)) continue;
          summary.rows[table] = await copyTable(source, client, table, (n, total) => progress(`${table}: ${n}/${total}`, n === total));
        }
        for (const [table, column] of Object.entries(SEQUENCES)) {
          await client.query(`SELECT setval(pg_get_serial_sequence('${table}', '${column}'), GREATEST((SELECT MAX(${column}) FROM ${table}), 1))`);
        }
        await verifyVersions(source, client, present.has('blocks'), summary, (line, final) => progress(line, final));
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    } finally {
      client.release();
    }
    return summary;
  } finally {
    source.close();
    await pool.end().catch(() => undefined);
  }
}

/** Copy one table's rows (its columns as the target has them); the number copied. */
async function copyTable(source: DatabaseSync, client: pg.PoolClient, table: string, progress: (n: number, total: number) => void): Promise<number> {
  const { rows: columnRows } = await client.query('SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position', [table]);
  const targetColumns = (columnRows as { column_name: string }[]).map((r) => r.column_name);
  const sourceColumns = new Set((source.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
  const columns = targetColumns.filter((c) => sourceColumns.has(c));
  const total = Number((source.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n);
  let copied = 0;
  let batch: unknown[][] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const params: unknown[] = [];
    const tuples = batch.map((row) => `(${row.map((v) => `$${params.push(v)}`).join(', ')})`);
    await client.query(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, params);
    copied += batch.length;
    batch = [];
    progress(copied, total);
  };
  for (const row of source.prepare(`SELECT ${columns.join(', ')} FROM ${table}`).iterate() as Iterable<Record<string, unknown>>) {
    // A composite's untyped SQLite value is a number column on PostgreSQL (pg-search.ts compositeValues).
    if (table === 'search_composite' && typeof row['value'] === 'string') continue;
    batch.push(columns.map((c) => value(row[c])));
    if (batch.length >= CHUNK) await flush();
  }
  await flush();
  if (total === 0) progress(0, 0);
  return copied;
}

function value(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return pgText(v);
  return v;
}

/** Every version's envelope CID (when the blocks came along) and anchor leaf, checked against what was copied. */
async function verifyVersions(source: DatabaseSync, client: pg.PoolClient, blocks: boolean, summary: MigrateSummary, progress: (line: string, final: boolean) => void): Promise<void> {
  const blobs = new PgBlobStore(client as unknown as pg.Pool);
  const total = Number((source.prepare('SELECT COUNT(*) AS n FROM versions').get() as { n: number }).n);
  const trees = new Map<number, { root: Uint8Array; leaves: Uint8Array[]; rebuilt: MerkleTree }>();
  const treeOf = async (batchId: number) => {
    let tree = trees.get(batchId);
    if (!tree) {
      const { rows } = await client.query('SELECT root FROM anchor_batches WHERE id = $1', [batchId]);
      const leaves = (await client.query('SELECT leaf FROM anchor_leaves WHERE batch_id = $1 ORDER BY leaf_index', [batchId])).rows.map((r) => new Uint8Array((r as { leaf: Buffer }).leaf));
      tree = { root: new Uint8Array((rows[0] as { root: Buffer }).root), leaves, rebuilt: buildTree(leaves) };
      trees.clear(); // versions come in seq order, so batches one after another
      trees.set(batchId, tree);
    }
    return tree;
  };
  const anchored = source.prepare(
    `SELECT l.leaf, l.batch_id, l.leaf_index FROM anchor_leaves l JOIN anchor_batches b ON b.id = l.batch_id WHERE l.seq = ? AND b.status = 'anchored'`,
  );
  for (const row of source.prepare('SELECT seq, type, id, version, cid FROM versions ORDER BY seq').iterate() as Iterable<{ seq: number; type: string; id: string; version: number; cid: string }>) {
    const at = `${row.type}/${row.id}/_history/${row.version}`;
    if (blocks) {
      try {
        await blobs.get(row.cid);
      } catch (err) {
        throw storageError('VLM_MIGRATE_CID', 'fault', `${at}: its envelope ${row.cid} is missing or does not match its CID`, err);
      }
      summary.cidsChecked++;
    }
    const leaf = anchored.get(row.seq) as { leaf: Uint8Array; batch_id: number; leaf_index: number } | undefined;
    if (leaf) {
      const tree = await treeOf(Number(leaf.batch_id));
      const index = Number(leaf.leaf_index);
      const stored = tree.leaves[index];
      const proven = stored !== undefined && Buffer.from(stored).equals(Buffer.from(leaf.leaf)) && verifyProof(tree.root, stored, tree.rebuilt.proof(index));
      if (!proven) {
        throw storageError('VLM_MIGRATE_LEAF', 'fault', `${at}: its anchor leaf does not prove against its batch's root`);
      }
      summary.leavesChecked++;
    }
    summary.versions++;
    if (summary.versions % 1000 === 0 || summary.versions === total) progress(`versions checked: ${summary.versions}/${total}`, summary.versions === total);
  }
}

export function migrateError(err: unknown): string {
  return isStorageError(err) ? err.code : 'VLM_DB_ERROR';
}
