/**
 * Search parsing: every supported syntax → IndexQuery, and the error code of each kind of
 * malformed value (http://hl7.org/fhir/R4/search.html).
 */
import t from 'tap';
import { DEFAULT_COUNT, MAX_COUNT, parseSearchRequest, splitEscaped, unescape } from '../../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import type { IndexClause } from '../../../src/storage/search-types.ts';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const BASE = 'https://vellum.example/fhir';
const NOW = Date.parse('2026-01-01T00:00:00Z');

function parse(type: string | null, query: string) {
  return parseSearchRequest(registry, type, [...new URLSearchParams(query)], { baseUrl: BASE, now: NOW });
}

/** The clauses of a query that must parse without errors or unknown parameters. */
function clauses(type: string | null, query: string): readonly IndexClause[] {
  const parsed = parse(type, query);
  if (parsed.errors.length || parsed.unknown.length) {
    throw new Error(`${query}: ${JSON.stringify(parsed.errors)} ${JSON.stringify(parsed.unknown)}`);
  }
  return parsed.query.where;
}

function errorCodes(type: string | null, query: string): string[] {
  return parse(type, query).errors.map((e) => `${e.param}:${e.code}`);
}

const ms = (iso: string) => Date.parse(iso);

t.test('defaults', async (t) => {
  const parsed = parse('Patient', '');
  t.same(parsed.query, { resourceType: 'Patient', where: [], sort: [], count: DEFAULT_COUNT, offset: 0, wantTotal: true });
  t.same(parsed.unknown, []);
  t.same(parsed.errors, []);
  t.same(parsed.result, []);
});

t.test('string', async (t) => {
  t.same(clauses('Patient', 'name=P%C3%89TER'), [{ negate: false, anyOf: [{ kind: 'string', param: 'name', op: 'starts', value: 'peter' }] }]);
  t.same(clauses('Patient', 'family:exact=Chalmers'), [
    { negate: false, anyOf: [{ kind: 'string', param: 'family', op: 'exact', value: 'Chalmers' }] },
  ]);
  t.same(clauses('Patient', 'family:contains=ALM'), [
    { negate: false, anyOf: [{ kind: 'string', param: 'family', op: 'contains', value: 'alm' }] },
  ]);
  t.same(clauses('Patient', 'family=a,b&family=c'), [
    {
      negate: false,
      anyOf: [
        { kind: 'string', param: 'family', op: 'starts', value: 'a' },
        { kind: 'string', param: 'family', op: 'starts', value: 'b' },
      ],
    },
    { negate: false, anyOf: [{ kind: 'string', param: 'family', op: 'starts', value: 'c' }] },
  ], 'comma = OR, repeat = AND');
  t.same(clauses('Patient', 'family=a\\,b'), [
    { negate: false, anyOf: [{ kind: 'string', param: 'family', op: 'starts', value: 'a,b' }] },
  ], 'escaped comma');
  t.same(clauses('Patient', 'family:missing=true'), [
    { negate: false, anyOf: [{ kind: 'missing', of: 'string', param: 'family', missing: true }] },
  ]);
  t.same(clauses('Patient', 'family='), [], 'empty value ignored');
});

t.test('token', async (t) => {
  const one = (q: string) => clauses('Observation', q)[0];
  t.same(one('code=http://loinc.org|1234-5'), { negate: false, anyOf: [{ kind: 'token', param: 'code', system: 'http://loinc.org', code: '1234-5' }] });
  t.same(one('code=|1234-5'), { negate: false, anyOf: [{ kind: 'token', param: 'code', system: null, code: '1234-5' }] });
  t.same(one('code=http://loinc.org|'), { negate: false, anyOf: [{ kind: 'token', param: 'code', system: 'http://loinc.org' }] });
  t.same(one('code=1234-5'), { negate: false, anyOf: [{ kind: 'token', param: 'code', code: '1234-5' }] });
  t.same(one('code=a\\|b'), { negate: false, anyOf: [{ kind: 'token', param: 'code', code: 'a|b' }] }, 'escaped pipe');
  t.same(one('code:not=a,b'), {
    negate: true,
    anyOf: [
      { kind: 'token', param: 'code', code: 'a' },
      { kind: 'token', param: 'code', code: 'b' },
    ],
  });
  t.same(one('code:text=Body%20W%C3%A9ight'), { negate: false, anyOf: [{ kind: 'token', param: 'code', text: 'body weight' }] });
  t.same(one('code:missing=false'), { negate: false, anyOf: [{ kind: 'missing', of: 'token', param: 'code', missing: false }] });
  t.same(clauses('Patient', '_tag=urn:t|x')[0], { negate: false, anyOf: [{ kind: 'token', param: '_tag', system: 'urn:t', code: 'x' }] });
});

