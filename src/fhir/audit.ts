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
import type { WriteOp, Writer } from './writer.ts';

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
  principal?: Principal;
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
      purposeOfUse: [{ coding: [{ system: PURPOSE_SYSTEM, code: p.purposeOfUse }] }],
    });
    if (p.fhirUser) {
      agent.push({
        who: { reference: p.fhirUser },
        requestor: true,
        purposeOfUse: [{ coding: [{ system: PURPOSE_SYSTEM, code: p.purposeOfUse }] }],
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
  if (input.patient && input.patient !== `${input.resourceType}/${input.id}`) {
    entity.push({ what: { reference: input.patient }, type: { system: ENTITY_TYPE, code: '1', display: 'Person' }, role: { system: OBJECT_ROLE, code: '1', display: 'Patient' } });
  } else if (input.patient) {
    (entity[0] as { role?: unknown }).role = { system: OBJECT_ROLE, code: '1', display: 'Patient' };
  }
  return {
    resourceType: 'AuditEvent',
    type: AUDIT_TYPE,
    subtype: [{ system: INTERACTION_SYSTEM, code: input.interaction }],
    action: actionOf(input.interaction, input.method),
    recorded,
    outcome: outcomeOf(input.status),
    ...(input.errorCode ? { outcomeDesc: input.errorCode } : {}),
    ...(p ? { purposeOfEvent: [{ coding: [{ system: PURPOSE_SYSTEM, code: p.purposeOfUse }] }] } : {}),
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

interface Pending {
  input: AuditInput;
  recorded: string;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Batches AuditEvents into the write path. */
export class AuditTrail {
  readonly #writer: Writer;
  readonly #baseUrl: string;
  #queue: Pending[] = [];
  #flushing: Promise<void> | undefined;
  #closed = false;

  constructor(writer: Writer, baseUrl: string) {
    this.#writer = writer;
    this.#baseUrl = baseUrl;
  }

  /** Queue the AuditEvent of one access; resolves once it is durably stored (rejects if it could not be). */
  record(input: AuditInput): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('VLM_AUDIT_CLOSED'));
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ input, recorded: new Date().toISOString(), resolve, reject });
      this.#flushing ??= this.#drain();
    });
  }

  /** Commit queued events, batch after batch, until the queue is empty. */
  async #drain(): Promise<void> {
    // Let the requests of this tick queue their events first.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, 500);
        const ops: WriteOp[] = batch.map(({ input, recorded }) => ({
          method: 'create',
          type: 'AuditEvent',
          id: randomUUID(),
          resource: auditEvent(input, this.#baseUrl, recorded),
          expectedVersion: 0,
        }));
        try {
          await this.#writer.exclusive(() => this.#writer.commit(ops, { agent: { display: 'Vellum audit trail' } }));
          for (const p of batch) p.resolve();
        } catch (err) {
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Wait for queued events, then refuse new ones. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#flushing) await this.#flushing;
  }
}
