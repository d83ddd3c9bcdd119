/**
 * Bulk Data export — FHIR Bulk Data Access IG 2.0 (https://hl7.org/fhir/uv/bulkdata/export.html),
 * "Flat FHIR": kick-off, status polling, the manifest, file download and cancellation.
 *
 * - Kick-off: `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`
 *   with `Prefer: respond-async` → 202 and `Content-Location` (the status URL). The job holds a
 *   snapshot taken at kick-off (`transactionTime`): exactly the versions current then.
 * - Status: `GET [base]/$export-status/[job]` → 202 (`X-Progress`, `Retry-After`) while it runs,
 *   200 with the manifest when done; `DELETE` cancels and removes the files (202).
 * - Files: `GET [base]/$export-file/[job]/[name]` with the same client's token.
 *
 * Who sees what is decided as for a search (access.ts), resource by resource, when the job runs
 * (runner.ts). Parameters and their errors are in docs/bulk-data.md.
 */
import { randomUUID } from 'node:crypto';
import type { JWK } from 'jose';
import type { ExportJobRow } from '../../storage/index-store.ts';
import { AUDIT_TYPE, assertVisibleLoaded, auditHidden, inCompartmentType, matchingRequest } from '../access.ts';
import { decide, insufficientScope, type Principal } from '../auth/verify.ts';
import { dateRange } from '../dates.ts';
import { FhirError, fhirError } from '../errors.ts';
import { requireCurrent } from '../interactions/common.ts';
import { planQuery } from '../interactions/search.ts';
import type { FhirRequest, FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import type { ExportFiles } from './files.ts';
import { RECIPIENT_ALG, RECIPIENT_ENC } from './files.ts';
import { ANONYMOUS_OWNER, storePrincipal, type ExportProgress, type ExportSpec } from './job.ts';
import type { ExportRunner } from './runner.ts';

/** Bulk export as the FHIR layer sees it (absent: no `$export`). */
export interface BulkServices {
  runner: ExportRunner;
  files: ExportFiles;
  /** Most queued or running jobs per client (VELLUM_EXPORT_CONCURRENCY). */
  concurrency: number;
  /** The snapshot of a new job: the last committed seq and an instant every later version is after. */
  snapshot(): Promise<{ seq: number; time: number }>;
  /** Key scope of `Patient/{id}`. */
  patientScope(id: string): string;
  /** The encryption key (`use: enc`) a client registered, if any. */
  recipientKey(clientId: string): Promise<JWK | undefined>;
}

export const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
const PARAMETERS = new Set(['_outputFormat', '_since', '_type', '_typeFilter', '_elements', 'patient', 'includeAssociatedData']);
/** Parameters of every request that shape the response, not the export. */
const IGNORED = new Set(['_format', '_pretty']);

/** Extension names in the manifest (Bulk Data reserves `extension` for servers). */
export const PROOFS_EXTENSION = 'https://vellum.dev/fhir/bulk/proofs';
export const ENCRYPTION_EXTENSION = 'https://vellum.dev/fhir/bulk/encryption';

const bad = (code: string, diagnostics: string, expression?: string) =>
  fhirError(400, code === 'VLM_BULK_UNSUPPORTED_PARAMETER' ? 'not-supported' : 'invalid', code, diagnostics, expression ? [expression] : undefined);

function preferences(request: FhirRequest): { async: boolean; lenient: boolean } {
  const prefer = request.headers['prefer'] ?? '';
  return { async: /(?:^|[;,\s])respond-async(?:$|[;,\s])/.test(prefer), lenient: /(?:^|[;,\s])handling\s*=\s*lenient/.test(prefer) };
}

/** The kick-off's parameters: the URL's, and (POST) a Parameters body's. */
function parameters(request: FhirRequest): [string, string][] {
  const out = request.query.filter(([name]) => !IGNORED.has(name));
  if (request.method !== 'POST' || request.body === undefined) return out;
  const body = request.body as { resourceType?: string; parameter?: unknown };
  if (body.resourceType !== 'Parameters' || (body.parameter !== undefined && !Array.isArray(body.parameter))) {
    throw bad('VLM_BULK_BAD_PARAMETERS', 'A POST kick-off takes a Parameters resource');
  }
  for (const p of (body.parameter ?? []) as Record<string, unknown>[]) {
    const name = typeof p?.name === 'string' ? p.name : '';
    const value =
      typeof p.valueString === 'string' ? p.valueString
      : typeof p.valueInstant === 'string' ? p.valueInstant
      : typeof p.valueCode === 'string' ? p.valueCode
      : typeof p.valueDateTime === 'string' ? p.valueDateTime
      : typeof (p.valueReference as { reference?: unknown } | undefined)?.reference === 'string' ? (p.valueReference as { reference: string }).reference
      : undefined;
    if (!name || value === undefined) throw bad('VLM_BULK_BAD_PARAMETERS', `Parameter ${name || '(unnamed)'} has no value Vellum reads`, name || undefined);
    out.push([name, value]);
  }
  return out;
}

const list = (values: string[]): string[] => values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);

