/**
 * The export runner: turns queued export jobs into files, one job at a time, in chunks. The
 * request thread only decides what goes in; the export thread (worker.ts, encoder.ts) reads,
 * decrypts, encodes and writes, and the request thread serves requests meanwhile.
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
import type { JWK } from 'jose';
import type { ExportJobRow, VersionRecord } from '../../storage/index-store.ts';
import type { IndexClause } from '../../storage/search-types.ts';
import { matchingRequest, screened, screenRecords, visible } from '../access.ts';
import type { FhirRequest, FhirResource } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { planQuery } from '../interactions/search.ts';
import type { AuditInput } from '../audit.ts';
import type { EncodeItem, Flushed } from './encoder.ts';
import type { ExportFiles } from './files.ts';
import { principalOf, type ExportProgress, type ExportSpec } from './job.ts';
import { Rounds } from '../rounds.ts';
import { ExportThreadError, type PartEncoder } from './worker.ts';

export interface ExportRunnerOptions {
  services: () => FhirServices;
  files: ExportFiles;
  /** What reads, encodes and writes the parts (the export thread, worker.ts). */
  encoder: PartEncoder;
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

/** Versions read and decided per chunk (then read, encoded and written by the export thread). */
const CHUNK = 256;
/** Times a job is resumed after its export thread died under it, before the job fails. */
const THREAD_RETRIES = 3;
/** How often expired jobs are looked for. */
const SWEEP_MS = 60_000;


export class ExportRunner {
  readonly #o: ExportRunnerOptions;
  readonly #rounds: Rounds;
  #closed = false;
  #sweeper: NodeJS.Timeout | undefined;
  /** Jobs whose export thread died under them, and how often. */
  #threadFailures = new Map<string, number>();
  /** Test seam: see ExportRunnerOptions.afterPart (settable on a running server's runner). */
  afterPart: ExportRunnerOptions['afterPart'];

  constructor(options: ExportRunnerOptions) {
    this.#o = options;
    this.#rounds = new Rounds(() => this.#loop(), (err) => this.#o.onError?.(err));
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
    this.#rounds.kick();
  }

  /** Resolve once no job is queued or running (tests, benchmarks). */
  idle(): Promise<void> {
    return this.#rounds.idle();
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
    await this.#rounds.close();
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
      // The export thread died under the job: resume it from its last part (the next loop picks it up again).
      if (err instanceof ExportThreadError) {
        const tries = (this.#threadFailures.get(job.id) ?? 0) + 1;
        this.#threadFailures.set(job.id, tries);
        if (tries <= THREAD_RETRIES) return;
      }
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
    const encoder = this.#o.encoder;
    const principal = spec.principal ? principalOf(spec.principal) : undefined;
    const base: FhirRequest = { method: 'GET', query: [], headers: {}, baseUrl: services.baseUrl, consentLog: [], ...(principal ? { principal } : {}) };
    for (; progress.typeIndex < spec.types.length; progress.typeIndex++, progress.afterSeq = 0) {
      const type = spec.types[progress.typeIndex]!;
      const filters = (spec.typeFilters?.[type] ?? []).map((q) => planQuery(services, type, [...new URLSearchParams(q)], services.baseUrl).query.where);
      const names = spec.elements?.[type] ?? spec.elements?.['*'];
      const elements = names ? { names, mandatory: [...services.definitions.mandatoryElements(type)] } : undefined;
      let cursor = progress.afterSeq;
      await encoder.begin(
        {
          id,
          ...(spec.recipient ? { recipient: spec.recipient as JWK } : {}),
          proofs: services.anchoring !== undefined,
          provenance: spec.provenance,
          fileMax: this.#o.fileMax,
          fileBytes: this.#o.fileBytes,
          fileNo: progress.fileNo,
        },
        type,
        cursor,
      );
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
        // Decided on the deleted resource's key scope (the caller's compartment, the patient's consent for the type).
        const items: EncodeItem[] = records.map((record) =>
          record.deleted
            ? visible(services, request, record)
              ? { kind: 'deleted', seq: record.seq, type, id: record.id }
              : { kind: 'skip', seq: record.seq }
            : keep.has(record)
              ? { kind: 'live', record }
              : { kind: 'skip', seq: record.seq },
        );
        cursor = records[records.length - 1]!.seq;
        // The export thread reads, encodes and writes; the request thread waits for it, free.
        for (const flushed of await encoder.add(items, elements)) {
          await this.#record(id, progress, flushed);
          // A stop waits for no more than the part being written: the job resumes from here.
          if (this.#closed) return false;
        }
      }
      await this.#record(id, progress, await encoder.flush());
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

  /** Record a part written whole, and the position it reaches, in the job's row. */
  async #record(id: string, progress: ExportProgress, flushed: Flushed): Promise<void> {
    progress.parts.push(...flushed.parts);
    progress.exported += flushed.exported;
    progress.afterSeq = flushed.cursor;
    progress.fileNo = flushed.fileNo;
    await this.#o.services().repository.index.exportJobs.update(id, { progress });
    await this.afterPart?.(id, progress);
  }
}
