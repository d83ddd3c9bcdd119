/**
 * The export runner: turns queued export jobs into files, one job at a time, in small chunks
 * between which the request thread serves requests.
 *
 * For each type of the job, the versions current at the job's snapshot (`snapshotVersions`) are
 * read in seq order; each is decided as a search match is (access.ts `matchingRequest` and
 * `screenRecords`: scopes, the patient compartment, consent — asked afresh for every chunk, so a
 * revocation bites while the export runs), filtered by `_typeFilter`, and written as one ndjson
 * line (its proof beside it, in a proofs file). A part is written whole when it reaches the file
 * limits or its type ends; only then does the job's row record the new position. A restart
 * resumes from that position: the lines of an unfinished part are made again, none is lost or
 * repeated.
 */
import { createHash } from 'node:crypto';
import { setImmediate as yieldToRequests } from 'node:timers/promises';
import type { JWK } from 'jose';
import { canonicalJson, cidDigest, contentDigest, pseudonym } from '../../chain/leaf.ts';
import { toHex } from '../../chain/merkle.ts';
import type { ExportJobRow, VersionRecord } from '../../storage/index-store.ts';
import type { IndexClause } from '../../storage/search-types.ts';
import { matchingRequest, screened, screenRecords, visible } from '../access.ts';
import { subset } from '../format.ts';
import { parseExact } from '../json.ts';
import type { FhirRequest, FhirResource } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { planQuery } from '../interactions/search.ts';
import { proofOf, saltOf, type TreeCache } from '../operations/verify.ts';
import type { AuditInput } from '../audit.ts';
import type { ExportFiles } from './files.ts';
import { principalOf, type ExportPart, type ExportProgress, type ExportSpec } from './job.ts';

export interface ExportRunnerOptions {
  services: () => FhirServices;
  files: ExportFiles;
  /** Most resources per file (VELLUM_EXPORT_FILE_MAX). */
  fileMax: number;
  /** Most bytes per file (a part is built in memory, so this bounds the runner's memory). */
  fileBytes: number;
  /** Seconds a finished job's files are kept (VELLUM_EXPORT_TTL). */
  ttlSeconds: number;
  /** Record an AuditEvent (job completion). */
  audit?: (input: AuditInput) => Promise<void>;
  onError?: (err: unknown) => void;
  now?: () => number;
  /**
   * Test seam (the server wiring leaves it unset): awaited after each part is recorded in the
   * job's row, so a test can hold the runner, or stop it, at a known point of a job.
   */
  afterPart?: (job: string, progress: ExportProgress) => void | Promise<void>;
}

/** Versions read, decided and written per chunk; the request thread runs between chunks. */
const CHUNK = 128;
/** How often expired jobs are looked for. */
const SWEEP_MS = 60_000;

const decoder = new TextDecoder();

/** A part being filled: lines of resources, their proofs, deletions and errors, since the last written part. */
interface OpenPart {
  lines: string[];
  proofs: string[];
  provenance: string[];
  deleted: string[];
  errors: string[];
  bytes: number;
}

const emptyPart = (): OpenPart => ({ lines: [], proofs: [], provenance: [], deleted: [], errors: [], bytes: 0 });

export class ExportRunner {
  readonly #o: ExportRunnerOptions;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #sweeper: NodeJS.Timeout | undefined;
  /** Resolvers of `idle()`. */
  #waiters: (() => void)[] = [];
  /** Test seam: see ExportRunnerOptions.afterPart (settable on a running server's runner). */
  afterPart: ExportRunnerOptions['afterPart'];

  constructor(options: ExportRunnerOptions) {
    this.#o = options;
    this.afterPart = options.afterPart;
  }

  /** Resume the jobs a stop interrupted, and sweep expired ones from now on. */
  start(): void {
    this.kick();
    this.#sweeper = setInterval(() => void this.sweep().catch((err) => this.#o.onError?.(err)), SWEEP_MS);
    this.#sweeper.unref();
  }

