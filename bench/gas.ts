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
 * 3. **Consent registry gas** (issue 12): ConsentRegistry deployed through the production client
 *    (`deployConsentRegistry` + `createConsentLedger`) on a fresh chain of the same configuration.
 *    `putConsent` of each consent shape — synthetic shapes (simple permit; class + purpose +
 *    period; 3-level nested; 32 rules; code, label and data tokens) and the 12 official R4
 *    examples of `../shared/corpora/r4-examples/Consent` — every one a FHIR Consent mapped by
 *    `mapConsent` with fixed keys: the first put, a replacement with the same rules, and a
 *    replacement with rules of the same shape under other keys. Then `revokeConsent`,
 *    `requestAccess`, `answerRequest`, `setModel`, `approveActor`, and the cost of `decide()` for
 *    patients with 1 and 10 consents (`eth_estimateGas`, and gasUsed of a transaction calling it),
 *    in both models. Deterministic (fixed keys and clock): one run is the figure.
 *
 * Compared with the published figure of 164,545 gas per record upload (one transaction per
 * record). Writes bench/results/gas.json and bench/results/gas.md, and prints the table.
 *
 * Options: `--repeats=N` (default 5), `--latency-batches=N` (default 50), `--sizes=1,10,…`,
 * `--only=consent` (the consent figures alone, printed, nothing written).
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrowserProvider, Wallet, getBytes, keccak256, type BaseWallet, type Eip1193Provider } from 'ethers';
import { createHardhatRuntimeEnvironment } from 'hardhat/hre';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import * as Digest from 'multiformats/hashes/digest';
import { manifestOf, type QueuedLeaf } from '../src/chain/batcher.ts';
import { createConsentLedger, deployConsentRegistry } from '../src/chain/consent-ledger.ts';
import { encodeDecide, encodePutConsent, type DecideRequest, type Rule } from '../src/chain/consent-registry.ts';
import { createContractLedger, deployRegistry } from '../src/chain/contract-ledger.ts';
import { CONSENT_REGISTRY_BYTECODE } from '../src/chain/generated/consent-registry.ts';
import { openEmbeddedLedger } from '../src/chain/embedded-chain.ts';
import { buildTree } from '../src/chain/merkle.ts';
import { encodeAnchor } from '../src/chain/registry.ts';
import { Rpc, toQuantity } from '../src/chain/rpc.ts';
import { Sender } from '../src/chain/sender.ts';
import { factsOf } from '../src/fhir/consent/facts.ts';
import { ACT_CODE_SYSTEM, CONSENT_SCOPE_SYSTEM, PARTICIPATION_SYSTEM, mapConsent, type MappingContext } from '../src/fhir/consent/mapping.ts';
import {
  CONSENT_ACTIONS,
  PURPOSE_SYSTEM,
  R4_RESOURCE_TYPES,
  RESOURCE_TYPES_SYSTEM,
  classBit,
  consentKeyer,
  purposeIndex,
  tokenKeyer,
} from '../src/fhir/consent/terms.ts';
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
const ONLY = option('only', '');

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

/** An in-process EDR chain configured like the embedded chain, a funded account and its Sender. */
async function openBenchChain(wallet: BaseWallet = Wallet.createRandom()): Promise<{
  rpc: Rpc;
  wallet: BaseWallet;
  sender: Sender;
  retry: { attempts: number; baseDelayMs: number; maxDelayMs: number };
  gasOf(txHash: string): Promise<number>;
  close(): Promise<void>;
}> {
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
  await rpc.request('hardhat_setBalance', [wallet.address, toQuantity(10n ** 24n)]);
  const retry = { attempts: 3, baseDelayMs: 20, maxDelayMs: 200 };
  const sender = new Sender({ rpc, wallet, chainId: CHAIN_ID, confirmations: 1, pollIntervalMs: 5, replaceAfterMs: 60_000, retry });
  const gasOf = async (txHash: string): Promise<number> => {
    const receipt = await rpc.request<{ gasUsed: string }>('eth_getTransactionReceipt', [txHash]);
    return Number.parseInt(receipt.gasUsed, 16);
  };
  const close = async (): Promise<void> => {
    await sender.close();
    rpc.destroy();
    await connection.close();
  };
  return { rpc, wallet, sender, retry, gasOf, close };
}

