/**
 * The index: which versions exist, where their envelopes are (CIDs), and the search rows of
 * every current version. It is a cache of what the blob store and (later) the chain hold.
 */
import type { DataKeyStore } from './cipher.ts';
import type { IndexClause, IndexQuery, SearchRow, SortValue } from './search-types.ts';

export type WriteMethod = 'create' | 'update' | 'patch' | 'delete';

/** One stored version of a resource. Times are milliseconds since the epoch. */
export interface VersionRecord {
  seq: number;
  type: string;
  id: string;
  versionId: number;
  lastUpdated: number;
  deleted: boolean;
  /** True when this version brought the resource into existence (first version, or after a deletion). */
  created: boolean;
  /** The interaction that made it: create (POST), update (PUT), patch, delete. */
  method: WriteMethod;
  cid: string;
  keyScope: string;
}

/** One version to commit. `expectedVersion` is the current version the writer saw (0 = none). */
export interface IndexWrite {
  type: string;
  id: string;
  versionId: number;
  expectedVersion: number;
  lastUpdated: number;
  deleted: boolean;
  method: WriteMethod;
  cid: string;
  keyScope: string;
  searchRows: SearchRow[];
  /**
   * The version's anchor leaf, queued (pending) in the same transaction as the version, with
   * its sealed manifest locator (locator.ts) when the repository has a locator key.
   */
  anchor?: { leaf: Uint8Array; salt: Uint8Array; locator?: string };
}

/** A pending leaf waiting for a batch. */
export interface PendingLeaf {
  seq: number;
  leaf: Uint8Array;
  /** CID of the version's envelope (listed in the public batch manifest). */
  cid: string;
  /** Sealed locator listed beside the leaf in the manifest (see locator.ts). */
  locator?: string;
}

/** A batch planned (persisted before it is sent, so a crash resumes it rather than re-batching). */
export interface PlannedBatch {
  id: number;
  root: Uint8Array;
  leafCount: number;
  manifestCid: string;
  seqs: number[];
}

/** Where a batch landed on chain. */
export interface BatchReceipt {
  chainBatchId: number;
  txHash: string;
  blockNumber: number;
  blockTimestamp: number;
  chainId: number;
  contract: string;
}

/** Everything known about a version's anchoring. */
export interface AnchorRecord {
  seq: number;
  leaf: Uint8Array;
  salt: Uint8Array;
  status: 'pending' | 'planned' | 'anchored';
  /**
   * `proof` is stored only for batches planned before proofs were computed on demand (leaves'
   * proofs are rebuilt from `batchLeaves` when absent: storing ~350 bytes per version for the
   * rare $verify cost more than rebuilding a batch's tree then).
   */
  batch?: PlannedBatch & { leafIndex: number; proof?: Uint8Array[]; receipt?: BatchReceipt };
}

/** The durable queue of the anchor pipeline (implemented by the index). */
export interface AnchorQueue {
  /** Oldest pending leaves not yet in any batch. */
  pendingLeaves(limit: number): Promise<PendingLeaf[]>;
  /** Persist a batch and assign its leaves (with their proofs, when given) in one transaction. */
  planBatch(batch: Omit<PlannedBatch, 'id'>, proofs?: Uint8Array[][]): Promise<PlannedBatch>;
  /** The leaves of a batch, in leaf order (to rebuild its tree and a leaf's proof). */
  batchLeaves(batchId: number): Promise<Uint8Array[]>;
  /** Batches planned but not yet recorded as anchored (to resume after a crash). */
  plannedBatches(): Promise<PlannedBatch[]>;
  recordAnchor(batchId: number, receipt: BatchReceipt): Promise<void>;
  anchorOf(seq: number): Promise<AnchorRecord | undefined>;
  /** `anchorOf` for many versions at once (bulk readers: an export's proofs files). */
  anchorsOf(seqs: readonly number[]): Promise<Map<number, AnchorRecord>>;
  /** Leaves not yet anchored (pending or in a planned batch). */
  backlog(): Promise<number>;
}

export interface HistoryQuery {
  type?: string;
  id?: string;
  /** Only versions with lastUpdated >= since. */
  since?: number;
  /** Only versions that were current at some point in [low, high] (ms). */
  at?: { low: number; high: number };
  /** Snapshot: only versions with seq <= this (keeps pages stable while others write). */
  maxSeq?: number;
  /** Keyset paging: only versions with seq < olderThan (the page after a page ending there)… */
  olderThan?: number;
  /** …or the `count` versions with seq > newerThan nearest to it (the page before), still newest first. */
  newerThan?: number;
  /** Only versions of this key scope (a patient's compartment)… */
  keyScope?: string;
  /** …and, with `keyScope`, deletion versions too (they carry no data and no scope). */
  withDeletions?: boolean;
  /** No versions of these types (AuditEvents withheld from the caller: src/fhir/access.ts `auditHidden`). */
  excludeTypes?: readonly string[];
  count: number;
  offset: number;
}

