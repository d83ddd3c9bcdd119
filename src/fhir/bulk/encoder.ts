/**
 * The part builder: what turns an export's versions into ndjson lines, proofs lines and files —
 * the CPU-heavy half of an export (reading and decrypting each version, its JSON, its proof's
 * hashes, the files' encryption). It runs on the export thread (worker.ts); the runner
 * (runner.ts) decides what goes in, on the request thread, and records the parts it reports.
 *
 * Items arrive in seq order; the builder keeps the open part (resources, their proofs, their
 * Provenance, deletions, errors) and writes it whole when it reaches the file limits or the runner
 * ends a type, reporting the files written and the seq the part reaches.
 */
import { createHash } from 'node:crypto';
import type { JWK } from 'jose';
import { canonicalJson, cidDigest, contentDigest, pseudonym } from '../../chain/leaf.ts';
import { buildTree, type MerkleTree } from '../../chain/merkle.ts';
import type { AnchorRecord, IndexStore, VersionRecord } from '../../storage/index-store.ts';
import type { Repository } from '../../storage/repository.ts';
import type { ResourceDefinitions } from '../definitions.ts';
import { subset } from '../format.ts';
import { parseExact } from '../json.ts';
import type { FhirResource } from '../request.ts';
import type { ExportFiles } from './files.ts';
import type { ExportPart } from './job.ts';

/** One version of the chunk, in seq order: exported, reported deleted, or passed over (not visible). */
export type EncodeItem =
  | { kind: 'live'; record: VersionRecord }
  | { kind: 'deleted'; seq: number; type: string; id: string }
  | { kind: 'skip'; seq: number };

/** How a job's parts are built. */
export interface PartJob {
  id: string;
  /** Encrypt files to this key (JWE) instead of at rest. */
  recipient?: JWK;
  /** Write proofs files (anchoring on). */
  proofs: boolean;
  /** Write the Provenance of each version (includeAssociatedData=LatestProvenanceResources). */
  provenance: boolean;
  fileMax: number;
  fileBytes: number;
  /** The next file number. */
  fileNo: number;
}

/** A part written whole: its files, the seq it reaches, how many resources it holds, the next file number. */
export interface Flushed {
  parts: ExportPart[];
  cursor: number;
  exported: number;
  fileNo: number;
}

/** `_elements` of a type, with its mandatory elements (which subsetting keeps). */
export interface Elements {
  names: string[];
  mandatory: string[];
}

