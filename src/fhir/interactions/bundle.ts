/**
 * batch and transaction — http://hl7.org/fhir/R4/http.html#transaction
 * POST [base] with a Bundle of type `batch` or `transaction`; the answer is a `batch-response` or
 * `transaction-response` Bundle whose entries answer the request's entries in the same order.
 *
 * Entries are processed in the spec's order (http://hl7.org/fhir/R4/http.html#trules): DELETE,
 * then POST, then PUT and PATCH, then GET and HEAD. A **transaction** is all or nothing: every
 * entry is resolved (targets, `ifNoneExist` / `ifMatch` / `ifNoneMatch`, `urn:uuid:` / `urn:oid:`
 * fullUrls and conditional references) against the state before it, then all its versions are
 * committed by ONE `Writer.commit` — one index transaction, one fsync — and only then are its GET
 * entries read. Any entry that fails makes the whole transaction fail with that entry's status
 * and an OperationOutcome naming it (`Bundle.entry[3]`), and nothing is stored. In a **batch**
 * each entry succeeds or fails on its own (status and `response.outcome`), may not reference
 * another entry's fullUrl, and is committed alone, all inside one exclusive section so that the
 * whole batch still shares one fsync.
 *
 * Vellum codes: VLM_BUNDLE_TYPE, VLM_BUNDLE_TOO_MANY_ENTRIES (413), VLM_BUNDLE_ENTRY_INVALID,
 * VLM_BUNDLE_REQUEST_MISSING, VLM_BUNDLE_METHOD, VLM_BUNDLE_BAD_URL, VLM_BUNDLE_RESOURCE_MISSING,
 * VLM_BUNDLE_PATCH_FORMAT, VLM_BUNDLE_DUPLICATE_FULLURL, VLM_BUNDLE_DUPLICATE_RESOURCE,
 * VLM_BUNDLE_UNRESOLVED_REFERENCE, VLM_BUNDLE_ENTRY_REFERENCE, VLM_BUNDLE_REFERENCE_NOT_FOUND (404),
 * VLM_BUNDLE_BAD_REFERENCE, VLM_BUNDLE_IF_NONE_MATCH (412), VLM_BUNDLE_TOO_DEEP, plus those of the
 * single interactions (VLM_FHIR_…).
 */
import { randomUUID } from 'node:crypto';
import type { VersionRecord } from '../../storage/index-store.ts';
import { atEntry, checkFullUrls, methodRank, parseEntry, type BundleEntry } from '../bundles/entries.ts';
import { collectReferences, conditionalReference, isPlaceholder, rewriteReferences } from '../bundles/references.ts';
import { FhirError, fhirError, operationOutcome, toFhirError } from '../errors.ts';
import { elementsList, subset, summaryMode } from '../format.ts';
import type { FhirRequest, FhirResource, FhirResponse } from '../request.ts';
import type { Handler, Route } from '../routes.ts';
import type { FhirServices } from '../services.ts';
import type { WriteContext, WriteOp, Written } from '../writer.ts';
import { checkId, checkIfMatch, preferReturn, requireBody, requireCurrent } from './common.ts';
import { findMatches, parseCriteria } from './conditional.ts';
import { patchedContent } from './patch.ts';

export interface BundleOptions {
  /** Most entries one Bundle may carry (VELLUM_BUNDLE_MAX_ENTRIES); more → 413. */
  maxEntries: number;
  /** The server's route table: GET and HEAD entries run the GET interaction their URL names. */
  routes: () => readonly Route[];
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  304: 'Not Modified',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  410: 'Gone',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};

function statusLine(status: number): string {
  const text = STATUS_TEXT[status];
  return text ? `${status} ${text}` : String(status);
}