/** Which current resources `currentResources` walks, in index order (rid ascending). */
export interface CurrentResourcesQuery {
  /** Only resources whose index row id is greater than this (0 = from the start). */
  afterRid: number;
  limit: number;
  /** Only these types (all types when absent). */
  types?: readonly string[];
}

/** A current, non-deleted resource and its index row id (the cursor of `currentResources`). */
export interface CurrentResource {
  rid: number;
  record: VersionRecord;
}

/** The search rows that replace a current resource's rows (see `replaceSearchRows`). */
export interface SearchRowsReplacement {
  type: string;
  id: string;
  rows: SearchRow[];
}

/**
 * The versions current at a snapshot (`maxSeq`), one type at a time, in seq order (Bulk Data
 * export, src/fhir/bulk/): for each resource, its latest version with seq <= maxSeq.
 */
export interface SnapshotQuery {
  type: string;
  /** The snapshot: versions committed after it are not seen (nor do they hide older ones). */
  maxSeq: number;
  /** Keyset: only versions with seq > afterSeq (0 = from the start). */
  afterSeq: number;
  limit: number;
  /** Only versions with lastUpdated > since (ms). */
  since?: number;
  /**
   * Include resources whose version at the snapshot is a deletion (default: left out). A
   * deletion's record carries the key scope of the version it deleted.
   */
  deletions?: boolean;
  /**
   * Only versions of these key scopes (a deletion counts with the scope of the version it
   * deleted, since it carries none itself)…
   */
  keyScopes?: readonly string[];
  /** …or only versions of some patient's key scope (not the shared one). */
  patientScoped?: boolean;
}

/** A durable Bulk Data export job (src/fhir/bulk/): what was asked and how far it got, as JSON the FHIR layer defines. */
export interface ExportJobRow {
  id: string;
  /** Whose job it is (the client that kicked it off). */
  owner: string;
  status: 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
  createdAt: number;
  /** When its files and status go away (set on completion). */
  expiresAt?: number;
  spec: unknown;
  progress: unknown;
}

/** Where export jobs live: the index database, beside the versions they export. */
export interface ExportJobStore {
  create(job: ExportJobRow): Promise<void>;
  get(id: string): Promise<ExportJobRow | undefined>;
  /** Change status, progress or expiry. */
  update(id: string, change: Partial<Pick<ExportJobRow, 'status' | 'progress' | 'expiresAt'>>): Promise<void>;
  /** Jobs in any of `statuses` (oldest first), optionally of one owner. */
  list(statuses: readonly ExportJobRow['status'][], owner?: string): Promise<ExportJobRow[]>;
  /** Jobs whose expiry has passed. */
  expired(now: number): Promise<ExportJobRow[]>;
  remove(id: string): Promise<void>;
}

/**
 * A subscription's filter, evaluated inside the commit of every version of its type (the outbox:
 * an event exists exactly when its version committed). A version matches when the search `where`
 * finds it among the rows just written; a deletion matches when the version it deletes did.
 */
export interface EventFilter {
  subscription: string;
  type: string;
  where: readonly IndexClause[];
  /** The interactions that are events (a topic's `supportedInteraction`); all when absent. */
  interactions?: readonly EventInteraction[];
}

/** What a version did: created its resource (again, after a deletion), updated it, deleted it. */
export type EventInteraction = 'create' | 'update' | 'delete';

/**
 * A subscription's event: its number in the outbox (1, 2, … per subscription), the version it is
 * about, and — once delivered — its number as notified (`notified`: 1, 2, … over the events that
 * were sent; an event the owner may not see at delivery is passed over and gets none).
 */
export interface SubscriptionEvent {
  number: number;
  seq: number;
  /** When the version committed (ms). */
  at: number;
  notified?: number;
}

/** A subscription's delivery state, kept beside its events. */
export interface SubscriptionState {
  id: string;
  /** Who created it (a JSON the FHIR layer defines: the principal), for decisions at delivery. */
  owner: unknown;
  /** Events delivered (or passed over) so far: the next to deliver is `delivered + 1`. */
  delivered: number;
  /** Consecutive failed attempts, and when the next may be made (ms). */
  failures: number;
  retryAt: number;
  /** Whether the endpoint answered the handshake. */
  handshake: boolean;
  /** Events notified so far (`events-since-subscription-start`). */
  notified: number;
}

