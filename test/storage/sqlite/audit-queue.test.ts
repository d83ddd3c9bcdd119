/**
 * The audit queue's batched append: one transaction for many records, sequence numbers in order
 * and never reused (they name AuditEvents), even once the queue is emptied and reopened.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { SqliteAuditQueue } from '../../../src/storage/sqlite/audit-queue.ts';

const key = new Uint8Array(32).fill(3);
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

t.test('appendMany: consecutive numbers, bodies sealed and opened in order', async (t) => {
  const queue = SqliteAuditQueue.open(':memory:', key);
  const first = queue.append(bytes('a'));
  const seqs = queue.appendMany([bytes('b'), bytes('c'), bytes('d')]);
  t.same(seqs, [first + 1, first + 2, first + 3]);
  t.same(queue.appendMany([]), []);
  t.same(queue.take(10).map((r) => [r.seq, text(r.body)]), [[first, 'a'], [first + 1, 'b'], [first + 2, 'c'], [first + 3, 'd']]);
  await queue.close();
});

t.test('numbers are never reused, even after the queue is emptied and reopened', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-queue-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit-queue.db');
  const queue = SqliteAuditQueue.open(file, key);
  const seqs = queue.appendMany([bytes('a'), bytes('b')]);
  queue.remove(seqs);
  t.equal(queue.size(), 0);
  const [next] = queue.appendMany([bytes('c')]);
  t.ok(next! > seqs[1]!, 'after removal');
  queue.remove([next!]);
  await queue.close();
  const again = SqliteAuditQueue.open(file, key);
  t.ok(again.append(bytes('d')) > next!, 'after reopening an empty queue');
  await again.close();
});

t.test('a record bound to another number does not open', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-queue-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit-queue.db');
  const queue = SqliteAuditQueue.open(file, key);
  const [a, b] = queue.appendMany([bytes('a'), bytes('b')]);
  await queue.close();
  const { DatabaseSync } = await import('node:sqlite');
  const db = new DatabaseSync(file);
  const body = (db.prepare('SELECT body FROM audit_queue WHERE seq = ?').get(a!) as { body: Uint8Array }).body;
  db.prepare('UPDATE audit_queue SET body = ? WHERE seq = ?').run(body, b!);
  db.close();
  const again = SqliteAuditQueue.open(file, key);
  t.same(again.take(10).map((r) => [r.seq, text(r.body)]), [[a, 'a'], [b, undefined]]);
  await again.close();
});

t.test('two writers of one file: a taken number is read again, nothing is lost or overwritten', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-queue-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit-queue.db');
  const one = SqliteAuditQueue.open(file, key);
  const two = SqliteAuditQueue.open(file, key);
  const a = one.append(bytes('a'));
  const b = two.append(bytes('b')); // `two` counted from the file: after `a`
  const c = one.append(bytes('c')); // `one` counted a+1 = b: taken, read again
  const [d, e] = one.appendMany([bytes('d'), bytes('e')]);
  const f = two.append(bytes('f')); // `two` counted b+1 = c: taken, read again
  t.same([b, c, d, e, f], [a + 1, a + 2, a + 3, a + 4, a + 5], 'every record got the next free number');
  t.same(one.take(10).map((r) => [r.seq, text(r.body)]), [[a, 'a'], [b, 'b'], [c, 'c'], [d, 'd'], [e, 'e'], [f, 'f']], 'each opens as written');
  await one.close();
  await two.close();
});