/** What an entry will do, decided against the state before the Bundle. */
interface Plan {
  entry: BundleEntry;
  request: FhirRequest;
  /** The resource written or found (Type, id), for fullUrl rewriting and the one-entry-per-resource rule. */
  target?: { type: string; id: string };
  /** The version to commit (its resource is filled once references are resolved). */
  op?: WriteOp;
  /** The status of success: 201 / 200 / 204. */
  status: number;
  /** POST with `ifNoneExist` that matched: answered with this version, nothing written. */
  existing?: VersionRecord;
  /** PATCH: the version patched. */
  current?: VersionRecord;
  /** GET / HEAD: the interaction to run once the writes are done. */
  read?: { route: Route; request: FhirRequest };
}

type ResponseEntry = Record<string, unknown>;

/** The `POST [base]` handler of batch and transaction Bundles. */
export function bundle(options: BundleOptions): Handler {
  return async (services, request, context) => {
    const body = requireBody(request, 'Bundle');
    const type = body.type;
    if (type !== 'batch' && type !== 'transaction') {
      throw fhirError(400, 'not-supported', 'VLM_BUNDLE_TYPE', 'POST [base] takes a Bundle of type batch or transaction', ['Bundle.type']);
    }
    const raw = body.entry ?? [];
    if (!Array.isArray(raw)) throw fhirError(400, 'structure', 'VLM_BUNDLE_ENTRY_INVALID', 'Bundle.entry must be an array', ['Bundle.entry']);
    if (raw.length > options.maxEntries) {
      throw fhirError(413, 'too-long', 'VLM_BUNDLE_TOO_MANY_ENTRIES', `A Bundle may carry at most ${options.maxEntries} entries`, ['Bundle.entry']);
    }
    checkFullUrls(raw);
    const exactBody = request.exactBody as { entry?: unknown } | undefined;
    const exactEntries = exactBody && Array.isArray(exactBody.entry) ? (exactBody.entry as unknown[]) : undefined;
    const entries = raw.map((entry, index) => {
      try {
        return parseEntry(entry, exactEntries?.[index], index, services.baseUrl);
      } catch (err) {
        if (err instanceof FhirError) return atEntry(err, index);
        throw err;
      }
    });
    const run = new BundleRun(services, request, context, options);
    const responseEntries = type === 'transaction' ? await run.transaction(entries) : await run.batch(entries);
    return {
      status: 200,
      resource: {
        resourceType: 'Bundle',
        id: randomUUID(),
        type: `${type}-response`,
        timestamp: new Date().toISOString(),
        entry: responseEntries,
      },
    };
  };
}

/** The processing order: by method rank, then by position. */
function processingOrder<T extends { index: number; method: BundleEntry['method'] }>(entries: T[]): T[] {
  return [...entries].sort((a, b) => methodRank(a.method) - methodRank(b.method) || a.index - b.index);
}

class BundleRun {
  #services: FhirServices;
  #request: FhirRequest;
  #context: WriteContext;
  #options: BundleOptions;
  /** Conditional references already resolved in this Bundle → `Type/id`. */
  #resolved = new Map<string, string>();

  constructor(services: FhirServices, request: FhirRequest, context: WriteContext, options: BundleOptions) {
    this.#services = services;
    this.#request = request;
    this.#context = context;
    this.#options = options;
  }

