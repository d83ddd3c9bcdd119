/**
 * AnchorRegistry on the in-process chain: roles, input checks, the BatchAnchored event, the
 * views, inclusion proofs from `src/chain/merkle.ts`, the on-chain leaf encoding, and gas.
 * Reverts are asserted by custom error name and arguments, never by message.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { Interface, id as keccakText, type Contract, type Signer } from 'ethers';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { buildTree, toHex, verifyProof } from '../../src/chain/merkle.ts';
import { LEAF_DOMAIN, computeLeaf, leafFromParts, newSalt } from '../../src/chain/leaf.ts';
import { deployRegistry, rejectsWithCustomError, startChain } from './chain.ts';

const ZERO32 = `0x${'00'.repeat(32)}`;
const DEFAULT_ADMIN_ROLE = ZERO32;
const ANCHORER_ROLE = keccakText('ANCHORER_ROLE');
const ZERO_ADDRESS = `0x${'00'.repeat(20)}`;

/** A CIDv1 (raw, sha2-256) as Vellum's store gives for a manifest: 59 characters, `bafkrei…`. */
function manifestCid(seed: string): string {
  const digest = Digest.create(0x12, createHash('sha256').update(seed).digest());
  return CID.createV1(raw.code, digest).toString();
}

const random32 = (): Uint8Array => new Uint8Array(randomBytes(32));
const randomRoot = (): string => toHex(random32());

const chain = await startChain(t);
const PSEUDONYM_KEY = new Uint8Array(32).fill(7);

/** `registry` as seen by `signer` (ethers' `connect` loses the method typing). */
const as = (registry: Contract, signer: Signer): Contract => registry.connect(signer) as Contract;

t.test('deployment', async (t) => {
  const { registry, admin, anchorer, others } = await deployRegistry(chain);
  t.equal(await registry.getFunction('ANCHORER_ROLE')(), ANCHORER_ROLE, 'ANCHORER_ROLE is keccak256("ANCHORER_ROLE")');
  t.equal(await registry.getFunction('hasRole')(DEFAULT_ADMIN_ROLE, admin.address), true, 'admin administers');
  t.equal(await registry.getFunction('hasRole')(ANCHORER_ROLE, anchorer.address), true, 'anchorer anchors');
  t.equal(await registry.getFunction('hasRole')(ANCHORER_ROLE, admin.address), false, 'admin is not an anchorer');
  t.equal(await registry.getFunction('getRoleAdmin')(ANCHORER_ROLE), DEFAULT_ADMIN_ROLE, 'the admin role manages anchorers');
  t.equal(await registry.getFunction('batchCount')(), 0n, 'no batches yet');

  const factory = await chain.ethers.getContractFactory('AnchorRegistry');
  await rejectsWithCustomError(t, factory.deploy(ZERO_ADDRESS, anchorer.address), factory, 'AnchorRegistryZeroAdmin');

  const noAnchorer = await chain.ethers.deployContract('AnchorRegistry', [admin.address, ZERO_ADDRESS]);
  t.equal(await noAnchorer.getFunction('hasRole')(ANCHORER_ROLE, ZERO_ADDRESS), false, 'a zero anchorer is not granted');
  await rejectsWithCustomError(t, as(noAnchorer, others[0]!).getFunction('anchor')(randomRoot(), 1, manifestCid('a')), noAnchorer, 'AccessControlUnauthorizedAccount', [others[0]!.address, ANCHORER_ROLE]);
});

t.test('ERC-165', async (t) => {
  const { registry } = await deployRegistry(chain);
  const artifact = await chain.hre.artifacts.readArtifact('IAnchorRegistry');
  let id = 0;
  new Interface(artifact.abi).forEachFunction((f) => {
    id ^= Number.parseInt(f.selector.slice(2), 16);
  });
  const anchorRegistryId = `0x${(id >>> 0).toString(16).padStart(8, '0')}`;
  const supports = registry.getFunction('supportsInterface');
  t.equal(await supports(anchorRegistryId), true, 'IAnchorRegistry');
  t.equal(await supports('0x7965db0b'), true, 'IAccessControl');
  t.equal(await supports('0x01ffc9a7'), true, 'IERC165');
  t.equal(await supports('0xffffffff'), false, 'never 0xffffffff');
});

