/**
 * Test harness: the project's Hardhat config, built and run in-process (EDR), with
 * hardhat-ethers on the connection. Each test file gets its own artifacts and cache directory,
 * so files running in parallel never write the same build output; the compiler is the npm
 * `solc` package, so this works offline.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Contract, Interface } from 'ethers';
import { createHardhatRuntimeEnvironment } from 'hardhat/hre';
import type { Test } from 'tap';
import config from '../../hardhat.config.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** A fresh in-process chain with the contracts built. */
export async function startChain(t: Test) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-hardhat-'));
  const hre = await createHardhatRuntimeEnvironment(
    { ...config, paths: { artifacts: path.join(dir, 'artifacts'), cache: path.join(dir, 'cache') } },
    {},
    REPO_ROOT,
  );
  await hre.tasks.getTask('build').run({ quiet: true, noTests: true });
  const connection = await hre.network.connect();
  t.teardown(async () => {
    await connection.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { hre, connection, ethers: connection.ethers };
}

export type TestChain = Awaited<ReturnType<typeof startChain>>;

/** Deploys AnchorRegistry with signer 0 as administrator and signer 1 as anchorer. */
export async function deployRegistry(chain: TestChain) {
  const [admin, anchorer, ...others] = await chain.ethers.getSigners();
  const registry = await chain.ethers.deployContract('AnchorRegistry', [admin!.address, anchorer!.address], admin!);
  await registry.waitForDeployment();
  return { registry, admin: admin!, anchorer: anchorer!, others };
}

/** The revert data an ethers error carries, wherever the provider put it. */
export function revertData(err: unknown): string | undefined {
  const e = err as { data?: unknown; info?: { error?: { data?: unknown } }; error?: { data?: unknown } };
  for (const candidate of [e?.data, e?.info?.error?.data, e?.error?.data]) {
    if (typeof candidate === 'string' && candidate.startsWith('0x')) return candidate;
    const nested = (candidate as { data?: unknown } | undefined)?.data;
    if (typeof nested === 'string' && nested.startsWith('0x')) return nested;
  }
  return undefined;
}

/**
 * Asserts that `action` reverts with custom error `name` of `target`'s ABI and, if given,
 * with arguments `args` (compared as strings). Names and arguments only, never messages.
 */
export async function rejectsWithCustomError(
  t: Test,
  action: Promise<unknown>,
  target: Contract | { interface: Interface },
  name: string,
  args?: unknown[],
): Promise<void> {
  let error: unknown;
  try {
    await action;
  } catch (err) {
    error = err;
  }
  if (error === undefined) {
    t.fail(`expected a revert with ${name}, but the call succeeded`);
    return;
  }
  const data = revertData(error);
  const parsed = data === undefined ? null : target.interface.parseError(data);
  t.equal(parsed?.name, name, `reverts with ${name}`);
  if (args !== undefined && parsed) {
    t.same(
      [...parsed.args].map((a) => String(a)),
      args.map((a) => String(a)),
      `${name} arguments`,
    );
  }
}