  async transaction(entries: (BundleEntry | FhirError)[]): Promise<ResponseEntry[]> {
    const failed = entries.find((e): e is FhirError => e instanceof FhirError);
    if (failed) throw failed;
    const parsed = entries as BundleEntry[];
    const services = this.#services;
    return services.writer.exclusive(async () => {
      const plans: Plan[] = [];
      for (const entry of processingOrder(parsed)) plans.push(await this.#atEntry(entry.index, () => this.#plan(entry)));
      this.#checkOneEntryPerResource(plans);

      const fullUrls = new Map<string, string>();
      for (const plan of plans) {
        if (plan.target && plan.entry.fullUrl && plan.entry.method !== 'DELETE') {
          fullUrls.set(plan.entry.fullUrl, `${plan.target.type}/${plan.target.id}`);
        }
      }
      for (const plan of plans) await this.#atEntry(plan.entry.index, () => this.#finish(plan, fullUrls, 'transaction'));

      const writing = plans.filter((p) => p.op);
      let written: Written[] = [];
      if (writing.length) {
        try {
          written = await services.writer.commit(
            writing.map((p) => p.op!),
            this.#context,
          );
        } catch (err) {
          throw err instanceof FhirError ? this.#nameInvalidEntry(err, writing) : err;
        }
      }
      const byIndex = new Map<number, ResponseEntry>();
      writing.forEach((plan, i) => byIndex.set(plan.entry.index, this.#writeEntry(plan, written[i]!)));
      for (const plan of plans) {
        if (plan.op) continue;
        byIndex.set(plan.entry.index, await this.#answer(plan));
      }
      return parsed.map((entry) => byIndex.get(entry.index)!);
    });
  }

  async batch(entries: (BundleEntry | FhirError)[]): Promise<ResponseEntry[]> {
    const out: ResponseEntry[] = new Array(entries.length);
    const parsed: BundleEntry[] = [];
    entries.forEach((entry, index) => {
      if (entry instanceof FhirError) out[index] = errorEntry(entry);
      else parsed.push(entry);
    });
    // The fullUrls of the batch's entries: a batch entry may not reference them
    // (http://hl7.org/fhir/R4/http.html#brules).
    const others = new Set(parsed.map((e) => e.fullUrl).filter((u): u is string => u !== undefined));
    await this.#services.writer.exclusive(async () => {
      for (const entry of processingOrder(parsed)) {
        try {
          out[entry.index] = await this.#atEntry(entry.index, () => this.#batchEntry(entry, others));
        } catch (err) {
          out[entry.index] = errorEntry(err);
        }
      }
    });
    return out;
  }

  async #batchEntry(entry: BundleEntry, others: ReadonlySet<string>): Promise<ResponseEntry> {
    const plan = await this.#plan(entry);
    const own = new Map<string, string>();
    if (plan.target && entry.fullUrl) own.set(entry.fullUrl, `${plan.target.type}/${plan.target.id}`);
    await this.#finish(plan, own, 'batch', others);
    if (!plan.op) return this.#answer(plan);
    const [written] = await this.#services.writer.commit([plan.op], this.#context);
    return this.#writeEntry(plan, written!);
  }

  /** Run `fn`, naming entry `index` in any FHIR error it raises. */
  async #atEntry<T>(index: number, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof FhirError) throw atEntry(err, index);
      const { error, fault } = toFhirError(err);
      if (!fault) throw atEntry(error, index);
      throw err;
    }
  }

  /** The request an entry stands for, as the single interaction would see it. */
  #entryRequest(entry: BundleEntry, params: { type?: string; id?: string; vid?: string; ctype?: string }): FhirRequest {
    const headers: Record<string, string | undefined> = { ...entry.headers };
    const prefer = this.#request.headers['prefer'];
    if (prefer !== undefined) headers['prefer'] = prefer;
    return {
      method: entry.method === 'HEAD' ? 'GET' : entry.method,
      ...(params.type !== undefined ? { resourceType: params.type } : {}),
      ...(params.id !== undefined ? { id: params.id } : {}),
      ...(params.vid !== undefined ? { versionId: params.vid } : {}),
      // A compartment search (`Patient/{id}/{type}`): the type searched, which the guard decides on.
      ...(params.ctype !== undefined ? { compartmentType: params.ctype } : {}),
      query: entry.query,
      headers,
      baseUrl: this.#request.baseUrl,
      ...(this.#request.signal ? { signal: this.#request.signal } : {}),
      ...(this.#request.principal ? { principal: this.#request.principal } : {}),
    };
  }

  #requireType(type: string | undefined): string {
    if (type === undefined) throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_URL', 'request.url must name a resource type');
    if (!this.#services.resourceTypes.has(type)) throw fhirError(404, 'not-supported', 'VLM_FHIR_UNKNOWN_TYPE', `${type} is not an R4 resource type`);
    return type;
  }

  /** Decide what an entry does, against the current state (no write). */
  async #plan(entry: BundleEntry): Promise<Plan> {
    const services = this.#services;
    const [first, second, ...more] = entry.segments;
    if (entry.method === 'GET' || entry.method === 'HEAD') return this.#planRead(entry);
    const type = this.#requireType(first);
    if (more.length || (second !== undefined && entry.query.length) || (second !== undefined && second.startsWith('$'))) {
      throw fhirError(400, 'not-supported', 'VLM_BUNDLE_BAD_URL', `${entry.method} ${entry.segments.join('/')} is not an interaction a Bundle entry can carry`);
    }
    const request = this.#entryRequest(entry, { type, ...(second !== undefined ? { id: second } : {}) });
    const conditional = second === undefined;
    switch (entry.method) {
      case 'POST': {
        if (!conditional || entry.query.length) {
          throw fhirError(400, 'not-supported', 'VLM_BUNDLE_BAD_URL', 'A POST entry creates: its url is the resource type');
        }
        checkResourceType(entry, type);
        const ifNoneExist = entry.headers['if-none-exist'];
        if (ifNoneExist !== undefined) {
          const [existing] = await findMatches(services, type, parseCriteria(ifNoneExist), 'ifNoneExist', { request, interaction: 'create' });
          if (existing) return { entry, request, target: { type, id: existing.id }, status: 200, existing };
        }
        const id = randomUUID();
        return { entry, request, target: { type, id }, status: 201, op: { method: 'create', type, id, expectedVersion: 0 } };
      }
      case 'PUT': {
        checkResourceType(entry, type);
        const body = entry.resource!;
        let id: string;
        let current: VersionRecord | undefined;
        if (!conditional) {
          id = checkId(second);
          if (body.id === undefined) throw fhirError(400, 'required', 'VLM_FHIR_ID_MISSING', 'The resource must carry the id of the URL', ['id']);
          if (body.id !== id) throw fhirError(400, 'invalid', 'VLM_FHIR_ID_MISMATCH', 'The resource id differs from the URL id', ['id']);
          current = await services.repository.index.current(type, id);
        } else {
          const [match] = await findMatches(services, type, entry.query, 'criteria', { request, interaction: 'update' });
          if (match) {
            if (body.id !== undefined && body.id !== match.id) {
              throw fhirError(400, 'invalid', 'VLM_FHIR_ID_MISMATCH', 'The resource id differs from the id of the matching resource', ['id']);
            }
            id = match.id;
            current = match;
          } else {
            id = body.id === undefined ? randomUUID() : checkId(String(body.id));
            current = await services.repository.index.current(type, id);
            if (current && !current.deleted) {
              throw fhirError(409, 'conflict', 'VLM_FHIR_ID_EXISTS', 'The resource id names a resource that does not match the criteria');
            }
          }
        }
        checkIfMatch(request, current);
        checkIfNoneMatch(request, current);
        const created = !current || current.deleted;
        return {
          entry,
          request,
          target: { type, id },
          status: created ? 201 : 200,
          op: { method: 'update', type, id, expectedVersion: current?.versionId ?? 0 },
        };
      }
      case 'PATCH': {
        let current: VersionRecord;
        if (!conditional) current = await requireCurrent(services, type, second);
        else {
          const [match] = await findMatches(services, type, entry.query, 'criteria', { request, interaction: 'patch' });
          if (!match) throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', 'No resource matches the criteria');
          current = match;
        }
        checkIfMatch(request, current);
        return {
          entry,
          request,
          target: { type, id: current.id },
          status: 200,
          current,
          op: { method: 'patch', type, id: current.id, expectedVersion: current.versionId },
        };
      }
      case 'DELETE': {
        const current = conditional
          ? (await findMatches(services, type, entry.query, 'criteria', { request, interaction: 'delete' }))[0]
          : await services.repository.index.current(type, checkId(second));
        checkIfMatch(request, current);
        if (!current || current.deleted) return { entry, request, status: 204 };
        return {
          entry,
          request,
          target: { type, id: current.id },
          status: 204,
          op: { method: 'delete', type, id: current.id, expectedVersion: current.versionId },
        };
      }
    }
  }

  /** GET / HEAD: find the GET interaction the URL names, and check its shaping parameters now. */
  #planRead(entry: BundleEntry): Plan {
    const match = matchRoute(this.#options.routes(), entry.segments);
    if (!match) throw fhirError(404, 'not-found', 'VLM_FHIR_NO_ROUTE', 'No FHIR interaction at this request.url');
    const { route, params } = match;
    if (params.type !== undefined) this.#requireType(params.type);
    if (params.ctype !== undefined) this.#requireType(params.ctype);
    const request = this.#entryRequest(entry, params);
    summaryMode(request);
    elementsList(request);
    return { entry, request, status: 200, read: { route, request } };
  }

  /** Two entries of a transaction may not act on the same resource (http://hl7.org/fhir/R4/http.html#trules). */
  #checkOneEntryPerResource(plans: Plan[]): void {
    const seen = new Map<string, number>();
    for (const plan of plans) {
      if (!plan.target) continue;
      const key = `${plan.target.type}/${plan.target.id}`;
      const first = seen.get(key);
      if (first !== undefined) {
        const [a, b] = [first, plan.entry.index].sort((x, y) => x - y);
        throw fhirError(400, 'invalid', 'VLM_BUNDLE_DUPLICATE_RESOURCE', `Entries ${a} and ${b} act on the same resource`, [
          `Bundle.entry[${a}]`,
          `Bundle.entry[${b}]`,
        ]);
      }
      seen.set(key, plan.entry.index);
    }
  }

  /**
   * Resolve the references of a writing entry and fill its version's content: fullUrls of the
   * Bundle's entries (`fullUrls`) become `Type/id`, conditional references are searched.
   * A transaction refuses `urn:uuid:` / `urn:oid:` references that name no entry; a batch
   * refuses references to its other entries (`others`) and keeps any other URN as written.
   */
  async #finish(plan: Plan, fullUrls: ReadonlyMap<string, string>, mode: 'batch' | 'transaction', others?: ReadonlySet<string>): Promise<void> {
    const op = plan.op;
    if (!op || op.method === 'delete') return;
    const { entry } = plan;
    const rewrite = new Map<string, string>();
    for (const reference of collectReferences(entry.resource)) {
      const target = fullUrls.get(reference);
      if (target !== undefined) {
        rewrite.set(reference, target);
      } else if (others?.has(reference)) {
        throw fhirError(400, 'invalid', 'VLM_BUNDLE_ENTRY_REFERENCE', `A batch entry may not reference another entry (${reference})`);
      } else if (mode === 'transaction' && isPlaceholder(reference)) {
        throw fhirError(400, 'invalid', 'VLM_BUNDLE_UNRESOLVED_REFERENCE', `The reference ${reference} names no entry of the transaction`);
      } else if (conditionalReference(reference)) {
        rewrite.set(reference, await this.#resolveConditional(reference));
      }
    }
    const resource = rewriteReferences(entry.resource!, rewrite);
    const exact = entry.exact ? rewriteReferences(entry.exact, rewrite) : undefined;
    if (op.method === 'patch') {
      const stored = await this.#services.loadResource(plan.current!, this.#request.signal);
      const { patched, exact: exactPatched } = patchedContent(stored!, resource, exact);
      op.resource = patched;
      if (exactPatched) op.exact = exactPatched;
      return;
    }
    op.resource = resource;
    if (exact) op.exact = exact;
  }

  /** `Type?criteria` → `Type/id` of its one match; 404 for none, 412 for several. */
  async #resolveConditional(reference: string): Promise<string> {
    const known = this.#resolved.get(reference);
    if (known !== undefined) return known;
    const { type, query } = conditionalReference(reference)!;
    if (!this.#services.resourceTypes.has(type)) {
      throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_REFERENCE', `The conditional reference names an unknown type: ${type}`);
    }
    let criteria: [string, string][];
    try {
      criteria = parseCriteria(query);
    } catch {
      throw fhirError(400, 'invalid', 'VLM_BUNDLE_BAD_REFERENCE', 'A conditional reference cannot be decoded');
    }
    const [match] = await findMatches(this.#services, type, criteria, `The conditional reference ${reference}`, {
      request: this.#request,
      interaction: 'search',
    });
    if (!match) throw fhirError(404, 'not-found', 'VLM_BUNDLE_REFERENCE_NOT_FOUND', `No resource matches the conditional reference ${reference}`);
    const target = `${type}/${match.id}`;
    this.#resolved.set(reference, target);
    return target;
  }

  /** When the writer refused a transaction's content, find the entry it was (the first invalid, in commit order). */
  #nameInvalidEntry(error: FhirError, writing: Plan[]): FhirError {
    if (!error.issues.some((i) => i.vellumCode === 'VLM_FHIR_INVALID_RESOURCE')) return error;
    const instant = new Date().toISOString();
    for (const plan of writing) {
      const op = plan.op!;
      if (!op.resource) continue;
      const { resourceType: _t, id: _i, meta, ...content } = op.resource;
      const stamped = { resourceType: op.type, id: op.id, meta: { ...(meta ?? {}), versionId: '1', lastUpdated: instant }, ...content };
      const invalid = this.#services.validator.validate(stamped, op.type).some((i) => i.severity === 'error');
      if (invalid) return atEntry(error, plan.entry.index);
    }
    return error;
  }

  /** The response entry of a committed version. */
  #writeEntry(plan: Plan, written: Written): ResponseEntry {
    const { record, resource } = written;
    const response: Record<string, unknown> = {
      status: statusLine(plan.status),
      ...(record.deleted ? {} : { location: `${record.type}/${record.id}/_history/${record.versionId}` }),
      etag: `W/"${record.versionId}"`,
      lastModified: new Date(record.lastUpdated).toISOString(),
    };
    return this.#shaped(plan.request, record, resource, response, plan.status === 201 ? 'Created' : record.deleted ? 'Deleted' : 'Updated');
  }

  /** Entries that write nothing: a matched `ifNoneExist`, a delete of nothing, a GET / HEAD. */
  async #answer(plan: Plan): Promise<ResponseEntry> {
    if (plan.existing) {
      const record = plan.existing;
      const response = {
        status: statusLine(200),
        location: `${record.type}/${record.id}/_history/${record.versionId}`,
        etag: `W/"${record.versionId}"`,
        lastModified: new Date(record.lastUpdated).toISOString(),
      };
      const resource = preferReturn(plan.request) === 'representation' ? await this.#services.loadResource(record, this.#request.signal) : undefined;
      return this.#shaped(plan.request, record, resource, response, 'An existing resource matches ifNoneExist');
    }
    if (plan.read) return this.#read(plan);
    return this.#shaped(plan.request, undefined, undefined, { status: statusLine(plan.status) }, 'Nothing to delete');
  }

  /** Body of a write's response entry under `Prefer: return=…`. */
  #shaped(
    request: FhirRequest,
    record: VersionRecord | undefined,
    resource: FhirResource | undefined,
    response: Record<string, unknown>,
    message: string,
  ): ResponseEntry {
    switch (preferReturn(request)) {
      case 'minimal':
        return { response };
      case 'OperationOutcome':
        return { response: { ...response, outcome: operationOutcome([{ severity: 'information', code: 'informational', diagnostics: message }]) } };
      default:
        return {
          ...(record && resource ? { fullUrl: `${this.#request.baseUrl}/${record.type}/${record.id}`, resource } : {}),
          response,
        };
    }
  }

  /** Run a GET / HEAD entry through its interaction; its failure is its own entry's answer. */
  async #read(plan: Plan): Promise<ResponseEntry> {
    const { route, request } = plan.read!;
    let result: FhirResponse;
    try {
      result = await route.handler(this.#services, request, this.#context);
    } catch (err) {
      return errorEntry(atEntryOf(err, plan.entry.index));
    }
    const headers = result.headers ?? {};
    const response: Record<string, unknown> = { status: statusLine(result.status) };
    const location = headers['Content-Location'] ?? headers['Location'];
    if (location) response.location = location;
    if (headers['ETag']) response.etag = headers['ETag'];
    const modified = headers['Last-Modified'];
    if (modified && !Number.isNaN(Date.parse(modified))) response.lastModified = new Date(modified).toISOString();
    let resource = result.resource as FhirResource | undefined;
    if (plan.entry.method === 'HEAD' || result.status === 304) resource = undefined;
    if (resource && !result.raw && resource.resourceType !== 'Bundle' && resource.resourceType !== 'OperationOutcome') {
      const summary = summaryMode(request);
      const elements = elementsList(request);
      if (summary || elements) resource = subset(resource, summary, elements, this.#services.definitions);
    }
    const fullUrl = resource?.id && resource.resourceType !== 'Bundle' ? `${this.#request.baseUrl}/${resource.resourceType}/${resource.id}` : undefined;
    return { ...(fullUrl ? { fullUrl } : {}), ...(resource ? { resource } : {}), response };
  }
}

