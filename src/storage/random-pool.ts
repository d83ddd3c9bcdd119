/**
 * Random bytes for IVs, drawn from a pooled buffer. `crypto.randomBytes(12)` costs about as much
 * as a 4 KiB draw (each call enters OpenSSL's generator: ~10 µs on the reference machine), and
 * the audit trail takes several small draws per access (queue IV, locator IV). Same generator,
 * same bytes; each byte is handed out once (a refill allocates a new buffer, never overwrites
 * one handed out). Node's own `randomUUID` pools its entropy the same way. Per thread: each
 * worker thread has its own pool.
 */
import { randomBytes } from 'node:crypto';

const POOL_BYTES = 4096;
let pool: Buffer = Buffer.alloc(0);
let offset = 0;

/** `n` fresh random bytes (a copy: the caller may keep or change it). */
export function pooledRandomBytes(n: number): Buffer {
  if (n > POOL_BYTES / 8) return randomBytes(n);
  if (offset + n > pool.length) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + n));
  offset += n;
  return out;
}
