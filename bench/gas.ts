/**
 * `npm run bench:gas`: what anchoring costs on chain, and how long an anchor takes.
 *
 * 1. **Gas per batch and per resource version** at batch sizes 1, 10, 100, 1,000 and 10,000:
 *    for each size, random 32-byte leaves are batched exactly as the batcher does (Merkle tree,
 *    public manifest `manifestOf`, its Kubo-compatible CID) and the root is anchored through the
 *    production contract client (`createContractLedger` + `Sender`) on an in-process EDR chain
 *    configured like the embedded chain (same generated AnchorRegistry bytecode, Cancun, chain id
 *    31337). `gasUsed` is read from each transaction's receipt. EVM gas is deterministic, so
 *    these figures hold on any Cancun chain (Besu, Geth, hardhat node) for the same calldata.
 *    Each size is anchored REPEATS times (fresh roots); the table shows the median (min–max).
 * 2. **Anchor latency on the embedded chain** (`openEmbeddedLedger` on a temporary data dir, so
 *    with its fsynced transaction log): time from the `anchor()` call to its receipt, one batch at
 *    a time as the batcher sends them, over LATENCY_BATCHES batches: p50, p99.
 *
 * Compared with the published figure of 164,545 gas per record upload (one transaction per
 * record). Writes bench/results/gas.json and bench/results/gas.md, and prints the table.
 *
 * Options: `--repeats=N` (default 5), `--latency-batches=N` (default 50), `--sizes=1,10,…`.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrowserProvider, Wallet, getBytes, type Eip1193Provider } from 'ethers';
import { createHardhatRuntimeEnvironment } from 'hardhat/hre';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { manifestOf, type QueuedLeaf } from '../src/chain/batcher.ts';
import { createContractLedger, deployRegistry } from '../src/chain/contract-ledger.ts';
import { openEmbeddedLedger } from '../src/chain/embedded-chain.ts';
import { buildTree } from '../src/chain/merkle.ts';
import { encodeAnchor } from '../src/chain/registry.ts';
import { Rpc, toQuantity } from '../src/chain/rpc.ts';
import { Sender } from '../src/chain/sender.ts';
import { cidForBytes } from '../src/storage/cid.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Gas per record upload published for the per-record blockchain-EHR design Vellum is compared with. */
const PUBLISHED_GAS_PER_RECORD = 164_545;
const CHAIN_ID = 31337;

function option(name: string, fallback: string): string {
  const arg = process.argv.slice(2).find((a) => a.startsWith(`--${name}=`));
  return arg ? arg.slice(name.length + 3) : fallback;
}
const REPEATS = Number(option('repeats', '5'));
const LATENCY_BATCHES = Number(option('latency-batches', '50'));
const SIZES = option('sizes', '1,10,100,1000,10000').split(',').map(Number);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** Nearest-rank percentile. */
const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const round = (x: number, digits = 2): number => Number(x.toFixed(digits));
const fmt = (x: number): string => x.toLocaleString('en-US', { maximumFractionDigits: 1 });

/** A batch as the batcher builds it: leaves, tree, manifest and its CID. */
async function makeBatch(size: number): Promise<{ root: Uint8Array; manifestCid: string; manifestBytes: number; prepMs: number }> {
  const leaves: QueuedLeaf[] = Array.from({ length: size }, (_, i) => ({
    seq: i + 1,
    leaf: new Uint8Array(randomBytes(32)),
    cid: rawCid(randomBytes(32)),
  }));
  const started = performance.now();
  const tree = buildTree(leaves.map((l) => l.leaf));
  const manifest = manifestOf(tree.root, leaves);
  const { root: manifestCid } = await cidForBytes(manifest);
  return { root: tree.root, manifestCid, manifestBytes: manifest.byteLength, prepMs: performance.now() - started };
}

/** A raw-leaves CIDv1 (sha2-256, base32) like an envelope's. */
function rawCid(seed: Uint8Array): string {
  return CID.createV1(raw.code, Digest.create(0x12, createHash('sha256').update(seed).digest())).toString();
}

/** Calldata gas of `data` (EIP-2028: 4 per zero byte, 16 per non-zero byte). */
function calldataGas(data: string): number {
  return [...getBytes(data)].reduce((sum, b) => sum + (b === 0 ? 4 : 16), 0);
}

