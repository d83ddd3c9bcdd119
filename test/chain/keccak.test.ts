/**
 * src/chain/keccak.ts: the WebAssembly keccak-256 (hash-wasm) gives exactly @noble/hashes'
 * keccak_256 — on random inputs of many sizes (around the 136-byte rate and hash-wasm's 16 KiB
 * chunk), split into parts, and from strings — and so does the JavaScript fallback it uses before
 * the WebAssembly is ready; the result survives later calls (no shared buffer); it works in a
 * worker thread too (the audit converter's).
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { keccak256, keccakBackend, keccakReady } from '../../src/chain/keccak.ts';

const SIZES = [0, 1, 2, 31, 32, 33, 63, 64, 65, 135, 136, 137, 160, 271, 272, 273, 1000, 1500, 4096, 16383, 16384, 16385, 40000, 100_003];

t.test('the JavaScript fallback (before the WebAssembly is ready) matches noble', async (t) => {
  // Module load started the WebAssembly; this test file's first synchronous calls may or may not
  // see it, so only the equality (not the backend) is asserted here.
  for (const size of [0, 32, 136, 1500]) {
    const data = new Uint8Array(randomBytes(size));
    t.same(keccak256(data), keccak_256(data), `${size} bytes`);
  }
});

t.test('the WebAssembly keccak-256 matches noble on random inputs of many sizes', async (t) => {
  await keccakReady;
  t.equal(keccakBackend(), 'wasm', 'the WebAssembly hasher is in use');
  for (const size of SIZES) {
    for (let round = 0; round < 5; round++) {
      const data = new Uint8Array(randomBytes(size));
      const expected = keccak_256(data);
      t.same(keccak256(data), expected, `${size} bytes (round ${round})`);
      // The same bytes in parts, split at a random point, and as a Buffer view with an offset.
      const cut = Math.floor(Math.random() * (size + 1));
      t.same(keccak256(data.subarray(0, cut), data.subarray(cut)), expected, `${size} bytes in two parts at ${cut}`);
      const padded = Buffer.alloc(size + 7);
      padded.set(data, 7);
      t.same(keccak256(padded.subarray(7)), expected, `${size} bytes at an offset`);
    }
  }
  // Random sizes too.
  for (let i = 0; i < 200; i++) {
    const data = new Uint8Array(randomBytes(Math.floor(Math.random() * 5000)));
    if (!Buffer.from(keccak256(data)).equals(Buffer.from(keccak_256(data)))) t.fail(`${data.length} bytes differ`);
  }
  // Strings are hashed as UTF-8.
  const text = 'vellum.anchor.leaf.v1 — Ünïcödé ✓ 🧾';
  t.same(keccak256(text), keccak_256(new TextEncoder().encode(text)));
  t.same(keccak256(new Uint8Array(32).fill(1), text), keccak_256(new Uint8Array([...new Uint8Array(32).fill(1), ...new TextEncoder().encode(text)])));
  // Known answer: keccak256("") (Ethereum's empty hash).
  t.equal(Buffer.from(keccak256(new Uint8Array(0))).toString('hex'), 'c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470');
});

t.test('a digest is its own copy: later hashing does not change it', async (t) => {
  await keccakReady;
  const a = keccak256(new Uint8Array([1, 2, 3]));
  const copy = new Uint8Array(a);
  keccak256(new Uint8Array(randomBytes(500)));
  t.same(a, copy);
  t.equal(a.length, 32);
});

t.test('works in a worker thread (the audit converter runs there)', async (t) => {
  const data = new Uint8Array(randomBytes(1500));
  const source = `
    import { parentPort, workerData } from 'node:worker_threads';
    const { keccak256, keccakReady, keccakBackend } = await import(${JSON.stringify(new URL('../../src/chain/keccak.ts', import.meta.url).href)});
    await keccakReady;
    parentPort.postMessage({ backend: keccakBackend(), digest: keccak256(workerData) });
  `;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(source)}`), { workerData: data, execArgv: ['--import', 'tsx'] });
  const reply = await new Promise<{ backend: string; digest: Uint8Array }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  t.equal(reply.backend, 'wasm');
  t.same(reply.digest, keccak_256(data));
});
