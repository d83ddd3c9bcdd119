/**
 * The write path — the ONE place where resource versions are made (see DESIGN.md "The write
 * path"). Every interaction that changes data (create, update, patch, delete, and later bundle
 * entries) goes through `Writer.commit`, inside `Writer.exclusive` so that reading the current
 * state, deciding, and committing happen without interleaving. Later steps (consent check, anchor
 * leaf) plug in as `WriteStep`s here and nowhere else.
 */
import { randomUUID } from 'node:crypto';
import { canonicalJson, cidDigest, contentDigest, leafFromParts, newSalt, pseudonym } from '../chain/leaf.ts';
import type { IndexWrite, VersionRecord, WriteMethod } from '../storage/index-store.ts';
import type { Repository } from '../storage/repository.ts';
import type { SearchRow } from '../storage/search-types.ts';
import { FhirError, fhirError } from './errors.ts';
import type { ConsentDecisionEntry } from './consent/service.ts';
import type { Principal } from './auth/verify.ts';
import type { FhirResource } from './request.ts';

export interface WriteOp {
  method: WriteMethod;
  type: string;
  id: string;
  /** The new content (create, update, patch). Its id and meta.versionId/lastUpdated are set here. */
  resource?: FhirResource;
  /**
   * The same content with decimals kept exactly (see json.ts), when it differs from `resource`:
   * what is stored and returned. `resource` is what is validated and indexed.
   */
  exact?: FhirResource;
  /** The version current when the caller decided (0 = the resource does not exist). */
  expectedVersion: number;
  /**
   * Search rows computed by a trusted producer (the audit trail, whose builder is tested against
   * the validator and the extractor): the content is neither validated nor extracted again.
   */
  searchRows?: SearchRow[];
  /**
   * May share an envelope with the other such versions of its key scope in this commit
   * (storage/envelope-group.ts): the audit trail's AuditEvents.
   */
  group?: boolean;
}

/** Who is writing, for the Provenance of each version. */
export interface WriteContext {
  agent: { display: string; reference?: string };
  /** The caller, when authorization is on (access.ts checks every version against it). */
  principal?: Principal;
  signal?: AbortSignal;
  /** Filled with every version committed for this request (e.g. to wait for its anchoring). */
  committed?: VersionRecord[];
  /** Consent decisions on the versions written, for the request's AuditEvent (access.ts). */
  consentLog?: ConsentDecisionEntry[];
  /** A write the server makes itself (a Subscription's status): steps that police clients let it through. */
  system?: true;
}

export interface Written {
  record: VersionRecord;
  resource?: FhirResource;
}

/** A version about to be committed, visible to write steps. */
export interface PendingVersion {
  op: WriteOp;
  write: Omit<IndexWrite, 'cid' | 'anchor'>;
  anchor?: (cid: string) => { leaf: Uint8Array; salt: Uint8Array };
  resource?: FhirResource;
  bundle: FhirResource;
}

/** A step of the write path: may veto (throw a FhirError) or add to each pending version. */
export interface WriteStep {
  readonly name: string;
  beforeCommit?(versions: PendingVersion[], context: WriteContext): Promise<void>;
  afterCommit?(written: Written[], context: WriteContext): Promise<void>;
  /** The commit failed after `beforeCommit` ran: undo what the step did outside the index. */
  abort?(context: WriteContext): Promise<void>;
}

export interface WriterDeps {
  repository: Repository;
  validate(resource: unknown, expectedType: string): { code: string; expression: string; diagnostics: string; severity: string }[];
  extract(resource: FhirResource): SearchRow[];
  /** Key scope (patient pseudonym or 'shared') for a resource, given its search rows. */
  keyScope(resource: FhirResource, rows: SearchRow[]): string;
  baseUrl: string;
  /** The server's pseudonym key for anchor leaves; without it, versions are not queued for anchoring. */
  leafKey?: Uint8Array;
  steps?: WriteStep[];
  now?: () => number;
}

/** Where a version's anchor salt is kept inside its (encrypted) bundle. */
export const ANCHOR_SALT_EXTENSION = 'https://vellum.dev/fhir/StructureDefinition/anchor-salt';

/**
 * What a deletion version commits to in its leaf (it has no resource): RFC 8785 JSON of
 * `{"deleted":true,"id":…,"resourceType":…,"versionId":"n"}`.
 */
export function deletionContent(type: string, id: string, versionId: number): Record<string, unknown> {
  return { deleted: true, id, resourceType: type, versionId: String(versionId) };
}

const DATA_OPERATION = 'http://terminology.hl7.org/CodeSystem/v3-DataOperation';
const ACTIVITY: Record<WriteMethod, string> = { create: 'CREATE', update: 'UPDATE', patch: 'UPDATE', delete: 'DELETE' };

export class Writer {
  #deps: WriterDeps;
  #tail: Promise<unknown> = Promise.resolve();
  #lastTime = 0;
  #steps: WriteStep[];

  constructor(deps: WriterDeps) {
    this.#deps = deps;
    this.#steps = deps.steps ?? [];
  }