t.test('date prefixes and precision', async (t) => {
  const one = (q: string) => clauses('Patient', q)[0]!.anyOf[0];
  t.same(one('birthdate=2020'), { kind: 'date', param: 'birthdate', prefix: 'eq', low: ms('2020-01-01T00:00:00Z'), high: ms('2020-12-31T23:59:59.999Z') });
  t.same(one('birthdate=ge2020-02'), { kind: 'date', param: 'birthdate', prefix: 'ge', low: ms('2020-02-01T00:00:00Z'), high: ms('2020-02-29T23:59:59.999Z') });
  for (const prefix of ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb']) {
    t.same(one(`birthdate=${prefix}2020-02-03`), { kind: 'date', param: 'birthdate', prefix, low: ms('2020-02-03T00:00:00Z'), high: ms('2020-02-03T23:59:59.999Z') }, prefix);
  }
  t.same(one('birthdate=2020-02-03T10:00:00%2B02:00'), {
    kind: 'date', param: 'birthdate', prefix: 'eq', low: ms('2020-02-03T08:00:00Z'), high: ms('2020-02-03T08:00:00.999Z'),
  }, 'zone offset, second precision');
  t.same(one('birthdate=2020-02-03T10:00'), {
    kind: 'date', param: 'birthdate', prefix: 'eq', low: ms('2020-02-03T10:00:00Z'), high: ms('2020-02-03T10:00:59.999Z'),
  }, 'no zone: read as UTC, minute precision');
  // ap: widened by 10% of the distance between the value and now (2026-01-01).
  const ap = one('birthdate=ap2016-01-01');
  const delta = Math.round(0.1 * (NOW - ms('2016-01-01T00:00:00Z')));
  t.same(ap, { kind: 'date', param: 'birthdate', prefix: 'ap', low: ms('2016-01-01T00:00:00Z') - delta, high: ms('2016-01-01T23:59:59.999Z') + delta });
  t.same(clauses('Patient', '_lastUpdated=gt2024-01-01')[0], {
    negate: false,
    anyOf: [{ kind: 'lastUpdated', prefix: 'gt', low: ms('2024-01-01T00:00:00Z'), high: ms('2024-01-01T23:59:59.999Z') }],
  });
});

t.test('number: implicit precision and prefixes', async (t) => {
  const one = (q: string) => clauses('RiskAssessment', q)[0]!.anyOf[0] as { prefix: string; value: number; low: number; high: number };
  const close = (a: number, b: number) => Math.abs(a - b) < 1e-12;
  let n = one('probability=100');
  t.ok(n.prefix === 'eq' && n.value === 100 && close(n.low, 99.5) && close(n.high, 100.5), '100 → [99.5, 100.5)');
  n = one('probability=100.00');
  t.ok(close(n.low, 99.995) && close(n.high, 100.005), '100.00 → [99.995, 100.005)');
  // Half a unit of the last significant digit, exponent included: 1e2 has one significant figure.
  n = one('probability=1e2');
  t.ok(n.value === 100 && close(n.low, 50) && close(n.high, 150), '1e2 → [50, 150)');
  n = one('probability=1.00e2');
  t.ok(n.value === 100 && close(n.low, 99.5) && close(n.high, 100.5), '1.00e2 → [99.5, 100.5)');
  n = one('probability=gt0.5');
  t.ok(n.prefix === 'gt' && n.value === 0.5);
  n = one('probability=ap100');
  t.ok(n.prefix === 'ap' && close(n.low, 90) && close(n.high, 110), 'ap ±10%');
  n = one('probability=-3');
  t.ok(n.value === -3 && close(n.low, -3.5));
});

t.test('quantity', async (t) => {
  const one = (q: string) => clauses('Observation', q)[0]!.anyOf[0] as Record<string, unknown>;
  t.match(one('value-quantity=5.4|http://unitsofmeasure.org|mg'), { kind: 'quantity', prefix: 'eq', value: 5.4, system: 'http://unitsofmeasure.org', code: 'mg' });
  const noSystem = one('value-quantity=le5.4||mg');
  t.match(noSystem, { prefix: 'le', value: 5.4, code: 'mg' });
  t.notOk('system' in noSystem);
  const bare = one('value-quantity=5.4');
  t.notOk('system' in bare || 'code' in bare);
});

