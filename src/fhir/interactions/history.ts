/**
 * history — http://hl7.org/fhir/R4/http.html#history
 * GET [base]/[type]/[id]/_history, [base]/[type]/_history, [base]/_history: every version,
 * newest first, as a `history` Bundle with request/response per entry. `_since`, `_at`, `_count`.
 * Pages are cut from a snapshot (the highest version sequence number when the first page was
 * served), so `next` links keep returning the same versions while others write. The links carry
 * a sealed cursor (paging.ts) holding the snapshot and the seq of the page's last (`next`) or
 * first (`previous`) version: each page is a keyset seek on the version sequence, not an OFFSET.
 * A client's own `_snapshot` and `_offset` are still honoured (without `_cursor`).
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import { dateRange } from '../dates.ts';
import { fhirError } from '../errors.ts';
import { queryValue, type FhirRequest, type FhirResponse } from '../request.ts';
import type { FhirServices } from '../services.ts';
import { assertVisibleLoaded, AUDIT_TYPE, auditHidden, inCompartmentType, screenRecords, visible } from '../access.ts';
import type { FhirResource } from '../request.ts';
import { checkId } from './common.ts';
import { openCursor, pageCount, pageLinks, type CursorBinding } from './paging.ts';

function requestOf(record: VersionRecord): { method: string; url: string } {
  switch (record.method) {
    case 'create':
      return { method: 'POST', url: record.type };
    case 'update':
      return { method: 'PUT', url: `${record.type}/${record.id}` };
    case 'patch':
      return { method: 'PATCH', url: `${record.type}/${record.id}` };
    case 'delete':
      return { method: 'DELETE', url: `${record.type}/${record.id}` };
  }
}

function statusOf(record: VersionRecord): string {
  if (record.deleted) return '204 No Content';
  return record.created ? '201 Created' : '200 OK';
}

function nonNegative(request: FhirRequest, name: string): number | undefined {
  const raw = queryValue(request, name);
  if (raw === undefined) return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', `${name} must be a whole number`, [name]);
  return Number(raw);
}

export async function history(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  const type = request.resourceType;
  const id = request.id === undefined ? undefined : checkId(request.id);
  if (type && id) {
    const current = await services.repository.index.current(type, id);
    // Another owner's Subscription is as if absent (access.ts `visible`).
    if (!current || (type === 'Subscription' && services.subscriptions?.hidden(request.principal, id))) {
      throw fhirError(404, 'not-found', 'VLM_FHIR_NOT_FOUND', `${type}/${id} is not known`);
    }
  }
  // Subscriptions belong to their owners: a non-administrator's type or system history may hold
  // other owners' versions, decided one by one (`visible`), so it carries no total either.
  const ownersScreened =
    request.principal !== undefined &&
    id === undefined &&
    (type === undefined || type === 'Subscription') &&
    services.subscriptions?.othersExist(request.principal) === true;
  // A patient-confined token: its compartment's versions of one type (deletions carry no data and
  // no compartment: an instance's deletions are shown with its other versions).
  let keyScope: string | undefined;
  if (request.restriction) {
    if (!type) throw fhirError(403, 'forbidden', 'VLM_AUTH_COMPARTMENT', 'A patient-confined token reads history one type at a time');
    if (inCompartmentType(services, type)) keyScope = request.restriction.keyScope;
  }
  // AuditEvents withheld from the caller (access.ts `auditHidden`) are left out of system history
  // by the index, so pages and `total` never count them (their type's own history is refused).
  const hideAudit = type === undefined && auditHidden(request);
  let since: number | undefined;
  const sinceRaw = queryValue(request, '_since');
  if (sinceRaw !== undefined) {
    const range = dateRange(sinceRaw);
    if (!range) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_since must be an instant', ['_since']);
    since = range.low;
  }
  let at: { low: number; high: number } | undefined;
  const atRaw = queryValue(request, '_at');
  if (atRaw !== undefined) {
    at = dateRange(atRaw);
    if (!at) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_at must be a date or dateTime', ['_at']);
  }
  const count = pageCount(request);
  const path = [type, id, '_history'].filter(Boolean).join('/');
  const keep = request.query.filter(([n]) => ['_since', '_at', '_format', '_pretty'].includes(n));
  const binding: CursorBinding = { interaction: 'history', path, params: keep.filter(([n]) => n === '_since' || n === '_at') };
  // A cursor's key is the seq of a version (or empty: from the newest version of its snapshot).
  const position = openCursor(services, binding, request, [0, 1]);
  if (position && position.snapshot === undefined) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_CURSOR', 'The page cursor is not valid for this query', ['_cursor']);
  if (position && queryValue(request, '_snapshot') !== undefined) {
    throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_cursor and _snapshot cannot be combined', ['_snapshot']);
  }
  const offset = nonNegative(request, '_offset') ?? 0;
  const maxSeq = position?.snapshot ?? nonNegative(request, '_snapshot') ?? (await services.repository.index.lastSeq());
  const seq = position?.key.length ? Number(position.key[0]) : undefined;
  if (seq !== undefined && !Number.isSafeInteger(seq)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_CURSOR', 'The page cursor is not valid for this query', ['_cursor']);
  const backwards = position?.direction === 'before' && seq !== undefined;
  // One version more than the page tells whether another page follows (or, backwards, precedes).
  const page = await services.repository.index.history({
    type,
    id,
    since,
    at,
    maxSeq,
    count: count > 0 ? count + 1 : 0,
    offset,
    ...(seq !== undefined ? (backwards ? { newerThan: position!.inclusive ? seq - 1 : seq } : { olderThan: position!.inclusive ? seq + 1 : seq }) : {}),
    ...(keyScope !== undefined ? { keyScope, withDeletions: id !== undefined } : {}),
    ...(hideAudit ? { excludeTypes: [AUDIT_TYPE] } : {}),
  });
  const extra = page.records.length > count;
  if (extra) page.records = backwards ? page.records.slice(1) : page.records.slice(0, count);
  if (id !== undefined && keyScope !== undefined && offset === 0 && seq === undefined && !page.records.some((r) => !r.deleted)) {
    // No version of this resource with data is in the compartment: it is not the caller's.
    throw fhirError(403, 'forbidden', 'VLM_AUTH_COMPARTMENT', "The resource is outside the patient's compartment this token is confined to");
  }
  // A consent-gated caller sees the versions its patients' consents permit. An instance's history
  // is all or nothing (403 when a version with data is withheld); in type and system history,
  // withheld versions and deletions (which carry no compartment) are left out, and so is `total`.
  let records = page.records;
  const loaded = new Map<VersionRecord, FhirResource>();
  if (request.consent) {
    if (id !== undefined) {
      for (const record of records) {
        if (record.deleted) continue;
        const resource = await assertVisibleLoaded(services, request, record);
        if (resource) loaded.set(record, resource);
      }
    } else {
      const shown = await screenRecords(services, request, records.filter((record) => !record.deleted));
      for (const s of shown) if (s.resource) loaded.set(s.record, s.resource);
      records = shown.map((s) => s.record);
    }
  } else if (auditHidden(request) || ownersScreened) {
    // Not gated, but AuditEvents or other owners' Subscriptions are withheld: what the index let through still passes the guard.
    records = records.filter((record) => visible(services, request, record));
  }
  const entry = [];
  for (const record of records) {
    const resource = record.deleted ? undefined : (loaded.get(record) ?? (await services.loadResource(record, request.signal)));
    entry.push({
      fullUrl: `${request.baseUrl}/${record.type}/${record.id}`,
      ...(resource ? { resource } : {}),
      request: requestOf(record),
      response: {
        status: statusOf(record),
        etag: `W/"${record.versionId}"`,
        lastModified: new Date(record.lastUpdated).toISOString(),
      },
    });
  }
  const first = page.records[0];
  const last = page.records[page.records.length - 1];
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'history',
      ...((request.consent && id === undefined) || ownersScreened ? {} : { total: page.total }),
      link: pageLinks(services, request, `${request.baseUrl}/${path}`, keep, binding, {
        count,
        offset,
        position,
        snapshot: maxSeq,
        firstKey: first ? [first.seq] : undefined,
        lastKey: last ? [last.seq] : undefined,
        hasPrevious: backwards ? extra : seq !== undefined || offset > 0,
        hasNext: backwards ? true : extra,
      }),
      ...(entry.length ? { entry } : {}),
    },
  };
}
