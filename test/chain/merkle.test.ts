/**
 * src/chain/merkle.ts: shape (pinned vectors, OpenZeppelin's own library), proofs for every
 * size from 1 up, error codes, agreement with the contract's `verifyLeaf`, and speed.
 */
import t, { type Test } from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { SimpleMerkleTree } from '@openzeppelin/merkle-tree';
import type { Contract } from 'ethers';
import { buildTree, fromHex, hashPair, processProof, toHex, verifyProof } from '../../src/chain/merkle.ts';
import { deployRegistry, startChain } from '../contracts/chain.ts';

const random32 = (): Uint8Array => new Uint8Array(randomBytes(32));
/** keccak256(uint256(i)): fixed leaves any language can reproduce. */
function fixedLeaf(i: number): Uint8Array {
  const word = new Uint8Array(32);
  new DataView(word.buffer).setUint32(28, i);
  return keccak_256(word);
}
/** Flips bits of byte `i` of `bytes` in place. */
function flip(bytes: Uint8Array, i: number, mask = 1): void {
  bytes[i] = bytes[i]! ^ mask;
}
const fixedLeaves = (n: number) => Array.from({ length: n }, (_, i) => fixedLeaf(i));

/** Asserts `fn` raises a coded chain error with `code`. */
function throwsCode(t: Test, fn: () => unknown, code: string): void {
  try {
    fn();
    t.fail(`expected ${code}`);
  } catch (err) {
    t.equal((err as { code?: string }).code, code, code);
    t.equal((err as { category?: string }).category, 'invalid', `${code} is an invalid-input error`);
  }
}

t.test('pinned vectors: the tree shape must never change (anchored roots depend on it)', async (t) => {
  t.equal(toHex(buildTree(fixedLeaves(1)).root), toHex(fixedLeaf(0)), '1 leaf: root is the leaf');
  t.equal(toHex(buildTree(fixedLeaves(2)).root), toHex(hashPair(fixedLeaf(0), fixedLeaf(1))), '2 leaves: root is the sorted pair hash');
  const five = buildTree(fixedLeaves(5));
  t.equal(toHex(five.root), '0x08c0e7f76c7ffaff497007ee3030ec992c4891b5bbd6b1a5cb2b3d480ef6d153', '5 leaves');
  t.same(
    five.proof(3).map(toHex),
    ['0x405787fa12a823e0f2b7631cc41b3ba8828b3321ca811111fa75cd3aa3bb5ace', '0x85c2225510226f86c60e00c2df23e3eafb275dd8faf747b7a4ea3c3491858c31'],
    '5 leaves: proof of leaf 3',
  );
});

t.test('same roots and proofs as OpenZeppelin SimpleMerkleTree (sortLeaves: false)', async (t) => {
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 100, 257]) {
    const leaves = Array.from({ length: n }, random32);
    const ours = buildTree(leaves);
    const oz = SimpleMerkleTree.of(leaves, { sortLeaves: false });
    t.equal(toHex(ours.root), oz.root, `n=${n}: root`);
    let same = 0;
    for (let i = 0; i < n; i++) if (JSON.stringify(ours.proof(i).map(toHex)) === JSON.stringify(oz.getProof(i))) same++;
    t.equal(same, n, `n=${n}: every proof`);
  }
});

t.test('every leaf of every tree from 1 to 70 leaves verifies; nothing else does', async (t) => {
  let checked = 0;
  for (let n = 1; n <= 70; n++) {
    const leaves = Array.from({ length: n }, random32);
    const tree = buildTree(leaves);
    t.equal(tree.leafCount, n);
    const maxDepth = Math.ceil(Math.log2(n));
    for (let i = 0; i < n; i++) {
      const proof = tree.proof(i);
      if (!verifyProof(tree.root, leaves[i]!, proof)) t.fail(`n=${n} i=${i}: valid proof rejected`);
      if (proof.length > maxDepth || proof.length < Math.floor(Math.log2(n))) t.fail(`n=${n} i=${i}: proof length ${proof.length}`);
      if (toHex(tree.leaf(i)) !== toHex(leaves[i]!)) t.fail(`n=${n} i=${i}: leaf`);
      if (verifyProof(tree.root, random32(), proof)) t.fail(`n=${n} i=${i}: wrong leaf accepted`);
      if (n > 1) {
        const tampered = proof.map((p) => p.slice());
        flip(tampered[randomInt(tampered.length)]!, randomInt(32), 1 << randomInt(8));
        if (verifyProof(tree.root, leaves[i]!, tampered)) t.fail(`n=${n} i=${i}: tampered proof accepted`);
        if (verifyProof(tree.root, leaves[i]!, proof.slice(0, -1))) t.fail(`n=${n} i=${i}: truncated proof accepted`);
      }
      checked++;
    }
  }
  t.equal(checked, (70 * 71) / 2, 'all leaves checked');
  t.equal(buildTree([fixedLeaf(0)]).proof(0).length, 0, '1 leaf: empty proof');
});

