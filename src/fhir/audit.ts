/**
 * The audit trail: one AuditEvent per interaction — allowed, denied or failed, reads and searches
 * included, one per entry of a batch or transaction — in the spirit of IHE BALP (Basic Audit Log
 * Patterns, https://profiles.ihe.net/ITI/BALP/): type `rest`, subtype the interaction, action,
 * outcome, recorded time, agents (client, user, purpose of use, network address), source (this
 * server), entities (the resource or the query, and the patient).
 *
 * AuditEvents go through the notarised write path like any version (validated, encrypted,
 * indexed, anchored) — in batches: events of concurrent requests are committed together in one
 * index transaction and one fsync (`Writer.exclusive`), and `record` resolves only once its
 * batch is durable, so no response leaves before its AuditEvent is stored.
 */
import { randomUUID } from 'node:crypto';
import type { Principal } from './auth/verify.ts';
import type { FhirResource } from './request.ts';
import { splitReference } from './search/reference.ts';
import type { WriteOp, Writer } from './writer.ts';
import { normalizeSearchText, type SearchRow } from '../storage/search-types.ts';

/** The part of a Principal an AuditEvent records. */
export type AuditPrincipal = Pick<Principal, 'clientId' | 'fhirUser' | 'purposeOfUse'>;

/** What one audited access was. */
export interface AuditInput {
  /** The FHIR interaction (restful-interaction code), or `operation`. */
  interaction: string;
  /** HTTP method of the request (or of the bundle entry). */
  method: string;
  /** HTTP status answered. */
  status: number;
  /** Vellum error code when the access failed. */
  errorCode?: string;
  /** Who called (only what the AuditEvent names is kept: client, user, purpose of use). */
  principal?: AuditPrincipal;
  /** Network address of the client. */
  address?: string;
  resourceType?: string;
  id?: string;
  versionId?: string;
  /** The query string of a search or history (without `?`). */
  query?: string;
  /** `Patient/{id}` whose data this was, when known. */
  patient?: string;
  /** The operation name (`$verify`, `$everything`…). */
  operation?: string;
  /** 1-based position of the entry in a batch or transaction. */
  entry?: number;
  /** Consent decisions made for this access (consent/service.ts), each distinct one once. */
  consent?: { decision: string; resourceType: string; consentId?: string; consent?: string; onBehalfOfPatient?: boolean }[];
}