t.test('roles', async (t) => {
  const { registry, admin, anchorer, others } = await deployRegistry(chain);
  const [outsider, second] = others;
  const anchorAs = (signer: Signer) => as(registry, signer).getFunction('anchor');

  await rejectsWithCustomError(t, anchorAs(outsider!)(randomRoot(), 1, manifestCid('x')), registry, 'AccessControlUnauthorizedAccount', [outsider!.address, ANCHORER_ROLE]);
  await rejectsWithCustomError(t, anchorAs(admin)(randomRoot(), 1, manifestCid('x')), registry, 'AccessControlUnauthorizedAccount', [admin.address, ANCHORER_ROLE]);

  await rejectsWithCustomError(t, as(registry, outsider!).getFunction('grantRole')(ANCHORER_ROLE, outsider!.address), registry, 'AccessControlUnauthorizedAccount', [outsider!.address, DEFAULT_ADMIN_ROLE]);
  await rejectsWithCustomError(t, as(registry, anchorer).getFunction('grantRole')(ANCHORER_ROLE, second!.address), registry, 'AccessControlUnauthorizedAccount', [anchorer.address, DEFAULT_ADMIN_ROLE]);

  await (await as(registry, admin).getFunction('grantRole')(ANCHORER_ROLE, outsider!.address)).wait();
  t.equal(await registry.getFunction('hasRole')(ANCHORER_ROLE, outsider!.address), true, 'admin granted the role');
  await (await anchorAs(outsider!)(randomRoot(), 1, manifestCid('granted'))).wait();
  t.equal(await registry.getFunction('batchCount')(), 1n, 'a granted anchorer anchors');

  await (await as(registry, admin).getFunction('revokeRole')(ANCHORER_ROLE, outsider!.address)).wait();
  await rejectsWithCustomError(t, anchorAs(outsider!)(randomRoot(), 1, manifestCid('revoked')), registry, 'AccessControlUnauthorizedAccount', [outsider!.address, ANCHORER_ROLE]);

  await (await as(registry, anchorer).getFunction('renounceRole')(ANCHORER_ROLE, anchorer.address)).wait();
  await rejectsWithCustomError(t, anchorAs(anchorer)(randomRoot(), 1, manifestCid('renounced')), registry, 'AccessControlUnauthorizedAccount', [anchorer.address, ANCHORER_ROLE]);
  t.equal(await registry.getFunction('batchCount')(), 1n, 'refused anchors leave no batch');
});

t.test('input checks', async (t) => {
  const { registry, anchorer } = await deployRegistry(chain);
  const anchor = as(registry, anchorer).getFunction('anchor');
  await rejectsWithCustomError(t, anchor(ZERO32, 1, manifestCid('z')), registry, 'AnchorRegistryZeroRoot');
  await rejectsWithCustomError(t, anchor(randomRoot(), 0, manifestCid('e')), registry, 'AnchorRegistryEmptyBatch');
  await rejectsWithCustomError(t, anchor(randomRoot(), 3, ''), registry, 'AnchorRegistryEmptyManifest');

  const root = randomRoot();
  await (await anchor(root, 3, manifestCid('first'))).wait();
  await rejectsWithCustomError(t, anchor(root, 3, manifestCid('first')), registry, 'AnchorRegistryDuplicateRoot', [root]);
  await rejectsWithCustomError(t, anchor(root, 9, manifestCid('other')), registry, 'AnchorRegistryDuplicateRoot', [root]);
  t.equal(await registry.getFunction('batchCount')(), 1n, 'only the first anchor of a root counts');
});

