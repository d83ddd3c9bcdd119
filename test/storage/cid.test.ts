import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as dagPb from '@ipld/dag-pb';
import { UnixFS } from 'ipfs-unixfs';
import { CID } from 'multiformats/cid';
import { assembleBlob, CHUNK_SIZE, cidForBytes, cidV0ForBytes, MAX_LINKS_PER_NODE, verifyBlock } from '../../src/storage/cid.ts';
import { isStorageError } from '../../src/storage/errors.ts';

const KIB = 1024;
const RAW = 0x55;
const DAG_PB = 0x70;
/** First size that needs a second DAG level: 174 full chunks fit under one node. */
const ONE_LEVEL_MAX = MAX_LINKS_PER_NODE * CHUNK_SIZE;

const text = (s: string) => new TextEncoder().encode(s);

/** Deterministic pseudo-random bytes (32-bit LCG, high byte), reproducible in any language. */
function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** RFC 4648 base32, lowercase, unpadded: written here so the raw-CID check does not rely on multiformats. */
function base32(bytes: Uint8Array): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** CIDv1 raw sha2-256 built by hand: multibase 'b' + base32(0x01 0x55 0x12 0x20 ‖ sha256). */
function handRawCid(bytes: Uint8Array): string {
  const digest = createHash('sha256').update(bytes).digest();
  return 'b' + base32(Uint8Array.from([0x01, RAW, 0x12, 0x20, ...digest]));
}

