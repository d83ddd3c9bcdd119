/**
 * The embedded chain's transaction log, `<dataDir>/chain/transactions.log`: every raw
 * transaction the embedded chain was sent, in order, so that a fresh in-memory chain can be
 * brought back to the same state by sending them again (`embedded-chain.ts`).
 *
 * One JSON object per line:
 *
 * - `{"v":1,"hash":"0x…","block":12,"timestamp":1767225600,"raw":"0x02f8…"}`: a signed
 *   transaction, written and fsynced BEFORE it is sent, with the block number and timestamp
 *   it is expected to get (the embedded chain mines one block per transaction, and sets each
 *   block's timestamp itself);
 * - `{"v":1,"refused":"0x…"}`: the chain refused the transaction with that hash outright (so it
 *   was never mined, and replay must skip it).
 *
 * Crash safety: a line is complete on disk before its transaction is sent, so the log is never
 * behind the chain. It may be one transaction AHEAD (crash between the fsync and the send):
 * replay then sends that transaction, which is harmless — it was signed for exactly this
 * chain, nonce and block, and anchoring is idempotent per root, so whoever asked for it gets the
 * existing receipt when they ask again. A torn final line (crash during the write, hence before
 * the send) is dropped at open; a malformed line anywhere else is VLM_CHAIN_LOG_CORRUPT.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chainError } from './errors.ts';

/** One logged transaction. */
export interface LoggedTransaction {
  hash: string;
  /** Block it was (to be) mined in. */
  block: number;
  /** That block's timestamp (seconds). */
  timestamp: number;
  raw: string;
}

const HEX = /^0x(?:[0-9a-f]{2})+$/;
const HASH = /^0x[0-9a-f]{64}$/;

function corrupt(file: string, line: number, why: string): Error {
  return chainError('VLM_CHAIN_LOG_CORRUPT', 'fault', `${file}:${line}: ${why}`);
}

function parseLine(text: string, file: string, lineNo: number): LoggedTransaction | { refused: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw Object.assign(corrupt(file, lineNo, 'not JSON'), { cause: err });
  }
  const v = value as Record<string, unknown>;
  if (v === null || typeof v !== 'object' || v.v !== 1) throw corrupt(file, lineNo, 'unknown record version');
  if (typeof v.refused === 'string' && HASH.test(v.refused)) return { refused: v.refused };
  if (
    typeof v.hash !== 'string' || !HASH.test(v.hash) ||
    typeof v.raw !== 'string' || !HEX.test(v.raw) ||
    !Number.isSafeInteger(v.block) || (v.block as number) < 1 ||
    !Number.isSafeInteger(v.timestamp) || (v.timestamp as number) < 0
  ) {
    throw corrupt(file, lineNo, 'malformed transaction record');
  }
  return { hash: v.hash, raw: v.raw, block: v.block as number, timestamp: v.timestamp as number };
}

/** The log file, open for appending. */
export class TransactionLog {
  readonly file: string;
  readonly #fd: fs.promises.FileHandle;
  #closed = false;
  #broken: unknown;

  private constructor(file: string, fd: fs.promises.FileHandle) {
    this.file = file;
    this.#fd = fd;
  }

  /**
   * Opens (creating if needed) the log at `file` and returns the transactions to replay, in
   * order, without the refused ones. Drops a torn final line. Raises VLM_CHAIN_LOG_CORRUPT.
   */
  static async open(file: string): Promise<{ log: TransactionLog; entries: LoggedTransaction[] }> {
    const created = !fs.existsSync(file);
    const fd = await fs.promises.open(file, 'a+', 0o600);
    try {
      const text = created ? '' : await fd.readFile('utf8');
      const entries: LoggedTransaction[] = [];
      const refused = new Set<string>();
      let end = 0;
      const lines = text.split('\n');
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!;
        const last = i === lines.length - 1;
        if (last) {
          // After the final '\n' there is either nothing, or a line whose write was torn.
          if (line.length > 0) await fd.truncate(Buffer.byteLength(text.slice(0, end)));
          break;
        }
        end += line.length + 1;
        if (line.length === 0) continue;
        const record = parseLine(line, file, i + 1);
        if ('refused' in record) refused.add(record.refused);
        else entries.push(record);
      }
      if (created) {
        await fd.sync();
        const dir = await fs.promises.open(path.dirname(file), 'r');
        await dir.sync().finally(() => dir.close());
      }
      return { log: new TransactionLog(file, fd), entries: entries.filter((e) => !refused.has(e.hash)) };
    } catch (err) {
      await fd.close();
      throw err;
    }
  }

  /** Appends `entry` and returns once it is on disk (fdatasync). */
  async append(entry: LoggedTransaction): Promise<void> {
    await this.#write({ v: 1, hash: entry.hash, block: entry.block, timestamp: entry.timestamp, raw: entry.raw });
  }

  /** Records that the transaction `hash` was refused by the chain, so replay skips it. */
  async refused(hash: string): Promise<void> {
    await this.#write({ v: 1, refused: hash });
  }

  /**
   * A failed write leaves the file's end unknown (part of a line may be there), so the log
   * refuses every later write (VLM_CHAIN_LOG_WRITE) and nothing more is sent until a restart,
   * whose open drops a torn final line.
   */
  async #write(record: object): Promise<void> {
    if (this.#closed) throw chainError('VLM_CHAIN_CLOSED', 'unavailable', 'the transaction log is closed');
    if (this.#broken) throw chainError('VLM_CHAIN_LOG_WRITE', 'fault', `${this.file} failed earlier; restart to recover`, this.#broken);
    try {
      await this.#fd.write(`${JSON.stringify(record)}\n`);
      await this.#fd.datasync();
    } catch (err) {
      this.#broken = err;
      throw chainError('VLM_CHAIN_LOG_WRITE', 'fault', `cannot append to ${this.file}`, err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fd.close();
  }
}
