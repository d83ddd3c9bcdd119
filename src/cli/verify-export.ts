/**
 * `vellum verify --export DIR --rpc URL` — checks a downloaded Bulk Data export (a directory with
 * `manifest.json` and the files it lists, as `vellum export` and `vellum sync` write them) line by
 * line against its proofs files and the chain, without the Vellum server.
 *
 * For each resource line and the proof line at the same position of its proofs file:
 *
 * | check     | how                                                                                   |
 * |-----------|---------------------------------------------------------------------------------------|
 * | resource  | the line's resourceType / id / meta.versionId are the proof's `resource`              |
 * | content   | keccak256(salt ‖ RFC 8785 JSON of the line as JSON.parse reads it) = `digest`         |
 * | cid       | keccak256(binary `cid`) = `cidDigest`                                                 |
 * | leaf      | leafFromParts(pseudonym, versionId, recomputed digest, cidDigest) = `leaf`            |
 * | proof     | the Merkle `proof` leads from the recomputed leaf to `root`                           |
 * | anchored  | the node is on `chainId`, and the registry at `contract` says `root` is anchored      |
 *
 * The chain is asked once per contract and root, so a file of 100,000 lines costs a few calls.
 * A line that fails names its file, line number and reference; a `pending` line (written but not
 * yet anchored when exported) is not verified. Exit 0 when every line verified, 1 when any did
 * not (or is pending, unless `--allow-pending`), 2 on usage or I/O errors.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { canonicalJson, cidDigest as cidDigestOf, contentDigest, leafFromParts } from '../chain/leaf.ts';
import { fromHex, toHex, verifyProof } from '../chain/merkle.ts';
import { decodeAnchoredAt, encodeAnchoredAt } from '../chain/registry.ts';
import { PROOFS_EXTENSION, fileName, type Manifest } from '../fhir/bulk/client.ts';
import { JsonRpcClient, VerifyUsageError } from './verify.ts';

export type LineReason = 'resource-mismatch' | 'content-mismatch' | 'leaf-mismatch' | 'proof-invalid' | 'root-not-anchored' | 'chain-mismatch' | 'pending' | 'malformed';

export interface LineFailure {
  file: string;
  /** 1-based line number in the resource file. */
  line: number;
  resource: string;
  reason: LineReason;
}

export interface ExportVerdict {
  files: number;
  lines: number;
  verified: number;
  pending: number;
  roots: number;
  failures: LineFailure[];
}

/** A proofs-file line, as `src/fhir/bulk/runner.ts` writes it. */
export interface ProofLine {
  resource: string;
  status: string;
  cid?: string;
  salt?: string;
  digest?: string;
  pseudonym?: string;
  cidDigest?: string;
  leaf?: string;
  root?: string;
  proof?: string[];
  batchId?: number;
  transaction?: string;
  blockNumber?: number;
  chainId?: number;
  contract?: string;
}

const WORD = /^0x[0-9a-fA-F]{64}$/;
const REFERENCE = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})\/_history\/([1-9][0-9]{0,15})$/;

/**
 * The checks of one line that need no chain: undefined when the content, leaf and Merkle proof
 * hold (the root's anchoring is still to be asked), else why not.
 */
export function checkLine(text: string, proof: ProofLine): LineReason | undefined {
  let resource: Record<string, unknown>;
  try {
    resource = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return 'malformed';
  }
  const ref = REFERENCE.exec(proof.resource ?? '');
  const meta = (resource.meta ?? {}) as { versionId?: unknown };
  if (!ref || resource.resourceType !== ref[1] || resource.id !== ref[2] || meta.versionId !== ref[3]) return 'resource-mismatch';
  const pending = proof.status === 'pending' || proof.status === 'planned';
  const words = [proof.salt, proof.digest, proof.pseudonym, proof.cidDigest, proof.leaf, ...(pending ? [] : [proof.root])];
  if ((!pending && proof.status !== 'anchored') || !words.every((w) => typeof w === 'string' && WORD.test(w)) || typeof proof.cid !== 'string') {
    return 'malformed';
  }
  const digest = contentDigest(fromHex(proof.salt!), canonicalJson(resource));
  if (toHex(digest) !== proof.digest!.toLowerCase()) return 'content-mismatch';
  let cidDigest: Uint8Array;
  try {
    cidDigest = cidDigestOf(proof.cid);
  } catch {
    return 'malformed';
  }
  if (toHex(cidDigest) !== proof.cidDigest!.toLowerCase()) return 'content-mismatch';
  const leaf = leafFromParts({ pseudonym: fromHex(proof.pseudonym!), versionId: BigInt(ref[3]!), contentDigest: digest, cidDigest });
  if (toHex(leaf) !== proof.leaf!.toLowerCase()) return 'leaf-mismatch';
  // Content and leaf hold; a version not yet in an anchored batch has no proof to check.
  if (pending) return 'pending';
  if (!Array.isArray(proof.proof)) return 'malformed';
  let nodes: Uint8Array[];
  try {
    nodes = proof.proof.map((n) => fromHex(n, 32));
  } catch {
    return 'malformed';
  }
  if (!verifyProof(fromHex(proof.root!), leaf, nodes)) return 'proof-invalid';
  return undefined;
}