interface GasRow {
  leaves: number;
  gasPerBatch: { median: number; min: number; max: number };
  gasPerVersion: number;
  /** Fraction of the published per-record figure. */
  vsPublished: number;
  intrinsic: number;
  calldata: number;
  execution: number;
  manifestBytes: number;
  /** Off-chain preparation: tree + manifest + CID, median ms. */
  prepMs: number;
}

async function measureGas(): Promise<{ rows: GasRow[]; firstAnchorGas: number; deployGas: number }> {
  const hre = await createHardhatRuntimeEnvironment(
    {
      networks: {
        bench: {
          type: 'edr-simulated',
          chainId: CHAIN_ID,
          hardfork: 'cancun',
          accounts: [],
          mining: { auto: true, interval: 0 },
          blockGasLimit: 30_000_000n,
          initialBaseFeePerGas: 1_000_000_000n,
          throwOnTransactionFailures: false,
          loggingEnabled: false,
        },
      },
    },
    {},
    ROOT,
  );
  const connection = await hre.network.create('bench');
  const provider = new BrowserProvider(connection.provider as unknown as Eip1193Provider, CHAIN_ID, { staticNetwork: true, cacheTimeout: -1 });
  const rpc = new Rpc(provider);
  const wallet = Wallet.createRandom();
  await rpc.request('hardhat_setBalance', [wallet.address, toQuantity(10n ** 24n)]);
  const retry = { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 };
  const sender = new Sender({ rpc, wallet, chainId: CHAIN_ID, confirmations: 1, pollIntervalMs: 5, replaceAfterMs: 60_000, retry });
  const deployed = await deployRegistry(sender, wallet.address);
  const ledger = createContractLedger({ kind: 'embedded', rpc, sender, chainId: CHAIN_ID, contract: deployed.address, retry });
  const gasOf = async (txHash: string): Promise<number> => {
    const receipt = await rpc.request<{ gasUsed: string }>('eth_getTransactionReceipt', [txHash]);
    return Number.parseInt(receipt.gasUsed, 16);
  };
  const deployGas = await gasOf(deployed.txHash);
  try {
    // The registry's first anchor, reported apart in case a first write costs more.
    const warm = await makeBatch(1);
    const firstAnchorGas = await gasOf((await ledger.anchor(warm.root, 1, warm.manifestCid)).txHash);
    const rows: GasRow[] = [];
    for (const size of SIZES) {
      const gas: number[] = [];
      const calldata: number[] = [];
      const prep: number[] = [];
      let manifestBytes = 0;
      for (let r = 0; r < REPEATS; r++) {
        const batch = await makeBatch(size);
        prep.push(batch.prepMs);
        manifestBytes = batch.manifestBytes;
        const receipt = await ledger.anchor(batch.root, size, batch.manifestCid);
        if (receipt.leafCount !== size) throw new Error(`anchored ${receipt.leafCount} leaves, expected ${size}`);
        gas.push(await gasOf(receipt.txHash));
        // Zero bytes in a random root are cheaper calldata: the only reason gas varies.
        calldata.push(calldataGas(encodeAnchor(receipt.root, size, batch.manifestCid)));
      }
      const m = median(gas);
      rows.push({
        leaves: size,
        gasPerBatch: { median: m, min: Math.min(...gas), max: Math.max(...gas) },
        gasPerVersion: round(m / size),
        vsPublished: round(m / size / PUBLISHED_GAS_PER_RECORD, 6),
        intrinsic: 21_000,
        calldata: median(calldata),
        execution: median(gas.map((g, i) => g - 21_000 - calldata[i]!)),
        manifestBytes,
        prepMs: round(median(prep)),
      });
      console.error(`gas: ${size} leaves → ${fmt(m)} gas per batch, ${fmt(m / size)} per version`);
    }
    return { rows, firstAnchorGas, deployGas };
  } finally {
    await sender.close();
    rpc.destroy();
    await connection.close();
  }
}

