import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { WalSync } from '../../../src/storage/sqlite/wal-sync.ts';

function tempDb(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-wal-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'db.sqlite');
}

t.test('sync before any WAL exists resolves (nothing to make durable)', async (t) => {
  const wal = new WalSync(tempDb(t));
  await wal.sync();
  await wal.close();
  t.pass('resolved');
});

t.test('callers arriving while an fsync is in flight share the next one', async (t) => {
  const file = tempDb(t);
  const db = new DatabaseSync(file);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE x (v TEXT)');
  db.prepare('INSERT INTO x VALUES (?)').run('a');
  t.ok(fs.statSync(`${file}-wal`).size > 0, 'the commit is in the WAL');
  const wal = new WalSync(file);
  const first = wal.sync();
  const second = wal.sync();
  const third = wal.sync();
  t.not(first, second, 'a commit made during the in-flight fsync needs another one');
  t.equal(second, third, 'later callers share the queued fsync');
  await Promise.all([first, second, third]);
  const after = wal.sync();
  t.not(after, third, 'once idle, a new call starts a new fsync');
  await after;
  await wal.close();
  db.close();
});