/** Check that a POST / PUT entry's resource is of the URL's type. */
function checkResourceType(entry: BundleEntry, type: string): void {
  if (entry.resource?.resourceType !== type) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_TYPE_MISMATCH', `The entry's resourceType must be ${type}`, ['resourceType']);
  }
}

/**
 * `ifNoneMatch` on a PUT entry (RFC 9110 §13.1.2): `*` refuses to replace an existing resource,
 * an ETag refuses to replace that version. Raises 412 VLM_BUNDLE_IF_NONE_MATCH.
 */
function checkIfNoneMatch(request: FhirRequest, current: VersionRecord | undefined): void {
  const header = request.headers['if-none-match'];
  if (header === undefined || !current || current.deleted) return;
  const tags = header.split(',').map((t) => t.trim().replace(/^W\//, ''));
  if (tags.includes('*') || tags.includes(`"${current.versionId}"`)) {
    throw fhirError(412, 'conflict', 'VLM_BUNDLE_IF_NONE_MATCH', 'ifNoneMatch matches the current version');
  }
}

/** The GET route a URL's path segments name, preferring literal segments over parameters. */
function matchRoute(routes: readonly Route[], segments: string[]): { route: Route; params: Record<string, string> } | undefined {
  let best: { route: Route; params: Record<string, string>; literal: number } | undefined;
  for (const route of routes) {
    if (route.method !== 'GET') continue;
    const parts = route.path.split('/').filter(Boolean);
    if (parts.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let literal = 0;
    let ok = true;
    parts.forEach((part, i) => {
      if (part.startsWith(':')) params[part.slice(1)] = segments[i]!;
      else if (part === segments[i]) literal++;
      else ok = false;
    });
    if (ok && (!best || literal > best.literal)) best = { route, params, literal };
  }
  return best && { route: best.route, params: best.params };
}

function atEntryOf(err: unknown, index: number): FhirError {
  return atEntry(err instanceof FhirError ? err : toFhirError(err).error, index);
}

/** A failed entry of a batch (or a failed read): its status and OperationOutcome in `response.outcome`. */
function errorEntry(err: unknown): ResponseEntry {
  const error = err instanceof FhirError ? err : toFhirError(err).error;
  return { response: { status: statusLine(error.status), outcome: operationOutcome(error.issues) } };
}