async function measureLatency(): Promise<{ batches: number; leavesPerBatch: number; p50: number; p99: number; mean: number; min: number; max: number; startMs: number }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-gas-'));
  try {
    const started = performance.now();
    const ledger = await openEmbeddedLedger({ dataDir });
    const startMs = performance.now() - started;
    try {
      const leavesPerBatch = 100;
      const times: number[] = [];
      // Two warm-up anchors (JIT, first block) not counted.
      for (let i = 0; i < LATENCY_BATCHES + 2; i++) {
        const batch = await makeBatch(leavesPerBatch);
        const t0 = performance.now();
        await ledger.anchor(batch.root, leavesPerBatch, batch.manifestCid);
        if (i >= 2) times.push(performance.now() - t0);
      }
      return {
        batches: times.length,
        leavesPerBatch,
        p50: round(percentile(times, 50)),
        p99: round(percentile(times, 99)),
        mean: round(times.reduce((a, b) => a + b, 0) / times.length),
        min: round(Math.min(...times)),
        max: round(Math.max(...times)),
        startMs: round(startMs, 0),
      };
    } finally {
      await ledger.close();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const gas = await measureGas();
  const latency = await measureLatency();
  const hardhat = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/hardhat/package.json'), 'utf8')) as { version: string };
  const result = {
    date: new Date().toISOString(),
    environment: {
      node: process.version,
      cores: os.cpus().length,
      hardhat: hardhat.version,
      chain: 'in-process EDR (edr-simulated), Cancun, chain id 31337, automine',
      contract: 'AnchorRegistry (generated bytecode, solc 0.8.28, optimizer 10,000 runs)',
    },
    publishedGasPerRecord: PUBLISHED_GAS_PER_RECORD,
    repeats: REPEATS,
    deployGas: gas.deployGas,
    firstAnchorGas: gas.firstAnchorGas,
    gas: gas.rows,
    latency: { ...latency, unit: 'ms', what: 'embedded chain: anchor() call → receipt (1 confirmation), one batch at a time' },
  };

  const lines = [
    `Run ${result.date} on ${result.environment.cores} cores, Node ${process.version}, Hardhat ${hardhat.version} (EDR, Cancun). ` +
      `Median of ${REPEATS} anchors per size (min–max in brackets). Published per-record baseline: ${fmt(PUBLISHED_GAS_PER_RECORD)} gas per record upload.`,
    '',
    '| leaves per batch | gas per batch | gas per resource version | vs 164,545 per record | calldata gas | execution gas | manifest | tree + manifest + CID |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...gas.rows.map(
      (r) =>
        `| ${fmt(r.leaves)} | ${fmt(r.gasPerBatch.median)}${r.gasPerBatch.min !== r.gasPerBatch.max ? ` (${fmt(r.gasPerBatch.min)}–${fmt(r.gasPerBatch.max)})` : ''} | ${fmt(r.gasPerVersion)} | ` +
        `${r.vsPublished >= 0.01 ? `${(r.vsPublished * 100).toFixed(1)} %` : `${(r.vsPublished * 100).toFixed(3)} %`} (${fmt(Math.round(PUBLISHED_GAS_PER_RECORD / r.gasPerVersion))}× less) | ` +
        `${fmt(r.calldata)} | ${fmt(r.execution)} | ${fmt(r.manifestBytes)} B | ${r.prepMs} ms |`,
    ),
    '',
    `Gas per batch includes the 21,000 intrinsic gas. Registry deployment: ${fmt(gas.deployGas)} gas (once). First anchor on a fresh registry: ${fmt(gas.firstAnchorGas)} gas.`,
    '',
    `Anchor latency on the embedded chain (anchor() call → receipt, ${latency.leavesPerBatch} leaves per batch, ${latency.batches} batches one at a time, fsynced transaction log): ` +
      `p50 ${latency.p50} ms, p99 ${latency.p99} ms (mean ${latency.mean}, min ${latency.min}, max ${latency.max}; nearest-rank percentiles, so over 50 batches p99 is the slowest one). ` +
      `Embedded chain start: ${latency.startMs} ms. A version's commit → mined time adds the batch window (VELLUM_ANCHOR_INTERVAL_MS, default 1,000 ms) and the manifest write to this.`,
  ];
  const md = lines.join('\n');
  fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench/results/gas.json'), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(ROOT, 'bench/results/gas.md'), `${md}\n`);
  console.log(md);
  console.log('\nwritten to bench/results/gas.{json,md}');
}

await main();
process.exit(0);
