/**
 * KuboBlobStore against a real Kubo-RPC server: the js-ipfs daemon (npm `ipfs@0.66.1`, see
 * ../kubo-daemon/) started as a separate process on a temporary repo, offline, API on
 * 127.0.0.1 on a port the OS picks, no swarm. The daemon's package is installed here on first
 * use (`npm ci` in test/kubo-daemon with Node 24, ~3 min, ~290 MB); the test is skipped only
 * when that install fails because the npm registry cannot be reached.
 *
 * Also, always (no daemon needed): the store's answers to a misbehaving server — a node that
 * adds under another CID, returns altered bytes, fails or never answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { create, type KuboRPCClient } from 'kubo-rpc-client';
import { base32 } from 'multiformats/bases/base32';
import { CID } from 'multiformats/cid';
import { CHUNK_SIZE, MAX_LINKS_PER_NODE, cidForBytes, cidV0ForBytes } from '../../src/storage/cid.ts';
import { KuboBlobStore, publishBlocks } from '../../src/storage/kubo-blob-store.ts';
import { SqliteBlobStore } from '../../src/storage/sqlite/sqlite-blob-store.ts';
import { blobStoreBehavior } from './blob-store.behavior.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DAEMON_DIR = path.join(REPO_ROOT, 'test', 'kubo-daemon');
const INSTALLED_MARKER = path.join(DAEMON_DIR, 'node_modules', '.vellum-installed');
const INSTALL_TIMEOUT_MS = 12 * 60_000;
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
/** npm's codes for "the registry could not be reached" — the only reason to skip. */
const NETWORK_ERRORS = /\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ERR_SOCKET_TIMEOUT|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN)\b|network request to .* failed/;

const suiteStart = performance.now();
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------------------------------------
// The daemon package and process

/** A Node ≥ 24 binary: js-ipfs 0.66 does not start on Node 20, and npm must run under it too. */
function node24(): string {
  if (Number(process.versions.node.split('.')[0]) >= 24) return process.execPath;
  const local = path.join(REPO_ROOT, 'node_modules', 'node', 'bin', 'node');
  if (fs.existsSync(local)) return local;
  throw new Error(`Node >= 24 needed for the js-ipfs daemon; running ${process.version} and ${local} is absent (npm ci at the repo root)`);
}

/**
 * The environment of our children: none of the test runner's loaders and none of what `npm test`
 * says about the root project (its `npm_config_local_prefix` would point npm ci at the repo root),
 * but the user's own npm settings (registry, cache, proxy, cafile) are kept.
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const dropped = /^(TAP|_TAPJS|NODE_OPTIONS$|NODE_V8_COVERAGE$|IPFS_PATH$|DEBUG$|npm_(package_|lifecycle_|command$|execpath$|node_execpath$|config_local_prefix$|config_user_agent$|config_npm_version$))/i;
  for (const [name, value] of Object.entries(process.env)) {
    if (dropped.test(name)) continue;
    env[name] = value;
  }
  // `npm` is a `#!/usr/bin/env node` script: put Node 24 first on PATH so npm runs under it.
  env.PATH = [path.dirname(node24()), env.PATH ?? ''].join(path.delimiter);
  return env;
}

function lockfileDigest(): string {
  return createHash('sha256').update(fs.readFileSync(path.join(DAEMON_DIR, 'package-lock.json'))).digest('hex');
}

type Install = { ok: true; ms: number; ran: boolean } | { ok: false; skip: string } | { ok: false; fail: string };

/**
 * `npm ci` in test/kubo-daemon unless node_modules holds an install of the current lockfile.
 * Serialised across concurrent test runs by a lock directory in the temp dir.
 */
