/**
 * Patient/$everything — http://hl7.org/fhir/R4/patient-operation-everything.html
 * GET [base]/Patient/[id]/$everything[?_since=…&_type=…&_count=…]: the patient, every resource
 * in its compartment (R4 Patient CompartmentDefinition), and the resources they reference that
 * are outside any patient compartment (Organization, Practitioner, Medication, Location…), as a
 * paged `searchset`. Matches are ordered by type then id; referenced resources come with each
 * page as `search.mode = include`. `_since` keeps resources changed since an instant; `_type`
 * keeps the listed types (referenced ones included). AuditEvents (in the compartment by R4's
 * definition, but the server's record of accesses, not the patient's record) come only when
 * `_type` names them, and only to those who may read them (access.ts `auditHidden`).
 *
 * Paging is keyset paging over (type, id), the matches' order (interactions/paging.ts): a page
 * link's sealed cursor holds the type and id of the page's last (`next`) or first (`previous`)
 * match, and the page continues from there type by type, so resources added to or removed from
 * the record meanwhile do not shift later pages. `total` is counted at each request.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import type { IndexClause } from '../../storage/search-types.ts';
import { assertVisibleLoaded, AUDIT_TYPE, auditHidden, compartmentClause, inCompartmentType, screened, screenRecords } from '../access.ts';
import { dateRange } from '../dates.ts';
import { fhirError } from '../errors.ts';
import { queryValue, type FhirRequest, type FhirResource, type FhirResponse } from '../request.ts';
import { gatherIncludes } from '../search/include.ts';
import type { FhirServices } from '../services.ts';
import { requireCurrent } from '../interactions/common.ts';
import { openCursor, pageCount, pageLinks, type CursorBinding } from '../interactions/paging.ts';
import type { SortValue } from '../../storage/search-types.ts';

function offsetOf(request: FhirRequest): number {
  const raw = queryValue(request, '_offset');
  if (raw === undefined) return 0;
  if (!/^\d{1,9}$/.test(raw)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_offset must be a whole number', ['_offset']);
  return Number(raw);
}

export async function everything(services: FhirServices, request: FhirRequest): Promise<FhirResponse> {
  if (request.resourceType !== 'Patient') {
    throw fhirError(404, 'not-supported', 'VLM_FHIR_NO_ROUTE', '$everything is defined on Patient');
  }
  const patient = await requireCurrent(services, 'Patient', request.id!);
  await assertVisibleLoaded(services, request, patient);
  const id = patient.id;

  // The audit trail is in the compartment too, but it is not the patient's record: only on request (_type).
  let types = [...services.resourceTypes].filter((type) => inCompartmentType(services, type) && type !== 'AuditEvent').sort();
  const typeParam = queryValue(request, '_type');
  let wanted: Set<string> | undefined;
  if (typeParam !== undefined) {
    wanted = new Set(typeParam.split(',').map((t) => t.trim()));
    for (const type of wanted) {
      if (!services.resourceTypes.has(type)) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', `_type: ${type} is not a resource type`, ['_type']);
    }
    types = [...services.resourceTypes].filter((type) => inCompartmentType(services, type) && wanted!.has(type)).sort();
  }
  // A consent-gated caller gets the classes the patient's consents permit it (the rest are not
  // counted either, so `total` reveals nothing withheld).
  const gate = request.consent;
  // Classes whose decision needs each record's facts (data conditions) are searched and decided record by record.
  if (gate) types = types.filter((type) => gate.allowed(type, patient.keyScope) || gate.needsFacts(type, patient.keyScope));
  // AuditEvents withheld from the caller (access.ts `auditHidden`) are not counted or returned even when `_type` names them.
  if (auditHidden(request)) types = types.filter((type) => type !== AUDIT_TYPE);
  const where = (type: string): IndexClause[] => {
    const clauses: IndexClause[] = [
      type === 'Patient' ? { negate: false, anyOf: [{ kind: 'id', id }] } : compartmentClause(services, type, id)!,
    ];
    if (since !== undefined) clauses.push({ negate: false, anyOf: [{ kind: 'lastUpdated', prefix: 'ge', low: since, high: since }] });
    return clauses;
  };
  let since: number | undefined;
  const sinceRaw = queryValue(request, '_since');
  if (sinceRaw !== undefined) {
    since = dateRange(sinceRaw)?.low;
    if (since === undefined) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_PARAMETER', '_since must be an instant', ['_since']);
  }
  const count = pageCount(request);
  const offset = offsetOf(request);
  const index = services.repository.index;
  const keep = request.query.filter(([name]) => ['_since', '_type', '_format', '_pretty'].includes(name));
  const binding: CursorBinding = { interaction: 'everything', path: `Patient/${id}/$everything`, params: keep.filter(([n]) => n === '_since' || n === '_type') };
  const position = openCursor(services, binding, request, [2]);
  const at = position && typeof position.key[0] === 'string' && typeof position.key[1] === 'string' ? { type: position.key[0], id: position.key[1] } : undefined;
  if (position && !at) throw fhirError(400, 'invalid', 'VLM_FHIR_BAD_CURSOR', 'The page cursor is not valid for this query', ['_cursor']);

  // How many each type has (the total), then the page across the types in (type, id) order.
  const sizes: [string, number][] = [];
  for (const type of types) {
    const page = await index.search({ resourceType: type, where: where(type), sort: [], count: 0, offset: 0, wantTotal: true });
    if (page.total) sizes.push([type, page.total]);
  }
  const total = sizes.reduce((n, [, size]) => n + size, 0);
  // One match more than the page tells whether another page follows (or, backwards, precedes).
  const want = count > 0 ? count + 1 : 0;
  let records: VersionRecord[] = [];
  let keys: SortValue[][] = [];
  const backwards = position?.direction === 'before';
  if (backwards) {
    // The matches just before the position: its type from the position down, then earlier types.
    for (const [type] of [...sizes].reverse()) {
      if (records.length >= want) break;
      if (type > at!.type) continue;
      const page = await index.search({
        resourceType: type,
        where: where(type),
        sort: [],
        count: want - records.length,
        offset: 0,
        wantTotal: false,
        keyset: type === at!.type ? { direction: 'before', key: [at!.type, at!.id], inclusive: position!.inclusive === true } : { direction: 'before' },
      });
      records = [...page.records, ...records];
      keys = [...page.keys, ...keys];
    }
  } else {
    let skip = offset;
    for (const [type, size] of sizes) {
      if (records.length >= want) break;
      if (at && type < at.type) continue;
      if (!at && skip >= size) {
        skip -= size;
        continue;
      }
      const page = await index.search({
        resourceType: type,
        where: where(type),
        sort: [],
        count: want - records.length,
        offset: skip,
        wantTotal: false,
        ...(at && type === at.type ? { keyset: { direction: 'after' as const, key: [at.type, at.id], inclusive: position!.inclusive === true } } : {}),
      });
      records.push(...page.records);
      keys.push(...page.keys);
      skip = 0;
    }
  }
  const extra = records.length > count;
  if (extra) {
    records = backwards ? records.slice(records.length - count) : records.slice(0, count);
    keys = backwards ? keys.slice(keys.length - count) : keys.slice(0, count);
  }

  const entry: Record<string, unknown>[] = [];
  // A record of the compartment whose key scope is another patient's is decided for that patient.
  const screenedRecords = screened(request) ? await screenRecords(services, request, records) : records.map((record): { record: VersionRecord; resource?: FhirResource } => ({ record }));
  const shown = screenedRecords.map((s) => s.record);
  for (const { record, resource: loaded } of screenedRecords) {
    const resource = loaded ?? (await services.loadResource(record, request.signal));
    if (resource) entry.push({ fullUrl: `${request.baseUrl}/${record.type}/${record.id}`, resource, search: { mode: 'match' } });
  }
  if (shown.length) {
    const included = await gatherIncludes(
      { registry: services.registry, search: (q) => index.search(q) },
      [{ name: '_include', reverse: false, iterate: false, sourceType: null, params: null }],
      shown,
    );
    for (const record of included.records) {
      // Only what lies outside every patient compartment: the compartment's own resources are matches.
      if (inCompartmentType(services, record.type) || (wanted && !wanted.has(record.type))) continue;
      const resource = await services.loadResource(record, request.signal);
      if (resource) entry.push({ fullUrl: `${request.baseUrl}/${record.type}/${record.id}`, resource, search: { mode: 'include' } });
    }
  }
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      total,
      link: pageLinks(services, request, `${request.baseUrl}/Patient/${id}/$everything`, keep, binding, {
        count,
        offset,
        position,
        firstKey: keys[0],
        lastKey: keys[keys.length - 1],
        hasPrevious: backwards ? extra : position !== undefined || offset > 0,
        hasNext: backwards ? true : extra,
      }),
      ...(entry.length ? { entry } : {}),
    },
  };
}