  /**
   * Run `fn` with no other exclusive section interleaved (reads of state + commit are atomic),
   * then wait — outside the lock, so concurrent writers share one fsync — until its commits are
   * durable. Only then may the caller acknowledge the write.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn, fn);
    this.#tail = run.catch(() => undefined);
    try {
      return await run;
    } finally {
      await this.#deps.repository.flush();
    }
  }

  #clock(): number {
    const now = (this.#deps.now ?? Date.now)();
    this.#lastTime = Math.max(this.#lastTime, now);
    return this.#lastTime;
  }

  /**
   * The instant of a snapshot taken now (call inside `exclusive`, with the last committed seq):
   * every version committed after it is stamped with a later lastUpdated, so `_since=<instant>`
   * finds exactly what the snapshot does not hold.
   */
  snapshotInstant(): number {
    const instant = this.#clock();
    this.#lastTime = instant + 1;
    return instant;
  }

  /** Validate, version, encrypt, store and index `ops` atomically. Call inside `exclusive`. */
  async commit(ops: WriteOp[], context: WriteContext): Promise<Written[]> {
    const lastUpdated = this.#clock();
    const instant = new Date(lastUpdated).toISOString();
    const pending: PendingVersion[] = [];
    for (const op of ops) pending.push(this.#prepare(op, lastUpdated, instant, context));
    let records: VersionRecord[];
    try {
      for (const step of this.#steps) await step.beforeCommit?.(pending, context);
      records = await this.#deps.repository.store(
        pending.map((p) => ({ write: p.write, plaintext: Buffer.from(JSON.stringify(p.bundle)), anchor: p.anchor, ...(p.op.group ? { group: true } : {}) })),
        { signal: context.signal },
      );
    } catch (err) {
      for (const step of this.#steps) await step.abort?.(context);
      throw err;
    }
    const written = records.map((record, i) => ({ record, resource: pending[i]!.resource }));
    context.committed?.push(...records);
    for (const step of this.#steps) await step.afterCommit?.(written, context);
    return written;
  }

  #prepare(op: WriteOp, lastUpdated: number, instant: string, context: WriteContext): PendingVersion {
    const versionId = op.expectedVersion + 1;
    let resource: FhirResource | undefined;
    let plainOf: FhirResource | undefined;
    let rows: SearchRow[] = [];
    let keyScope = 'shared';
    if (op.method !== 'delete') {
      if (!op.resource) throw fhirError(400, 'required', 'VLM_FHIR_BODY_MISSING', 'A resource body is required');
      // resourceType, id and meta first, as every FHIR JSON example has them.
      const stamp = (source: FhirResource): FhirResource => {
        const { resourceType: _type, id: _id, meta, ...content } = source;
        return {
          resourceType: op.type,
          id: op.id,
          meta: { ...(meta ?? {}), versionId: String(versionId), lastUpdated: instant },
          ...content,
        };
      };
      const plain = stamp(op.resource);
      plainOf = plain;
      resource = op.exact ? stamp(op.exact) : plain;
      const issues = op.searchRows ? [] : this.#deps.validate(plain, op.type).filter((i) => i.severity === 'error');
      if (issues.length) {
        throw new FhirError(
          400,
          issues.map((i) => ({
            severity: 'error' as const,
            code: i.code as 'invalid',
            diagnostics: i.diagnostics,
            expression: [i.expression],
            vellumCode: 'VLM_FHIR_INVALID_RESOURCE',
          })),
        );
      }
      rows = op.searchRows ?? this.#deps.extract(plain);
      keyScope = this.#deps.keyScope(plain, rows);
    }
    const reference = `${op.type}/${op.id}/_history/${versionId}`;
    const provenance = {
      resourceType: 'Provenance',
      target: [{ reference }],
      recorded: instant,
      // An update that brings the resource into being (update-as-create) is a CREATE.
      activity: { coding: [{ system: DATA_OPERATION, code: ACTIVITY[op.method === 'update' && op.expectedVersion === 0 ? 'create' : op.method] }] },
      agent: [
        {
          who: context.agent.reference
            ? { reference: context.agent.reference, display: context.agent.display }
            : { display: context.agent.display },
        },
      ],
    };
    const entry: Record<string, unknown>[] = [];
    if (resource) entry.push({ fullUrl: `${this.#deps.baseUrl}/${op.type}/${op.id}`, resource });
    entry.push({ fullUrl: `urn:uuid:${randomUUID()}`, resource: provenance });
    let anchor: PendingVersion['anchor'];
    let meta: Record<string, unknown> | undefined;
    const leafKey = this.#deps.leafKey;
    if (leafKey) {
      // The leaf commits to a salted digest of the version's RFC 8785 JSON (plain numbers, as any
      // JSON parser reads it back), so a guessed resource cannot be confirmed from public data.
      const salt = newSalt();
      const digest = contentDigest(salt, canonicalJson(plainOf ?? deletionContent(op.type, op.id, versionId)));
      const parts = { pseudonym: pseudonym(leafKey, op.type, op.id), versionId: BigInt(versionId), contentDigest: digest };
      anchor = (cid) => ({ leaf: leafFromParts({ ...parts, cidDigest: cidDigest(cid) }), salt });
      meta = { extension: [{ url: ANCHOR_SALT_EXTENSION, valueBase64Binary: Buffer.from(salt).toString('base64') }] };
    }
    const bundle: FhirResource = {
      resourceType: 'Bundle',
      ...(meta ? { meta } : {}),
      type: 'collection',
      timestamp: instant,
      entry,
    };
    return {
      op,
      resource,
      bundle,
      anchor,
      write: {
        type: op.type,
        id: op.id,
        versionId,
        expectedVersion: op.expectedVersion,
        lastUpdated,
        deleted: op.method === 'delete',
        method: op.method,
        keyScope,
        searchRows: rows,
      },
    };
  }
}