async function ensureDaemonInstalled(t: Test): Promise<Install> {
  const digest = lockfileDigest();
  const installed = () => fs.existsSync(INSTALLED_MARKER) && fs.readFileSync(INSTALLED_MARKER, 'utf8') === digest;
  if (installed()) return { ok: true, ms: 0, ran: false };
  t.setTimeout(INSTALL_TIMEOUT_MS + 5 * 60_000); // tells the runner too: the install alone can take minutes
  const lock = path.join(os.tmpdir(), `vellum-kubo-daemon-install-${createHash('sha256').update(DAEMON_DIR).digest('hex').slice(0, 12)}.lock`);
  const start = performance.now();
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - fs.statSync(lock, { throwIfNoEntry: false })!.mtimeMs;
      if (age > INSTALL_TIMEOUT_MS) fs.rmSync(lock, { recursive: true, force: true }); // left by a killed run
      else await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    if (installed()) return { ok: true, ms: performance.now() - start, ran: false }; // another run installed it meanwhile
    fs.rmSync(INSTALLED_MARKER, { force: true });
    t.comment('installing the js-ipfs daemon (npm ci in test/kubo-daemon; ~3 min, ~290 MB)…');
    const { code, output } = await run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--prefix', DAEMON_DIR], DAEMON_DIR, INSTALL_TIMEOUT_MS);
    if (code !== 0) {
      if (NETWORK_ERRORS.test(output)) {
        const reason = output.split('\n').find((l) => NETWORK_ERRORS.test(l))?.replace(/^npm error\s*/, '').trim();
        return { ok: false, skip: `npm registry unreachable, so the js-ipfs daemon cannot be installed (${reason})` };
      }
      return { ok: false, fail: `npm ci in test/kubo-daemon failed (exit ${code}):\n${lastLines(output, 30)}` };
    }
    if (!fs.existsSync(path.join(DAEMON_DIR, 'node_modules', 'ipfs-daemon', 'package.json'))) {
      return { ok: false, fail: `npm ci succeeded but ipfs-daemon is missing:\n${lastLines(output, 30)}` };
    }
    fs.writeFileSync(INSTALLED_MARKER, digest);
    return { ok: true, ms: performance.now() - start, ran: true };
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn(cmd, args, { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const timer = setTimeout(() => {
      output += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, output: `${output}\n${String(err)}` });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

const lastLines = (s: string, n: number) => s.trim().split('\n').slice(-n).join('\n');

interface Daemon {
  api: string;
  repo: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Start test/kubo-daemon/start.mjs on a fresh repo and wait for its ready line. Stopped at `t`'s teardown. */
async function startDaemon(t: Test): Promise<Daemon> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-ipfs-'));
  const repo = path.join(dir, 'repo');
  const child = spawn(node24(), [path.join(DAEMON_DIR, 'start.mjs'), '--repo', repo, '--api-port', '0'], {
    cwd: DAEMON_DIR,
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  let stopping = false;
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  void exited.then(() => {
    if (!stopping) t.comment(`js-ipfs daemon exited unexpectedly (${child.exitCode ?? child.signalCode}):\n${lastLines(err, 40)}`);
  });
  const stop = async () => {
    stopping = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
  };
  t.teardown(async () => {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const api = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`js-ipfs daemon not ready within ${READY_TIMEOUT_MS} ms:\n${out}\n${err}`)), READY_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const line = out.split('\n').find((l) => l.startsWith('{"ready":true'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { api: string }).api);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`js-ipfs daemon exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${out}\n${err}`));
    });
  });
  return { api, repo, child, stop };
}

/** Unpin everything and collect garbage: the node holds no blob afterwards. */
async function emptyNode(client: KuboRPCClient): Promise<void> {
  const pins: CID[] = [];
  for await (const pin of client.pin.ls({ type: 'recursive' })) pins.push(pin.cid);
  for (const cid of pins) await client.pin.rm(cid);
  for await (const _ of client.repo.gc()) {
    // drain
  }
}

/** The file in which js-ipfs (blockstore-fs, next-to-last/2 sharding) keeps the block `cid`. */
function blockFile(repo: string, cid: string): string {
  const key = base32.encode(CID.parse(cid).multihash.bytes).slice(1).toUpperCase();
  return path.join(repo, 'blocks', key.slice(-3, -1), `${key}.data`);
}