const decoder = new TextDecoder();
const hex = (bytes: Uint8Array): string => `0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;

export interface PartBuilderDeps {
  repository: Repository;
  index: IndexStore;
  files: ExportFiles;
  /** The server's pseudonym key for leaves (anchoring on). */
  leafKey?: Uint8Array;
}

export class PartBuilder {
  readonly #deps: PartBuilderDeps;
  #job: PartJob | undefined;
  #type = '';
  #lines: string[] = [];
  #proofs: string[] = [];
  #provenance: string[] = [];
  #deleted: string[] = [];
  #errors: string[] = [];
  #bytes = 0;
  #cursor = 0;
  /** Merkle trees of the batches being exported (leaves come in seq order, batch after batch). */
  #trees = new Map<number, MerkleTree>();

  constructor(deps: PartBuilderDeps) {
    this.#deps = deps;
  }

  /** Start (or resume) a job's type at `cursor`, dropping whatever part was open. */
  begin(job: PartJob, type: string, cursor: number): void {
    this.#job = job;
    this.#type = type;
    this.#cursor = cursor;
    this.#clear();
  }

  #clear(): void {
    this.#lines = [];
    this.#proofs = [];
    this.#provenance = [];
    this.#deleted = [];
    this.#errors = [];
    this.#bytes = 0;
  }

  /** Add a chunk; returns the parts that filled up on the way (written whole). */
  async add(items: readonly EncodeItem[], elements: Elements | undefined): Promise<Flushed[]> {
    const job = this.#job!;
    const live = items.filter((i): i is Extract<EncodeItem, { kind: 'live' }> => i.kind === 'live');
    const anchors = job.proofs && !elements && live.length ? await this.#deps.index.anchorsOf(live.map((i) => i.record.seq)) : undefined;
    if (anchors) await this.#loadTrees(anchors);
    const flushed: Flushed[] = [];
    for (const item of items) {
      if (item.kind === 'live') await this.#line(item.record, elements, anchors);
      else if (item.kind === 'deleted') {
        const line = JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${item.type}/${item.id}` } }] });
        this.#deleted.push(line);
        this.#bytes += line.length + 1;
      }
      this.#cursor = item.kind === 'live' ? item.record.seq : item.seq;
      if (this.#lines.length >= job.fileMax || this.#bytes >= job.fileBytes) flushed.push(await this.flush());
    }
    return flushed;
  }

  async #line(record: VersionRecord, elements: Elements | undefined, anchors: Map<number, AnchorRecord> | undefined): Promise<void> {
    let bundle: { meta?: FhirResource['meta']; entry: { resource: FhirResource }[] };
    try {
      bundle = parseExact(decoder.decode(await this.#deps.repository.load(record, { cache: false }))) as typeof bundle;
    } catch {
      const error = JSON.stringify({
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'exception',
            details: { coding: [{ system: 'https://vellum.dev/fhir/CodeSystem/error', code: 'VLM_BULK_UNREADABLE' }] },
            diagnostics: `${record.type}/${record.id} could not be read`,
          },
        ],
      });
      this.#errors.push(error);
      this.#bytes += error.length + 1;
      return;
    }
    const resource = bundle.entry[0]!.resource;
    const definitions = elements && ({ mandatoryElements: () => elements.mandatory } as unknown as ResourceDefinitions);
    const line = JSON.stringify(elements ? subset(resource, undefined, elements.names, definitions!) : resource);
    this.#lines.push(line);
    this.#bytes += line.length + 1;
    if (anchors) {
      const proof = this.#proof(record, anchors.get(record.seq), line);
      this.#proofs.push(proof);
      this.#bytes += proof.length + 1;
    }
    if (this.#job!.provenance && bundle.entry[1]) {
      const id = `vlm-${createHash('sha256').update(`${record.type}/${record.id}/${record.versionId}`).digest('hex').slice(0, 40)}`;
      const text = JSON.stringify({ ...bundle.entry[1].resource, resourceType: 'Provenance', id });
      this.#provenance.push(text);
      this.#bytes += text.length + 1;
    }
  }

  /** The proofs-file line of an exported version (format in docs/bulk-data.md). */
  #proof(record: VersionRecord, anchor: AnchorRecord | undefined, line: string): string {
    const reference = `${record.type}/${record.id}/_history/${record.versionId}`;
    if (!anchor || !this.#deps.leafKey) return JSON.stringify({ resource: reference, status: 'none' });
    const digest = contentDigest(anchor.salt, canonicalJson(JSON.parse(line)));
    const out: Record<string, unknown> = {
      resource: reference,
      status: anchor.status,
      cid: record.cid,
      salt: hex(anchor.salt),
      digest: hex(digest),
      pseudonym: hex(pseudonym(this.#deps.leafKey, record.type, record.id)),
      cidDigest: hex(cidDigest(record.cid)),
      leaf: hex(anchor.leaf),
    };
    const batch = anchor.batch;
    if (batch) {
      out.root = hex(batch.root);
      out.leafIndex = batch.leafIndex;
      out.proof = (batch.proof ?? this.#treeProof(batch.id, batch.leafIndex)).map(hex);
      out.manifestCid = batch.manifestCid;
    }
    if (batch?.receipt) {
      out.batchId = batch.receipt.chainBatchId;
      out.transaction = batch.receipt.txHash;
      out.blockNumber = batch.receipt.blockNumber;
      out.anchoredAt = new Date(batch.receipt.blockTimestamp * 1000).toISOString();
      out.chainId = batch.receipt.chainId;
      out.contract = batch.receipt.contract;
    }
    return JSON.stringify(out);
  }

  #treeProof(batchId: number, leafIndex: number): Uint8Array[] {
    const tree = this.#trees.get(batchId);
    return tree && leafIndex < tree.leafCount ? tree.proof(leafIndex) : [];
  }

  /** Build (once) the Merkle trees of the batches `anchors` are in, for their leaves' proofs. */
  async #loadTrees(anchors: Map<number, AnchorRecord>): Promise<void> {
    for (const anchor of anchors.values()) {
      const batch = anchor.batch;
      if (!batch || batch.proof || this.#trees.has(batch.id)) continue;
      try {
        this.#trees.set(batch.id, buildTree(await this.#deps.index.batchLeaves(batch.id)));
      } catch {
        // leaves damaged in the index: the line gets no proof nodes, and fails verification
      }
      if (this.#trees.size > 8) this.#trees.delete(this.#trees.keys().next().value!);
    }
  }

  /** Write the open part whole (nothing when it is empty) and report it. */
  async flush(): Promise<Flushed> {
    const job = this.#job!;
    const parts: ExportPart[] = [];
    const write = async (kind: ExportPart['kind'], fileType: string, lines: string[], of?: string): Promise<string | undefined> => {
      if (lines.length === 0) return undefined;
      const name = `${job.fileNo++}-${kind === 'output' ? fileType : `${fileType}-${kind}`}.ndjson`;
      await this.#deps.files.write(job.id, name, Buffer.from(lines.join('\n') + '\n'), job.recipient);
      parts.push({ kind, type: fileType, name, count: lines.length, ...(of ? { of } : {}) });
      return name;
    };
    const output = await write('output', this.#type, this.#lines);
    if (output) await write('proofs', this.#type, this.#proofs, output);
    await write('output', 'Provenance', this.#provenance);
    await write('deleted', this.#type, this.#deleted);
    await write('error', 'OperationOutcome', this.#errors);
    const flushed: Flushed = { parts, cursor: this.#cursor, exported: this.#lines.length, fileNo: job.fileNo };
    this.#clear();
    return flushed;
  }
}
