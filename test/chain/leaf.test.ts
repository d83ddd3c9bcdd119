/**
 * src/chain/leaf.ts: pinned vectors, an independent re-implementation with ethers' ABI coder,
 * OpenZeppelin StandardMerkleTree compatibility, what changes a leaf and what does not, and
 * error codes. (The contract's `leafHash` is checked against it in
 * test/contracts/anchor-registry.test.ts.)
 */
import t, { type Test } from 'tap';
import { createHash, createHmac } from 'node:crypto';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';
import { AbiCoder, computeHmac, concat, keccak256, toUtf8Bytes } from 'ethers';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import {
  LEAF_DOMAIN,
  PSEUDONYM_CONTEXT,
  canonicalJson,
  cidBytes,
  cidDigest,
  computeLeaf,
  contentDigest,
  leafFromParts,
  newSalt,
  pseudonym,
  versionNumber,
  type LeafInput,
} from '../../src/chain/leaf.ts';
import { buildTree, toHex } from '../../src/chain/merkle.ts';

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const SALT = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
const RESOURCE = {
  resourceType: 'Patient',
  id: 'example',
  meta: { versionId: '1', lastUpdated: '2026-11-22T04:00:00.000Z' },
  name: [{ family: 'Chalmers', given: ['Peter', 'James'] }],
  birthDate: '1974-12-25',
};
/** CIDv1 (raw, sha2-256) of the bytes "envelope": what the block store would return. */
const CID_STRING = CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update('envelope').digest())).toString();

const INPUT: LeafInput = { resourceType: 'Patient', id: 'example', versionId: 1, resource: RESOURCE, salt: SALT, cid: CID_STRING, pseudonymKey: KEY };

/** The same leaf, computed independently with ethers (HMAC, keccak, ABI coder). */
function ethersLeaf(input: { resourceType: string; id: string; versionId: bigint; json: string; salt: Uint8Array; cid: Uint8Array; key: Uint8Array }): string {
  const pseudonymHex = computeHmac('sha256', input.key, toUtf8Bytes(`vellum.pseudonym.v1\u0000${input.resourceType}/${input.id}`));
  const encoded = AbiCoder.defaultAbiCoder().encode(
    ['bytes32', 'bytes32', 'uint64', 'bytes32', 'bytes32'],
    [keccak256(toUtf8Bytes('vellum.anchor.leaf.v1')), pseudonymHex, input.versionId, keccak256(concat([input.salt, toUtf8Bytes(input.json)])), keccak256(input.cid)],
  );
  return keccak256(keccak256(encoded));
}

function throwsCode(t: Test, fn: () => unknown, code: string): void {
  try {
    fn();
    t.fail(`expected ${code}`);
  } catch (err) {
    t.equal((err as { code?: string }).code, code, code);
    t.equal((err as { category?: string }).category, 'invalid', `${code} is an invalid-input error`);
  }
}

t.test('pinned vectors (changing any of these breaks every existing proof)', async (t) => {
  const json = canonicalJson(RESOURCE);
  t.equal(
    json,
    '{"birthDate":"1974-12-25","id":"example","meta":{"lastUpdated":"2026-11-22T04:00:00.000Z","versionId":"1"},"name":[{"family":"Chalmers","given":["Peter","James"]}],"resourceType":"Patient"}',
    'RFC 8785 canonical JSON',
  );
  t.equal(CID_STRING, 'bafkreicmka6km53b4xckv3h6tfrejqs5rqfubebnccc4qw2enc6vm5kiyy', 'envelope CID');
  const leaf = computeLeaf(INPUT);
  t.equal(toHex(LEAF_DOMAIN), '0x9164dd49565e65a962fbe20b6b80ceae26c7a7a8ec71405db10a9a5939840f7d', 'LEAF_DOMAIN');
  // Also: printf 'vellum.pseudonym.v1\0Patient/example' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102…1f
  t.equal(toHex(leaf.pseudonym), '0x3c05c1d7542ba4326630559aa3e3ee263bfc49fdf50b447c71936952a207f847', 'pseudonym');
  t.equal(toHex(leaf.contentDigest), '0x939e2f9e2a7bcd7493093e8117083cf36a7d02ae34ce244dcfa8375551b8ac8c', 'contentDigest');
  t.equal(toHex(leaf.cidDigest), '0xcf6ae43b79cc5e5d39a454e40d566b4d340c7ebaf222781ee7ed8d3597055789', 'cidDigest');
  t.equal(leaf.versionId, 1n, 'versionId');
  t.equal(toHex(leaf.leaf), '0x83edfffd6fde3809aba90aee261e44c0b6cc28422001ad8085a5238df6704e10', 'leaf');
});