t.test('reference', async (t) => {
  const one = (type: string, q: string) => clauses(type, q)[0]!.anyOf[0];
  t.same(one('Observation', 'subject=Patient/123'), { kind: 'reference', param: 'subject', id: '123', types: ['Patient'] });
  t.same(one('Observation', 'subject=Patient/123/_history/2'), { kind: 'reference', param: 'subject', id: '123', types: ['Patient'] });
  t.same(one('Observation', 'patient=123'), { kind: 'reference', param: 'patient', id: '123', types: ['Patient'] }, 'id: any target type');
  t.same(one('Observation', 'subject=123'), { kind: 'reference', param: 'subject', id: '123', types: ['Group', 'Device', 'Patient', 'Location'] });
  t.same(one('Observation', 'subject:Patient=123'), { kind: 'reference', param: 'subject', id: '123', types: ['Patient'] });
  t.same(one('Observation', `subject=${encodeURIComponent(`${BASE}/Patient/123`)}`), { kind: 'reference', param: 'subject', id: '123', types: ['Patient'] }, 'local absolute URL');
  t.same(one('Observation', 'subject=http://other.org/fhir/Patient/123'), { kind: 'reference', param: 'subject', url: 'http://other.org/fhir/Patient/123' });
  t.same(one('Observation', 'subject:missing=true'), { kind: 'missing', of: 'reference', param: 'subject', missing: true });
});

t.test('uri', async (t) => {
  const one = (q: string) => clauses('ValueSet', q)[0]!.anyOf[0];
  t.same(one('url=http://a.org/fhir/ValueSet/1'), { kind: 'uri', param: 'url', op: 'eq', value: 'http://a.org/fhir/ValueSet/1' });
  t.same(one('url:below=http://a.org/fhir'), { kind: 'uri', param: 'url', op: 'below', value: 'http://a.org/fhir' });
  t.same(one('url:above=http://a.org/fhir/ValueSet/1'), {
    kind: 'uri', param: 'url', op: 'above', prefixes: ['http://a.org/fhir/ValueSet/1', 'http://a.org/fhir/ValueSet', 'http://a.org/fhir', 'http://a.org'],
  });
});

t.test('_id, _type, _count, _offset, _sort, result and unknown parameters', async (t) => {
  t.same(clauses('Patient', '_id=a,b'), [{ negate: false, anyOf: [{ kind: 'id', id: 'a' }, { kind: 'id', id: 'b' }] }]);
  t.same(clauses(null, '_type=Patient,Observation'), [
    { negate: false, anyOf: [{ kind: 'type', type: 'Patient' }, { kind: 'type', type: 'Observation' }] },
  ]);
  t.same(clauses(null, '_tag=x'), [{ negate: false, anyOf: [{ kind: 'token', param: '_tag', code: 'x' }] }], 'system level: Resource params');

  let parsed = parse('Patient', '_count=0&_offset=20');
  t.equal(parsed.query.count, 0);
  t.equal(parsed.query.offset, 20);
  t.equal(parse('Patient', '_count=5000').query.count, MAX_COUNT, 'clamped');

  parsed = parse('Observation', '_sort=-date,code,_id,-_lastUpdated,value-quantity,subject');
  t.same(parsed.query.sort, [
    { of: 'date', param: 'date', descending: true },
    { of: 'token', param: 'code', descending: false },
    { of: 'id', param: '_id', descending: false },
    { of: 'lastUpdated', param: '_lastUpdated', descending: true },
    { of: 'quantity', param: 'value-quantity', descending: false },
    { of: 'reference', param: 'subject', descending: false },
  ]);

  parsed = parse('Patient', '_summary=count&_elements=id,name&_include=Patient:organization&_revinclude:iterate=Observation:subject&_total=none&_format=json&_pretty=true');
  t.same(parsed.result, [
    ['_summary', 'count'],
    ['_elements', 'id,name'],
    ['_include', 'Patient:organization'],
    ['_revinclude:iterate', 'Observation:subject'],
    ['_total', 'none'],
    ['_format', 'json'],
    ['_pretty', 'true'],
  ]);
  t.equal(parsed.query.wantTotal, false, '_total=none');
  t.same(parsed.query.where, []);

  parsed = parse('Patient', 'foo=1&general-practitioner.nope=x&_has:Observation:patient:nope=1&_text=a&_content=b&_query=q&_type=Patient&name=ok');
  t.same(parsed.unknown, ['foo', 'general-practitioner.nope', '_has:Observation:patient:nope', '_text', '_content', '_query', '_type']);
  t.same(parsed.errors, []);
  t.equal(parsed.query.where.length, 1);
  t.same(parse('Location', 'near=1|2|3').unknown, ['near'], 'special not supported');
});