async function measureGas(): Promise<{ rows: GasRow[]; firstAnchorGas: number; deployGas: number }> {
  const { rpc, wallet, sender, retry, gasOf, close } = await openBenchChain();
  const deployed = await deployRegistry(sender, wallet.address);
  const ledger = createContractLedger({ kind: 'embedded', rpc, sender, chainId: CHAIN_ID, contract: deployed.address, retry });
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
    await close();
  }
}

// ------------------------------------------------------------------ consent registry gas

/** The official R4 Consent examples (hl7.org/fhir/R4/consent-examples.html). */
const R4_CONSENT_EXAMPLES = path.resolve(ROOT, '../shared/corpora/r4-examples/Consent');
/** A fixed clock, so periods (calldata) and so every consent figure are the same on every run. */
const CONSENT_NOW = Date.UTC(2026, 0, 1) / 1000;
const YEAR = 365 * 86_400;
const DR = 'Practitioner/bench-dr';
const PRIVACY_SCOPE = { coding: [{ system: CONSENT_SCOPE_SYSTEM, code: 'patient-privacy' }] };
const PRCP = { coding: [{ system: PARTICIPATION_SYSTEM, code: 'PRCP' }] };

type Json = Record<string, unknown>;
const iso = (unix: number): string => new Date(unix * 1000).toISOString().replace('.000Z', 'Z');
const recipient = (reference: string): Json => ({ role: PRCP, reference: { reference } });
const purposeOf = (code: string): Json => ({ system: PURPOSE_SYSTEM, code });
const classOf = (type: string): Json => ({ system: RESOURCE_TYPES_SYSTEM, code: type });
const labelOf = (code: string): Json => ({ system: ACT_CODE_SYSTEM, code });
const loinc = (code: string): Json => ({ coding: [{ system: 'http://loinc.org', code }] });

/** A patient-privacy Consent of `patient` with root provision `provision`. */
function consentResource(id: string, patient: string, provision: Json): Json {
  return {
    resourceType: 'Consent',
    id,
    status: 'active',
    scope: PRIVACY_SCOPE,
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: patient },
    provision,
  };
}