async function recursivePins(client: KuboRPCClient): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const pin of client.pin.ls({ type: 'recursive' })) out.add(pin.cid.toV1().toString());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Against the real daemon

// On the root test, so that a long first install extends the runner's per-file timeout too.
const install = await ensureDaemonInstalled(t);
if (install.ok) {
  t.comment(install.ran ? `js-ipfs daemon installed in ${seconds(install.ms)}` : 'js-ipfs daemon already installed (test/kubo-daemon/node_modules)');
} else if ('fail' in install) {
  t.fail(install.fail);
}

t.test('KuboBlobStore against the js-ipfs daemon', { skip: !install.ok && 'skip' in install ? install.skip : false }, async (t) => {
  if (!install.ok) return; // failed above

  const startedAt = performance.now();
  const daemon = await startDaemon(t);
  t.comment(`js-ipfs daemon ready at ${daemon.api} in ${seconds(performance.now() - startedAt)}`);
  const client = create({ url: daemon.api });
  const open = (options: { timeoutMs?: number; lookupTimeoutMs?: number } = {}) => KuboBlobStore.open({ url: daemon.api, ...options });

  t.test('open reports the node', async (t) => {
    const store = await open();
    t.teardown(() => store.close());
    t.match(store.nodeVersion, /^js-ipfs \d+\.\d+\.\d+$/);
    t.equal(store.url, `${daemon.api}`);
  });

  t.test('shared BlobStore behaviour', async (t) => {
    blobStoreBehavior(t, async () => {
      await emptyNode(client);
      return open();
    });
  });

  t.test('CIDs equal cidForBytes, blobs are pinned and read back whole', async (t) => {
    const store = await open();
    t.teardown(() => store.close());
    for (const size of [0, 2048, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024]) {
      const bytes = randomBytes(size);
      const expected = await cidForBytes(bytes);
      const cid = await store.put(bytes);
      t.equal(cid, expected.root, `${size} B → ${cid}`);
      t.equal(expected.blocks.length, size <= CHUNK_SIZE ? 1 : Math.ceil(size / CHUNK_SIZE) + 1, `${size} B: ${expected.blocks.length} block(s)`);
      const pinned = [];
      for await (const pin of client.pin.ls({ paths: [cid], type: 'recursive' })) pinned.push(pin.cid.toString());
      t.same(pinned, [cid], `${size} B pinned recursively`);
      t.ok(Buffer.from(await store.get(cid)).equals(bytes), `${size} B read back`);
      t.equal(await store.has(cid), true);
    }
  });

  t.test(`a DAG deeper than one level (${MAX_LINKS_PER_NODE + 1} chunks) has the same CID`, async (t) => {
    const store = await open();
    t.teardown(() => store.close());
    const bytes = randomBytes((MAX_LINKS_PER_NODE + 1) * CHUNK_SIZE + 7);
    const start = performance.now();
    const cid = await store.put(bytes);
    t.equal(cid, (await cidForBytes(bytes)).root);
    t.ok(Buffer.from(await store.get(cid)).equals(bytes), 'read back');
    t.comment(`${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB put + get in ${seconds(performance.now() - start)}`);
  });

  t.test('a CID the node does not have → not-found, quickly', async (t) => {
    const store = await open();
    t.teardown(() => store.close());
    for (const bytes of [randomBytes(100), randomBytes(CHUNK_SIZE * 2)]) {
      const { root } = await cidForBytes(bytes);
      const start = performance.now();
      t.equal(await store.has(root), false);
      await t.rejects(store.get(root), { code: 'VLM_BLOB_NOT_FOUND', category: 'not-found' });
      const ms = performance.now() - start;
      t.ok(ms < 2000, `has + get of an absent ${root.slice(0, 4)}… CID answered in ${ms.toFixed(0)} ms`);
    }
    // Present but not pinned (cached, collectable) does not count as stored.
    const loose = randomBytes(64);
    const { root } = await cidForBytes(loose);
    await client.block.put(loose, { format: 'raw', version: 1, pin: false });
    await client.block.stat(CID.parse(root));
    t.equal(await store.has(root), false, 'an unpinned block is not a stored blob');
  });

  t.test('altered bytes on the node → VLM_BLOB_CORRUPT; lost blocks never come back as data', async (t) => {
    const store = await open({ timeoutMs: 1500 });
    t.teardown(() => store.close());
    const small = randomBytes(3000);
    const smallCid = await store.put(small);
    const file = blockFile(daemon.repo, smallCid);
    const stored = fs.readFileSync(file);
    stored[7]! ^= 0x01;
    fs.writeFileSync(file, stored);
    await t.rejects(store.get(smallCid), { code: 'VLM_BLOB_CORRUPT', category: 'fault' }, 'one flipped bit');

    const big = randomBytes(2 * CHUNK_SIZE + 3);
    const bigCid = await store.put(big);
    const leaf = (await cidForBytes(big)).blocks[0]!.cid;
    fs.rmSync(blockFile(daemon.repo, leaf));
    // Kubo answers "not found (offline)" → VLM_BLOB_CORRUPT; js-ipfs ignores `offline` and keeps
    // looking until the deadline → VLM_BLOB_UNAVAILABLE. Either way: no data, and within the deadline.
    const start = performance.now();
    const err = await store.get(bigCid).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    t.ok(err && ['VLM_BLOB_CORRUPT', 'VLM_BLOB_UNAVAILABLE'].includes(err.code ?? ''), `a missing leaf fails the read (${err?.code})`);
    t.ok(performance.now() - start < 5000, 'within the deadline');
    t.teardown(() => emptyNode(client)); // leave no damaged pin for the tests after this one
  });

  t.test('publishBlocks: a SqliteBlobStore moved to Kubo keeps its CIDs', async (t) => {
    await emptyNode(client);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-publish-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const embedded = SqliteBlobStore.open(path.join(dir, 'blobs.sqlite'));
    t.teardown(() => embedded.close());
    const blobs = [new Uint8Array(0), randomBytes(2048), randomBytes(CHUNK_SIZE), randomBytes(CHUNK_SIZE + 1), randomBytes(3 * 1024 * 1024 + 5)];
    const cids: string[] = [];
    for (const b of blobs) cids.push(await embedded.put(b));
    let embeddedBlocks = 0;
    for await (const _ of embedded.blocks()) embeddedBlocks++;

    const store = await open();
    t.teardown(() => store.close());
    for (const cid of cids) t.equal(await store.has(cid), false, `${cid} not on the node yet`);

    let progressCalls = 0;
    const start = performance.now();
    const result = await publishBlocks(embedded, store, { onProgress: () => progressCalls++ });
    t.comment(`published ${result.blocks} blocks (${(result.bytes / 2 ** 20).toFixed(1)} MiB) in ${seconds(performance.now() - start)}`);
    t.equal(result.blocks, embeddedBlocks, 'every block copied');
    t.equal(progressCalls, embeddedBlocks);
    t.same(result.roots, [...cids].sort(), 'the roots are exactly the blobs');
    const pins = await recursivePins(client);
    for (const cid of cids) t.ok(pins.has(cid), `${cid} pinned`);
    for (const [i, cid] of cids.entries()) {
      t.ok(Buffer.from(await store.get(cid)).equals(blobs[i]!), `${blobs[i]!.byteLength} B readable through Kubo under ${cid}`);
    }
    const kuboBlocks = new Map<string, Uint8Array>();
    for await (const { cid, bytes } of store.blocks()) kuboBlocks.set(cid, bytes);
    for await (const { cid, bytes } of embedded.blocks()) t.ok(Buffer.from(kuboBlocks.get(cid) ?? []).equals(bytes), `block ${cid} identical`);
    t.equal(kuboBlocks.size, embeddedBlocks, 'blocks() on Kubo yields the same block set');

    const again = await publishBlocks(embedded, store);
    t.same(again.roots, result.roots, 'publishing again is a no-op with the same roots');
  });

  t.test('publish: a blob equal to a chunk of another is pinned when named in `roots`', async (t) => {
    await emptyNode(client);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-publish-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const embedded = SqliteBlobStore.open(path.join(dir, 'blobs.sqlite'));
    t.teardown(() => embedded.close());
    const big = randomBytes(2 * CHUNK_SIZE);
    const bigCid = await embedded.put(big);
    const chunkCid = await embedded.put(big.subarray(0, CHUNK_SIZE)); // also the first leaf of `big`
    const store = await open();
    t.teardown(() => store.close());

    const computed = await publishBlocks(embedded, store);
    t.same(computed.roots, [bigCid], 'only the big blob is a computed root');
    t.equal(await store.has(chunkCid), false, 'the chunk-equal blob is only pinned indirectly');
    const named = await publishBlocks(embedded, store, { roots: [bigCid, chunkCid] });
    t.same(named.roots, [bigCid, chunkCid].sort());
    t.equal(await store.has(chunkCid), true, 'pinned once named');
    t.ok(Buffer.from(await store.get(chunkCid)).equals(big.subarray(0, CHUNK_SIZE)));
  });

  t.test('publish refuses a block whose bytes do not match its CID', async (t) => {
    const store = await open();
    t.teardown(() => store.close());
    const { root } = await cidForBytes(new TextEncoder().encode('genuine'));
    await t.rejects(store.publish([{ cid: root, bytes: new TextEncoder().encode('forged') }]), { code: 'VLM_BLOB_CORRUPT' });
    t.equal(await store.has(root), false);
  });

  t.test('the node stops → unavailable (503), never not-found', async (t) => {
    const store = await open({ timeoutMs: 5000, lookupTimeoutMs: 5000 });
    t.teardown(() => store.close());
    const cid = await store.put(randomBytes(500));
    await daemon.stop();
    const unavailable = { code: 'VLM_BLOB_UNAVAILABLE', category: 'unavailable' };
    await t.rejects(store.put(randomBytes(500)), unavailable, 'put');
    await t.rejects(store.get(cid), unavailable, 'get');
    await t.rejects(store.has(cid), unavailable, 'has');
    await t.rejects(async () => {
      for await (const _ of store.blocks()) {
        // no block expected
      }
    }, unavailable, 'blocks');
    await t.rejects(KuboBlobStore.open({ url: daemon.api }), unavailable, 'open');
  });

  t.teardown(() => t.comment(`kubo integration tests took ${seconds(performance.now() - startedAt)} (daemon start included, install excluded)`));
});