t.test('malformed values: coded errors naming the parameter', async (t) => {
  t.same(errorCodes('Patient', 'birthdate=2020-13-01'), ['birthdate:VLM_SEARCH_BAD_DATE']);
  t.same(errorCodes('Patient', 'birthdate=yesterday'), ['birthdate:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('Patient', 'birthdate=xx2020'), ['birthdate:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('Patient', 'birthdate=2020,nope'), ['birthdate:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('Patient', '_lastUpdated=20200101'), ['_lastUpdated:VLM_SEARCH_BAD_DATE']);
  t.same(errorCodes('RiskAssessment', 'probability=abc'), ['probability:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('RiskAssessment', 'probability=1.2.3'), ['probability:VLM_SEARCH_BAD_NUMBER']);
  t.same(errorCodes('RiskAssessment', 'probability=gt'), ['probability:VLM_SEARCH_BAD_NUMBER']);
  t.same(errorCodes('Observation', 'value-quantity=5|mg'), ['value-quantity:VLM_SEARCH_BAD_QUANTITY']);
  t.same(errorCodes('Observation', 'value-quantity=five||mg'), ['value-quantity:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('Observation', 'subject=Foo/1'), ['subject:VLM_SEARCH_BAD_REFERENCE']);
  t.same(errorCodes('Observation', 'subject=not an id'), ['subject:VLM_SEARCH_BAD_REFERENCE']);
  t.same(errorCodes('Observation', 'subject:Group=Patient/1'), ['subject:Group:VLM_SEARCH_BAD_REFERENCE']);
  t.same(errorCodes('Observation', 'subject:Nope=1'), ['subject:Nope:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Observation', 'subject:identifier=x|1'), ['subject:identifier:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'name:foo=x'), ['name:foo:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'name:not=x'), ['name:not:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'gender:exact=male'), ['gender:exact:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'gender:in=http://vs'), ['gender:in:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'birthdate:exact=2020'), ['birthdate:exact:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('ValueSet', 'url:contains=x'), ['url:contains:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', '_id:exact=x'), ['_id:exact:VLM_SEARCH_BAD_MODIFIER']);
  t.same(errorCodes('Patient', 'gender:missing=maybe'), ['gender:missing:VLM_SEARCH_BAD_MISSING']);
  t.same(errorCodes('Patient', '_count=-1'), ['_count:VLM_SEARCH_BAD_COUNT']);
  t.same(errorCodes('Patient', '_count=ten'), ['_count:VLM_SEARCH_BAD_COUNT']);
  t.same(errorCodes('Patient', '_offset=1.5'), ['_offset:VLM_SEARCH_BAD_COUNT']);
  t.same(errorCodes('Patient', '_sort=nope'), ['_sort:VLM_SEARCH_BAD_SORT']);
  t.same(errorCodes('Patient', '_sort=_text'), ['_sort:VLM_SEARCH_BAD_SORT']);
  t.same(errorCodes(null, '_type=Nope'), ['_type:VLM_SEARCH_BAD_TYPE']);
  const parsed = parse('Patient', 'birthdate=bad&name=ok&gender:foo=x');
  t.same(parsed.errors, [
    { param: 'birthdate', code: 'VLM_SEARCH_BAD_PREFIX' },
    { param: 'gender:foo', code: 'VLM_SEARCH_BAD_MODIFIER' },
  ], 'every error is reported, valid parameters still parse');
  t.equal(parsed.query.where.length, 1);
});

t.test('escapes', async (t) => {
  t.same(splitEscaped('a\\,b,c', ','), ['a\\,b', 'c']);
  t.same(splitEscaped('a\\|b|c', '|').map(unescape), ['a|b', 'c']);
  t.equal(unescape('a\\$b\\\\c'), 'a$b\\c');
});