/**
 * The owner of a caller's jobs: the client, and the user when a user stands behind the token (the
 * users of one app, a public patient app say, never see each other's jobs nor share their limit).
 */
const ownerOf = (principal: Principal | undefined): string =>
  !principal ? ANONYMOUS_OWNER : principal.subject === principal.clientId ? principal.clientId : `${principal.clientId} ${principal.subject}`;

/** The tail of each server's kick-offs (see `oneKickOffAtATime`). */
const kickOffTails = new WeakMap<BulkServices, Promise<unknown>>();

/** Run `fn` after the kick-offs before it (of this server) have checked the limit and made their job. */
function oneKickOffAtATime<T>(bulk: BulkServices, fn: () => Promise<T>): Promise<T> {
  const run = (kickOffTails.get(bulk) ?? Promise.resolve()).then(fn, fn);
  kickOffTails.set(bulk, run.catch(() => undefined));
  return run;
}

export async function exportKickOff(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const bulk = services.bulk;
  if (!bulk) throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', 'Bulk export is not enabled');
  const level: ExportSpec['level'] =
    request.resourceType === undefined ? 'system'
    : request.resourceType === 'Patient' && request.id === undefined ? 'patient'
    : request.resourceType === 'Group' && request.id !== undefined ? 'group'
    : (() => {
        throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', '$export is defined at system level, on Patient and on a Group');
      })();
  const prefer = preferences(request);
  if (!prefer.async) throw bad('VLM_BULK_PREFER_ASYNC', 'A bulk export needs the header Prefer: respond-async');
  const params = parameters(request);
  const values = (name: string) => params.filter(([n]) => n === name).map(([, v]) => v);
  const unsupported = [...new Set(params.map(([n]) => n).filter((n) => !PARAMETERS.has(n)))];
  if (unsupported.length && !prefer.lenient) throw bad('VLM_BULK_UNSUPPORTED_PARAMETER', `Unsupported parameters: ${unsupported.join(', ')}`, unsupported[0]);

  for (const format of values('_outputFormat')) {
    if (!OUTPUT_FORMATS.has(format.trim().toLowerCase())) throw bad('VLM_BULK_BAD_OUTPUT_FORMAT', 'Vellum exports application/fhir+ndjson only', '_outputFormat');
  }
  let since: number | undefined;
  for (const raw of values('_since')) {
    since = dateRange(raw)?.low;
    if (since === undefined) throw bad('VLM_BULK_BAD_SINCE', '_since must be an instant', '_since');
  }

  const principal = request.principal;
  // A caller confined to one patient's compartment (a patient user, a patient/ token) exports that compartment only.
  const base: FhirRequest = { method: 'GET', query: [], headers: {}, baseUrl: request.baseUrl, ...(principal ? { principal } : {}) };
  const confined = principal ? (await matchingRequest(services, base, 'Patient', 'read')).restriction : undefined;
  const patientLevel = level !== 'system' || confined !== undefined;

  // Types: all (compartment types at Patient and Group level), or those `_type` names.
  const named = list(values('_type'));
  for (const type of named) {
    if (!services.resourceTypes.has(type) && !prefer.lenient) throw bad('VLM_BULK_BAD_TYPE', `${type} is not a resource type`, '_type');
    if (services.resourceTypes.has(type) && patientLevel && !inCompartmentType(services, type) && !prefer.lenient) {
      throw bad('VLM_BULK_BAD_TYPE', `${type} is not in the Patient compartment`, '_type');
    }
  }
  // The audit trail is not a patient's record: exported only when `_type` names it.
  let types = named.length
    ? [...new Set(named)].filter((t) => services.resourceTypes.has(t))
    : [...services.resourceTypes].filter((t) => t !== AUDIT_TYPE).sort();
  if (patientLevel) types = types.filter((t) => inCompartmentType(services, t));
  if (principal) {
    const denied = types.filter((t) => !decide(principal, 'read', t).allowed);
    const namedDenied = denied.find((t) => named.includes(t));
    if (namedDenied) throw insufficientScope('read', namedDenied);
    types = types.filter((t) => !denied.includes(t));
    if (types.includes(AUDIT_TYPE) && auditHidden({ ...base, ...(confined ? { restriction: confined } : {}) })) {
      throw fhirError(403, 'forbidden', 'VLM_AUDIT_FORBIDDEN', 'Only administrators, and patients for their own, read AuditEvents');
    }
    if (types.length === 0) throw insufficientScope('read', named[0] ?? '*');
  }

  const typeFilters: Record<string, string[]> = {};
  for (const raw of values('_typeFilter')) {
    const at = raw.indexOf('?');
    const type = at < 0 ? raw : raw.slice(0, at);
    if (!services.resourceTypes.has(type)) throw bad('VLM_BULK_BAD_TYPE_FILTER', `_typeFilter: ${type.slice(0, 64)} is not a resource type`, '_typeFilter');
    const query = at < 0 ? '' : raw.slice(at + 1);
    const planned = planQuery(services, type, [...new URLSearchParams(query)], request.baseUrl);
    if (planned.unknown.length && !prefer.lenient) throw bad('VLM_BULK_BAD_TYPE_FILTER', `_typeFilter: unknown parameters ${planned.unknown.join(', ')}`, '_typeFilter');
    (typeFilters[type] ??= []).push(query);
  }

  let elements: Record<string, string[]> | undefined;
  for (const name of list(values('_elements'))) {
    const m = /^(?:([A-Z][A-Za-z0-9]*)\.)?([A-Za-z][A-Za-z0-9]*)$/.exec(name);
    if (!m || (m[1] !== undefined && !services.resourceTypes.has(m[1]))) throw bad('VLM_BULK_BAD_ELEMENTS', '_elements takes element names, optionally Type.element', '_elements');
    ((elements ??= {})[m[1] ?? '*'] ??= []).push(m[2]!);
  }
  if (elements?.['*']) for (const [type, names] of Object.entries(elements)) if (type !== '*') names.push(...elements['*']);

  let provenance = false;
  for (const value of list(values('includeAssociatedData'))) {
    if (value === 'LatestProvenanceResources') provenance = true;
    else if (!prefer.lenient) throw bad('VLM_BULK_UNSUPPORTED_PARAMETER', `includeAssociatedData ${value.slice(0, 64)} is not supported (LatestProvenanceResources is)`, 'includeAssociatedData');
  }

  // Whose compartments: a Group's members, the `patient` parameter, the caller's own.
  let keyScopes: string[] | undefined;
  const intersect = (scopes: string[]) => {
    keyScopes = keyScopes === undefined ? scopes : keyScopes.filter((s) => scopes.includes(s));
  };
  if (level === 'group') {
    const group = await requireCurrent(services, 'Group', request.id!);
    const resource = (await assertVisibleLoaded(services, request, group)) ?? (await services.loadResource(group, request.signal));
    const members = ((resource?.member ?? []) as { entity?: { reference?: string }; inactive?: boolean }[])
      .filter((m) => m.inactive !== true)
      .map((m) => /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(m.entity?.reference ?? '')?.[1])
      .filter((id): id is string => id !== undefined);
    intersect([...new Set(members)].map((id) => bulk.patientScope(id)));
  }
  const patients = list(values('patient'));
  if (patients.length) {
    const ids = patients.map((ref) => /^(?:.*\/)?Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(ref)?.[1]);
    if (ids.some((id) => id === undefined)) throw bad('VLM_BULK_BAD_PATIENT', 'patient takes references to Patient resources', 'patient');
    intersect(ids.map((id) => bulk.patientScope(id!)));
  }
  if (confined) intersect([confined.keyScope]);

  const owner = ownerOf(principal);
  const recipient = principal ? await bulk.recipientKey(principal.clientId) : undefined;
  // The limit's check and the new job's row are one step: concurrent kick-offs cannot both pass it.
  const id = await oneKickOffAtATime(bulk, async () => {
    const active = await services.repository.index.exportJobs.list(['queued', 'running'], owner);
    if (active.length >= bulk.concurrency) {
      throw new FhirError(
        429,
        [{ severity: 'error', code: 'throttled', vellumCode: 'VLM_BULK_TOO_MANY_JOBS', diagnostics: `At most ${bulk.concurrency} exports per client at a time` }],
        { 'Retry-After': '30' },
      );
    }
    const snapshot = await bulk.snapshot();
    const query = request.query.length ? `?${new URLSearchParams(request.query).toString()}` : '';
    const path = level === 'system' ? '$export' : level === 'patient' ? 'Patient/$export' : `Group/${request.id}/$export`;
    const spec: ExportSpec = {
      level,
      request: `${request.baseUrl}/${path}${query}`,
      snapshotSeq: snapshot.seq,
      transactionTime: snapshot.time,
      types,
      ...(since !== undefined ? { since } : {}),
      ...(Object.keys(typeFilters).length ? { typeFilters } : {}),
      ...(elements ? { elements } : {}),
      ...(keyScopes ? { keyScopes } : {}),
      patientScoped: patientLevel,
      provenance,
      ...(principal ? { principal: storePrincipal(principal) } : {}),
      ...(recipient ? { recipient } : {}),
    };
    const progress: ExportProgress = { typeIndex: 0, afterSeq: 0, parts: [], fileNo: 1, exported: 0 };
    const jobId = randomUUID();
    await services.repository.index.exportJobs.create({ id: jobId, owner, status: 'queued', createdAt: Date.now(), spec, progress });
    return jobId;
  });
  bulk.runner.kick();
  return {
    status: 202,
    headers: { 'Content-Location': `${request.baseUrl}/$export-status/${id}` },
    resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: 'The export was accepted; poll the Content-Location URL' }] },
  };
}

