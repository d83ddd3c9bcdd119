/**
 * Group envelopes (src/storage/envelope-group.ts): groupable versions of one key scope share one
 * envelope and block; each member opens as its own bytes, and nothing else opens from the group.
 */
import t, { type Test } from 'tap';
import { decodeGroup, encodeGroup, groupBinding, memberKey } from '../../src/storage/envelope-group.ts';
import { isStorageError } from '../../src/storage/errors.ts';
import { JweCipher } from '../../src/storage/jwe-cipher.ts';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.ts';
import { MAX_GROUP_MEMBERS, Repository, type PreparedVersion } from '../../src/storage/repository.ts';
import { SqliteIndexStore } from '../../src/storage/sqlite/sqlite-index.ts';
import type { VersionRecord } from '../../src/storage/index-store.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function auditEvent(id: string, keyScope: string, group = true): PreparedVersion {
  return {
    write: {
      type: 'AuditEvent',
      id,
      versionId: 1,
      expectedVersion: 0,
      lastUpdated: 1_700_000_000_000,
      deleted: false,
      method: 'create',
      keyScope,
      searchRows: [],
    },
    plaintext: encoder.encode(JSON.stringify({ resourceType: 'Bundle', entry: [{ resource: { resourceType: 'AuditEvent', id } }] })),
    ...(group ? { group: true } : {}),
  };
}

function open(t: Test) {
  const index = SqliteIndexStore.open(':memory:');
  const blobs = new MemoryBlobStore();
  const cipher = new JweCipher(new Uint8Array(32).fill(9), index.dataKeys);
  const repository = new Repository({ blobs, index, cipher, cacheEntries: 0 });
  t.teardown(() => repository.close());
  // A second repository over the same stores: nothing cached from the writes.
  const reader = new Repository({ blobs, index, cipher: new JweCipher(new Uint8Array(32).fill(9), index.dataKeys), cacheEntries: 0 });
  return { index, blobs, repository, reader };
}

t.test('encode and decode are inverse; anything else is not a group', async (t) => {
  const members = [
    { key: 'AuditEvent/a/1', plaintext: encoder.encode('{"x":1}') },
    { key: 'AuditEvent/é/1', plaintext: new Uint8Array(0) },
  ];
  const decoded = decodeGroup(encodeGroup(members))!;
  t.same([...decoded.keys()], ['AuditEvent/a/1', 'AuditEvent/é/1']);
  t.equal(decoder.decode(decoded.get('AuditEvent/a/1')), '{"x":1}');
  const bytes = encodeGroup(members);
  t.equal(decodeGroup(bytes.subarray(0, bytes.length - 1)), undefined, 'truncated');
  t.equal(decodeGroup(new Uint8Array([...bytes, 0])), undefined, 'trailing bytes');
  t.equal(decodeGroup(encoder.encode('{"resourceType":"Bundle"}')), undefined, 'a version bundle');
  t.equal(memberKey({ resourceType: 'AuditEvent', id: 'a', versionId: '1' }), 'AuditEvent/a/1');
  t.not(groupBinding('s').resourceType, 'AuditEvent');
});

t.test('groupable versions of one scope share an envelope; each opens as itself', async (t) => {
  const { blobs, repository, reader } = open(t);
  const records = await repository.store([
    auditEvent('a1', 'scope-a'),
    auditEvent('a2', 'scope-a'),
    auditEvent('b1', 'scope-b'), // alone in its scope: stored alone
    auditEvent('a3', 'scope-a', false), // not groupable
    auditEvent('a4', 'scope-a'),
  ]);
  const cid = (id: string) => records.find((r) => r.id === id)!.cid;
  t.equal(cid('a1'), cid('a2'));
  t.equal(cid('a1'), cid('a4'), 'the three groupable versions of scope-a: one envelope');
  t.not(cid('b1'), cid('a1'));
  t.not(cid('a3'), cid('a1'));
  t.equal(new Set(records.map((r) => r.cid)).size, 3, 'three envelopes for five versions');
  t.ok(await blobs.has(cid('a1')), 'the group is one block');
  for (const record of records) {
    const bundle = JSON.parse(decoder.decode(await reader.load(record)));
    t.equal(bundle.entry[0].resource.id, record.id, `${record.id} opens as itself`);
  }
});

t.test('a record pointing into a group it is not in, or from another scope, is refused', async (t) => {
  const { repository, reader } = open(t);
  const records = await repository.store([auditEvent('g1', 'scope-a'), auditEvent('g2', 'scope-a'), auditEvent('other', 'scope-a', false)]);
  const group = records.find((r) => r.id === 'g1')!;
  const refused = async (record: VersionRecord, what: string) => {
    try {
      await reader.load(record);
      t.fail(`${what}: opened`);
    } catch (err) {
      t.ok(isStorageError(err, 'VLM_CIPHER_BINDING'), `${what}: VLM_CIPHER_BINDING`);
    }
  };
  await refused({ ...records.find((r) => r.id === 'other')!, cid: group.cid }, 'another version of the scope');
  await refused({ ...group, versionId: 2 }, 'another version number');
  await repository.store([auditEvent('x1', 'scope-b'), auditEvent('x2', 'scope-b')]);
  await refused({ ...group, keyScope: 'scope-b' }, 'a member read under another key scope');
  t.equal(decoder.decode(await reader.load(group)).includes('"g1"'), true, 'the member itself still opens');
});

t.test(`groups hold at most ${MAX_GROUP_MEMBERS} members`, async (t) => {
  const { repository, reader } = open(t);
  const records = await repository.store(Array.from({ length: MAX_GROUP_MEMBERS + 1 }, (_, i) => auditEvent(`m${i}`, 'scope-a')));
  t.equal(new Set(records.map((r) => r.cid)).size, 2, 'two envelopes');
  const last = records.at(-1)!;
  t.match(decoder.decode(await reader.load(last)), `"m${MAX_GROUP_MEMBERS}"`);
});
