/**
 * `vellum verify <proof.json> --rpc <url>` — the offline verifier: says whether the exact
 * resource version in a proof document (`GET …/$verify?export=true`, format documented in
 * src/fhir/operations/verify.ts) was anchored on chain, WITHOUT the Vellum server: it trusts
 * the document for nothing and the chain's node for everything.
 *
 * What it checks, in order (the first failure names the verdict's reason):
 *
 * | check        | how                                                                              | reason on failure   |
 * |--------------|----------------------------------------------------------------------------------|---------------------|
 * | resource     | entry 1's resourceType / id / meta.versionId equal the Parameters' `resource`    | content-mismatch    |
 * | content      | keccak256(salt ‖ RFC 8785 JSON of entry 1 as JSON.parse reads it) = `digest`     | content-mismatch    |
 * | cid          | keccak256(binary `cid`) = `cidDigest`                                            | content-mismatch    |
 * | leaf         | leafFromParts(pseudonym, meta.versionId, recomputed digest, cidDigest) = `leaf`  | content-mismatch    |
 * | merkle-proof | the `proof` nodes lead from the recomputed leaf to `root` (sorted-pair keccak)   | proof-invalid       |
 * | chain        | the node's eth_chainId = `chainId`                                               | chain-mismatch      |
 * | anchored     | code at `contract`, and its `anchoredAt(root)` names a batch                     | root-not-anchored   |
 * | contract     | the contract's `verifyLeaf(root, leaf, proof)` is true                           | proof-invalid       |
 * | envelope     | (only with `--ipfs`) the envelope's blocks fetched from Kubo hash to `cid`       | envelope-mismatch   |
 *
 * A deletion version has no resource entry: its leaf commits to the RFC 8785 JSON of
 * `{"deleted":true,"id":…,"resourceType":…,"versionId":…}`, rebuilt from the Parameters'
 * `resource`. A document still `pending` (no root yet) is "not verified: root-not-anchored".
 *
 * What a pass proves: this content (with its type, id and version, which it names itself)
 * is a leaf of a Merkle root that the registry at `contract` on chain `chainId` recorded in
 * the block it reports, i.e. the version existed, unaltered, no later than that block. The
 * `pseudonym` and `cidDigest` are taken from the document: the pseudonym is an HMAC under the
 * server's key, which only the server can recompute (it binds type/id for rebuilding the index;
 * the content already binds them for a verifier), and `cidDigest` is tied to the `cid`, whose
 * envelope can be fetched from IPFS and checked with `--ipfs <kubo url>`.
 *
 * Exit codes: 0 verified; 1 not verified (reason above); 2 usage or I/O error (bad arguments,
 * unreadable or malformed document, RPC or IPFS node unreachable or answering nonsense). A node
 * that answers but is on another chain than the document's `chainId` is exit 1, chain-mismatch:
 * the question was answered, and the answer is "not on this chain". When a check has already
 * failed, a node that stops answering no longer turns the verdict into an I/O error: the
 * unanswered checks are reported as skipped and the exit code stays 1.
 *
 * Trust: the verdict is as good as the node asked. Point `--rpc` at a node you run or trust (or
 * ask several); never at one the document's sender chose.
 */
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { canonicalJson, cidDigest as cidDigestOf, contentDigest, leafFromParts, versionNumber } from '../chain/leaf.ts';
import { fromHex, toHex, verifyProof } from '../chain/merkle.ts';
import { decodeAnchoredAt, decodeBool, encodeAnchoredAt, encodeVerifyLeaf } from '../chain/registry.ts';
import { deletionContent } from '../fhir/writer.ts';

/** Why a document did not verify. */
export type Reason = 'content-mismatch' | 'proof-invalid' | 'root-not-anchored' | 'chain-mismatch' | 'envelope-mismatch';

export type CheckName = 'resource' | 'content' | 'cid' | 'leaf' | 'merkle-proof' | 'chain' | 'anchored' | 'contract' | 'envelope';

export interface Check {
  name: CheckName;
  /** 'skip': could not be run (an earlier check made it meaningless, or no `--ipfs`). */
  result: 'pass' | 'fail' | 'skip';
  detail: string;
}