/** Subscriptions' events and delivery state, in the index (storage/sqlite/sqlite-index.ts). */
export interface SubscriptionStore {
  /** Replace the filters every commit evaluates. */
  setFilters(filters: readonly EventFilter[]): void;
  /** The subscriptions that got events since the last call (a hint: the dispatcher visits them first). */
  takeDirty(): Set<string>;
  /** Events after `afterNumber`, oldest first. */
  events(subscription: string, afterNumber: number, limit: number): Promise<SubscriptionEvent[]>;
  /** How many events the subscription has had. */
  eventCount(subscription: string): Promise<number>;
  state(subscription: string): Promise<SubscriptionState | undefined>;
  /** Save the state, and in the same transaction the notified numbers of the events just sent. */
  putState(state: SubscriptionState, notified?: readonly { number: number; notified: number }[]): Promise<void>;
  /** Notified events with numbers in [from, to], oldest first (`$events`). */
  notifiedEvents(subscription: string, from: number, to: number, limit: number): Promise<SubscriptionEvent[]>;
  /**
   * Events that are not a version's own (a practitioner approved on chain): one event of version
   * `seq` for each subscription, numbered in its sequence, in one transaction.
   */
  emit(subscriptions: readonly string[], seq: number, at: number): Promise<void>;
  /** The owner of every subscription that has one, deleted subscriptions included. */
  owners(): Promise<Map<string, unknown>>;
  /** Forget a subscription's events and delivery state (it was deleted); its owner is kept. */
  remove(subscription: string): Promise<void>;
  /**
   * Several nodes on one index: tell `watcher` of what other nodes commit — events (the
   * subscriptions that got them) and Subscription resources written — and when the watch was
   * interrupted (anything may have been missed). A commit that follows another node's Subscription
   * write waits for `subscriptions` (the filters it sets are the ones the commit applies). Absent on
   * a single-node store.
   */
  watch?(watcher: SubscriptionWatcher): Promise<void>;
}

export interface SubscriptionWatcher {
  events(subscriptions: readonly string[]): void;
  subscriptions(ids: readonly string[]): Promise<void>;
  /** The watch was down and is back: look at everything again. */
  resync(): void;
}

export interface Page<T> {
  records: T[];
  total: number | undefined;
}

/** A page of search matches with each match's sort key (`IndexKeyset.key`), parallel to `records`. */
export interface SearchPage extends Page<VersionRecord> {
  keys: SortValue[][];
}

export interface IndexStore extends AnchorQueue {
  readonly dataKeys: DataKeyStore;
  current(type: string, id: string): Promise<VersionRecord | undefined>;
  version(type: string, id: string, versionId: number): Promise<VersionRecord | undefined>;
  /** Versions newest first, with the total when it is cheap. */
  history(query: HistoryQuery): Promise<Page<VersionRecord>>;
  /** Highest committed seq (the snapshot marker for history paging). */
  lastSeq(): Promise<number>;
  /**
   * Commit versions atomically (all or none). Raises StorageError `VLM_INDEX_VERSION_CONFLICT`
   * (conflict) when a resource's current version is not the expected one.
   */
  commit(writes: IndexWrite[]): Promise<VersionRecord[]>;
  /**
   * Resolve once every commit made so far is durable. Backends whose commits are durable on
   * return resolve at once; the embedded SQLite index batches the fsyncs of concurrent writers.
   */
  flush(): Promise<void>;
  /** Export jobs (Bulk Data). */
  readonly exportJobs: ExportJobStore;
  /** Subscription events (the outbox) and delivery state. */
  readonly subscriptions: SubscriptionStore;
  /** The version of a seq (undefined when there is none). */
  versionBySeq(seq: number): Promise<VersionRecord | undefined>;
  /** The versions current at a snapshot (see SnapshotQuery). */
  snapshotVersions(query: SnapshotQuery): Promise<VersionRecord[]>;
  /** Current, non-deleted resources matching the query, with their sort keys. */
  search(query: IndexQuery): Promise<SearchPage>;
  /**
   * Current, non-deleted resources in index order, a page at a time (`vellum reindex` walks the
   * whole store with it: pass the last `rid` of a page as the next `afterRid`).
   */
  currentResources(query: CurrentResourcesQuery): Promise<CurrentResource[]>;
  /**
   * Replace the search rows of current, non-deleted resources, all in one transaction (a search
   * parameter change re-extracts them). Versions, pointers and anchors are untouched. Resources
   * that are absent or deleted are skipped; returns how many were re-indexed. Raises StorageError
   * `VLM_INDEX_COMMIT` (fault) when the transaction fails (nothing is changed).
   */
  replaceSearchRows(entries: readonly SearchRowsReplacement[]): Promise<number>;
  /** Raises StorageError (unavailable) when the index cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