t.test('an independent implementation (ethers ABI coder) gives the same leaves', async (t) => {
  for (const [i, versionId] of [1, 2, 77, 2 ** 40].entries()) {
    const resource = { ...RESOURCE, id: `p${i}`, meta: { versionId: String(versionId) } };
    const salt = newSalt();
    const key = newSalt();
    const cid = CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update(`e${i}`).digest()));
    const ours = computeLeaf({ resourceType: 'Patient', id: `p${i}`, versionId, resource, salt, cid, pseudonymKey: key });
    const theirs = ethersLeaf({ resourceType: 'Patient', id: `p${i}`, versionId: BigInt(versionId), json: canonicalJson(resource), salt, cid: cid.bytes, key });
    t.equal(toHex(ours.leaf), theirs, `version ${versionId}`);
  }
});

t.test("OpenZeppelin StandardMerkleTree: same leaf hash, same root", async (t) => {
  const types = ['bytes32', 'bytes32', 'uint64', 'bytes32', 'bytes32'];
  const leaves = Array.from({ length: 6 }, (_, v) => computeLeaf({ ...INPUT, versionId: v + 1, salt: newSalt() }));
  const values = leaves.map((l) => [toHex(LEAF_DOMAIN), toHex(l.pseudonym), l.versionId.toString(), toHex(l.contentDigest), toHex(l.cidDigest)]);
  const oz = StandardMerkleTree.of(values, types, { sortLeaves: false });
  t.same(values.map((v) => oz.leafHash(v)), leaves.map((l) => toHex(l.leaf)), 'leafHash(abi.encode(...)) equals our leaves');
  t.equal(oz.root, toHex(buildTree(leaves.map((l) => l.leaf)).root), 'same root');
});

t.test('what the leaf depends on', async (t) => {
  const base = toHex(computeLeaf(INPUT).leaf);
  const variants: [string, Partial<LeafInput>][] = [
    ['salt', { salt: Uint8Array.from(SALT, (b) => b ^ 1) }],
    ['resource type', { resourceType: 'Practitioner' }],
    ['id', { id: 'example2' }],
    ['version', { versionId: 2 }],
    ['content', { resource: { ...RESOURCE, birthDate: '1974-12-26' } }],
    ['envelope CID', { cid: CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update('other').digest())) }],
    ['pseudonym key', { pseudonymKey: Uint8Array.from(KEY, (b) => b ^ 1) }],
  ];
  for (const [what, change] of variants) t.not(toHex(computeLeaf({ ...INPUT, ...change }).leaf), base, `changes with the ${what}`);

  const { resource: _resource, ...withoutResource } = INPUT;
  const reordered = { birthDate: RESOURCE.birthDate, name: RESOURCE.name, meta: RESOURCE.meta, id: 'example', resourceType: 'Patient' };
  t.equal(toHex(computeLeaf({ ...INPUT, resource: reordered }).leaf), base, 'not with key order (RFC 8785)');
  t.equal(toHex(computeLeaf({ ...withoutResource, canonicalJson: canonicalJson(RESOURCE) }).leaf), base, 'canonicalJson as a string');
  t.equal(toHex(computeLeaf({ ...withoutResource, canonicalJson: new TextEncoder().encode(canonicalJson(RESOURCE)) }).leaf), base, 'canonicalJson as bytes');
  t.equal(toHex(computeLeaf({ ...INPUT, versionId: '1' }).leaf), base, 'version as a string');
  t.equal(toHex(computeLeaf({ ...INPUT, versionId: 1n }).leaf), base, 'version as a bigint');
  t.equal(toHex(computeLeaf({ ...INPUT, cid: CID.parse(CID_STRING) }).leaf), base, 'CID as an object');
  t.equal(toHex(computeLeaf({ ...INPUT, cid: CID.parse(CID_STRING).bytes }).leaf), base, 'CID as bytes');

  const leaf = computeLeaf(INPUT);
  t.equal(toHex(leafFromParts(leaf)), base, 'a verifier recomputes it from the published parts alone');
  t.equal(toHex(leaf.contentDigest), toHex(contentDigest(SALT, canonicalJson(RESOURCE))), 'contentDigest helper');
  t.equal(toHex(leaf.cidDigest), toHex(cidDigest(CID_STRING)), 'cidDigest helper');
  t.equal(toHex(leaf.pseudonym), toHex(pseudonym(KEY, 'Patient', 'example')), 'pseudonym helper');
});