t.test('BatchAnchored event, views and batch ids', async (t) => {
  const { registry, anchorer } = await deployRegistry(chain);
  const anchor = as(registry, anchorer).getFunction('anchor');
  const unknown = randomRoot();
  t.same([...(await registry.getFunction('anchoredAt')(unknown))], [0n, 0n, 0n], 'an unknown root: zeros');
  t.equal(await registry.getFunction('isAnchored')(unknown), false);
  t.equal(await registry.getFunction('leafCountOf')(unknown), 0n);

  const batches: { root: string; leafCount: number; cid: string }[] = [];
  for (let i = 1; i <= 3; i++) {
    const batch = { root: randomRoot(), leafCount: 10 ** i, cid: manifestCid(`manifest ${i}`) };
    batches.push(batch);
    t.equal(await anchor.staticCall(batch.root, batch.leafCount, batch.cid), BigInt(i), `anchor returns batch id ${i}`);
    const receipt = await (await anchor(batch.root, batch.leafCount, batch.cid)).wait();

    const events = receipt.logs.map((log: { topics: string[]; data: string }) => registry.interface.parseLog(log)).filter(Boolean);
    t.equal(events.length, 1, 'one event per anchor');
    t.equal(events[0].name, 'BatchAnchored');
    t.same(
      [...events[0].args].map(String),
      [String(i), batch.root, String(batch.leafCount), batch.cid],
      'event carries batch id, root, leaf count and manifest CID',
    );
    t.equal(receipt.logs[0].topics[1], toHex(new Uint8Array(32).fill(0, 0, 31).fill(i, 31)), 'batch id is an indexed topic');
    t.equal(receipt.logs[0].topics[2], batch.root, 'root is an indexed topic');

    const block = await chain.ethers.provider.getBlock(receipt.blockNumber);
    t.same(
      [...(await registry.getFunction('anchoredAt')(batch.root))],
      [BigInt(i), BigInt(block!.timestamp), BigInt(receipt.blockNumber)],
      'anchoredAt gives batch id, block timestamp and block number',
    );
    t.equal(await registry.getFunction('isAnchored')(batch.root), true);
    t.equal(await registry.getFunction('leafCountOf')(batch.root), BigInt(batch.leafCount));
    t.equal(await registry.getFunction('batchCount')(), BigInt(i), 'batchCount counts anchors');
  }

  // Replay from the logs alone, as a second site would: every batch, in order, by filter.
  const logs = await registry.queryFilter(registry.filters.BatchAnchored!(), 0);
  t.same(
    logs.map((log) => {
      const args = registry.interface.parseLog(log)!.args;
      return { root: args[1], leafCount: Number(args[2]), cid: args[3] };
    }),
    batches,
    'the logs replay every batch',
  );
  const byRoot = await registry.queryFilter(registry.filters.BatchAnchored!(null, batches[1]!.root), 0);
  t.equal(byRoot.length, 1, 'a batch can be found by its root');
});

