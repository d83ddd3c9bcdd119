/**
 * The audit trail's converter thread. Turning an audit record into an anchored AuditEvent costs
 * more CPU than the read it records (encryption, the leaf's keccak hashes, index rows), so it runs
 * here, beside the request thread: its own SQLite connections to the same files, its own Writer
 * (no validation or FHIRPath: the rows come from `auditRows`), and the same queue. The request
 * thread only appends records and fsyncs (src/fhir/audit.ts); anchoring picks the new leaves up
 * from the index like any other.
 *
 * Messages in: `{ type: 'kick' }`, `{ type: 'settle', id }`, `{ type: 'close' }`.
 * Messages out: `{ type: 'settled', id }`, `{ type: 'closed' }`, `{ type: 'error', code }`.
 */
import { MessagePort, Worker, parentPort, workerData } from 'node:worker_threads';
import { AuditTrail, type AuditConverter } from './audit.ts';
import { Writer } from './writer.ts';
import { keccakReady } from '../chain/keccak.ts';
import { JweCipher } from '../storage/jwe-cipher.ts';
import { KEY_PURPOSE, deriveKey, keyScoper } from '../storage/keys.ts';
import { Repository } from '../storage/repository.ts';
import { WriteGate } from '../storage/write-gate.ts';
import type { ReferenceRow } from '../storage/search-types.ts';
import { SqliteAuditQueue } from '../storage/sqlite/audit-queue.ts';
import { openStorage, type StorageLocation } from '../storage/open.ts';

export interface AuditWorkerData {
  /** Where index and blocks are (the thread opens its own connections: a small pool on PostgreSQL). */
  storage: StorageLocation;
  /** This node's audit queue (a SQLite file in its data dir, whatever holds the index). */
  queuePath: string;
  masterKey: Uint8Array;
  baseUrl: string;
  /** Queue leaves for anchoring (the ledger is on). */
  anchoring: boolean;
  /** How long records wait before a conversion round (audit.ts BATCH_DELAY_MS by default). */
  batchDelayMs?: number;
  /** The request thread's write gate on the same database (storage/write-gate.ts). */
  writeGate?: SharedArrayBuffer;
}

/** How long after a crash the converter thread is started again. */
const RESTART_DELAY_MS = 1_000;

/**
 * Start the converter thread; the returned converter is what the request thread's AuditTrail uses.
 * A thread that crashes is started again (the records it had not converted are still queued, and
 * conversion is idempotent): the trail never silently stops converting.
 */
/**
 * What may be logged of an error from the converter: its name, code and where it was raised —
 * never its message, which can quote the record being converted.
 */
export interface AuditFailure {
  code: string;
  /** The error's own code, when it is not `code` (e.g. `ERR_SQLITE_ERROR` behind a crash). */
  cause?: string;
  name?: string;
  /** `file:line` frames of the stack inside Vellum's sources. */
  at?: string[];
}

function failureOf(code: string, err: unknown): AuditFailure {
  const e = err as { name?: unknown; code?: unknown; stack?: unknown } | undefined;
  const at = typeof e?.stack === 'string' ? [...e.stack.matchAll(/\/(src\/[\w/.-]+:\d+)/g)].map((m) => m[1]!).slice(0, 6) : [];
  const own = typeof e?.code === 'string' ? e.code : undefined;
  return {
    code,
    ...(own && own !== code ? { cause: own } : {}),
    ...(typeof e?.name === 'string' ? { name: e.name } : {}),
    ...(at.length ? { at } : {}),
  };
}

export function startAuditWorker(data: AuditWorkerData, onError: (failure: AuditFailure) => void, gate?: WriteGate): AuditConverter {
  let next = 0;
  const waiting = new Map<number, () => void>();
  let closed: (() => void) | undefined;
  let closing = false;
  let worker: Worker;
  let exited: Promise<void>;
  let alive = false;
  const spawn = (): void => {
    const current = new Worker(new URL(import.meta.url), { workerData: data });
    current.unref();
    worker = current;
    alive = true;
    current.on('message', (m: { type: string; id?: number; failure?: AuditFailure }) => {
      if (m.type === 'settled') {
        waiting.get(m.id!)?.();
        waiting.delete(m.id!);
      } else if (m.type === 'closed') closed?.();
      else if (m.type === 'error') onError(m.failure ?? { code: 'VLM_AUDIT_WORKER' });
    });
    current.on('error', (err) => onError(failureOf('VLM_AUDIT_WORKER_CRASHED', err)));
    exited = new Promise<void>((resolve) =>
      current.on('exit', () => {
        alive = false;
        // A thread that ended during its turn cannot open the gate itself.
        gate?.releaseHeldByOther();
        resolve();
        if (closing) return;
        // A crashed worker must not hang readers: they answer with what is stored.
        for (const release of waiting.values()) release();
        waiting.clear();
        setTimeout(() => {
          if (!closing) spawn();
        }, RESTART_DELAY_MS).unref();
      }),
    );
  };
  spawn();
  return {
    kick: () => {
      if (alive) worker.postMessage({ type: 'kick' });
    },
    settle: () =>
      new Promise<void>((resolve) => {
        if (!alive) return resolve(); // between a crash and the restart: what is stored
        const id = next++;
        waiting.set(id, resolve);
        worker.postMessage({ type: 'settle', id });
      }),
    close: async () => {
      closing = true;
      const done = new Promise<void>((resolve) => (closed = resolve));
      worker.postMessage({ type: 'close' });
      await Promise.race([done, exited]);
      await worker.terminate();
    },
  };
}

