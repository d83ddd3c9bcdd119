/**
 * Behaviour every BlobStore must show; run by each backend's test file with its own factory.
 */
import type { Test } from 'tap';
import { randomBytes } from 'node:crypto';
import type { BlobStore } from '../../src/storage/blob-store.ts';
import { CHUNK_SIZE, cidForBytes, verifyBlock } from '../../src/storage/cid.ts';

/** Makes a fresh, empty store; the suite closes it. */
export type BlobStoreFactory = () => Promise<BlobStore>;

const text = (s: string) => new TextEncoder().encode(s);

/** Register the shared BlobStore behaviour subtests on `t`. */
export function blobStoreBehavior(t: Test, makeStore: BlobStoreFactory): void {
  const withStore = (name: string, fn: (t: Test, store: BlobStore) => Promise<void>) =>
    t.test(name, async (t) => {
      const store = await makeStore();
      t.teardown(() => store.close());
      await fn(t, store);
    });

  withStore('put returns the Kubo CID and get returns the bytes', async (t, store) => {
    const bytes = text('{"resourceType":"Patient","id":"123"}');
    const cid = await store.put(bytes);
    t.equal(cid, (await cidForBytes(bytes)).root);
    t.ok(cid.startsWith('bafk'), 'small blob → raw CID');
    t.same(Buffer.from(await store.get(cid)), Buffer.from(bytes));
    t.equal(await store.has(cid), true);
  });

  withStore('empty blob', async (t, store) => {
    const cid = await store.put(new Uint8Array(0));
    t.equal(cid, 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku');
    t.equal((await store.get(cid)).byteLength, 0);
  });

  withStore('put is idempotent', async (t, store) => {
    const bytes = randomBytes(3000);
    const a = await store.put(bytes);
    const b = await store.put(Uint8Array.from(bytes));
    t.equal(a, b);
    let count = 0;
    for await (const _ of store.blocks()) count++;
    t.equal(count, 1, 'stored once');
  });

  withStore('multi-block blobs round-trip', async (t, store) => {
    for (const size of [CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17]) {
      const bytes = randomBytes(size);
      const cid = await store.put(bytes);
      t.equal(cid.startsWith('bafy'), size > CHUNK_SIZE, `${size} bytes → ${size > CHUNK_SIZE ? 'dag-pb' : 'raw'} root`);
      t.ok(Buffer.from(await store.get(cid)).equals(bytes), `${size} bytes read back`);
      t.equal(await store.has(cid), true);
    }
  });

  withStore('missing blob → VLM_BLOB_NOT_FOUND', async (t, store) => {
    const { root } = await cidForBytes(text('never stored'));
    t.equal(await store.has(root), false);
    await t.rejects(store.get(root), { code: 'VLM_BLOB_NOT_FOUND', category: 'not-found' });
    t.equal(await store.has('not-a-cid'), false, 'has() of garbage is false');
    await t.rejects(store.get('not-a-cid'), { code: 'VLM_BLOB_CID_INVALID', category: 'invalid' });
  });

  withStore('CIDv0 spelling of a stored dag-pb root finds it', async (t, store) => {
    const bytes = randomBytes(CHUNK_SIZE + 5);
    const cid = await store.put(bytes);
    const { CID } = await import('multiformats/cid');
    const v0 = CID.parse(cid).toV0().toString();
    t.equal(await store.has(v0), true);
    t.ok(Buffer.from(await store.get(v0)).equals(bytes));
  });

  withStore('blocks() yields every block, each verifying', async (t, store) => {
    const small = await store.put(text('a'));
    const big = randomBytes(2 * CHUNK_SIZE + 1);
    const bigCid = await store.put(big);
    const expected = new Set([small, ...(await cidForBytes(big)).blocks.map((b) => b.cid)]);
    const seen = new Set<string>();
    for await (const { cid, bytes } of store.blocks()) {
      t.ok(verifyBlock(cid, bytes), `block ${cid} verifies`);
      seen.add(cid);
    }
    t.same([...seen].sort(), [...expected].sort());
    t.ok(seen.has(bigCid));
  });

  withStore('mutating returned or input bytes does not damage the store', async (t, store) => {
    const bytes = text('immutable please');
    const cid = await store.put(bytes);
    bytes[0] = 0;
    const got = await store.get(cid);
    got[1] = 0;
    t.same(Buffer.from(await store.get(cid)).toString(), 'immutable please');
  });

  withStore('aborted signal and closed store', async (t, store) => {
    const ac = new AbortController();
    ac.abort();
    await t.rejects(store.put(text('x'), { signal: ac.signal }), { code: 'VLM_BLOB_ABORTED' });
    await store.close();
    await t.rejects(store.get('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'), { code: 'VLM_BLOB_CLOSED' });
    await store.close(); // idempotent
  });
}