export interface Verdict {
  verified: boolean;
  /** The first failed check's reason; absent when verified. */
  reason?: Reason;
  /** `<type>/<id>/_history/<vid>`, as the document claims it. */
  resource: string;
  deleted: boolean;
  /** The leaf recomputed from the content (never the document's). */
  leaf: string;
  root?: string;
  chainId?: number;
  contract?: string;
  /** What the CONTRACT says about the root, when it is anchored. */
  anchored?: { batchId: number; blockNumber: number; timestamp: string };
  checks: Check[];
  /** Document claims the chain contradicts without affecting the verdict (e.g. another block number). */
  warnings: string[];
}

/** An error that is the caller's or the environment's, not the document's: exit code 2. */
export class VerifyUsageError extends Error {
  override readonly name = 'VerifyUsageError';
  constructor(
    readonly kind: 'usage' | 'io' | 'malformed' | 'rpc' | 'ipfs',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const WORD_HEX = /^0x[0-9a-fA-F]{64}$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const RESOURCE_REF = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})\/_history\/([1-9][0-9]{0,15})$/;

/** The parsed, structurally checked proof document. */
export interface ProofDocument {
  type: string;
  id: string;
  versionId: string;
  /** The resource version as parsed; undefined for a deletion. */
  resource?: Record<string, unknown>;
  status?: string;
  cid: string;
  salt: Uint8Array;
  digest: Uint8Array;
  pseudonym: Uint8Array;
  cidDigest: Uint8Array;
  leaf: Uint8Array;
  root?: Uint8Array;
  proof: Uint8Array[];
  leafIndex?: number;
  batchId?: number;
  blockNumber?: number;
  transaction?: string;
  chainId?: number;
  contract?: string;
}

