/**
 * The AuditEvent builder: what it makes is valid R4, and its hand-made search rows are exactly
 * what the registry-driven FHIRPath extractor gives (the audit trail uses the fast rows).
 */
import t from 'tap';
import { actionOf, auditEvent, auditRows, type AuditInput } from '../../src/fhir/audit.ts';
import { createExtractor } from '../../src/fhir/search/extract.ts';
import { createSearchRegistry } from '../../src/fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../../src/fhir/validation/resource-types.ts';
import { createValidator } from '../../src/fhir/validation/validator.ts';

const BASE = 'http://vellum.test/fhir';
const principal = (over: Record<string, unknown> = {}) =>
  ({ clientId: 'client-1', subject: 'client-1', scopes: [], scope: '', context: 'system', purposeOfUse: 'TREAT', admin: false, expiresAt: 0, ...over }) as AuditInput['principal'];

const CASES: AuditInput[] = [
  { interaction: 'read', method: 'GET', status: 200, resourceType: 'Observation', id: 'o1', versionId: '3', patient: 'Patient/p1', principal: principal(), address: '10.0.0.7' },
  { interaction: 'read', method: 'GET', status: 200, resourceType: 'Patient', id: 'p1', versionId: '1', patient: 'Patient/p1', principal: principal({ fhirUser: 'Patient/p1', context: 'patient', patient: 'p1' }) },
  { interaction: 'search-type', method: 'GET', status: 200, resourceType: 'Observation', query: 'code=1234-5&_count=10', patient: 'Patient/p2', principal: principal({ fhirUser: 'Practitioner/d1', context: 'user', purposeOfUse: 'ETREAT' }) },
  { interaction: 'search-type', method: 'GET', status: 200, resourceType: 'Observation', query: '' },
  { interaction: 'create', method: 'POST', status: 201, resourceType: 'Encounter', id: 'e1', versionId: '1', entry: 2, principal: principal({ fhirUser: 'Organization/hie' }) },
  { interaction: 'delete', method: 'DELETE', status: 403, errorCode: 'VLM_AUTH_SCOPE_INSUFFICIENT', resourceType: 'Condition', id: 'c1', principal: principal() },
  { interaction: 'unrouted', method: 'GET', status: 401, errorCode: 'VLM_AUTH_TOKEN_MISSING', address: '::1' },
  { interaction: 'operation', method: 'GET', status: 200, resourceType: 'Patient', id: 'p9', operation: '$everything', patient: 'Patient/p9', principal: principal() },
  { interaction: 'history-system', method: 'GET', status: 500, errorCode: 'VLM_FAULT', query: '_since=2020-01-01' },
];

t.test('every AuditEvent made is valid R4, with the right action and outcome', async (t) => {
  const validator = createValidator();
  for (const input of CASES) {
    const event: any = { ...auditEvent(input, BASE, '2026-12-03T10:11:12.345Z'), id: 'a1' };
    const errors = validator.validate(event, 'AuditEvent').filter((i) => i.severity === 'error');
    t.same(errors, [], `${input.interaction} ${input.status}`);
    t.equal(event.outcome, input.status < 400 ? '0' : input.status < 500 ? '4' : '8');
  }
  t.equal(actionOf('create', 'POST'), 'C');
  t.equal(actionOf('read', 'GET'), 'R');
  t.equal(actionOf('search-type', 'GET'), 'R');
  t.equal(actionOf('update', 'PUT'), 'U');
  t.equal(actionOf('conditional-delete', 'DELETE'), 'D');
  t.equal(actionOf('operation', 'GET'), 'E');
});

t.test('the fast search rows are the extractor rows', async (t) => {
  const extractor = createExtractor(createSearchRegistry(R4_RESOURCE_TYPES), { baseUrl: BASE });
  const canonical = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).sort();
  for (const input of CASES) {
    const event = { ...auditEvent(input, BASE, '2026-12-03T10:11:12.345Z'), id: 'a1', meta: { versionId: '1', lastUpdated: '2026-12-03T10:11:12.345Z' } };
    const expected = canonical(extractor.extract(event as never));
    t.ok(expected.length > 5, 'the extractor finds rows');
    t.same(canonical(auditRows(event, BASE)), expected, `${input.interaction} ${input.status}`);
  }
});
