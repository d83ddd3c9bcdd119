/**
 * Shared helpers of the chain client tests: an in-process EDR chain reached through ethers
 * (optionally through a wrapper that fails on demand), a `hardhat node` child process, and
 * assertions on ChainError codes (never messages).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrowserProvider, type Eip1193Provider } from 'ethers';
import { createHardhatRuntimeEnvironment } from 'hardhat/hre';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import type { Test } from 'tap';
import { Rpc } from '../../src/chain/rpc.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Private keys of `hardhat node`'s default accounts (the public Hardhat test mnemonic). */
export const HARDHAT_KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
] as const;

export const randomRoot = (): Uint8Array => new Uint8Array(randomBytes(32));

/** A CIDv1 (raw, sha2-256) like the manifests' CIDs. */
export function manifestCid(seed: string): string {
  return CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update(seed).digest())).toString();
}

/** Asserts that `action` rejects with a ChainError of `code` (and `category`, if given). */
export async function rejectsCode(t: Test, action: Promise<unknown> | (() => Promise<unknown>), code: string, category?: string): Promise<unknown> {
  try {
    await (typeof action === 'function' ? action() : action);
  } catch (err) {
    const e = err as { name?: string; code?: string; category?: string };
    t.equal(e.code, code, `rejects with ${code}`);
    t.equal(e.name, 'ChainError', `${code} is a ChainError`);
    if (category !== undefined) t.equal(e.category, category, `${code} is '${category}'`);
    return err;
  }
  t.fail(`expected ${code}, but it resolved`);
  return undefined;
}

/** Switches for the failing wrapper around the in-process chain's EIP-1193 provider. */
export interface Faults {
  /** Every call fails as if the connection were refused. */
  down: boolean;
  /** The next n calls of a method fail before reaching the chain. */
  failBefore: Map<string, number>;
  /** The next n calls of a method reach the chain, but the answer is lost. */
  failAfter: Map<string, number>;
  /** Calls seen, by method. */
  calls: Map<string, number>;
}

function transportError(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8545'), { code: 'ECONNREFUSED' });
}

/** An in-process EDR chain (no funded accounts), with ethers and a fault-injecting wrapper. */
export async function startEdr(t: Test, options: { automine?: boolean } = {}) {
  const hre = await createHardhatRuntimeEnvironment(
    {
      networks: {
        test: {
          type: 'edr-simulated',
          chainId: 31337,
          hardfork: 'cancun',
          accounts: [],
          mining: { auto: options.automine ?? true, interval: 0 },
          throwOnTransactionFailures: false,
        },
      },
    },
    {},
    REPO_ROOT,
  );
  const connection = await hre.network.create('test');
  const inner = connection.provider as unknown as Eip1193Provider;
  const faults: Faults = { down: false, failBefore: new Map(), failAfter: new Map(), calls: new Map() };
  const take = (map: Map<string, number>, method: string): boolean => {
    const n = map.get(method) ?? 0;
    if (n > 0) map.set(method, n - 1);
    return n > 0;
  };
  const wrapped: Eip1193Provider = {
    async request(args) {
      faults.calls.set(args.method, (faults.calls.get(args.method) ?? 0) + 1);
      if (faults.down || take(faults.failBefore, args.method)) throw transportError();
      const result: unknown = await inner.request(args);
      if (take(faults.failAfter, args.method)) throw transportError();
      return result;
    },
  };
  const provider = new BrowserProvider(wrapped, 31337, { staticNetwork: true, cacheTimeout: -1 });
  const direct = new Rpc(new BrowserProvider(inner, 31337, { staticNetwork: true, cacheTimeout: -1 }));
  t.teardown(() => connection.close());
  return {
    /** Through the fault-injecting wrapper. */
    rpc: new Rpc(provider),
    /** Straight to the chain (for the test's own calls). */
    direct,
    faults,
    async fund(address: string): Promise<void> {
      await direct.request('hardhat_setBalance', [address, `0x${(10n ** 24n).toString(16)}`]);
    },
  };
}

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** JSON-RPC over fetch, for the test's own calls to a node (evm_mine…). */
export async function jsonRpc<T = unknown>(url: string, method: string, params: unknown[] = []): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const body = (await response.json()) as { result?: T; error?: { message: string } };
  if (body.error) throw new Error(body.error.message);
  return body.result as T;
}

/** A `hardhat node` child process on 127.0.0.1:`port` (optionally with another chain id), started from the repository root. */
export async function startHardhatNode(port: number, chainId?: number): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const url = `http://127.0.0.1:${port}`;
  // process.execPath is the Node 24 running the tests; `.bin/hardhat` is Hardhat's CLI script.
  const args = [path.join(REPO_ROOT, 'node_modules/.bin/hardhat'), 'node', '--hostname', '127.0.0.1', '--port', String(port)];
  if (chainId !== undefined) args.push('--chain-id', String(chainId));
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CI: 'true', HARDHAT_DISABLE_TELEMETRY_PROMPT: 'true' },
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`hardhat node exited: ${output}`);
    try {
      await jsonRpc(url, 'eth_chainId');
      return { url, child, stop };
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`hardhat node did not answer within 30 s: ${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
