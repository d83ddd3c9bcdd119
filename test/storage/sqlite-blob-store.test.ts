import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CHUNK_SIZE, cidForBytes } from '../../src/storage/cid.ts';
import { SqliteBlobStore } from '../../src/storage/sqlite/sqlite-blob-store.ts';
import { blobStoreBehavior } from './blob-store.behavior.ts';

const dir = mkdtempSync(join(tmpdir(), 'vellum-blobs-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = () => join(dir, `store-${++n}`, 'blobs.sqlite');

blobStoreBehavior(t, async () => SqliteBlobStore.open(freshPath()));

/** Run SQL on the store's file through a second connection (as an attacker or a disk fault would). */
function withDb<T>(path: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

t.test('database file is created in WAL mode', async (t) => {
  const path = freshPath();
  const store = SqliteBlobStore.open(path);
  t.teardown(() => store.close());
  t.ok(existsSync(path), 'database file and parent directory created');
  const mode = withDb(path, (db) => db.prepare('PRAGMA journal_mode').get());
  t.equal(mode?.journal_mode, 'wal');
});

t.test('data survives close and reopen', async (t) => {
  const path = freshPath();
  const small = randomBytes(2048);
  const big = randomBytes(5 * CHUNK_SIZE + 3);
  const first = SqliteBlobStore.open(path);
  const smallCid = await first.put(small);
  const bigCid = await first.put(big);
  await first.close();
  const second = SqliteBlobStore.open(path);
  t.teardown(() => second.close());
  t.ok(Buffer.from(await second.get(smallCid)).equals(small));
  t.ok(Buffer.from(await second.get(bigCid)).equals(big));
  t.equal(await second.put(big), bigCid, 'put after reopen is idempotent');
});

t.test('corrupted rows are detected, and re-putting the content repairs them', async (t) => {
  const path = freshPath();
  const store = SqliteBlobStore.open(path);
  t.teardown(() => store.close());
  const small = randomBytes(1000);
  const big = randomBytes(3 * CHUNK_SIZE);
  const smallCid = await store.put(small);
  const bigCid = await store.put(big);
  const leaf = (await cidForBytes(big)).blocks[1]!.cid;

  withDb(path, (db) => {
    const read = db.prepare('SELECT bytes FROM blocks WHERE cid = ?');
    const write = db.prepare('UPDATE blocks SET bytes = ? WHERE cid = ?');
    for (const cid of [smallCid, leaf]) {
      const bytes = read.get(cid)?.bytes as Uint8Array;
      bytes[10]! ^= 0x01; // one flipped bit
      write.run(bytes, cid);
    }
  });
  await t.rejects(store.get(smallCid), { code: 'VLM_BLOB_CORRUPT', category: 'fault' }, 'single raw block');
  await t.rejects(store.get(bigCid), { code: 'VLM_BLOB_CORRUPT', category: 'fault' }, 'one leaf of a DAG');

  await store.put(small);
  await store.put(big);
  t.ok(Buffer.from(await store.get(smallCid)).equals(small), 'small blob repaired');
  t.ok(Buffer.from(await store.get(bigCid)).equals(big), 'big blob repaired');

  withDb(path, (db) => db.prepare('DELETE FROM blocks WHERE cid = ?').run(leaf));
  t.equal(await store.has(bigCid), true, 'root still present');
  await t.rejects(store.get(bigCid), { code: 'VLM_BLOB_CORRUPT', category: 'fault' }, 'missing leaf under a present root');
  withDb(path, (db) => db.prepare('DELETE FROM blocks WHERE cid = ?').run(bigCid));
  await t.rejects(store.get(bigCid), { code: 'VLM_BLOB_NOT_FOUND', category: 'not-found' }, 'missing root');
});

t.test('blocks() pages through many blocks', async (t) => {
  const store = SqliteBlobStore.open(freshPath());
  t.teardown(() => store.close());
  const cids = new Set<string>();
  for (let i = 0; i < 150; i++) cids.add(await store.put(new TextEncoder().encode(`blob ${i}`)));
  const seen: string[] = [];
  for await (const { cid } of store.blocks()) seen.push(cid);
  t.equal(seen.length, 150);
  t.same(new Set(seen), cids);
  t.same(seen, [...seen].sort(), 'CID order');
});

t.test('open of an unusable path → VLM_BLOB_OPEN', async (t) => {
  t.throws(() => SqliteBlobStore.open(join(dir, 'nope', '\u0000bad')), { code: 'VLM_BLOB_OPEN', category: 'unavailable' });
});

t.test('put throughput (2 KB blobs, durable)', async (t) => {
  const store = SqliteBlobStore.open(freshPath());
  t.teardown(() => store.close());
  const blobs = Array.from({ length: 300 }, () => randomBytes(2048));
  const start = performance.now();
  for (const b of blobs) await store.put(b);
  const putMs = performance.now() - start;
  const cids = await Promise.all(blobs.map(async (b) => (await cidForBytes(b)).root));
  const s2 = performance.now();
  for (const c of cids) await store.get(c);
  const getMs = performance.now() - s2;
  t.comment(`SqliteBlobStore: ${Math.round((blobs.length / putMs) * 1000)} puts/s (synchronous=FULL), ${Math.round((cids.length / getMs) * 1000)} gets/s`);
  t.pass();
});

t.test('putMany stores several blobs in one transaction, with the CIDs put gives', async (t) => {
  const store = SqliteBlobStore.open(':memory:');
  t.teardown(() => store.close());
  const blobs = [randomBytes(100), randomBytes(2000), randomBytes(CHUNK_SIZE + 10), randomBytes(100)];
  blobs[3] = blobs[0]!; // the same content twice is one block
  const cids = await store.putMany(blobs);
  t.same(cids, await Promise.all(blobs.map(async (b) => (await cidForBytes(b)).root)));
  for (const [i, cid] of cids.entries()) t.same(Buffer.from(await store.get(cid)), blobs[i]);
  t.same(await store.putMany([]), []);
});