/** Asks a chain node, once per contract and root, whether roots are anchored. */
export class RootChecker {
  readonly #rpc: JsonRpcClient;
  #chainId: Promise<number> | undefined;
  readonly #roots = new Map<string, Promise<boolean>>();

  constructor(rpcUrl: string, timeoutMs = 10_000) {
    this.#rpc = new JsonRpcClient(rpcUrl, timeoutMs);
  }

  get asked(): number {
    return this.#roots.size;
  }

  /** undefined when `root` is anchored by `contract` on `chainId`, else why not. */
  async check(root: string, contract: string, chainId: number): Promise<'chain-mismatch' | 'root-not-anchored' | undefined> {
    this.#chainId ??= this.#rpc.result<string>('eth_chainId').then((hex) => Number.parseInt(hex, 16));
    if ((await this.#chainId) !== chainId) return 'chain-mismatch';
    const key = `${contract.toLowerCase()} ${root.toLowerCase()}`;
    let known = this.#roots.get(key);
    if (!known) {
      known = this.#rpc.request<string>('eth_call', [{ to: contract, data: encodeAnchoredAt(root) }, 'latest']).then((answer) => {
        if ('error' in answer) return false;
        try {
          return decodeAnchoredAt(answer.result) !== undefined;
        } catch {
          return false;
        }
      });
      this.#roots.set(key, known);
    }
    return (await known) ? undefined : 'root-not-anchored';
  }
}

/** The resource files of a downloaded export and their proofs files, from its manifest.json. */
export async function exportFiles(dir: string): Promise<{ manifest: Manifest; pairs: { file: string; proofs?: string }[] }> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch (err) {
    throw new VerifyUsageError('io', `${dir} has no readable manifest.json (download the export with vellum export or vellum sync)`, { cause: err });
  }
  if (!Array.isArray(manifest.output)) throw new VerifyUsageError('malformed', `${dir}/manifest.json is not a Bulk Data manifest`);
  const proofs = new Map<string, string>();
  for (const p of (manifest.extension?.[PROOFS_EXTENSION] ?? []) as { output: string; url: string }[]) proofs.set(fileName(p.output), fileName(p.url));
  return { manifest, pairs: manifest.output.map((o) => ({ file: fileName(o.url), ...(proofs.has(fileName(o.url)) ? { proofs: proofs.get(fileName(o.url))! } : {}) })) };
}

/** Lines of a text file (no trailing empty line). */
export async function readLines(file: string): Promise<string[]> {
  const text = await fs.readFile(file, 'utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Verify every line of a downloaded export that has proofs (files without proofs are counted, not verified). */
export async function verifyExport(dir: string, options: { rpcUrl: string; timeoutMs?: number }): Promise<ExportVerdict> {
  const { pairs } = await exportFiles(dir);
  const roots = new RootChecker(options.rpcUrl, options.timeoutMs);
  const verdict: ExportVerdict = { files: 0, lines: 0, verified: 0, pending: 0, roots: 0, failures: [] };
  for (const pair of pairs) {
    if (!pair.proofs) continue;
    let lines: string[];
    let proofs: string[];
    try {
      lines = await readLines(path.join(dir, pair.file));
      proofs = await readLines(path.join(dir, pair.proofs));
    } catch (err) {
      throw new VerifyUsageError('io', `cannot read ${pair.file} or its proofs: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    verdict.files++;
    for (let i = 0; i < Math.max(lines.length, proofs.length); i++) {
      verdict.lines++;
      let proof: ProofLine;
      try {
        proof = JSON.parse(proofs[i] ?? 'null') as ProofLine;
        if (!proof || typeof proof !== 'object') throw new Error('no proof');
      } catch {
        verdict.failures.push({ file: pair.file, line: i + 1, resource: '?', reason: 'malformed' });
        continue;
      }
      let reason: LineReason | undefined = lines[i] === undefined ? 'malformed' : checkLine(lines[i]!, proof);
      if (reason === undefined) reason = await roots.check(proof.root!, String(proof.contract), Number(proof.chainId));
      if (reason === 'pending') verdict.pending++;
      if (reason === undefined) verdict.verified++;
      else verdict.failures.push({ file: pair.file, line: i + 1, resource: String(proof.resource), reason });
    }
  }
  verdict.roots = roots.asked;
  return verdict;
}

export function formatExportVerdict(v: ExportVerdict, allowPending: boolean): string {
  const failed = v.failures.filter((f) => !(allowPending && f.reason === 'pending'));
  const lines = [`${v.verified} of ${v.lines} lines verified in ${v.files} files (${v.roots} anchored roots asked of the chain)${v.pending ? `; ${v.pending} pending` : ''}`];
  for (const f of failed.slice(0, 100)) lines.push(`NOT VERIFIED ${f.file}:${f.line} ${f.resource}: ${f.reason}`);
  if (failed.length > 100) lines.push(`… and ${failed.length - 100} more`);
  return lines.join('\n') + '\n';
}

/** Exit code of a verdict: 0 every line verified, 1 otherwise. */
export function exportExitCode(v: ExportVerdict, allowPending: boolean): number {
  return v.failures.some((f) => !(allowPending && f.reason === 'pending')) || v.lines === 0 ? 1 : 0;
}