function malformed(message: string): VerifyUsageError {
  return new VerifyUsageError('malformed', `not a valid proof document: ${message}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks the structure of a parsed proof document (not its truth). Raises VerifyUsageError ('malformed'). */
export function parseProofDocument(json: unknown): ProofDocument {
  if (!isObject(json) || json.resourceType !== 'Bundle') throw malformed('expected a Bundle');
  if (!Array.isArray(json.entry)) throw malformed('the Bundle has no entries');
  const resources = json.entry.map((e: unknown, i: number) => {
    if (!isObject(e) || !isObject(e.resource)) throw malformed(`entry ${i} has no resource`);
    return e.resource;
  });
  const parametersList = resources.filter((r) => r.resourceType === 'Parameters');
  const others = resources.filter((r) => r.resourceType !== 'Parameters');
  if (parametersList.length !== 1) throw malformed('expected exactly one Parameters entry');
  if (others.length > 1) throw malformed('expected at most one resource entry besides the Parameters');
  const parameters = parametersList[0]!;
  if (!Array.isArray(parameters.parameter)) throw malformed('the Parameters has no parameter list');
  const all = parameters.parameter as unknown[];
  if (!all.every((p) => isObject(p) && typeof p.name === 'string')) throw malformed('a parameter has no name');
  const named = (name: string) => (all as { name: string; [k: string]: unknown }[]).filter((p) => p.name === name);

  const one = (name: string, key: string, required: boolean): unknown => {
    const found = named(name);
    if (found.length > 1) throw malformed(`parameter ${name} is repeated`);
    if (found.length === 0) {
      if (required) throw malformed(`parameter ${name} is missing`);
      return undefined;
    }
    const value = found[0]![key];
    if (value === undefined) throw malformed(`parameter ${name} has no ${key}`);
    return value;
  };
  const word = (name: string, required = true): Uint8Array | undefined => {
    const value = one(name, 'valueString', required);
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || !WORD_HEX.test(value)) throw malformed(`${name} must be 0x and 64 hex digits`);
    return fromHex(value, 32);
  };
  const integer = (name: string): number | undefined => {
    const value = one(name, 'valueInteger', false);
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw malformed(`${name} must be a whole number`);
    return value;
  };
  const text = (name: string, key: string, required: boolean): string | undefined => {
    const value = one(name, key, required);
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || value.length === 0) throw malformed(`${name} must be a non-empty string`);
    return value;
  };

  const reference = text('resource', 'valueString', true)!;
  const match = RESOURCE_REF.exec(reference);
  if (!match) throw malformed('resource must be <type>/<id>/_history/<version>');
  const cid = text('cid', 'valueString', true)!;
  try {
    cidDigestOf(cid);
  } catch {
    throw malformed('cid is not a CID');
  }
  const proof = named('proof').map((p) => {
    if (typeof p.valueString !== 'string' || !WORD_HEX.test(p.valueString)) throw malformed('every proof node must be 0x and 64 hex digits');
    return fromHex(p.valueString, 32);
  });
  const contract = text('contract', 'valueString', false);
  if (contract !== undefined && !ADDRESS.test(contract)) throw malformed('contract must be a 0x-prefixed address');
  const transaction = text('transaction', 'valueString', false);
  const chainId = integer('chainId');
  if (chainId === 0) throw malformed('chainId must be positive');
  const resource = others[0];
  return {
    type: match[1]!,
    id: match[2]!,
    versionId: match[3]!,
    ...(resource ? { resource } : {}),
    status: text('status', 'valueCode', false),
    cid,
    salt: word('salt')!,
    digest: word('digest')!,
    pseudonym: word('pseudonym')!,
    cidDigest: word('cidDigest')!,
    leaf: word('leaf')!,
    root: word('root', false),
    proof,
    leafIndex: integer('leafIndex'),
    batchId: integer('batchId'),
    blockNumber: integer('blockNumber'),
    transaction,
    chainId,
    contract,
  };
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Minimal JSON-RPC over fetch. Transport and protocol failures raise VerifyUsageError ('rpc'). */
export class JsonRpcClient {
  #id = 1;
  constructor(
    readonly url: string,
    readonly timeoutMs: number,
  ) {}

  /** The `result`, or `{ error }` when the node answered with a JSON-RPC error (e.g. a revert). */
  async request<T>(method: string, params: unknown[] = []): Promise<{ result: T } | { error: { code?: number; message?: string } }> {
    let response: Response;
    try {
      response = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: this.#id++, method, params }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const why = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new VerifyUsageError('rpc', `the JSON-RPC node at ${this.url} did not answer ${method} (${why})`, { cause: err });
    }
    let body: { result?: T; error?: { code?: number; message?: string } };
    try {
      body = (await response.json()) as typeof body;
    } catch (err) {
      throw new VerifyUsageError('rpc', `the JSON-RPC node at ${this.url} answered ${method} with HTTP ${response.status} and no JSON`, { cause: err });
    }
    if (isObject(body) && isObject(body.error)) return { error: body.error };
    if (!isObject(body) || !('result' in body)) {
      throw new VerifyUsageError('rpc', `the JSON-RPC node at ${this.url} answered ${method} without a result (HTTP ${response.status})`);
    }
    return { result: body.result as T };
  }

  /** Like `request`, but a JSON-RPC error is an I/O error too. */
  async result<T>(method: string, params: unknown[] = []): Promise<T> {
    const answer = await this.request<T>(method, params);
    if ('error' in answer) {
      throw new VerifyUsageError('rpc', `the JSON-RPC node at ${this.url} refused ${method}: ${answer.error.message ?? 'error'}`);
    }
    return answer.result;
  }
}

function hexQuantity(value: unknown, what: string): number {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{1,14}$/.test(value)) throw new VerifyUsageError('rpc', `the node answered ${what} with ${JSON.stringify(value)}`);
  return Number.parseInt(value, 16);
}

export interface VerifyOptions {
  /** http(s) URL of an Ethereum JSON-RPC node on the document's chain. */
  rpcUrl: string;
  /** Kubo RPC API base (e.g. http://127.0.0.1:5001): also fetch the envelope and check it against its CID. */
  ipfsUrl?: string;
  /** One request's timeout; default 10,000 ms. */
  timeoutMs?: number;
}

/**
 * Verifies a parsed proof document against the chain (and IPFS when asked). Returns the verdict;
 * raises VerifyUsageError when the node cannot be asked (exit code 2).
 */
export async function verifyDocument(doc: ProofDocument, options: VerifyOptions): Promise<Verdict> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const checks: Check[] = [];
  const warnings: string[] = [];
  const check = (name: CheckName, ok: boolean, detail: string): boolean => {
    checks.push({ name, result: ok ? 'pass' : 'fail', detail });
    return ok;
  };
  const skip = (name: CheckName, detail: string): void => void checks.push({ name, result: 'skip', detail });
  const reference = `${doc.type}/${doc.id}/_history/${doc.versionId}`;
  const deleted = doc.resource === undefined;

  // 1. The content names the version the proof is for.
  let content: unknown;
  let versionId: string | undefined;
  if (doc.resource) {
    const r = doc.resource;
    const meta = isObject(r.meta) ? r.meta : {};
    versionId = typeof meta.versionId === 'string' ? meta.versionId : undefined;
    const claimed = `${String(r.resourceType)}/${String(r.id)}/_history/${versionId ?? '(no meta.versionId)'}`;
    check('resource', r.resourceType === doc.type && r.id === doc.id && versionId === doc.versionId,
      claimed === reference ? `the resource is ${reference}` : `the resource is ${claimed}, but the proof is for ${reference}`);
    content = r;
  } else {
    versionId = doc.versionId;
    check('resource', true, `no resource entry: a deletion of ${doc.type}/${doc.id}, version ${doc.versionId}`);
    content = deletionContent(doc.type, doc.id, Number(doc.versionId));
  }

  // 2. The salted digest of its RFC 8785 JSON, and the leaf built on it.
  const digest = contentDigest(doc.salt, canonicalJson(content));
  check('content', equal(digest, doc.digest),
    equal(digest, doc.digest) ? `keccak256(salt ‖ RFC 8785 JSON) = ${toHex(digest)}` : `keccak256(salt ‖ RFC 8785 JSON) = ${toHex(digest)}, but the document's digest is ${toHex(doc.digest)}: the content was altered`);
  const cidDigest = cidDigestOf(doc.cid);
  check('cid', equal(cidDigest, doc.cidDigest),
    equal(cidDigest, doc.cidDigest) ? `keccak256(CID ${doc.cid}) = cidDigest` : `keccak256(CID ${doc.cid}) = ${toHex(cidDigest)}, not the document's cidDigest`);
  let version: bigint | undefined;
  try {
    version = versionId === undefined ? undefined : versionNumber(versionId);
  } catch {
    version = undefined;
  }
  const leaf = leafFromParts({ pseudonym: doc.pseudonym, versionId: version ?? BigInt(doc.versionId), contentDigest: digest, cidDigest: doc.cidDigest });
  check('leaf', equal(leaf, doc.leaf),
    equal(leaf, doc.leaf) ? `${toHex(leaf)} recomputed from pseudonym, version ${versionId}, content digest and cidDigest` : `recomputed ${toHex(leaf)}, but the document's leaf is ${toHex(doc.leaf)}`);

  let anchored: Verdict['anchored'];
  const verdict = (): Verdict => {
    const failed = checks.find((c) => c.result === 'fail');
    const reason = failed ? REASONS[failed.name] : undefined;
    const verified = !failed && checks.some((c) => c.name === 'contract' && c.result === 'pass');
    return {
      verified,
      ...(verified ? {} : { reason: reason ?? 'root-not-anchored' }),
      resource: reference,
      deleted,
      leaf: toHex(leaf),
      ...(doc.root ? { root: toHex(doc.root) } : {}),
      ...(doc.chainId !== undefined ? { chainId: doc.chainId } : {}),
      ...(doc.contract ? { contract: doc.contract } : {}),
      ...(anchored ? { anchored } : {}),
      checks,
      warnings,
    };
  };

  // 3. The Merkle proof, locally.
  if (!doc.root) {
    skip('merkle-proof', `the document has no root: the version was not batched yet (status ${doc.status ?? 'unknown'}); export it again once anchored`);
    checks.push({ name: 'anchored', result: 'fail', detail: 'no root in the document: nothing to look up on chain' });
    return verdict();
  }
  check('merkle-proof', verifyProof(doc.root, leaf, doc.proof),
    `${doc.proof.length} proof node${doc.proof.length === 1 ? '' : 's'} ${verifyProof(doc.root, leaf, doc.proof) ? 'lead' : 'do NOT lead'} from the leaf to root ${toHex(doc.root)}`);
  if (doc.chainId === undefined || doc.contract === undefined) {
    checks.push({ name: 'anchored', result: 'fail', detail: `the document has no chain coordinates (status ${doc.status ?? 'unknown'}): export it again once anchored` });
    return verdict();
  }

  // 4. The chain, then IPFS. A node that cannot be asked is an I/O error (exit 2) — unless an
  // earlier check already failed: that verdict stands, and the unanswered checks are skipped.
  const { root, contract, chainId } = doc;
  try {
    await chainChecks();
  } catch (err) {
    if (!(err instanceof VerifyUsageError) || !checks.some((c) => c.result === 'fail')) throw err;
    for (const name of ['chain', 'anchored', 'contract', 'envelope'] as const) {
      if (!checks.some((c) => c.name === name)) skip(name, `not checked: ${err.message}`);
    }
  }
  return verdict();

  async function chainChecks(): Promise<void> {
    await onChain(root, contract, chainId);
    if (!checks.some((c) => c.name === 'contract' && c.result === 'pass')) return skip('envelope', 'not fetched: the chain checks failed');
    // 5. Optionally, the envelope itself from IPFS.
    if (options.ipfsUrl) await checkEnvelope(doc.cid, options.ipfsUrl, timeoutMs, check);
    else skip('envelope', 'not fetched (give --ipfs <kubo url> to check the envelope against its CID)');
  }

  async function onChain(root: Uint8Array, contract: string, chainId: number): Promise<void> {
    const rpc = new JsonRpcClient(options.rpcUrl, timeoutMs);
    const nodeChain = hexQuantity(await rpc.result<string>('eth_chainId'), 'eth_chainId');
    if (!check('chain', nodeChain === chainId, nodeChain === chainId
      ? `the node at ${options.rpcUrl} is on chain ${nodeChain}`
      : `the node at ${options.rpcUrl} is on chain ${nodeChain}, but the proof is for chain ${chainId}`)) {
      skip('anchored', 'wrong chain');
      skip('contract', 'wrong chain');
      return;
    }
    const rootHex = toHex(root);
    const code = await rpc.result<string>('eth_getCode', [contract, 'latest']);
    if (typeof code !== 'string' || code === '0x' || code === '0x0' || code === '') {
      check('anchored', false, `there is no contract at ${contract} on chain ${nodeChain}`);
      skip('contract', 'no contract');
      return;
    }
    const at = await rpc.request<string>('eth_call', [{ to: contract, data: encodeAnchoredAt(rootHex) }, 'latest']);
    let when: ReturnType<typeof decodeAnchoredAt> | 'not-a-registry';
    try {
      when = 'error' in at ? 'not-a-registry' : decodeAnchoredAt(at.result);
    } catch {
      when = 'not-a-registry';
    }
    if (when === 'not-a-registry' || when === undefined) {
      check('anchored', false, when === undefined
        ? `the registry at ${contract} has never anchored root ${rootHex}`
        : `the contract at ${contract} does not answer anchoredAt: not an AnchorRegistry`);
      skip('contract', 'root not anchored');
      return;
    }
    anchored = { batchId: when.batchId, blockNumber: when.blockNumber, timestamp: new Date(when.timestamp * 1000).toISOString() };
    check('anchored', true, `root anchored by ${contract} in batch ${when.batchId}, block ${when.blockNumber}, at ${anchored.timestamp}`);
    if (doc.batchId !== undefined && doc.batchId !== when.batchId) warnings.push(`the document says batch ${doc.batchId}; the contract says ${when.batchId}`);
    if (doc.blockNumber !== undefined && doc.blockNumber !== when.blockNumber) warnings.push(`the document says block ${doc.blockNumber}; the contract says ${when.blockNumber}`);
    const proofHex = doc.proof.map((node) => toHex(node));
    const answer = await rpc.request<string>('eth_call', [{ to: contract, data: encodeVerifyLeaf(rootHex, toHex(leaf), proofHex) }, 'latest']);
    let accepted = false;
    try {
      accepted = !('error' in answer) && decodeBool('verifyLeaf', answer.result);
    } catch {
      accepted = false;
    }
    check('contract', accepted, `the contract's verifyLeaf(root, leaf, proof) is ${accepted}`);
  }
}

const REASONS: Record<CheckName, Reason> = {
  resource: 'content-mismatch',
  content: 'content-mismatch',
  cid: 'content-mismatch',
  leaf: 'content-mismatch',
  'merkle-proof': 'proof-invalid',
  chain: 'chain-mismatch',
  anchored: 'root-not-anchored',
  contract: 'proof-invalid',
  envelope: 'envelope-mismatch',
};

/**
 * Fetches the envelope's blocks from a Kubo RPC API (`POST /api/v0/block/get`) and reassembles
 * them, every block checked against its CID (src/storage/cid.ts). A block that does not hash
 * to its CID fails the check; a node that does not answer raises VerifyUsageError ('ipfs').
 */
async function checkEnvelope(cid: string, ipfsUrl: string, timeoutMs: number, check: (name: CheckName, ok: boolean, detail: string) => boolean): Promise<void> {
  const { assembleBlob } = await import('../storage/cid.ts');
  const base = ipfsUrl.replace(/\/+$/, '');
  const getBlock = async (block: string): Promise<Uint8Array | undefined> => {
    let response: Response;
    try {
      response = await fetch(`${base}/api/v0/block/get?arg=${encodeURIComponent(block)}`, { method: 'POST', signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw new VerifyUsageError('ipfs', `the IPFS node at ${base} did not answer block/get (${(err as Error).name})`, { cause: err });
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      throw new VerifyUsageError('ipfs', `the IPFS node at ${base} could not serve block ${block} (HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ''})`);
    }
    return new Uint8Array(await response.arrayBuffer());
  };
  try {
    const bytes = await assembleBlob(cid, getBlock);
    check('envelope', true, `the envelope (${bytes.byteLength} bytes, encrypted) was fetched from ${base} and hashes to ${cid}`);
  } catch (err) {
    if (err instanceof VerifyUsageError) throw err;
    check('envelope', false, `the envelope served by ${base} does not match ${cid}: ${(err as Error).message}`);
  }
}

/** Human-readable verdict. */
export function formatVerdict(verdict: Verdict): string {
  const lines: string[] = [`Proof of ${verdict.resource}${verdict.deleted ? ' (deletion)' : ''}`];
  const width = Math.max(...verdict.checks.map((c) => c.name.length));
  for (const c of verdict.checks) lines.push(`  ${c.result.toUpperCase().padEnd(4)}  ${c.name.padEnd(width)}  ${c.detail}`);
  for (const w of verdict.warnings) lines.push(`  WARN  ${w}`);
  if (verdict.verified) {
    const a = verdict.anchored!;
    lines.push(
      '',
      `VERIFIED: this exact version of ${verdict.resource} was anchored on chain ${verdict.chainId} by ${verdict.contract},`,
      `in block ${a.blockNumber} at ${a.timestamp} (batch ${a.batchId}).`,
      'This proves the content (which names its type, id and version) and its inclusion in an anchored batch.',
      'The pseudonym is taken from the document (only the server, holding the key, can recompute it);',
      verdict.checks.some((c) => c.name === 'envelope' && c.result === 'pass')
        ? 'the envelope CID was checked against IPFS.'
        : 'the envelope CID can be checked against IPFS with --ipfs <kubo url>.',
    );
  } else {
    const failed = verdict.checks.find((c) => c.result === 'fail');
    lines.push('', `NOT VERIFIED (${verdict.reason}): ${failed?.detail ?? 'the root is not anchored'}`);
  }
  return `${lines.join('\n')}\n`;
}

export const VERIFY_USAGE = `Usage: vellum verify <proof.json | -> --rpc <url> [--json] [--ipfs <kubo url>] [--timeout <ms>]
       vellum verify --export <dir> --rpc <url> [--json] [--allow-pending]

Checks a proof document (GET [base]/[type]/[id]/_history/[vid]/$verify?export=true) against the
chain, without the Vellum server: recomputes the leaf from the resource, checks the Merkle proof,
and asks the registry contract over JSON-RPC whether the root is anchored and the proof holds.

  <proof.json>       the exported proof document ("-" reads standard input)
  --rpc <url>        JSON-RPC endpoint of a node on the document's chain (required)
  --json             print the verdict as JSON
  --ipfs <url>       Kubo RPC API (e.g. http://127.0.0.1:5001): also fetch the envelope and check its CID
  --timeout <ms>     per-request timeout (default 10000)
  --export <dir>     a downloaded Bulk Data export (manifest.json and its files, as vellum export
                     writes them): every resource line is checked against its proofs-file line
                     and the chain; an altered line is named (file:line reference reason)
  --allow-pending    with --export: lines not yet anchored when exported do not fail the run

Exit status: 0 verified, 1 not verified (content-mismatch, proof-invalid, root-not-anchored,
chain-mismatch, envelope-mismatch), 2 usage or I/O error.
`;

export interface Io {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  /** Standard input, for "-". */
  stdin?: AsyncIterable<Buffer | string>;
}

function httpUrl(value: string, option: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new VerifyUsageError('usage', `${option} must be an http(s) URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new VerifyUsageError('usage', `${option} must be an http(s) URL`);
  return value;
}

/** `vellum verify …`: runs the verifier and returns the exit code. */
export async function runVerify(argv: string[], io: Io): Promise<number> {
  let json = false;
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          rpc: { type: 'string' },
          json: { type: 'boolean', default: false },
          ipfs: { type: 'string' },
          timeout: { type: 'string' },
          export: { type: 'string' },
          'allow-pending': { type: 'boolean', default: false },
          help: { type: 'boolean', short: 'h', default: false },
        },
      });
    } catch (err) {
      throw new VerifyUsageError('usage', (err as Error).message);
    }
    const { values, positionals } = parsed;
    json = values.json === true;
    if (values.help) {
      io.stdout.write(VERIFY_USAGE);
      return 0;
    }
    if (!values.rpc) throw new VerifyUsageError('usage', '--rpc <url> is required');
    const rpcUrl = httpUrl(values.rpc, '--rpc');
    if (values.export !== undefined) {
      // A downloaded Bulk Data export with its proofs files (verify-export.ts).
      if (positionals.length !== 0) throw new VerifyUsageError('usage', 'give a proof document or --export <dir>, not both');
      const { verifyExport, formatExportVerdict, exportExitCode } = await import('./verify-export.ts');
      const allowPending = values['allow-pending'] === true;
      const verdict = await verifyExport(values.export, { rpcUrl });
      io.stdout.write(json ? `${JSON.stringify(verdict, null, 2)}\n` : formatExportVerdict(verdict, allowPending));
      return exportExitCode(verdict, allowPending);
    }
    if (positionals.length !== 1) throw new VerifyUsageError('usage', 'give exactly one proof document');
    const ipfsUrl = values.ipfs === undefined ? undefined : httpUrl(values.ipfs, '--ipfs');
    let timeoutMs = 10_000;
    if (values.timeout !== undefined) {
      if (!/^[1-9][0-9]{0,6}$/.test(values.timeout)) throw new VerifyUsageError('usage', '--timeout must be a whole number of milliseconds');
      timeoutMs = Number(values.timeout);
    }

    const file = positionals[0]!;
    let text: string;
    try {
      if (file === '-') {
        if (!io.stdin) throw new Error('no standard input');
        const chunks: Buffer[] = [];
        for await (const chunk of io.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
        text = Buffer.concat(chunks).toString('utf8');
      } else {
        text = await fs.readFile(file, 'utf8');
      }
    } catch (err) {
      throw new VerifyUsageError('io', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch (err) {
      throw new VerifyUsageError('malformed', `${file} is not JSON: ${(err as Error).message}`, { cause: err });
    }
    const verdict = await verifyDocument(parseProofDocument(document), { rpcUrl, ipfsUrl, timeoutMs });
    io.stdout.write(json ? `${JSON.stringify(verdict, null, 2)}\n` : formatVerdict(verdict));
    return verdict.verified ? 0 : 1;
  } catch (err) {
    if (!(err instanceof VerifyUsageError)) throw err;
    if (json) io.stdout.write(`${JSON.stringify({ verified: null, error: { kind: err.kind, message: err.message } }, null, 2)}\n`);
    io.stderr.write(`vellum verify: ${err.message}\n`);
    if (err.kind === 'usage') io.stderr.write(`\n${VERIFY_USAGE}`);
    return 2;
  }
}