t.test('nothing in the published parts reveals the id or the content', async (t) => {
  const leaf = computeLeaf(INPUT);
  const published = Buffer.concat([leaf.pseudonym, leaf.contentDigest, leaf.cidDigest, leaf.leaf]);
  t.notOk(published.includes(Buffer.from('example')), 'no raw id');
  // Someone who guesses the whole resource still needs the salt: a different salt, a different leaf.
  const guesses = Array.from({ length: 16 }, () => toHex(computeLeaf({ ...INPUT, salt: newSalt() }).leaf));
  t.notOk(guesses.includes(toHex(leaf.leaf)), 'a guessed resource without its salt does not match');
  t.not(toHex(pseudonym(KEY, 'Patient', 'example')), toHex(pseudonym(newSalt(), 'Patient', 'example')), 'pseudonyms need the key');
});

t.test('helpers', async (t) => {
  t.equal(canonicalJson({ b: 1.0, a: 1e21, c: 'é', d: [3, 2] }), '{"a":1e+21,"b":1,"c":"é","d":[3,2]}', 'RFC 8785 numbers and ordering');
  const a = newSalt();
  t.equal(a.length, 32);
  t.not(toHex(a), toHex(newSalt()), 'salts are random');
  t.equal(versionNumber('18446744073709551615'), 2n ** 64n - 1n);
  t.same(cidBytes(CID_STRING), CID.parse(CID_STRING).bytes);
  const v0 = CID.createV0(Digest.create(0x12, createHash('sha256').update('x').digest()));
  t.same(cidBytes(v0.toString()), v0.bytes, 'CIDv0 strings too');
});

t.test('error codes', async (t) => {
  throwsCode(t, () => computeLeaf({ ...INPUT, pseudonymKey: new Uint8Array(31) }), 'VLM_CHAIN_LEAF_BAD_KEY');
  throwsCode(t, () => computeLeaf({ ...INPUT, salt: new Uint8Array(16) }), 'VLM_CHAIN_LEAF_BAD_SALT');
  for (const resourceType of ['', 'Pa/tient', 'Patient1']) {
    throwsCode(t, () => computeLeaf({ ...INPUT, resourceType }), 'VLM_CHAIN_LEAF_BAD_ID');
  }
  throwsCode(t, () => computeLeaf({ ...INPUT, id: '' }), 'VLM_CHAIN_LEAF_BAD_ID');
  for (const versionId of [0, -1, 1.5, '01', '', 'abc', 2n ** 64n, '18446744073709551616', Number.MAX_SAFE_INTEGER + 1]) {
    throwsCode(t, () => computeLeaf({ ...INPUT, versionId }), 'VLM_CHAIN_LEAF_BAD_VERSION');
  }
  throwsCode(t, () => computeLeaf({ ...INPUT, cid: 'not-a-cid' }), 'VLM_CHAIN_LEAF_BAD_CID');
  throwsCode(t, () => computeLeaf({ ...INPUT, cid: new Uint8Array(0) }), 'VLM_CHAIN_LEAF_BAD_CID');
  throwsCode(t, () => computeLeaf({ ...INPUT, cid: {} as never }), 'VLM_CHAIN_LEAF_BAD_CID');
  const { resource: _resource, ...noContent } = INPUT;
  throwsCode(t, () => computeLeaf(noContent), 'VLM_CHAIN_LEAF_BAD_CONTENT');
  throwsCode(t, () => canonicalJson(() => 1), 'VLM_CHAIN_LEAF_BAD_CONTENT');
  throwsCode(t, () => canonicalJson({ n: Number.NaN }), 'VLM_CHAIN_LEAF_BAD_CONTENT');
  const parts = computeLeaf(INPUT);
  throwsCode(t, () => leafFromParts({ ...parts, cidDigest: new Uint8Array(20) }), 'VLM_CHAIN_LEAF_BAD_PART');
});

t.test('pseudonym keys are cached as key objects, but a key changed in place is used as it is now', async (t) => {
  const key = new Uint8Array(KEY);
  const before = toHex(pseudonym(key, 'Patient', 'example'));
  t.equal(toHex(pseudonym(key, 'Patient', 'example')), before, 'same key, same pseudonym');
  key[0] = key[0]! ^ 0xff;
  const after = toHex(pseudonym(key, 'Patient', 'example'));
  t.not(after, before);
  t.equal(after, toHex(createHmac('sha256', key).update(`${PSEUDONYM_CONTEXT}\u0000Patient/example`, 'utf8').digest()), 'HMAC of the current bytes');
});