  /** A job was queued: run it (after the ones before it). */
  kick(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop()
      .catch((err) => this.#o.onError?.(err))
      .finally(() => {
        this.#running = undefined;
        if (this.#again && !this.#closed) {
          this.#again = false;
          this.kick();
        } else {
          for (const resolve of this.#waiters.splice(0)) resolve();
        }
      });
  }

  /** Resolve once no job is queued or running (tests, benchmarks). */
  async idle(): Promise<void> {
    if (!this.#running) return;
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Remove the files and rows of jobs past their expiry (at `now`, default the runner's clock). */
  async sweep(now: number = this.#now()): Promise<void> {
    const jobs = this.#o.services().repository.index.exportJobs;
    for (const job of await jobs.expired(now)) {
      await this.#o.files.remove(job.id);
      await jobs.remove(job.id);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweeper) clearInterval(this.#sweeper);
    await this.#running;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  async #loop(): Promise<void> {
    const jobs = this.#o.services().repository.index.exportJobs;
    for (;;) {
      if (this.#closed) return;
      const [next] = await jobs.list(['running', 'queued']);
      if (!next) return;
      await this.#run(next);
    }
  }

  async #run(job: ExportJobRow): Promise<void> {
    const services = this.#o.services();
    const jobs = services.repository.index.exportJobs;
    const spec = job.spec as ExportSpec;
    const progress = job.progress as ExportProgress;
    // Leftovers of a part a stop interrupted are not in `parts`: remove them.
    await this.#o.files.prune(job.id, new Set(progress.parts.map((p) => p.name)));
    if (job.status === 'queued') await jobs.update(job.id, { status: 'running' });
    try {
      const finished = await this.#export(job.id, spec, progress);
      if (!finished) return;
    } catch (err) {
      this.#o.onError?.(err);
      await jobs.update(job.id, { status: 'failed', progress: { ...progress, failure: 'VLM_BULK_JOB_FAILED' }, expiresAt: this.#now() + this.#o.ttlSeconds * 1000 });
      return;
    }
    await jobs.update(job.id, { status: 'done', progress, expiresAt: this.#now() + this.#o.ttlSeconds * 1000 });
    // A cancel that came while the last part was being written left the row cancelled (a cancelled
    // job stays so) and may have removed the files before that part was written: finish the removal.
    const after = await jobs.get(job.id);
    if (!after || after.status === 'cancelled') {
      await this.#o.files.remove(job.id);
      if (after) await jobs.remove(job.id);
      return;
    }
    await this.#o.audit?.({
      interaction: 'operation',
      method: 'GET',
      status: 200,
      operation: '$export',
      query: `_jobId=${job.id}&status=complete&exported=${progress.exported}`,
      ...(spec.principal ? { principal: principalOf(spec.principal) } : {}),
    });
  }

  /** Export `spec` from `progress` on; false when the job was cancelled or the runner closed. */
  async #export(id: string, spec: ExportSpec, progress: ExportProgress): Promise<boolean> {
    const services = this.#o.services();
    const index = services.repository.index;
    const trees: TreeCache = new Map();
    const principal = spec.principal ? principalOf(spec.principal) : undefined;
    const base: FhirRequest = { method: 'GET', query: [], headers: {}, baseUrl: services.baseUrl, consentLog: [], ...(principal ? { principal } : {}) };
    for (; progress.typeIndex < spec.types.length; progress.typeIndex++, progress.afterSeq = 0) {
      const type = spec.types[progress.typeIndex]!;
      const filters = (spec.typeFilters?.[type] ?? []).map((q) => planQuery(services, type, [...new URLSearchParams(q)], services.baseUrl).query.where);
      const elements = spec.elements?.[type] ?? spec.elements?.['*'];
      let part = emptyPart();
      let cursor = progress.afterSeq;
      for (;;) {
        if (this.#closed) return false;
        const current = await index.exportJobs.get(id);
        if (!current || current.status === 'cancelled') {
          await this.#o.files.remove(id);
          if (current) await index.exportJobs.remove(id);
          return false;
        }
        const records = await index.snapshotVersions({
          type,
          maxSeq: spec.snapshotSeq,
          afterSeq: cursor,
          limit: CHUNK,
          ...(spec.since !== undefined ? { since: spec.since, deletions: true } : {}),
          ...(spec.keyScopes ? { keyScopes: spec.keyScopes } : {}),
          patientScoped: spec.patientScoped,
        });
        if (records.length === 0) break;
        // Decided afresh for every chunk: scopes, compartment and the patients' consent now.
        const request = principal ? await matchingRequest(services, base, type, 'read') : base;
        const live = records.filter((r) => !r.deleted);
        let shown = screened(request) || request.restriction ? await screenRecords(services, request, live) : live.map((record) => ({ record }));
        if (filters.length) shown = await this.#filtered(services, type, filters, shown);
        const keep = new Set(shown.map((s) => s.record));
        for (const record of records) {
          if (record.deleted) {
            // Decided on the deleted resource's key scope (the caller's compartment, the patient's consent for the type).
            if (visible(services, request, record)) {
              const line = JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `${type}/${record.id}` } }] });
              part.deleted.push(line);
              part.bytes += line.length + 1;
            }
          } else if (keep.has(record)) {
            await this.#line(services, record, spec, elements, part, trees);
          }
          cursor = record.seq;
          if (part.lines.length >= this.#o.fileMax || part.bytes >= this.#o.fileBytes) {
            await this.#flush(id, type, spec, progress, part, cursor);
            part = emptyPart();
            // A stop waits for no more than the part being written: the job resumes from here.
            if (this.#closed) return false;
          }
        }
        await yieldToRequests();
      }
      await this.#flush(id, type, spec, progress, part, cursor);
    }
    return true;
  }

  /**
   * The matches of any of `filters` among `shown`. The index's current rows decide, so they decide
   * only for the versions still current: a resource changed since the snapshot is left out (its
   * snapshot version may not match; a later version that matches is in the next `_since` export).
   */
  async #filtered(
    services: FhirServices,
    type: string,
    filters: (readonly IndexClause[])[],
    shown: { record: VersionRecord; resource?: FhirResource }[],
  ): Promise<{ record: VersionRecord; resource?: FhirResource }[]> {
    if (shown.length === 0) return shown;
    const ids: IndexClause = { negate: false, anyOf: shown.map((s) => ({ kind: 'id' as const, id: s.record.id })) };
    const matched = new Set<number>();
    for (const where of filters) {
      const page = await services.repository.index.search({ resourceType: type, where: [...where, ids], sort: [], count: shown.length, offset: 0, wantTotal: false });
      for (const record of page.records) matched.add(record.seq);
    }
    return shown.filter((s) => matched.has(s.record.seq));
  }

  /** Add one version's line (and its proof, and its Provenance) to the part. */
  async #line(services: FhirServices, record: VersionRecord, spec: ExportSpec, elements: string[] | undefined, part: OpenPart, trees: TreeCache): Promise<void> {
    let bundle: { meta?: FhirResource['meta']; entry: { resource: FhirResource }[] };
    try {
      bundle = parseExact(decoder.decode(await services.repository.load(record, { cache: false }))) as typeof bundle;
    } catch {
      part.errors.push(
        JSON.stringify({
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'exception', details: { coding: [{ system: 'https://vellum.dev/fhir/CodeSystem/error', code: 'VLM_BULK_UNREADABLE' }] }, diagnostics: `${record.type}/${record.id} could not be read` }],
        }),
      );
      return;
    }
    const resource = bundle.entry[0]!.resource;
    const line = JSON.stringify(elements ? subset(resource, undefined, elements, services.definitions) : resource);
    part.lines.push(line);
    part.bytes += line.length + 1;
    if (services.anchoring && !elements) {
      const proof = await this.#proof(services, record, bundle as unknown as FhirResource, line, trees);
      part.proofs.push(proof);
      part.bytes += proof.length + 1;
    }
    if (spec.provenance && bundle.entry[1]) {
      const provenance = bundle.entry[1].resource;
      const id = `vlm-${createHash('sha256').update(`${record.type}/${record.id}/${record.versionId}`).digest('hex').slice(0, 40)}`;
      const text = JSON.stringify({ ...provenance, resourceType: 'Provenance', id });
      part.provenance.push(text);
      part.bytes += text.length + 1;
    }
  }