/** The converter's own storage stack and trail (what the worker thread runs; benchmarks open it in-process). */
export interface OpenedConverter {
  trail: AuditTrail;
  queue: SqliteAuditQueue;
  close(): Promise<void>;
}

export async function openAuditConverter(data: AuditWorkerData, onError: (err: unknown) => void): Promise<OpenedConverter> {
  // The WebAssembly keccak starts asynchronously; records left queued are converted at once, so
  // wait for it rather than hash the first batches with the (slower, identical) JavaScript one.
  await keccakReady;
  const storage = await openStorage({ ...data.storage, databasePoolMax: 2 }, { groupCommit: true });
  const { index, blobs } = storage;
  const masterKey = new Uint8Array(data.masterKey);
  const repository = new Repository({
    blobs,
    index,
    cipher: new JweCipher(masterKey, index.dataKeys),
    cacheEntries: 0,
    ...(data.anchoring ? { locatorKey: deriveKey(masterKey, KEY_PURPOSE.manifestLocator) } : {}),
    ...(data.writeGate ? { writeGate: new WriteGate({ buffer: data.writeGate, priority: false }) } : {}),
  });
  const scopeOf = keyScoper(masterKey);
  const writer = new Writer({
    repository,
    // Trusted producer: every op carries its search rows (WriteOp.searchRows), so neither is called.
    validate: () => [],
    extract: () => [],
    // AuditEvent's Patient compartment parameter is `patient`.
    keyScope: (_resource, rows) => {
      const ref = rows.find((r) => r.kind === 'reference' && r.param === 'patient' && (r as ReferenceRow).targetType === 'Patient') as ReferenceRow | undefined;
      return scopeOf(ref?.targetId ? `Patient/${ref.targetId}` : null);
    },
    baseUrl: data.baseUrl,
    ...(data.anchoring ? { leafKey: deriveKey(masterKey, KEY_PURPOSE.leafPseudonym) } : {}),
  });
  const queue = SqliteAuditQueue.open(data.queuePath, deriveKey(masterKey, KEY_PURPOSE.auditQueue));
  const trail = new AuditTrail({
    writer,
    queue,
    baseUrl: data.baseUrl,
    exists: async (id) => (await index.current('AuditEvent', id)) !== undefined,
    ...(data.batchDelayMs !== undefined ? { batchDelayMs: data.batchDelayMs } : {}),
    // The request thread's connections leave checkpoints to this thread (server.ts): one per round,
    // passive (writers go on), so the log is copied and fsynced off the request thread.
    afterRound: () => storage.checkpoint(),
    onError,
  });
  return {
    trail,
    queue,
    async close() {
      await trail.close();
      await queue.close();
      await repository.close();
    },
  };
}

async function runWorker(port: MessagePort, data: AuditWorkerData): Promise<void> {
  const converter = await openAuditConverter(data, (err) =>
    port.postMessage({ type: 'error', failure: failureOf((err as { code?: string }).code ?? 'VLM_AUDIT_CONVERSION', err) }),
  );
  const { trail } = converter;
  port.on('message', (m: { type: string; id?: number }) => {
    if (m.type === 'kick') trail.kick();
    // settle never rejects, and must answer even if it did: a reader is waiting.
    else if (m.type === 'settle') void trail.settle().catch(() => undefined).finally(() => port.postMessage({ type: 'settled', id: m.id }));
    else if (m.type === 'close') {
      void (async () => {
        await converter.close();
        port.postMessage({ type: 'closed' });
      })();
    }
  });
}

if (parentPort && (workerData as AuditWorkerData | undefined)?.queuePath) {
  await runWorker(parentPort, workerData as AuditWorkerData);
}
