/**
 * Patient/$everything — http://hl7.org/fhir/R4/patient-operation-everything.html
 * GET [base]/Patient/[id]/$everything[?_since=…&_type=…&_count=…]: the patient, every resource
 * in its compartment (R4 Patient CompartmentDefinition), and the resources they reference that
 * are outside any patient compartment (Organization, Practitioner, Medication, Location…), as a
 * paged `searchset`. Matches are ordered by type then id; referenced resources come with each
 * page as `search.mode = include`. `_since` keeps resources changed since an instant; `_type`
 * keeps the listed types (referenced ones included). AuditEvents (in the compartment by R4's
 * definition, but the server's record of accesses, not the patient's record) come only when
 * `_type` names them.
 */
import type { VersionRecord } from '../../storage/index-store.ts';
import type { IndexClause } from '../../storage/search-types.ts';
import { assertVisible, compartmentClause, inCompartmentType } from '../access.ts';
import { dateRange } from '../dates.ts';
import { fhirError } from '../errors.ts';
import { queryValue, type FhirRequest, type FhirResponse } from '../request.ts';
import { gatherIncludes } from '../search/include.ts';
import type { FhirServices } from '../services.ts';
import { requireCurrent } from '../interactions/common.ts';
import { pageCount, pageLinks } from '../interactions/paging.ts';

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
  assertVisible(services, request, patient);
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

  // How many each type has, then the page's slice across the types in order.
  const sizes: [string, number][] = [];
  for (const type of types) {
    const page = await index.search({ resourceType: type, where: where(type), sort: [], count: 0, offset: 0, wantTotal: true });
    if (page.total) sizes.push([type, page.total]);
  }
  const total = sizes.reduce((n, [, size]) => n + size, 0);
  const records: VersionRecord[] = [];
  let skip = offset;
  for (const [type, size] of sizes) {
    if (records.length >= count) break;
    if (skip >= size) {
      skip -= size;
      continue;
    }
    const page = await index.search({
      resourceType: type,
      where: where(type),
      sort: [{ of: 'id', param: '_id', descending: false }],
      count: count - records.length,
      offset: skip,
      wantTotal: false,
    });
    records.push(...page.records);
    skip = 0;
  }

  const entry: Record<string, unknown>[] = [];
  for (const record of records) {
    const resource = await services.loadResource(record, request.signal);
    if (resource) entry.push({ fullUrl: `${request.baseUrl}/${record.type}/${record.id}`, resource, search: { mode: 'match' } });
  }
  if (records.length) {
    const included = await gatherIncludes(
      { registry: services.registry, search: (q) => index.search(q) },
      [{ name: '_include', reverse: false, iterate: false, sourceType: null, params: null }],
      records,
    );
    for (const record of included.records) {
      // Only what lies outside every patient compartment: the compartment's own resources are matches.
      if (inCompartmentType(services, record.type) || (wanted && !wanted.has(record.type))) continue;
      const resource = await services.loadResource(record, request.signal);
      if (resource) entry.push({ fullUrl: `${request.baseUrl}/${record.type}/${record.id}`, resource, search: { mode: 'include' } });
    }
  }
  const keep = request.query.filter(([name]) => ['_since', '_type', '_format', '_pretty'].includes(name));
  return {
    status: 200,
    resource: {
      resourceType: 'Bundle',
      type: 'searchset',
      total,
      link: pageLinks(`${request.baseUrl}/Patient/${id}/$everything`, keep, { count, offset, total, returned: records.length }),
      ...(entry.length ? { entry } : {}),
    },
  };
}