t.test('the tree does not alias its input or its output', async (t) => {
  const leaves = fixedLeaves(3);
  const tree = buildTree(leaves);
  const root = toHex(tree.root);
  flip(leaves[0]!, 0);
  flip(tree.proof(0)[0]!, 0);
  flip(tree.root, 0);
  t.equal(toHex(buildTree(fixedLeaves(3)).root), root);
  t.ok(verifyProof(fromHex(root), fixedLeaf(0), tree.proof(0)), 'proofs unchanged');
});

t.test('error codes', async (t) => {
  throwsCode(t, () => buildTree([]), 'VLM_CHAIN_MERKLE_EMPTY');
  throwsCode(t, () => buildTree([new Uint8Array(31)]), 'VLM_CHAIN_MERKLE_BAD_NODE');
  throwsCode(t, () => buildTree([random32(), new Uint8Array(33)]), 'VLM_CHAIN_MERKLE_BAD_NODE');
  const tree = buildTree(fixedLeaves(4));
  for (const index of [-1, 4, 1.5, Number.NaN]) throwsCode(t, () => tree.proof(index), 'VLM_CHAIN_MERKLE_BAD_INDEX');
  throwsCode(t, () => tree.leaf(4), 'VLM_CHAIN_MERKLE_BAD_INDEX');
  throwsCode(t, () => processProof(new Uint8Array(32), [new Uint8Array(1)]), 'VLM_CHAIN_MERKLE_BAD_NODE');
  throwsCode(t, () => fromHex('abcd'), 'VLM_CHAIN_BAD_HEX');
  throwsCode(t, () => fromHex('0xabc'), 'VLM_CHAIN_BAD_HEX');
  throwsCode(t, () => fromHex('0xabcd', 32), 'VLM_CHAIN_BAD_HEX');
  t.same([...fromHex('0x00ff10')], [0, 255, 16], 'fromHex');
  t.equal(verifyProof(new Uint8Array(31), fixedLeaf(0), []), false, 'verifyProof never throws: short root');
  t.equal(verifyProof(tree.root, new Uint8Array(3), tree.proof(0)), false, 'verifyProof never throws: short leaf');
  t.equal(verifyProof(tree.root, fixedLeaf(0), [new Uint8Array(2)]), false, 'verifyProof never throws: short sibling');
});

t.test('agrees with the contract: verifyProof === AnchorRegistry.verifyLeaf', async (t) => {
  const chain = await startChain(t);
  const { registry, anchorer } = await deployRegistry(chain);
  const anchor = (registry.connect(anchorer) as Contract).getFunction('anchor');
  const verifyLeaf = registry.getFunction('verifyLeaf');
  let agreed = 0;
  let total = 0;
  for (const n of [1, 2, 3, 5, 8, 13, 31, 64, 65]) {
    const leaves = Array.from({ length: n }, random32);
    const tree = buildTree(leaves);
    await (await anchor(toHex(tree.root), n, `bafkrei-test-${n}`)).wait();
    for (let i = 0; i < n; i++) {
      const proof = tree.proof(i);
      const cases: [Uint8Array, Uint8Array[]][] = [[leaves[i]!, proof], [random32(), proof]];
      if (n > 1) {
        const tampered = proof.map((p) => p.slice());
        flip(tampered[randomInt(tampered.length)]!, randomInt(32));
        cases.push([leaves[i]!, tampered], [leaves[i]!, [...proof].reverse()], [leaves[i]!, [...proof, random32()]]);
      }
      for (const [leaf, p] of cases) {
        total++;
        const local = verifyProof(tree.root, leaf, p);
        const onChain: boolean = await verifyLeaf(toHex(tree.root), toHex(leaf), p.map(toHex));
        if (local === onChain) agreed++;
        else t.fail(`n=${n} i=${i}: local ${local}, contract ${onChain}`);
      }
    }
  }
  t.equal(agreed, total, `${total} cases agree`);
});

t.test('100,000 leaves', async (t) => {
  const leaves = Array.from({ length: 100_000 }, random32);
  const started = performance.now();
  const tree = buildTree(leaves);
  const buildMs = performance.now() - started;
  const proofStarted = performance.now();
  const sample = Array.from({ length: 1000 }, () => randomInt(leaves.length));
  const ok = sample.every((i) => verifyProof(tree.root, leaves[i]!, tree.proof(i)));
  const proofMs = (performance.now() - proofStarted) / sample.length;
  t.ok(ok, 'sampled proofs verify');
  t.ok(tree.proof(0).length <= 17, 'proofs are at most ⌈log2 100,000⌉ = 17 hashes');
  t.comment(`build ${buildMs.toFixed(0)} ms; proof + verify ${(proofMs * 1000).toFixed(0)} µs per leaf`);
  // Generous bound for a loaded shared machine; typically ~0.4 s.
  t.ok(buildMs < 5_000, `built in ${buildMs.toFixed(0)} ms`);
});
