/**
 * The export thread: a PartBuilder (encoder.ts) beside the request thread, with its own SQLite
 * connections to the same files (read-only use), its own cipher and no cache — so reading,
 * decrypting and encoding a whole store never holds the request thread, and uses the second core.
 *
 * Messages in: `{ id, op: 'begin', job, type, cursor }`, `{ id, op: 'add', items, elements }`,
 * `{ id, op: 'flush' }`, `{ id, op: 'close' }`. Messages out: `{ id, result }` or `{ id, error }`
 * (an error's code only: never its message, which can quote data).
 */
import { Worker, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { keccakReady } from '../../chain/keccak.ts';
import type { BlobStore } from '../../storage/blob-store.ts';
import { JweCipher } from '../../storage/jwe-cipher.ts';
import { KEY_PURPOSE, deriveKey } from '../../storage/keys.ts';
import { Repository } from '../../storage/repository.ts';
import { openStorage, type StorageLocation } from '../../storage/open.ts';
import { PartBuilder, type Elements, type EncodeItem, type Flushed, type PartJob } from './encoder.ts';
import { ExportFiles } from './files.ts';

export interface ExportWorkerData {
  exportWorker: true;
  /** Where index and blocks are (the thread opens its own connections: a small pool on PostgreSQL). */
  storage: StorageLocation;
  exportsDir: string;
  masterKey: Uint8Array;
  /** Write proofs (the ledger is on). */
  anchoring: boolean;
}

/** The part builder as the runner uses it, wherever it runs. */
export interface PartEncoder {
  begin(job: PartJob, type: string, cursor: number): Promise<void>;
  add(items: readonly EncodeItem[], elements: Elements | undefined): Promise<Flushed[]>;
  flush(): Promise<Flushed>;
  close(): Promise<void>;
}

export class ExportThreadError extends Error {
  override readonly name = 'ExportThreadError';
  constructor(readonly code: string) {
    super(`the export thread failed (${code})`);
  }
}

/** Start the export thread. A thread that dies fails its pending calls; the next call starts a new one. */
export function startExportWorker(data: Omit<ExportWorkerData, 'exportWorker'>): PartEncoder {
  let worker: Worker | undefined;
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const failAll = (code: string) => {
    for (const p of pending.values()) p.reject(new ExportThreadError(code));
    pending.clear();
  };
  const thread = (): Worker => {
    if (worker) return worker;
    const current = new Worker(new URL(import.meta.url), { workerData: { ...data, exportWorker: true } satisfies ExportWorkerData });
    current.unref();
    current.on('message', (m: { id: number; result?: unknown; error?: string }) => {
      const call = pending.get(m.id);
      pending.delete(m.id);
      if (m.error !== undefined) call?.reject(new ExportThreadError(m.error));
      else call?.resolve(m.result);
    });
    current.on('error', (err) => failAll((err as { code?: string }).code ?? 'VLM_BULK_THREAD_CRASHED'));
    current.on('exit', () => {
      if (worker === current) worker = undefined;
      failAll('VLM_BULK_THREAD_EXITED');
    });
    worker = current;
    return current;
  };
  const call = <T>(message: Record<string, unknown>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      thread().postMessage({ ...message, id });
    });
  return {
    begin: (job, type, cursor) => call({ op: 'begin', job, type, cursor }),
    add: (items, elements) => call({ op: 'add', items, elements }),
    flush: () => call({ op: 'flush' }),
    async close() {
      if (!worker) return;
      await call({ op: 'close' }).catch(() => undefined);
      await worker?.terminate();
      worker = undefined;
    },
  };
}

async function runThread(port: MessagePort, data: ExportWorkerData): Promise<void> {
  await keccakReady;
  const { index, blobs } = await openStorage({ ...data.storage, databasePoolMax: 2 });
  const masterKey = new Uint8Array(data.masterKey);
  const repository = new Repository({ blobs, index, cipher: new JweCipher(masterKey, index.dataKeys), cacheEntries: 0 });
  const builder = new PartBuilder({
    repository,
    index,
    files: new ExportFiles(data.exportsDir, deriveKey(masterKey, KEY_PURPOSE.exportFiles)),
    ...(data.anchoring ? { leafKey: deriveKey(masterKey, KEY_PURPOSE.leafPseudonym) } : {}),
  });
  // One call at a time, in order (the runner awaits each).
  let tail: Promise<unknown> = Promise.resolve();
  port.on('message', (m: { id: number; op: string; job?: PartJob; type?: string; cursor?: number; items?: EncodeItem[]; elements?: Elements }) => {
    tail = tail.then(async () => {
      try {
        let result: unknown;
        if (m.op === 'begin') result = builder.begin(m.job!, m.type!, m.cursor!);
        else if (m.op === 'add') result = await builder.add(m.items!, m.elements);
        else if (m.op === 'flush') result = await builder.flush();
        else if (m.op === 'close') {
          await repository.close();
          result = undefined;
        }
        port.postMessage({ id: m.id, result });
      } catch (err) {
        port.postMessage({ id: m.id, error: (err as { code?: string }).code ?? (err as Error)?.name ?? 'VLM_BULK_THREAD' });
      }
    });
  });
}

if (parentPort && (workerData as ExportWorkerData | undefined)?.exportWorker) {
  await runThread(parentPort, workerData as ExportWorkerData);
}