/** The caller's job `id`, or 404: unknown, expired, cancelled and other clients' jobs alike. */
async function ownJob(services: FhirServices, request: FhirRequest, id: string | undefined): Promise<ExportJobRow> {
  const job = id ? await services.repository.index.exportJobs.get(id) : undefined;
  const gone =
    !job || job.owner !== ownerOf(request.principal) || job.status === 'cancelled' || (job.expiresAt !== undefined && job.expiresAt <= Date.now());
  if (gone) throw fhirError(404, 'not-found', 'VLM_BULK_JOB_NOT_FOUND', 'No such export job');
  return job;
}

export async function exportStatus(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const job = await ownJob(services, request, request.id);
  const spec = job.spec as ExportSpec;
  const progress = job.progress as ExportProgress;
  if (job.status === 'queued' || job.status === 'running') {
    const at = spec.types[progress.typeIndex];
    return {
      status: 202,
      headers: {
        'X-Progress': `${progress.exported} resources exported${at && job.status === 'running' ? `, at ${at} (${progress.typeIndex + 1} of ${spec.types.length} types)` : ', queued'}`,
        'Retry-After': '1',
      },
    };
  }
  if (job.status === 'failed') throw fhirError(500, 'exception', progress.failure ?? 'VLM_BULK_JOB_FAILED', 'The export failed');
  const file = (name: string) => `${request.baseUrl}/$export-file/${job.id}/${name}`;
  const of = (kind: string) => progress.parts.filter((p) => p.kind === kind);
  const manifest: Record<string, unknown> = {
    transactionTime: new Date(spec.transactionTime).toISOString(),
    request: spec.request,
    requiresAccessToken: services.access !== undefined,
    output: of('output').map((p) => ({ type: p.type, url: file(p.name), count: p.count })),
    deleted: of('deleted').map((p) => ({ type: 'Bundle', url: file(p.name), count: p.count })),
    error: of('error').map((p) => ({ type: 'OperationOutcome', url: file(p.name), count: p.count })),
  };
  const extension: Record<string, unknown> = {};
  if (of('proofs').length) extension[PROOFS_EXTENSION] = of('proofs').map((p) => ({ output: file(p.of!), url: file(p.name), count: p.count }));
  if (spec.recipient) extension[ENCRYPTION_EXTENSION] = { alg: RECIPIENT_ALG, enc: RECIPIENT_ENC, ...(spec.recipient.kid ? { kid: spec.recipient.kid } : {}), contentType: 'application/jose' };
  if (Object.keys(extension).length) manifest.extension = extension;
  return {
    status: 200,
    headers: job.expiresAt ? { Expires: new Date(job.expiresAt).toUTCString() } : {},
    body: { type: 'application/json', data: Buffer.from(JSON.stringify(manifest)) },
  };
}

export async function exportCancel(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const job = await ownJob(services, request, request.id);
  const jobs = services.repository.index.exportJobs;
  if (job.status === 'running') {
    // The runner sees it between chunks, stops and removes what it wrote; should it not (a stop
    // came first), the row expires at once and the next sweep removes it.
    await jobs.update(job.id, { status: 'cancelled', expiresAt: Date.now() });
  } else {
    await jobs.remove(job.id);
  }
  await services.bulk!.files.remove(job.id);
  return {
    status: 202,
    resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'information', code: 'informational', diagnostics: 'The export was cancelled and its files removed' }] },
  };
}

export async function exportFile(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const job = await ownJob(services, request, request.id);
  const progress = job.progress as ExportProgress;
  const spec = job.spec as ExportSpec;
  const name = request.versionId;
  const listed = job.status === 'done' && progress.parts.some((p) => p.name === name);
  const data = listed ? await services.bulk!.files.read(job.id, name!, spec.recipient !== undefined) : undefined;
  if (!data) throw fhirError(404, 'not-found', 'VLM_BULK_FILE_NOT_FOUND', 'No such export file');
  return { status: 200, body: { type: spec.recipient ? 'application/jose' : 'application/fhir+ndjson', data } };
}