t.test('known CIDs of small blobs (published by Kubo / computed by ipfs_cid)', async (t) => {
  // [content, CIDv1 raw = `ipfs add --cid-version=1 --raw-leaves`, CIDv0 = legacy `ipfs add`]
  const known: [string, string, string][] = [
    // empty file
    ['', 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', 'QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH'],
    // both CIDs appear in Kubo's test/cli/cid_profiles_test.go (profiles unixfs-v0-2015 / unixfs-v1-2025 small file)
    ['hello world', 'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e', 'Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD'],
    // both CIDs appear in Kubo's test/sharness/t0114-gateway-subdomains/README.md (`echo hello | ipfs add`)
    ['hello\n', 'bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am', 'QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN'],
    // CIDv0 is the classic `echo "hello world" | ipfs add`; CIDv1 checked against handRawCid below
    ['hello world\n', 'bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4', 'QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o'],
  ];
  for (const [content, v1, v0] of known) {
    const bytes = text(content);
    const { root, blocks } = await cidForBytes(bytes);
    t.equal(root, v1, `CIDv1 raw of ${JSON.stringify(content)}`);
    t.equal(handRawCid(bytes), v1, `hand-built raw CID of ${JSON.stringify(content)}`);
    t.same(blocks, [{ cid: v1, bytes }], 'one raw block');
    t.equal(await cidV0ForBytes(bytes), v0, `CIDv0 of ${JSON.stringify(content)}`);
  }
});

// Deterministic `pattern(size)` inputs. CIDv0 values were computed by Debian's `ipfs_cid`
// (rust-ipfs' UnixFS adder: an independent implementation of Kubo's 256 KiB / 174-link
// balanced layout) and pin our chunker + layout parameters. CIDv1 raw-leaf roots are the same
// DAG with raw leaves; they pin the importer's output against silent changes.
const VECTORS: [size: number, v0: string, v1: string][] = [
  [0, 'QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH', 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'],
  [1, 'QmUGXUz9hSKz1arLP7wUEidYiuB1FYiodkwDBeDtXgyUq5', 'bafkreibis2on7j2kclec6o5nsyfqwaakzivmgko65jocgkhly3zlvgacye'],
  [2 * KIB, 'QmZJvgcRXMGmWnxHCk5Xzejv9syMFfxiEJZ5MemHnGqffV', 'bafkreiasaihrfretnx4ome2qzfqgzqqptvnzbdctglmtkxbekykkg5ppna'],
  [256 * KIB, 'QmXAg2U9oXg5DUb2gGmaEoqpiDBDEymFzbYWDvpkFh5p7b', 'bafkreic5fz7wq5vpb6h74mmu4g37dchwuq4ag6geenhodxfv3mg432cluu'],
  [256 * KIB + 1, 'QmatXrhPoQ56MWtwTwsEfKEWEjZwqQJBBCuUDtjN6VZ5GP', 'bafybeie74ss6jthdqpvnmoeexe4nwlobzp2kzxhf2wosl4bbtv3htnomie'],
  [1024 * KIB, 'QmaE8GACWaKbFQpjVyerTX3a41E47agubhHqBrvgHrTyBz', 'bafybeibcfakrrj2lgtupd3esldif6q3ep3tvmjwrovhcavimsaw4w3vg6i'],
  [ONE_LEVEL_MAX, 'QmSi978hvbDMLMcnZEtwYhbsJ6MncHybV2Rc6s51vaMQEx', 'bafybeibusfbd2ahkodijjzsy4tyq34ek4ly6mhtqcr3scihjl2cshyvfd4'],
  [ONE_LEVEL_MAX + 1, 'QmVwJo9MHFmMNGemgyzGrXL7dYyD5ogaU4QXxLrc27HcNN', 'bafybeiak7noftg3ipnitqncyao552ec7qg2cxrealsmjuzok4hz6cbnfxq'],
];

t.test('pinned vectors for every size class', async (t) => {
  for (const [size, v0, v1] of VECTORS) {
    const bytes = pattern(size);
    t.equal(await cidV0ForBytes(bytes), v0, `CIDv0 (ipfs_cid) for ${size} bytes`);
    const { root, blocks } = await cidForBytes(bytes);
    t.equal(root, v1, `CIDv1 raw leaves for ${size} bytes`);
    t.equal(root.startsWith('bafk'), size <= CHUNK_SIZE, 'raw CID exactly up to 256 KiB');
    for (const b of blocks) t.ok(verifyBlock(b.cid, b.bytes), 'every block verifies');
  }
});

t.test('multi-block DAG has Kubo raw-leaf structure', async (t) => {
  for (const size of [256 * KIB + 1, 1024 * KIB, ONE_LEVEL_MAX, ONE_LEVEL_MAX + 1]) {
    const bytes = pattern(size);
    const { root, blocks } = await cidForBytes(bytes);
    const byCid = new Map(blocks.map((b) => [b.cid, b.bytes]));
    t.equal(blocks.at(-1)?.cid, root, 'root block comes last');
    let depth = 0;
    const leaves: Uint8Array[] = [];
    const walk = (cid: CID, level: number): void => {
      const block = byCid.get(cid.toString());
      if (block === undefined) throw new Error(`missing ${cid}`);
      if (cid.code === RAW) {
        depth = Math.max(depth, level);
        leaves.push(block);
        return;
      }
      t.equal(cid.code, DAG_PB);
      const node = dagPb.decode(block);
      const fs = UnixFS.unmarshal(node.Data!);
      if (fs.type !== 'file') t.fail(`node type ${fs.type}`);
      if (node.Links.length > MAX_LINKS_PER_NODE) t.fail('too many links');
      if (fs.blockSizes.length !== node.Links.length) t.fail('blocksizes do not match links');
      for (const link of node.Links) walk(link.Hash, level + 1);
    };
    walk(CID.parse(root), 0);
    t.equal(depth, size > ONE_LEVEL_MAX ? 2 : 1, `tree depth for ${size} bytes`);
    t.ok(leaves.slice(0, -1).every((l) => l.byteLength === CHUNK_SIZE), 'full 256 KiB leaves');
    t.equal(leaves.length, Math.ceil(size / CHUNK_SIZE), 'leaf count');
    t.same(Buffer.concat(leaves).equals(bytes), true, 'leaves in order rebuild the input');
    t.same((await assembleBlob(root, (c) => byCid.get(c))).byteLength, size, 'assembleBlob reads it back');
  }
});

t.test('identical chunks are returned once', async (t) => {
  const zeros = new Uint8Array(1024 * KIB);
  const { blocks } = await cidForBytes(zeros);
  t.equal(blocks.length, 2, 'one zero leaf + the root');
});

t.test('verifyBlock', async (t) => {
  const bytes = text('hello world');
  const { root } = await cidForBytes(bytes);
  t.ok(verifyBlock(root, bytes));
  t.ok(verifyBlock(CID.parse(root), bytes));
  t.notOk(verifyBlock(root, text('hello world!')));
  t.notOk(verifyBlock('not a cid', bytes));
  t.ok(verifyBlock('Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD', dagPb.encode({
    Data: new UnixFS({ type: 'file', data: bytes }).marshal(),
    Links: [],
  })), 'CIDv0 dag-pb block');
});

t.test('assembleBlob errors', async (t) => {
  const { root, blocks } = await cidForBytes(pattern(600 * KIB));
  const byCid = new Map(blocks.map((b) => [b.cid, b.bytes]));
  await t.rejects(assembleBlob('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', () => undefined), { code: 'VLM_BLOB_NOT_FOUND', category: 'not-found' });
  await t.rejects(assembleBlob('nope', () => undefined), { code: 'VLM_BLOB_CID_INVALID', category: 'invalid' });
  const leaf = blocks[0]!;
  const damaged = new Map(byCid).set(leaf.cid, Uint8Array.from(leaf.bytes, (b, i) => (i === 7 ? b ^ 1 : b)));
  await t.rejects(assembleBlob(root, (c) => damaged.get(c)), { code: 'VLM_BLOB_CORRUPT', category: 'fault' });
  const missing = new Map(byCid);
  missing.delete(leaf.cid);
  const err = await assembleBlob(root, (c) => missing.get(c)).catch((e: unknown) => e);
  t.ok(isStorageError(err, 'VLM_BLOB_CORRUPT'), 'missing child block is corruption');
});

function findIpfsCid(): string | undefined {
  for (const name of ['ipfs_cid', 'ipfs-cid']) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
    } catch {
      // not installed under this name
    }
  }
  return undefined;
}

const ipfsCid = findIpfsCid();
t.test('cross-check random content against Debian ipfs_cid', { skip: ipfsCid === undefined ? 'ipfs_cid not installed (apt-get install ipfs-cid)' : false }, async (t) => {
  // ipfs_cid has no raw-leaves option: it prints Kubo's legacy CIDv0 (and that node as CIDv1).
  // Same chunker and layout; only the leaf encoding differs, so this checks our DAG shape.
  const dir = mkdtempSync(join(tmpdir(), 'vellum-cid-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'blob.bin');
  for (const size of [0, 1, 2 * KIB, 256 * KIB, 256 * KIB + 1, 1024 * KIB, ONE_LEVEL_MAX + 3 * CHUNK_SIZE + 5]) {
    const bytes = randomBytes(size);
    writeFileSync(file, bytes);
    const out = JSON.parse(execFileSync(ipfsCid!, [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as { CIDv0: string };
    t.equal(await cidV0ForBytes(bytes), out.CIDv0, `random ${size} bytes`);
  }
});