// ---------------------------------------------------------------------------------------------
// Against a misbehaving server (no daemon needed)

type Handler = (url: URL, body: Buffer, res: http.ServerResponse) => void;

/** A tiny HTTP server speaking just enough Kubo RPC for one scenario; `version` answers like Kubo. */
async function fakeNode(t: Test, handlers: Record<string, Handler>): Promise<string> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const name = url.pathname.replace(/^\/api\/v0\//, '');
      const handler = handlers[name] ?? (name === 'version' ? json({ Version: '0.99.0', Commit: '', Repo: '16', System: 'amd64/linux', Golang: 'go1.24' }) : undefined);
      if (handler === undefined) json({ Message: `unexpected ${name}`, Code: 0, Type: 'error' }, 500)(url, Buffer.alloc(0), res);
      else handler(url, Buffer.concat(chunks), res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const json =
  (body: unknown, status = 200): Handler =>
  (_url, _body, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

t.test('a node that adds under another CID → VLM_BLOB_CID_MISMATCH', async (t) => {
  const bytes = randomBytes(CHUNK_SIZE + 10);
  const v0 = await cidV0ForBytes(bytes); // what a node ignoring raw-leaves / cid-version would answer
  let query = '';
  const url = await fakeNode(t, {
    add: (u, body, res) => {
      query = u.search;
      json({ Name: 'blob', Hash: v0, Size: String(body.length) })(u, body, res);
    },
  });
  const store = await KuboBlobStore.open({ url });
  t.equal(store.nodeVersion, 'kubo 0.99.0');
  await t.rejects(store.put(bytes), { code: 'VLM_BLOB_CID_MISMATCH', category: 'fault' });
  const params = new URLSearchParams(query);
  t.equal(params.get('cid-version'), '1');
  t.equal(params.get('raw-leaves'), 'true');
  t.equal(params.get('chunker'), 'size-262144');
  t.equal(params.get('pin'), 'true');
});

t.test('a node that returns other bytes → VLM_BLOB_CORRUPT; lookups are offline', async (t) => {
  const { root } = await cidForBytes(new TextEncoder().encode('the real content'));
  const queries: Record<string, URLSearchParams> = {};
  const url = await fakeNode(t, {
    'pin/ls': (u, b, res) => {
      queries['pin/ls'] = u.searchParams;
      json({ Cid: root, Type: 'recursive' })(u, b, res);
    },
    cat: (u, _b, res) => {
      queries.cat = u.searchParams;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('the fake content');
    },
  });
  const store = await KuboBlobStore.open({ url });
  t.equal(await store.has(root), true);
  await t.rejects(store.get(root), { code: 'VLM_BLOB_CORRUPT', category: 'fault' });
  t.equal(queries['pin/ls']?.get('offline'), 'true');
  t.equal(queries['pin/ls']?.get('type'), 'recursive');
  t.equal(queries.cat?.get('offline'), 'true');
});

t.test('block put speaks Kubo (cid-codec) and checks the CID it gets back', async (t) => {
  const bytes = new TextEncoder().encode('one raw block');
  const { root } = await cidForBytes(bytes);
  let query: URLSearchParams | undefined;
  const url = await fakeNode(t, {
    'block/put': (u, b, res) => {
      query = u.searchParams;
      json({ Key: 'bafkqaaa', Size: bytes.length })(u, b, res); // the (empty) identity CID: not the block's
    },
  });
  const store = await KuboBlobStore.open({ url });
  await t.rejects(store.publish([{ cid: root, bytes }]), { code: 'VLM_BLOB_CID_MISMATCH', category: 'fault' });
  t.equal(query?.get('cid-codec'), 'raw');
  t.equal(query?.get('mhtype'), 'sha2-256');
  t.equal(query?.get('format'), null, 'no deprecated format (Kubo would answer CIDv0 for dag-pb)');
});

t.test('error answers and silence → VLM_BLOB_UNAVAILABLE within the deadline', async (t) => {
  const { root } = await cidForBytes(new TextEncoder().encode('x'));
  const url = await fakeNode(t, {
    add: json({ Message: 'failure: disk full', Code: 0, Type: 'error' }, 500),
    'pin/ls': () => {
      // never answers
    },
  });
  const store = await KuboBlobStore.open({ url, timeoutMs: 3000, lookupTimeoutMs: 300 });
  await t.rejects(store.put(new Uint8Array(10)), { code: 'VLM_BLOB_UNAVAILABLE', category: 'unavailable', message: /disk full/ });
  const start = performance.now();
  await t.rejects(store.get(root), { code: 'VLM_BLOB_UNAVAILABLE', category: 'unavailable', message: /no answer within 300 ms/ });
  t.ok(performance.now() - start < 2000);
  const ac = new AbortController();
  const pending = store.has(root, { signal: ac.signal });
  ac.abort();
  await t.rejects(pending, { code: 'VLM_BLOB_ABORTED', category: 'unavailable' });
  await t.rejects(KuboBlobStore.open({ url: 'ftp://127.0.0.1:5001' }), { code: 'VLM_BLOB_OPEN', category: 'invalid' });
  await t.rejects(KuboBlobStore.open({ url: 'not a url' }), { code: 'VLM_BLOB_OPEN', category: 'invalid' });
});

t.teardown(() => t.comment(`kubo-blob-store.int.test.ts: ${seconds(performance.now() - suiteStart)} in all`));
