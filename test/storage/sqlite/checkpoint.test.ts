/**
 * Who checkpoints the embedded database. A checkpoint runs inside the commit that passes the
 * connection's `wal_autocheckpoint` and fsyncs on that thread: the request thread's connections
 * (index and blocks, one file) leave them to the audit converter thread when it runs
 * (`autoCheckpoint: 0`, `SqliteIndexStore.checkpoint()` after each round), and otherwise all share
 * one threshold — the blocks' connection no longer checkpoints at SQLite's 1,000-page default.
 * Observed through the files: frames copied into the database file make it grow.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { SqliteBlobStore } from '../../../src/storage/sqlite/sqlite-blob-store.ts';
import { SqliteIndexStore } from '../../../src/storage/sqlite/sqlite-index.ts';

const size = (file: string) => (fs.existsSync(file) ? fs.statSync(file).size : 0);

/** ~6 MiB of distinct blocks: well past 1,000 WAL pages (4 MiB), well short of 16,000. */
async function fill(blobs: SqliteBlobStore): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const bytes = new Uint8Array(32 * 1024);
    bytes.fill(i % 251);
    bytes[0] = i & 0xff;
    bytes[1] = i >> 8;
    await blobs.put(bytes);
  }
  await blobs.flush?.();
}

t.test('connections opened with autoCheckpoint 0 leave the log alone until checkpoint()', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vellum.db');
  const index = SqliteIndexStore.open(file, { autoCheckpoint: 0 });
  const blobs = SqliteBlobStore.open(file, { groupCommit: true, autoCheckpoint: 0 });
  const before = size(file);
  await fill(blobs);
  t.ok(size(`${file}-wal`) > 4 * 2 ** 20, 'the log holds the blocks');
  t.equal(size(file), before, 'nothing was copied into the database file by the commits');
  index.checkpoint();
  t.ok(size(file) > before + 4 * 2 ** 20, 'checkpoint() copies the log into the database');
  await blobs.close();
  await index.close();
});

t.test('by default the blocks connection checkpoints at the index threshold, not at 1,000 pages', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-ckpt-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vellum.db');
  const index = SqliteIndexStore.open(file);
  const blobs = SqliteBlobStore.open(file, { groupCommit: true });
  const before = size(file);
  await fill(blobs);
  t.equal(size(file), before, 'no checkpoint within the first 16,000 pages');
  await blobs.close();
  await index.close();
});
