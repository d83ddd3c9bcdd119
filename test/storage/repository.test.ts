import t from 'tap';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.ts';
import { MemoryCipher } from '../../src/storage/memory-cipher.ts';
import { MemoryDataKeyStore } from '../../src/storage/memory-data-key-store.ts';
import { JweCipher } from '../../src/storage/jwe-cipher.ts';
import { Repository, type PreparedVersion } from '../../src/storage/repository.ts';
import { SqliteIndexStore } from '../../src/storage/sqlite/sqlite-index.ts';
import type { Cipher } from '../../src/storage/cipher.ts';
import { isStorageError } from '../../src/storage/errors.ts';

const encoder = new TextEncoder();

function version(id: string, versionId: number, text: string): PreparedVersion {
  return {
    write: {
      type: 'Patient',
      id,
      versionId,
      expectedVersion: versionId - 1,
      lastUpdated: 1_700_000_000_000 + versionId,
      deleted: false,
      method: versionId === 1 ? 'create' : 'update',
      keyScope: 'shared',
      searchRows: [],
    },
    plaintext: encoder.encode(text),
  };
}

const ciphers: [string, () => Cipher][] = [
  ['MemoryCipher', () => new MemoryCipher()],
  ['JweCipher', () => new JweCipher(new Uint8Array(32).fill(7), new MemoryDataKeyStore())],
];

for (const [name, makeCipher] of ciphers) {
  t.test(`repository over in-memory components (${name})`, async (t) => {
    const index = SqliteIndexStore.open(':memory:');
    const blobs = new MemoryBlobStore();
    const repository = new Repository({ blobs, index, cipher: makeCipher(), cacheEntries: 0 });
    t.teardown(() => repository.close());

    const [v1] = await repository.store([version('p1', 1, 'first')]);
    const [v2] = await repository.store([version('p1', 2, 'second')]);
    t.equal(new TextDecoder().decode(await repository.load(v1!)), 'first');
    t.equal(new TextDecoder().decode(await repository.load(v2!)), 'second');
    t.ok(await blobs.has(v1!.cid), 'the envelope is in the block store under its CID');
    t.not(v1!.cid, v2!.cid);

    // Optimistic concurrency: a write that expected an older version changes nothing.
    await t.rejects(repository.store([version('p1', 2, 'stale')]), { code: 'VLM_INDEX_VERSION_CONFLICT' });
    t.equal((await index.current('Patient', 'p1'))!.versionId, 2);

    // A version whose index row points at another version's envelope is refused (binding).
    const swapped = { ...v1!, cid: v2!.cid };
    try {
      await repository.load(swapped);
      t.fail('a swapped envelope must not open');
    } catch (err) {
      t.ok(isStorageError(err, 'VLM_CIPHER_BINDING'), 'VLM_CIPHER_BINDING');
    }

    // Transactions are all or nothing: one conflicting write aborts the others.
    await t.rejects(repository.store([version('p2', 1, 'new'), version('p1', 1, 'conflict')]), { code: 'VLM_INDEX_VERSION_CONFLICT' });
    t.equal(await index.current('Patient', 'p2'), undefined, 'nothing of the failed commit is visible');
  });
}
