/**
 * The durable audit queue: where an access's audit record is written — encrypted, and fsynced
 * with the other writers of the moment (group commit) — before its response leaves. A background
 * worker (src/fhir/audit.ts) turns queued records into AuditEvents through the notarised write
 * path in large batches and then removes them. It is a small SQLite file of its own
 * (`audit-queue.db` in the data dir), so the fsync a request waits for covers only queue records,
 * not the write-ahead log of the index and blocks.
 *
 * Records are sealed with AES-256-GCM under a master-derived key (random IV, sequence number as
 * additional data): the queue never holds readable PHI, even for the milliseconds a record waits.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { storageError } from '../errors.ts';
import { pooledRandomBytes } from '../random-pool.ts';
import { WalSync } from './wal-sync.ts';

export interface QueuedRecord {
  seq: number;
  /** The record; undefined when its sealed body does not open (altered on disk). */
  body: Uint8Array | undefined;
}

export class SqliteAuditQueue {
  readonly #db: DatabaseSync;
  /** A KeyObject: node:crypto re-imports a raw key on every cipher it makes, which costs more than the cipher. */
  readonly #key: KeyObject;
  readonly #wal: WalSync | undefined;
  readonly #insert: StatementSync;
  readonly #lastSeq: StatementSync;
  readonly #take: StatementSync;
  readonly #count: StatementSync;
  readonly #begin: StatementSync;
  readonly #commit: StatementSync;
  /**
   * The last sequence number this connection used or saw: read once, then counted here, so an
   * append is its inserts alone (a lone record is one autocommit insert). Another writer of the
   * same file (none in a running server) makes the insert collide; the number is then read again.
   */
  #seq: number | undefined;
  #closed = false;
  /** Stable per data dir: prefixes AuditEvent ids so re-converting a record after a crash is idempotent. */
  readonly instance: string;

  private constructor(db: DatabaseSync, key: Uint8Array, wal: WalSync | undefined) {
    this.#db = db;
    this.#key = createSecretKey(key);
    this.#wal = wal;
    db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      PRAGMA busy_timeout = 5000;
      CREATE TABLE IF NOT EXISTS audit_queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
      CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    db.prepare("INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('instance', ?)").run(randomBytes(6).toString('hex'));
    this.instance = (db.prepare("SELECT value FROM audit_meta WHERE key = 'instance'").get() as { value: string }).value;
    this.#insert = db.prepare('INSERT INTO audit_queue (seq, body) VALUES (?, ?)');
    // The highest sequence number ever used (AUTOINCREMENT keeps it in sqlite_sequence even when
    // the queue is empty): numbers are never reused, so an AuditEvent id is never taken twice.
    this.#lastSeq = db.prepare(
      "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_queue'), 0), COALESCE((SELECT MAX(seq) FROM audit_queue), 0)) AS seq",
    );
    this.#take = db.prepare('SELECT seq, body FROM audit_queue ORDER BY seq LIMIT ?');
    this.#count = db.prepare('SELECT COUNT(*) AS n FROM audit_queue');
    this.#begin = db.prepare('BEGIN IMMEDIATE');
    this.#commit = db.prepare('COMMIT');
  }

  /** Open the queue in the SQLite file at `path` (':memory:' for tests); `key` is 32 bytes. */
  static open(path: string, key: Uint8Array): SqliteAuditQueue {
    if (key.length !== 32) throw storageError('VLM_AUDIT_QUEUE_KEY', 'invalid', 'the audit queue key must be 32 bytes');
    try {
      return new SqliteAuditQueue(new DatabaseSync(path), key, path === ':memory:' ? undefined : new WalSync(path));
    } catch (err) {
      throw storageError('VLM_AUDIT_QUEUE_OPEN', 'unavailable', 'cannot open the audit queue', err);
    }
  }

  #check(): void {
    if (this.#closed) throw storageError('VLM_AUDIT_QUEUE_CLOSED', 'unavailable', 'the audit queue is closed');
  }

  /** Append a record (committed to the WAL on return; durable once `flush` resolves). Returns its sequence number. */
  append(plaintext: Uint8Array): number {
    return this.appendMany([plaintext])[0]!;
  }

  /**
   * Append records in one transaction (committed to the WAL on return; durable once `flush`
   * resolves). Returns their sequence numbers, in order.
   */
  appendMany(plaintexts: readonly Uint8Array[]): number[] {
    this.#check();
    if (plaintexts.length === 0) return [];
    try {
      return this.#insertAll(plaintexts);
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      // SQLITE_CONSTRAINT (19) in the low byte of the extended code: the number is taken.
      if (((err as { errcode?: number }).errcode ?? 0) % 256 !== 19) throw queueWriteError(err);
    }
    // A number was taken by another writer: count from what is stored, once.
    this.#seq = undefined;
    try {
      return this.#insertAll(plaintexts);
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw queueWriteError(err);
    }
  }

  /**
   * Numbers are bound into each sealed body (its additional data), so they are assigned here,
   * before the insert; several records go in one transaction.
   */
  #insertAll(plaintexts: readonly Uint8Array[]): number[] {
    const many = plaintexts.length > 1;
    if (many) this.#begin.run();
    let seq = this.#seq ?? Number((this.#lastSeq.get() as { seq: number }).seq);
    const seqs: number[] = [];
    for (const plaintext of plaintexts) {
      seq++;
      this.#insert.run(seq, this.#seal(seq, plaintext));
      seqs.push(seq);
    }
    if (many) this.#commit.run();
    this.#seq = seq;
    return seqs;
  }

  /** Resolve once every record appended so far is on disk (one fsync shared by concurrent callers). */
  async flush(): Promise<void> {
    await this.#wal?.sync();
  }

  /** The oldest `limit` records, opened (`body` undefined for one that does not open: altered on disk). */
  take(limit: number): QueuedRecord[] {
    this.#check();
    const rows = this.#take.all(limit) as { seq: number; body: Uint8Array }[];
    return rows.map((r) => {
      try {
        return { seq: Number(r.seq), body: this.#open(Number(r.seq), r.body) };
      } catch {
        return { seq: Number(r.seq), body: undefined };
      }
    });
  }

  /** Remove records once their AuditEvents are stored. */
  remove(seqs: readonly number[]): void {
    this.#check();
    if (seqs.length === 0) return;
    this.#db.prepare('DELETE FROM audit_queue WHERE seq IN (SELECT value FROM json_each(?))').run(JSON.stringify(seqs));
  }

  size(): number {
    this.#check();
    return Number((this.#count.get() as { n: number }).n);
  }

  #seal(seq: number, plaintext: Uint8Array): Uint8Array {
    const iv = pooledRandomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(`vellum.audit.${seq}`));
    return Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  #open(seq: number, sealed: Uint8Array): Uint8Array {
    try {
      const bytes = Buffer.from(sealed);
      const decipher = createDecipheriv('aes-256-gcm', this.#key, bytes.subarray(0, 12));
      decipher.setAAD(Buffer.from(`vellum.audit.${seq}`));
      decipher.setAuthTag(bytes.subarray(bytes.length - 16));
      return Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]);
    } catch (err) {
      throw storageError('VLM_AUDIT_QUEUE_CORRUPT', 'fault', `audit record ${seq} does not open`, err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#wal?.sync();
    await this.#wal?.close();
    this.#db.close();
  }
}

function queueWriteError(err: unknown) {
  return storageError('VLM_AUDIT_QUEUE_WRITE', 'unavailable', 'cannot queue the audit record', err);
}