/** The synthetic consent shapes: a root provision naming `actor` as the recipient. */
const CONSENT_SHAPES: { name: string; what: string; provision(actor: string): Json }[] = [
  {
    name: 'simple permit',
    what: 'permit, 1 recipient actor, nothing else',
    provision: (actor) => ({ type: 'permit', actor: [recipient(actor)] }),
  },
  {
    name: 'permit with class, purpose and period',
    what: 'permit, 1 actor, classes Observation + Condition, purpose TREAT, period of 2 years',
    provision: (actor) => ({
      type: 'permit',
      actor: [recipient(actor)],
      class: [classOf('Observation'), classOf('Condition')],
      purpose: [purposeOf('TREAT')],
      period: { start: iso(CONSENT_NOW - YEAR), end: iso(CONSENT_NOW + YEAR) },
    }),
  },
  {
    name: '3-level nested',
    what: 'permit actor for Observation, Condition, MedicationRequest (TREAT, ETREAT, period) ⊃ deny Condition ⊃ permit Condition for ETREAT',
    provision: (actor) => ({
      type: 'permit',
      actor: [recipient(actor)],
      class: [classOf('Observation'), classOf('Condition'), classOf('MedicationRequest')],
      purpose: [purposeOf('TREAT'), purposeOf('ETREAT')],
      period: { start: iso(CONSENT_NOW - YEAR), end: iso(CONSENT_NOW + YEAR) },
      provision: [{ type: 'deny', class: [classOf('Condition')], provision: [{ type: 'permit', purpose: [purposeOf('ETREAT')] }] }],
    }),
  },
  {
    name: '32 rules',
    what: 'permit actor (TREAT) ⊃ 31 nested provisions, deny and permit alternately, each 1 actor, 1 class, 1 purpose',
    provision: (actor) => ({
      type: 'permit',
      actor: [recipient(actor)],
      purpose: [purposeOf('TREAT')],
      provision: Array.from({ length: 31 }, (_, i) => ({
        type: i % 2 ? 'permit' : 'deny',
        actor: [recipient(`Practitioner/nested-${i}`)],
        class: [classOf(R4_RESOURCE_TYPES[(i * 4) % R4_RESOURCE_TYPES.length]!)],
        purpose: [purposeOf(i % 2 ? 'ETREAT' : 'TREAT')],
      })),
    }),
  },
  {
    name: 'code, label and data tokens',
    what: 'permit actor (TREAT) ⊃ deny 3 LOINC codes; deny labels PSY, HIV, ETH; deny the dependents of a lab order and one Observation: 4 rules, 8 tokens',
    provision: (actor) => ({
      type: 'permit',
      actor: [recipient(actor)],
      purpose: [purposeOf('TREAT')],
      provision: [
        { type: 'deny', code: [loinc('8867-4'), loinc('2339-0'), loinc('5195-3')] },
        { type: 'deny', securityLabel: [labelOf('PSY'), labelOf('HIV'), labelOf('ETH')] },
        {
          type: 'deny',
          data: [
            { meaning: 'dependents', reference: { reference: 'ServiceRequest/lab-1' } },
            { meaning: 'instance', reference: { reference: 'Observation/hiv-1' } },
          ],
        },
      ],
    }),
  },
];

interface ConsentShapeRow {
  shape: string;
  source: 'synthetic' | 'R4 example';
  what: string;
  rules: number;
  /** Nesting depth: 1 = the root alone. */
  depth: number;
  actors: number;
  tokens: number;
  calldataBytes: number;
  calldataGas: number;
  /** putConsent of a new consent id (the patient has other consents already). */
  firstPut: number;
  /** putConsent of the same id with the same rules. */
  replaceSame: number;
  /** putConsent of the same id, rules of the same shape with every actor and token key different. */
  replaceNewKeys: number;
}

interface DecideRow {
  case: string;
  model: string;
  consents: number;
  rules: number;
  decision: string;
  /** eth_estimateGas of decide(request) (a transaction's gas limit: includes 21,000 and calldata). */
  estimateGas: number;
  /** gasUsed of a transaction that calls decide(request). */
  txGasUsed: number;
  calldataGas: number;
  /** txGasUsed − 21,000 − calldata: the view's own execution. */
  execution: number;
}

interface ConsentGas {
  /** keccak256 of the generated creation bytecode measured (which contract source the figures are of). */
  bytecodeKeccak: string;
  deployGas: number;
  firstConsentOfPatient: { gas: number; sameShapeForPatientWithConsents: number };
  shapes: ConsentShapeRow[];
  operations: { operation: string; gas: number }[];
  decide: DecideRow[];
  requestFacts: number;
}

const depthOf = (rules: readonly Rule[]): number => {
  const depth: number[] = [];
  rules.forEach((r, i) => depth.push(i === 0 ? 1 : depth[r.parent]! + 1));
  return Math.max(...depth);
};

/**
 * Gas of the ConsentRegistry's writes per consent shape, of its other writes, and of `decide`, on
 * a fresh in-process chain configured like the embedded chain; the consents are FHIR Consents
 * mapped by `mapConsent` (src/fhir/consent/mapping.ts), keyed with fixed keys.
 */
