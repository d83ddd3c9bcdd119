/**
 * What the SQLite and PostgreSQL indexes share above their SQL: the rows they read and the records
 * those become, and how a commit decides which subscriptions an event belongs to.
 */
import { decideByRows } from './event-match.ts';
import type {
  AnchorRecord,
  EventFilter,
  EventInteraction,
  ExportJobRow,
  IndexWrite,
  PlannedBatch,
  SubscriptionEvent,
  VersionRecord,
  WriteMethod,
} from './index-store.ts';
import type { IndexQuery } from './search-types.ts';

export const VERSION_COLUMNS = 'v.seq, v.type, v.id, v.version, v.last_updated, v.deleted, v.created, v.method, v.cid, v.key_scope';

export interface VersionRow {
  seq: number;
  type: string;
  id: string;
  version: number;
  last_updated: number;
  deleted: number;
  created: number;
  method: string;
  cid: string;
  key_scope: string;
}

export function toRecord(row: VersionRow): VersionRecord {
  return {
    seq: Number(row.seq),
    type: row.type,
    id: row.id,
    versionId: Number(row.version),
    lastUpdated: Number(row.last_updated),
    deleted: Number(row.deleted) === 1,
    created: Number(row.created) === 1,
    method: row.method as WriteMethod,
    cid: row.cid,
    keyScope: row.key_scope,
  };
}

export const ANCHOR_SELECT = `SELECT l.seq, l.leaf, l.salt, l.batch_id, l.leaf_index, l.proof, b.status, b.chain_batch_id, b.tx_hash, b.block_number,
       b.block_timestamp, b.chain_id, b.contract
       FROM anchor_leaves l LEFT JOIN anchor_batches b ON b.id = l.batch_id`;

export interface AnchorRow {
  seq: number;
  leaf: Uint8Array;
  salt: Uint8Array;
  batch_id: number | null;
  leaf_index: number | null;
  proof: Uint8Array | null;
  status: string | null;
  chain_batch_id: number | null;
  tx_hash: string | null;
  block_number: number | null;
  block_timestamp: number | null;
  chain_id: number | null;
  contract: string | null;
}

/** An anchor row as a record; `batch` is the row's planned batch (undefined while the leaf is pending). */
export function toAnchorRecord(row: AnchorRow, batch: PlannedBatch | undefined): AnchorRecord {
  const record: AnchorRecord = { seq: Number(row.seq), leaf: row.leaf, salt: row.salt, status: 'pending' };
  if (row.batch_id === null || batch === undefined) return record;
  let proof: Uint8Array[] | undefined;
  if (row.proof !== null) {
    proof = [];
    for (let i = 0; i < row.proof.length; i += 32) proof.push(row.proof.subarray(i, i + 32));
  }
  record.status = row.status === 'anchored' ? 'anchored' : 'planned';
  record.batch = {
    ...batch,
    leafIndex: Number(row.leaf_index),
    ...(proof ? { proof } : {}),
    ...(row.status === 'anchored'
      ? {
          receipt: {
            chainBatchId: Number(row.chain_batch_id),
            txHash: row.tx_hash!,
            blockNumber: Number(row.block_number),
            blockTimestamp: Number(row.block_timestamp),
            chainId: Number(row.chain_id),
            contract: row.contract!,
          },
        }
      : {}),
  };
  return record;
}

export interface ExportJobDbRow {
  id: string;
  owner: string;
  status: ExportJobRow['status'];
  created_at: number;
  expires_at: number | null;
  spec: string;
  progress: string;
}

export function toJob(row: ExportJobDbRow): ExportJobRow {
  return {
    id: row.id,
    owner: row.owner,
    status: row.status,
    createdAt: Number(row.created_at),
    ...(row.expires_at === null ? {} : { expiresAt: Number(row.expires_at) }),
    spec: JSON.parse(row.spec),
    progress: JSON.parse(row.progress),
  };
}

export interface EventRow {
  number: number;
  seq: number;
  at: number;
  notified: number | null;
}

export function toEvent(row: EventRow): SubscriptionEvent {
  return { number: Number(row.number), seq: Number(row.seq), at: Number(row.at), ...(row.notified !== null ? { notified: Number(row.notified) } : {}) };
}

/** Subscription filters by the type they watch. */
export function filtersByType(filters: readonly EventFilter[]): Map<string, EventFilter[]> {
  const byType = new Map<string, EventFilter[]>();
  for (const filter of filters) byType.set(filter.type, [...(byType.get(filter.type) ?? []), filter]);
  return byType;
}

/**
 * Inside a commit: whether a filter matches the current rows of `w` (for a deletion: the rows of
 * the version it deletes, still in place) — true or false when the rows just written decide it on
 * their own (tokens, references, ids: `decideByRows`), else the one-row search that decides.
 */
export function filterDecision(filter: EventFilter, w: IndexWrite, interaction: EventInteraction): boolean | IndexQuery {
  if (filter.interactions && !filter.interactions.includes(interaction)) return false;
  const decided = interaction === 'delete' ? undefined : decideByRows(filter.where, w.id, w.searchRows);
  if (decided !== undefined) return decided;
  return {
    resourceType: w.type,
    where: [...filter.where, { negate: false, anyOf: [{ kind: 'id', id: w.id }] }],
    sort: [],
    count: 1,
    offset: 0,
    wantTotal: false,
  };
}