  /** The proofs-file line of an exported version (format in docs/bulk-data.md). */
  async #proof(services: FhirServices, record: VersionRecord, bundle: FhirResource, line: string, trees: TreeCache): Promise<string> {
    const anchoring = services.anchoring!;
    const anchor = await services.repository.index.anchorOf(record.seq);
    const reference = `${record.type}/${record.id}/_history/${record.versionId}`;
    const salt = anchor?.salt ?? saltOf(bundle);
    if (!anchor || !salt) return JSON.stringify({ resource: reference, status: 'none' });
    const digest = contentDigest(salt, canonicalJson(JSON.parse(line)));
    const out: Record<string, unknown> = {
      resource: reference,
      status: anchor.status,
      cid: record.cid,
      salt: toHex(salt),
      digest: toHex(digest),
      pseudonym: toHex(pseudonym(anchoring.leafKey, record.type, record.id)),
      cidDigest: toHex(cidDigest(record.cid)),
      leaf: toHex(anchor.leaf),
    };
    const batch = anchor.batch;
    if (batch) {
      out.root = toHex(batch.root);
      out.leafIndex = batch.leafIndex;
      out.proof = (await proofOf(services, batch, trees)).map(toHex);
      out.manifestCid = batch.manifestCid;
      if (trees.size > 8) trees.delete(trees.keys().next().value!);
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

  /** Write the part's files whole, then record them and the position they reach. */
  async #flush(id: string, type: string, spec: ExportSpec, progress: ExportProgress, part: OpenPart, cursor: number): Promise<void> {
    const files = this.#o.files;
    const recipient = spec.recipient as JWK | undefined;
    const added: ExportPart[] = [];
    const write = async (kind: ExportPart['kind'], fileType: string, lines: string[], of?: string): Promise<string | undefined> => {
      if (lines.length === 0) return undefined;
      const name = `${progress.fileNo++}-${kind === 'output' ? fileType : `${fileType}-${kind}`}.ndjson`;
      await files.write(id, name, Buffer.from(lines.join('\n') + '\n'), recipient);
      added.push({ kind, type: fileType, name, count: lines.length, ...(of ? { of } : {}) });
      return name;
    };
    const output = await write('output', type, part.lines);
    if (output) await write('proofs', type, part.proofs, output);
    await write('output', 'Provenance', part.provenance);
    await write('deleted', type, part.deleted);
    await write('error', 'OperationOutcome', part.errors);
    progress.parts.push(...added);
    progress.exported += part.lines.length;
    progress.afterSeq = cursor;
    await this.#o.services().repository.index.exportJobs.update(id, { progress });
    await this.afterPart?.(id, progress);
  }
}