async function measureConsentGas(): Promise<ConsentGas> {
  // A fixed account: the deployment's calldata holds its address, so its gas is fixed too.
  const { rpc, wallet, sender, retry, gasOf, close } = await openBenchChain(new Wallet(`0x${'11'.repeat(32)}`));
  try {
    const deployed = await deployConsentRegistry(sender, wallet.address);
    const consents = createConsentLedger({ rpc, sender, chainId: CHAIN_ID, contract: deployed.address, retry });
    const deployGas = await gasOf(deployed.txHash);
    const keyOf = consentKeyer(new Uint8Array(32).fill(1));
    const context: MappingContext = { keyOf, tokenOf: tokenKeyer(keyOf) };
    // The same consents keyed with another key: same shape, every key different.
    const otherKeyOf = consentKeyer(new Uint8Array(32).fill(2));
    const otherContext: MappingContext = { keyOf: otherKeyOf, tokenOf: tokenKeyer(otherKeyOf) };
    const mapped = (resource: Json, ctx: MappingContext) => {
      const m = mapConsent(resource, ctx);
      if (m.action !== 'put') throw new Error(`Consent/${String(resource['id'])} maps to ${m.action}, not put`);
      return m;
    };
    const put = async (id: string, patient: string, rules: readonly Rule[]): Promise<number> => gasOf((await consents.put(id, patient, rules)).txHash);

    const operations: { operation: string; gas: number }[] = [];
    const op = async (operation: string, write: Promise<{ txHash: string }>): Promise<void> => {
      const gas = await gasOf((await write).txHash);
      operations.push({ operation, gas });
      console.error(`gas: ${operation} → ${fmt(gas)}`);
    };
    await op('approveActor (a new actor)', consents.approve(keyOf(DR), false));
    await op('approveActor (a new actor, emergency flag)', consents.approve(keyOf('Practitioner/bench-er'), true));
    await consents.approve(keyOf('Practitioner/bench-other'), false);

    // A patient's first consent also creates the patient's entry: measured once, apart; every row
    // below is put for a patient that already has a consent, so the rows compare.
    const seeded = new Set<string>();
    const seed = async (patientRef: string): Promise<number> => {
      const m = mapped(consentResource(`seed-${patientRef.replace('/', '-')}`, patientRef, CONSENT_SHAPES[0]!.provision(DR)), context);
      seeded.add(patientRef);
      return put(m.consentId, m.patient, m.rules);
    };
    const firstOfPatient = await seed('Patient/gas-first');

    const shapes: ConsentShapeRow[] = [];
    const measure = async (shape: string, source: ConsentShapeRow['source'], what: string, resource: Json): Promise<void> => {
      const patientRef = (resource['patient'] as { reference: string }).reference;
      if (!seeded.has(patientRef)) await seed(patientRef);
      const m = mapped(resource, context);
      const other = mapped(resource, otherContext);
      const data = encodePutConsent(m.consentId, m.patient, m.rules);
      const firstPut = await put(m.consentId, m.patient, m.rules);
      const replaceSame = await put(m.consentId, m.patient, m.rules);
      const replaceNewKeys = await put(m.consentId, m.patient, other.rules);
      const row: ConsentShapeRow = {
        shape,
        source,
        what,
        rules: m.rules.length,
        depth: depthOf(m.rules),
        actors: m.rules.reduce((n, r) => n + r.actors.length, 0),
        tokens: m.rules.reduce((n, r) => n + r.tokens.length, 0),
        calldataBytes: getBytes(data).length,
        calldataGas: calldataGas(data),
        firstPut,
        replaceSame,
        replaceNewKeys,
      };
      shapes.push(row);
      console.error(`gas: putConsent ${shape} → ${fmt(firstPut)} first, ${fmt(replaceSame)} same again, ${fmt(replaceNewKeys)} new keys`);
    };
    for (const [i, shape] of CONSENT_SHAPES.entries()) {
      await measure(shape.name, 'synthetic', shape.what, consentResource(`shape-${i}`, `Patient/gas-shape-${i}`, shape.provision(DR)));
    }
    const examples = fs.readdirSync(R4_CONSENT_EXAMPLES).filter((f) => f.endsWith('.json')).sort();
    if (examples.length !== 12) throw new Error(`expected the 12 official R4 Consent examples in ${R4_CONSENT_EXAMPLES}, found ${examples.length}`);
    for (const file of examples) {
      const resource = JSON.parse(fs.readFileSync(path.join(R4_CONSENT_EXAMPLES, file), 'utf8')) as Json;
      const policy = ((resource['policyRule'] as { coding?: { code?: string }[] } | undefined)?.coding ?? []).map((c) => c.code).join(', ');
      const { rules } = mapped(resource, context);
      const nested = rules.slice(1);
      const what =
        `${policy ? `policyRule ${policy}` : 'no policyRule'}: root ${rules[0]!.permit ? 'permit' : 'deny'}` +
        (nested.length ? `, ${nested.length} nested (${nested.filter((r) => r.permit).length} permit, ${nested.filter((r) => !r.permit).length} deny)` : '');
      await measure(String(resource['id']), 'R4 example', what, resource);
    }

    // decide(): a view, but what would it cost on chain? eth_estimateGas, and the gasUsed of a
    // transaction that calls it.
    const observation: Json = {
      resourceType: 'Observation',
      id: 'gas-obs',
      meta: { source: 'http://ehr.example/fhir/Organization/o1' },
      status: 'final',
      code: loinc('8867-4'),
      subject: { reference: 'Patient/gas-decide' },
      performer: [{ reference: 'Practitioner/p9' }],
      effectiveDateTime: iso(CONSENT_NOW - 86_400),
    };
    const facts = factsOf(observation, CONSENT_NOW * 1000, context.tokenOf);
    const requestFor = (patientRef: string, actor: string): DecideRequest => ({
      patient: keyOf(patientRef),
      actors: [keyOf(actor)],
      resourceClass: classBit('Observation')!,
      action: CONSENT_ACTIONS.indexOf('access'),
      purposes: 1n << BigInt(purposeIndex('TREAT')!),
      time: CONSENT_NOW,
      dataTime: facts.dataTime,
      facts: [...facts.tokens],
    });
    const rulesOf = new Map<string, number>();
    const putFor = async (patientRef: string, id: string, provision: Json): Promise<void> => {
      const m = mapped(consentResource(id, patientRef, provision), context);
      await consents.put(m.consentId, m.patient, m.rules);
      rulesOf.set(patientRef, (rulesOf.get(patientRef) ?? 0) + m.rules.length);
    };
    await putFor('Patient/gas-decide-1', 'decide-1-0', CONSENT_SHAPES[0]!.provision(DR));
    // Nine consents of other practitioners (class + purpose + period, 3-level nested, code/label/data
    // tokens, three of each), then the requester's simple permit, last: decide walks all ten.
    const mixed = [1, 2, 4];
    for (let k = 0; k < 9; k++) await putFor('Patient/gas-decide-10', `decide-10-${k}`, CONSENT_SHAPES[mixed[k % 3]!]!.provision(`Practitioner/other-${k}`));
    await putFor('Patient/gas-decide-10', 'decide-10-9', CONSENT_SHAPES[0]!.provision(DR));
    // Ten consents of 32 rules each, none naming the requester.
    for (let k = 0; k < 10; k++) await putFor('Patient/gas-decide-32', `decide-32-${k}`, CONSENT_SHAPES[3]!.provision(`Practitioner/other-${k}`));

    const decide: DecideRow[] = [];
    let n = 0;
    const decideGas = async (label: string, model: string, patientRef: string, consentsOfPatient: number, actor: string): Promise<void> => {
      const request = requestFor(patientRef, actor);
      const data = encodeDecide(request);
      const { decision } = await consents.decide(request);
      const estimateGas = Number.parseInt(await rpc.request<string>('eth_estimateGas', [{ from: wallet.address, to: deployed.address, data }]), 16);
      const txHash = await sender.send<string>({
        key: `bench:decide:${n++}`,
        to: deployed.address,
        data,
        lookup: async () => undefined,
        fromReceipt: async (receipt) => receipt.transactionHash,
      });
      const txGasUsed = await gasOf(txHash);
      const cd = calldataGas(data);
      decide.push({ case: label, model, consents: consentsOfPatient, rules: rulesOf.get(patientRef)!, decision, estimateGas, txGasUsed, calldataGas: cd, execution: txGasUsed - 21_000 - cd });
      console.error(`gas: decide, ${label} (${model}) → ${decision}, estimate ${fmt(estimateGas)}, used ${fmt(txGasUsed)}`);
    };
    const cases = async (model: string): Promise<void> => {
      await decideGas('1 consent: the requester\'s simple permit', model, 'Patient/gas-decide-1', 1, DR);
      await decideGas('10 consents: 9 of others (class + purpose + period, 3-level nested, code/label/data tokens), the requester\'s simple permit last', model, 'Patient/gas-decide-10', 10, DR);
      await decideGas('the same 10 consents, an approved requester none names', model, 'Patient/gas-decide-10', 10, 'Practitioner/bench-other');
      await decideGas('10 consents of 32 rules each, an approved requester none names', model, 'Patient/gas-decide-32', 10, 'Practitioner/bench-other');
    };
    await cases('opt-in (model never set)');

    // The other writes.
    const revoked = mapped(consentResource('shape-0', 'Patient/gas-shape-0', CONSENT_SHAPES[0]!.provision(DR)), context);
    await op('revokeConsent (an active simple permit)', consents.revoke(revoked.consentId));
    await op('revokeConsent (already revoked: no-op)', consents.revoke(revoked.consentId));
    const requester = keyOf('Practitioner/bench-requester');
    const patient = keyOf('Patient/gas-request');
    await op('requestAccess', consents.requestAccess(keyOf('Consent/request-1'), patient, requester));
    await op('answerRequest (approved)', consents.answerRequest(keyOf('Consent/request-1'), patient, true));
    await op('requestAccess (another)', consents.requestAccess(keyOf('Consent/request-2'), patient, requester));
    await op('answerRequest (rejected)', consents.answerRequest(keyOf('Consent/request-2'), patient, false));
    await op('setModel (first set: opt-out)', consents.setModel('opt-out', false));
    await op('setModel (same model again)', consents.setModel('opt-out', false));
    await cases('opt-out');
    await op('setModel (forced change: opt-in)', consents.setModel('opt-in', true));
    await op('setModel (forced change back: opt-out)', consents.setModel('opt-out', true));

    const sameShape = shapes.find((s) => s.shape === CONSENT_SHAPES[0]!.name)!.firstPut;
    return { bytecodeKeccak: keccak256(CONSENT_REGISTRY_BYTECODE), deployGas, firstConsentOfPatient: { gas: firstOfPatient, sameShapeForPatientWithConsents: sameShape }, shapes, operations, decide, requestFacts: facts.tokens.size };
  } finally {
    await close();
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

/** The consent registry's figures as Markdown (a section of gas.md). */
function consentMarkdown(c: ConsentGas): string[] {
  const shapeRow = (r: ConsentShapeRow) =>
    `| ${r.source === 'R4 example' ? `R4 \`${r.shape}\`` : r.shape} | ${r.rules} | ${r.depth} | ${r.actors} | ${r.tokens} | ${fmt(r.calldataBytes)} B | ` +
    `**${fmt(r.firstPut)}** | ${fmt(r.replaceSame)} | ${fmt(r.replaceNewKeys)} | ${r.what} |`;
  const examples = c.shapes.filter((r) => r.source === 'R4 example');
  const exampleRange = (k: 'firstPut' | 'replaceNewKeys') => `${fmt(Math.min(...examples.map((r) => r[k])))}–${fmt(Math.max(...examples.map((r) => r[k])))}`;
  return [
    '## Consent registry',
    '',
    `ConsentRegistry (generated bytecode, keccak256 \`${c.bytecodeKeccak.slice(0, 18)}…\`, solc 0.8.28, optimizer 10,000 runs) on a fresh chain configured as above: deployment ${fmt(c.deployGas)} gas (once). ` +
      'Consents are FHIR Consents mapped by `mapConsent` (src/fhir/consent/mapping.ts) with fixed keys (`consentKeyer(32 × 0x01)` + `tokenKeyer`; patients, actors and ids keyed by `keyOf`) ' +
      'and a fixed clock (2026-01-01), so every figure here is the same on every run. gasUsed from each receipt, 21,000 intrinsic and calldata included.',
    '',
    `**putConsent per shape.** *first put*: a new consent id, for a patient that already has a consent in force. A patient's very first consent also creates the patient's entry: ` +
      `${fmt(c.firstConsentOfPatient.gas)} gas for a simple permit (vs ${fmt(c.firstConsentOfPatient.sameShapeForPatientWithConsents)}). ` +
      '*replace, same rules*: putConsent of the same id with the same rules again (a Consent updated without a change to its provisions); ' +
      '*replace, new keys*: the same id with rules of the same shape whose every actor and token key differs (the consent keyed with another key).',
    '',
    '| consent | rules | depth | actors | tokens | calldata | first put | replace, same rules | replace, new keys | shape |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...c.shapes.map(shapeRow),
    '',
    `The 12 official R4 examples (\`../shared/corpora/r4-examples/Consent\`) cost ${exampleRange('firstPut')} gas to put and ${exampleRange('replaceNewKeys')} to replace with new keys.`,
    '',
    '**Other writes.**',
    '',
    '| operation | gas |',
    '|---|---:|',
    ...c.operations.map((o) => `| ${o.operation} | ${fmt(o.gas)} |`),
    '',
    `**decide() as a view cost.** A request for an Observation by one actor, purpose TREAT, with the ${c.requestFacts} facts \`factsOf\` gives it (custodian, author, code, label, data). ` +
      'A view costs nothing as `eth_call` (and Vellum decides from its in-memory mirror of the registry, without a call); what it would cost on chain: `eth_estimateGas`, and gasUsed of a transaction that calls it (execution = gasUsed − 21,000 − calldata).',
    '',
    '| patient\'s consents | model | rules in all | decision | eth_estimateGas | gasUsed by a transaction | of which execution |',
    '|---|---|---:|---|---:|---:|---:|',
    ...c.decide.map((d) => `| ${d.case} | ${d.model} | ${d.rules} | ${d.decision} | ${fmt(d.estimateGas)} | ${fmt(d.txGasUsed)} | ${fmt(d.execution)} |`),
  ];
}

async function main(): Promise<void> {
  if (ONLY === 'consent') {
    const consent = await measureConsentGas();
    console.log(consentMarkdown(consent).join('\n'));
    console.log('\n(--only=consent: nothing written)');
    return;
  }
  const load = os.loadavg().map((x) => x.toFixed(2));
  const gas = await measureGas();
  const latency = await measureLatency();
  const consent = await measureConsentGas();
  const hardhat = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/hardhat/package.json'), 'utf8')) as { version: string };
  const result = {
    date: new Date().toISOString(),
    environment: {
      node: process.version,
      cores: os.cpus().length,
      hardhat: hardhat.version,
      chain: 'in-process EDR (edr-simulated), Cancun, chain id 31337, automine',
      contract: 'AnchorRegistry (generated bytecode, solc 0.8.28, optimizer 10,000 runs)',
      consentContract: 'ConsentRegistry (generated bytecode, solc 0.8.28, optimizer 10,000 runs)',
    },
    publishedGasPerRecord: PUBLISHED_GAS_PER_RECORD,
    repeats: REPEATS,
    deployGas: gas.deployGas,
    firstAnchorGas: gas.firstAnchorGas,
    gas: gas.rows,
    latency: { ...latency, unit: 'ms', what: 'embedded chain: anchor() call → receipt (1 confirmation), one batch at a time', loadavgAtStart: load.map(Number) },
    consent,
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
      `Embedded chain start: ${latency.startMs} ms (load average ${load.join(' ')} at the start of the run: times, unlike gas, depend on the machine's load). A version's commit → mined time adds the batch window (VELLUM_ANCHOR_INTERVAL_MS, default 1,000 ms) and the manifest write to this.`,
    '',
    ...consentMarkdown(consent),
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