t.test('verifyLeaf with trees built by src/chain/merkle.ts', async (t) => {
  const { registry, anchorer } = await deployRegistry(chain);
  const anchor = as(registry, anchorer).getFunction('anchor');
  const verifyLeaf = registry.getFunction('verifyLeaf');

  for (const n of [1, 2, 3, 7, 1000]) {
    // Small trees from real leaves; the 1000-leaf tree from random ones (same shape).
    const leaves = Array.from({ length: n }, (_, i) =>
      n > 7
        ? random32()
        : computeLeaf({ resourceType: 'Observation', id: `obs-${i}`, versionId: 1, resource: { resourceType: 'Observation', id: `obs-${i}`, status: 'final' }, salt: newSalt(), cid: manifestCid(`envelope ${i}`), pseudonymKey: PSEUDONYM_KEY }).leaf,
    );
    const tree = buildTree(leaves);
    const root = toHex(tree.root);
    const hexProof = (i: number) => tree.proof(i).map(toHex);

    t.equal(await verifyLeaf(root, toHex(leaves[0]!), hexProof(0)), false, `n=${n}: nothing verifies before the root is anchored`);
    t.ok(verifyProof(tree.root, leaves[0]!, tree.proof(0)), `n=${n}: though the proof itself is valid`);
    await (await anchor(root, n, manifestCid(`tree ${n}`))).wait();

    let verified = 0;
    for (let i = 0; i < n; i++) if (await verifyLeaf(root, toHex(leaves[i]!), hexProof(i))) verified++;
    t.equal(verified, n, `n=${n}: every leaf verifies`);
    if (n === 1) t.equal(hexProof(0).length, 0, 'a one-leaf tree: empty proof, root = leaf');

    const last = n - 1;
    t.equal(await verifyLeaf(root, randomRoot(), hexProof(last)), false, `n=${n}: a wrong leaf fails`);
    if (n > 1) {
      t.equal(await verifyLeaf(root, toHex(leaves[0]!), hexProof(last)), false, `n=${n}: another leaf's proof fails`);
      const tampered = tree.proof(last);
      tampered[0]![31] = tampered[0]![31]! ^ 1;
      t.equal(await verifyLeaf(root, toHex(leaves[last]!), tampered.map(toHex)), false, `n=${n}: a tampered proof fails`);
      t.equal(await verifyLeaf(root, toHex(leaves[last]!), hexProof(last).slice(1)), false, `n=${n}: a truncated proof fails`);
    } else {
      t.equal(await verifyLeaf(root, toHex(leaves[0]!), [randomRoot()]), false, 'n=1: an extra proof element fails');
    }
  }
});

t.test('leafHash recomputes the leaf of src/chain/leaf.ts', async (t) => {
  const { registry } = await deployRegistry(chain);
  t.equal(await registry.getFunction('LEAF_DOMAIN')(), toHex(LEAF_DOMAIN), 'same domain tag');
  t.equal(toHex(LEAF_DOMAIN), keccakText('vellum.anchor.leaf.v1'), 'domain tag is keccak256("vellum.anchor.leaf.v1")');
  const leafHash = registry.getFunction('leafHash');
  for (const versionId of [1, 2, 255, 65_536, 2 ** 53 - 1]) {
    const leaf = computeLeaf({
      resourceType: 'Patient',
      id: `p-${versionId}`,
      versionId,
      resource: { resourceType: 'Patient', id: `p-${versionId}`, meta: { versionId: String(versionId) } },
      salt: newSalt(),
      cid: manifestCid(`p-${versionId}`),
      pseudonymKey: PSEUDONYM_KEY,
    });
    const onChain = await leafHash(toHex(leaf.pseudonym), leaf.versionId, toHex(leaf.contentDigest), toHex(leaf.cidDigest));
    t.equal(onChain, toHex(leaf.leaf), `versionId ${versionId}`);
  }
  const max = { pseudonym: random32(), versionId: 2n ** 64n - 1n, contentDigest: random32(), cidDigest: random32() };
  t.equal(
    await leafHash(toHex(max.pseudonym), max.versionId, toHex(max.contentDigest), toHex(max.cidDigest)),
    toHex(leafFromParts(max)),
    'versionId 2^64 - 1',
  );
});

t.test('gas per anchor', async (t) => {
  const { registry, anchorer } = await deployRegistry(chain);
  const anchor = as(registry, anchorer).getFunction('anchor');
  const used: bigint[] = [];
  for (let i = 0; i < 5; i++) {
    const cid = manifestCid(`gas ${i}`);
    t.equal(cid.length, 59, 'a realistic CIDv1 manifest string');
    const tree = buildTree(Array.from({ length: 500 }, random32));
    const receipt = await (await anchor(toHex(tree.root), 500, cid)).wait();
    used.push(receipt.gasUsed);
  }
  t.comment(`gas per anchor (500 leaves, 59-char CIDv1): ${used.join(', ')}`);
  for (const gas of used) t.ok(gas <= 60_000n, `${gas} ≤ 60,000 gas`);
  t.ok(used[0]! <= 60_000n, 'the first anchor is no dearer: the batch counter starts non-zero');
});