const AUDIT_TYPE = { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' };
const INTERACTION_SYSTEM = 'http://hl7.org/fhir/restful-interaction';
const PURPOSE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const VELLUM_CLIENT = 'https://vellum.dev/fhir/sid/client-id';
const VELLUM_ERROR = 'https://vellum.dev/fhir/CodeSystem/error';

/** Most consent decisions one AuditEvent lists (a search over many patients repeats few distinct ones). */
const MAX_CONSENT_ENTITIES = 50;
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
const BREAK_GLASS = { system: PURPOSE_SYSTEM, code: 'BTG', display: 'break the glass' };

/** One entity per distinct consent decision: which consent (when one decided), the outcome, the class. */
function consentEntities(decisions: NonNullable<AuditInput['consent']>): Record<string, unknown>[] {
  const seen = new Set<string>();
  const out: Record<string, unknown>[] = [];
  for (const d of decisions) {
    const key = `${d.decision}|${d.resourceType}|${d.consentId ?? ''}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (out.length >= MAX_CONSENT_ENTITIES) break;
    out.push({
      ...(d.consent ? { what: { reference: d.consent } } : {}),
      type: { system: RESOURCE_TYPES, code: 'Consent', display: 'Consent' },
      description: 'consent decision',
      detail: [
        { type: 'decision', valueString: d.decision },
        { type: 'resource-class', valueString: d.resourceType },
        ...(d.consentId ? [{ type: 'registry-consent-id', valueString: d.consentId }] : []),
        ...(d.onBehalfOfPatient ? [{ type: 'on-behalf-of', valueString: 'patient' }] : []),
      ],
    });
  }
  return out;
}

/** The purposes of use a token names (one or more, space-separated), one CodeableConcept each. */
function purposesOf(purposeOfUse: string): Record<string, unknown>[] {
  return purposeOfUse.split(' ').map((code) => ({ coding: [{ system: PURPOSE_SYSTEM, code }] }));
}

/** The AuditEvent.action of an interaction: Create, Read, Update, Delete or Execute. */
export function actionOf(interaction: string, method: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (interaction === 'create' || (interaction === 'transaction' && method === 'POST')) return 'C';
  if (/^(update|patch|conditional-update|conditional-patch)$/.test(interaction) || method === 'PUT' || method === 'PATCH') return 'U';
  if (/delete/.test(interaction) || method === 'DELETE') return 'D';
  if (interaction === 'operation') return 'E';
  return 'R';
}

/** BALP outcome: 0 success, 4 minor failure (the client's: 4xx), 8 serious failure (5xx). */
function outcomeOf(status: number): '0' | '4' | '8' {
  return status < 400 ? '0' : status < 500 ? '4' : '8';
}

/** The AuditEvent of one access. */
export function auditEvent(input: AuditInput, baseUrl: string, recorded: string): FhirResource {
  const p = input.principal;
  const agent: Record<string, unknown>[] = [];
  if (p) {
    agent.push({
      type: { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] },
      who: { identifier: { system: VELLUM_CLIENT, value: p.clientId } },
      requestor: !p.fhirUser,
      ...(input.address ? { network: { address: input.address, type: '2' } } : {}),
      purposeOfUse: purposesOf(p.purposeOfUse),
    });
    if (p.fhirUser) {
      agent.push({
        who: { reference: p.fhirUser },
        requestor: true,
        purposeOfUse: purposesOf(p.purposeOfUse),
      });
    }
  } else {
    agent.push({
      who: { display: 'unauthenticated client' },
      requestor: true,
      ...(input.address ? { network: { address: input.address, type: '2' } } : {}),
    });
  }
  const entity: Record<string, unknown>[] = [];
  if (input.resourceType && input.id) {
    const reference = `${input.resourceType}/${input.id}${input.versionId ? `/_history/${input.versionId}` : ''}`;
    entity.push({ what: { reference }, type: { system: ENTITY_TYPE, code: '2', display: 'System Object' } });
  }
  if (input.query !== undefined) {
    entity.push({
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      role: { system: OBJECT_ROLE, code: '24', display: 'Query' },
      ...(input.resourceType && !input.id ? { name: input.resourceType } : {}),
      ...(input.query ? { query: Buffer.from(input.query, 'utf8').toString('base64') } : {}),
    });
  }
  if (input.consent?.length) entity.push(...consentEntities(input.consent));
  if (input.patient && input.patient !== `${input.resourceType}/${input.id}`) {
    entity.push({ what: { reference: input.patient }, type: { system: ENTITY_TYPE, code: '1', display: 'Person' }, role: { system: OBJECT_ROLE, code: '1', display: 'Patient' } });
  } else if (input.patient) {
    (entity[0] as { role?: unknown }).role = { system: OBJECT_ROLE, code: '1', display: 'Patient' };
  }
  const breakGlass = input.consent?.some((d) => d.decision === 'break-glass');
  return {
    resourceType: 'AuditEvent',
    ...(breakGlass ? { meta: { security: [BREAK_GLASS] } } : {}),
    type: AUDIT_TYPE,
    subtype: [{ system: INTERACTION_SYSTEM, code: input.interaction }],
    action: actionOf(input.interaction, input.method),
    recorded,
    outcome: outcomeOf(input.status),
    ...(input.errorCode ? { outcomeDesc: input.errorCode } : {}),
    ...(p ? { purposeOfEvent: purposesOf(p.purposeOfUse) } : {}),
    agent,
    source: {
      site: baseUrl,
      observer: { display: 'Vellum FHIR server' },
      type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }],
    },
    ...(entity.length ? { entity } : {}),
    extension: [
      { url: 'https://vellum.dev/fhir/StructureDefinition/audit-http', extension: [
        { url: 'method', valueCode: input.method },
        { url: 'status', valueInteger: input.status },
        ...(input.operation ? [{ url: 'operation', valueString: input.operation }] : []),
        ...(input.entry !== undefined ? [{ url: 'entry', valueInteger: input.entry }] : []),
        ...(input.errorCode ? [{ url: 'error', valueCoding: { system: VELLUM_ERROR, code: input.errorCode } }] : []),
      ] },
    ],
  };
}

type Json = Record<string, any>;

/**
 * The search rows of an AuditEvent made by `auditEvent`, without FHIRPath: the same rows the
 * registry-driven extractor gives for this shape (test/fhir/audit.test.ts checks they are
 * identical), at a fraction of the cost — every access writes one.
 */
export function auditRows(event: Json, baseUrl: string): SearchRow[] {
  const rows: SearchRow[] = [];
  const token = (param: string, coding: Json | undefined) => {
    if (!coding || (coding.code === undefined && coding.display === undefined)) return;
    rows.push({ kind: 'token', param, system: coding.system ?? null, code: coding.code ?? null, text: typeof coding.display === 'string' ? normalizeSearchText(coding.display) : null });
  };
  const reference = (param: string, ref: unknown, onlyType?: string) => {
    if (typeof ref !== 'string') return;
    const target = splitReference(ref, baseUrl);
    if (!target) return;
    if (onlyType !== undefined && target.type !== onlyType) return;
    if ('id' in target) rows.push({ kind: 'reference', param, targetType: target.type, targetId: target.id, url: null });
    else rows.push({ kind: 'reference', param, targetType: null, targetId: null, url: target.url });
  };
  const string = (param: string, value: unknown) => {
    if (typeof value === 'string') rows.push({ kind: 'string', param, norm: normalizeSearchText(value), exact: value });
  };
  rows.push({ kind: 'token', param: 'action', system: null, code: event.action, text: null });
  for (const agent of event.agent ?? []) string('address', agent.network?.address);
  for (const agent of event.agent ?? []) reference('agent', agent.who?.reference);
  const at = Date.parse(event.recorded);
  rows.push({ kind: 'date', param: 'date', low: at, high: at });
  for (const entity of event.entity ?? []) reference('entity', entity.what?.reference);
  for (const entity of event.entity ?? []) string('entity-name', entity.name);
  for (const entity of event.entity ?? []) token('entity-role', entity.role);
  for (const entity of event.entity ?? []) token('entity-type', entity.type);
  rows.push({ kind: 'token', param: 'outcome', system: null, code: event.outcome, text: null });
  for (const agent of event.agent ?? []) reference('patient', agent.who?.reference, 'Patient');
  for (const entity of event.entity ?? []) reference('patient', entity.what?.reference, 'Patient');
  if (typeof event.source?.site === 'string') rows.push({ kind: 'token', param: 'site', system: null, code: event.source.site, text: null });
  for (const coding of event.subtype ?? []) token('subtype', coding);
  token('type', event.type);
  // One row per distinct value, as the extractor gives.
  const seen = new Set<string>();
  return rows.filter((row) => {
    const key = JSON.stringify(row);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The record kept for an AuditEvent: the input without the parts of the principal it does not use. */
function compact(input: AuditInput): AuditInput {
  const p = input.principal;
  if (!p) return input;
  return { ...input, principal: { clientId: p.clientId, purposeOfUse: p.purposeOfUse, ...(p.fhirUser ? { fhirUser: p.fhirUser } : {}) } };
}

/** Where audit records wait, durably, until they become AuditEvents (src/storage/sqlite/audit-queue.ts). */
export interface AuditQueue {
  readonly instance: string;
  append(plaintext: Uint8Array): number;
  /** Append records in one transaction; returns their sequence numbers. */
  appendMany(plaintexts: readonly Uint8Array[]): number[];
  flush(): Promise<void>;
  take(limit: number): { seq: number; body: Uint8Array | undefined }[];
  remove(seqs: readonly number[]): void;
  size(): number;
}

/** Where queued records are converted when not on this thread (src/fhir/audit-worker.ts). */
export interface AuditConverter {
  /** Records were queued: convert them soon. */
  kick(): void;
  /** Resolve once everything queued so far is converted. */
  settle(): Promise<void>;
  close(): Promise<void>;
}

export interface AuditTrailOptions {
  /** The write path conversions go through (when there is no `converter`). */
  writer?: Writer;
  /** Convert elsewhere (a worker thread) instead of on this thread. */
  converter?: AuditConverter;
  queue: AuditQueue;
  baseUrl: string;
  /** Is an AuditEvent of this id stored already (a record converted before a crash)? */
  exists(id: string): Promise<boolean>;
  /**
   * `fsync` (default): a response waits until its audit record is on disk. `wal`: until it is in
   * the database's write-ahead log — safe from a process crash at once, from a power loss after
   * the next group fsync (a few milliseconds later).
   */
  durability?: 'fsync' | 'wal';
  /** How long queued records wait before a conversion round starts (default BATCH_DELAY_MS). */
  batchDelayMs?: number;
  /** After a round that stored AuditEvents (the converter thread checkpoints the database here). */
  afterRound?: () => void;
  onError?: (err: unknown) => void;
}

const BATCH = 500;
/** AuditEvents per index transaction within a round (see `#drain`). */
const COMMIT_CHUNK = 64;
/**
 * How long queued records wait before a conversion round starts (VELLUM_AUDIT_BATCH_MS). Larger
 * rounds share their transactions, fsyncs and the index pages they dirty: at ~1,500 reads/s a
 * 1 s wait cut the converter's CPU per AuditEvent by about a quarter against 50 ms
 * (`bench/read-cost.ts --threads`). The wait delays only the AuditEvents' appearance in the index
 * (a search of AuditEvents converts everything queued first) and their anchoring, never a
 * response: records are durable once queued.
 */
export const BATCH_DELAY_MS = 1000;
/**
 * How often, at most, the request thread tells the converter thread that records were queued.
 * The converter waits BATCH_DELAY_MS after a kick anyway (and drains until the queue is empty),
 * so kicking more often only wakes it for nothing: at a few hundred reads per second a 5 ms
 * interval cost about one message (and one wake-up of each thread) per read.
 */
const KICK_MS = 25;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The audit trail: `record` queues an access durably (the response waits for that only); a worker
 * turns queued records into AuditEvents in batches through the write path — validated by
 * construction (test/fhir/audit.test.ts), rows made without FHIRPath (`auditRows`), encrypted,
 * indexed and anchored like any version — and removes them. AuditEvent ids are
 * `ae-{instance}-{seq}`, so a record converted just before a crash is not stored twice.
 */
export class AuditTrail {
  readonly #o: AuditTrailOptions;
  #draining: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #failures = 0;
  /** Records waiting for this turn's queue transaction. */
  #pending: { body: Uint8Array; resolve: () => void; reject: (err: unknown) => void }[] = [];
  #writeScheduled = false;
  /** An fsync of the queue is in flight (fsync durability); records arriving meanwhile wait in `#pending`. */
  #syncing = false;
  #kickTimer: NodeJS.Timeout | undefined;
  /**
   * Whether queued records may already be AuditEvents: after a start (a crash between storing a
   * batch and removing its records) or a failed round. Otherwise every queued record is new
   * (only this converter stores and removes them), and the per-record lookup is skipped.
   */
  #mayBeStored = true;

  constructor(options: AuditTrailOptions) {
    this.#o = options;
    // Records left by a previous run (a crash before conversion) are converted first.
    if (options.converter) options.converter.kick();
    else if (options.queue.size() > 0) this.#schedule(0);
  }

  /**
   * Queue the audit record of one access; resolves once it is durably queued. The records of one
   * turn of the event loop (concurrent requests, the entries of a transaction) — or, while an
   * fsync is in flight, of every turn until it ends — are queued in one transaction and made
   * durable by one shared fsync.
   */
  record(input: AuditInput): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('VLM_AUDIT_CLOSED'));
    const body = encoder.encode(JSON.stringify({ input: compact(input), recorded: new Date().toISOString() }));
    const done = new Promise<void>((resolve, reject) => this.#pending.push({ body, resolve, reject }));
    if (!this.#writeScheduled) {
      this.#writeScheduled = true;
      setImmediate(() => this.#writePending());
    }
    return done;
  }

  #writePending(): void {
    this.#writeScheduled = false;
    // While an fsync is in flight, new records wait here: they could not be durable before the
    // next fsync anyway, and committing them together just before it starts costs the queue one
    // transaction per fsync instead of one per turn of the event loop.
    if (this.#syncing) return;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length === 0) return;
    const fail = (err: unknown) => {
      for (const p of batch) p.reject(err);
    };
    try {
      this.#o.queue.appendMany(batch.map((p) => p.body));
    } catch (err) {
      fail(err);
      return;
    }
    this.kick();
    if (this.#o.durability === 'wal') {
      for (const p of batch) p.resolve();
      return;
    }
    this.#syncing = true;
    this.#o.queue
      .flush()
      .then(() => {
        for (const p of batch) p.resolve();
      }, fail)
      .finally(() => {
        this.#syncing = false;
        // Records that arrived during the fsync: one transaction, then the next fsync.
        if (this.#pending.length > 0 && !this.#writeScheduled) this.#writePending();
      });
  }

  /** Records were queued (by this or another connection): convert them soon. */
  kick(): void {
    if (this.#o.converter) {
      // One message per few milliseconds, not per request: the converter batches anyway.
      if (this.#kickTimer) return;
      this.#kickTimer = setTimeout(() => {
        this.#kickTimer = undefined;
        this.#o.converter!.kick();
      }, KICK_MS);
      this.#kickTimer.unref?.();
    } else this.#schedule(this.#o.batchDelayMs ?? BATCH_DELAY_MS);
  }

  /** Convert everything queued so far (searches of AuditEvents call this first, to see every access). */
  async settle(): Promise<void> {
    if (this.#o.converter) return this.#o.converter.settle();
    while (this.#o.queue.size() > 0) {
      await this.#startDrain();
      if (this.#failures > 0) return; // the store refuses for now: answer with what is stored
    }
  }

  #schedule(ms: number): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#startDrain();
    }, ms);
    this.#timer.unref?.();
  }

  /** The running conversion, or a new one (cleared when it settles, never while it is being set). */
  #startDrain(): Promise<void> {
    this.#draining ??= this.#drain().finally(() => {
      this.#draining = undefined;
    });
    return this.#draining;
  }

  async #drain(): Promise<void> {
    const { queue, baseUrl } = this.#o;
    const writer = this.#o.writer!;
    try {
      for (;;) {
        const records = queue.take(BATCH);
        if (records.length === 0) break;
        const ops: WriteOp[] = [];
        for (const record of records) {
          const id = `ae-${queue.instance}-${record.seq}`;
          if (this.#mayBeStored && (await this.#o.exists(id))) continue;
          // A record altered on disk cannot be trusted: its loss itself is recorded, as a serious failure.
          const { input, recorded } = record.body
            ? (JSON.parse(decoder.decode(record.body)) as { input: AuditInput; recorded: string })
            : { input: { interaction: 'unrouted', method: 'GET', status: 500, errorCode: 'VLM_AUDIT_QUEUE_CORRUPT' } as AuditInput, recorded: new Date().toISOString() };
          const resource = auditEvent(input, baseUrl, recorded);
          // `group`: the AuditEvents of one key scope share an envelope and a block (storage/envelope-group.ts).
          ops.push({ method: 'create', type: 'AuditEvent', id, resource, expectedVersion: 0, searchRows: auditRows(resource, baseUrl), group: true });
        }
        // Committed in short transactions: between them the request thread, which writes the same
        // database, takes its turn (storage/write-gate.ts) instead of waiting for the whole batch.
        if (ops.length) {
          await writer.exclusive(async () => {
            for (let i = 0; i < ops.length; i += COMMIT_CHUNK) await writer.commit(ops.slice(i, i + COMMIT_CHUNK), { agent: { display: 'Vellum audit trail' } });
          });
        }
        queue.remove(records.map((r) => r.seq));
        this.#failures = 0;
        this.#mayBeStored = false;
        if (ops.length) {
          try {
            this.#o.afterRound?.();
          } catch (err) {
            this.#o.onError?.(err); // a missed checkpoint is caught up by the next round
          }
        }
      }
    } catch (err) {
      this.#failures++;
      this.#mayBeStored = true;
      this.#o.onError?.(err);
      // The records stay queued; try again later (backing off while the store refuses).
      if (!this.#closed) this.#schedule(Math.min(30_000, 100 * 2 ** Math.min(this.#failures, 8)));
    }
  }

  /** Convert what is queued, then refuse new records. */
  async close(): Promise<void> {
    if (this.#kickTimer) clearTimeout(this.#kickTimer);
    this.#kickTimer = undefined;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.settle().catch(() => undefined);
    this.#closed = true;
    await this.#o.converter?.close();
  }
}
