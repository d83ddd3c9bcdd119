/**
 * Parsing chains, `_has`, composites, `:of-type` and system-level `_type` scoping into IndexQuery
 * shapes, and the error code of each malformed form (http://hl7.org/fhir/R4/search.html#chaining,
 * #has, #composite, #token). The SQL they plan binds every value (checked at the end).
 */
import t from 'tap';
import { MAX_CHAIN, parseSearchRequest } from '../../../src/fhir/search/parse.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import { planCount, planSearch } from '../../../src/storage/sqlite/search-sql.ts';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const BASE = 'https://vellum.example/fhir';
const NOW = Date.parse('2026-01-01T00:00:00Z');

function parse(type: string | null, query: string) {
  return parseSearchRequest(registry, type, [...new URLSearchParams(query)], { baseUrl: BASE, now: NOW });
}

function where(type: string | null, query: string) {
  const parsed = parse(type, query);
  if (parsed.errors.length || parsed.unknown.length) throw new Error(`${query}: ${JSON.stringify(parsed.errors)} ${JSON.stringify(parsed.unknown)}`);
  return parsed.query.where;
}

function errorCodes(type: string | null, query: string): string[] {
  return parse(type, query).errors.map((e) => `${e.param}:${e.code}`);
}

const name = (param: string, value: string) => ({ kind: 'string', param, op: 'starts', value });

t.test('chains', async (t) => {
  t.same(where('Observation', 'subject:Patient.name=Ann'), [
    { negate: false, anyOf: [{ kind: 'chain', param: 'subject', targets: [{ resourceType: 'Patient', where: [{ negate: false, anyOf: [name('name', 'ann')] }] }] }] },
  ]);
  // Without a type: every target type of `subject` that has `name`.
  const untyped = where('Observation', 'subject.name=Ann')[0]!.anyOf[0] as any;
  t.equal(untyped.kind, 'chain');
  const types = untyped.targets.map((q: any) => q.resourceType).sort();
  const expected = registry
    .get('Observation', 'subject')!
    .targets.filter((type) => registry.get(type, 'name') !== undefined)
    .sort();
  t.same(types, expected);
  t.ok(types.includes('Patient') && !types.includes('Device'), 'types without `name` are left out');

  t.same(where('Observation', 'encounter:Encounter.subject:Patient.family:exact=Ann,Bo'), [
    {
      negate: false,
      anyOf: [
        {
          kind: 'chain',
          param: 'encounter',
          targets: [
            {
              resourceType: 'Encounter',
              where: [
                {
                  negate: false,
                  anyOf: [
                    {
                      kind: 'chain',
                      param: 'subject',
                      targets: [
                        {
                          resourceType: 'Patient',
                          where: [{ negate: false, anyOf: [{ kind: 'string', param: 'family', op: 'exact', value: 'Ann' }, { kind: 'string', param: 'family', op: 'exact', value: 'Bo' }] }],
                        },
                      ],
                    },
                  ],
                },
              ],
            },
          ],
        },
      ],
    },
  ]);
  t.same(where('Observation', 'subject:Patient.gender:not=male')[0]!.anyOf[0], {
    kind: 'chain',
    param: 'subject',
    targets: [{ resourceType: 'Patient', where: [{ negate: true, anyOf: [{ kind: 'token', param: 'gender', code: 'male' }] }] }],
  });
  t.same(where('Observation', 'subject:Patient.name='), [], 'an empty value is ignored, as without a chain');

  const deep = ['subject:Patient', 'organization', 'partof', 'partof', 'name'];
  t.equal(deep.length, MAX_CHAIN + 1);
  t.same(errorCodes('Observation', `${deep.slice(0, MAX_CHAIN).join('.')}=x`), [], `${MAX_CHAIN} links`);
  t.same(errorCodes('Observation', `${deep.join('.')}=x`), [`${deep.join('.')}:VLM_SEARCH_BAD_CHAIN`], 'one more is refused');

  t.same(errorCodes('Observation', 'code.name=x'), ['code.name:VLM_SEARCH_BAD_CHAIN'], 'not a reference');
  t.same(errorCodes('Observation', 'subject:Nope.name=x'), ['subject:Nope.name:VLM_SEARCH_BAD_CHAIN']);
  t.same(errorCodes('Observation', 'subject:Organization.name=x'), ['subject:Organization.name:VLM_SEARCH_BAD_CHAIN'], 'not a target');
  t.same(errorCodes('Observation', 'subject.=x'), ['subject.:VLM_SEARCH_BAD_CHAIN']);
  t.same(errorCodes('Provenance', 'target.name=x'), [], 'Reference(Any) lists every type: searched in each that has `name`');
  t.same(errorCodes('Observation', 'subject:Patient.birthdate=soon'), ['subject:Patient.birthdate:VLM_SEARCH_BAD_PREFIX']);
  t.same(errorCodes('Observation', 'subject:Patient.name:nope=x'), ['subject:Patient.name:nope:VLM_SEARCH_BAD_MODIFIER']);
  t.same(parse('Observation', 'subject:Patient.nope=x&subject.nope=y').unknown, ['subject:Patient.nope', 'subject.nope']);
  t.same(parse('Observation', 'nope.name=x').unknown, ['nope.name']);
});

t.test('_has', async (t) => {
  t.same(where('Patient', '_has:Observation:patient:code=1234-5'), [
    {
      negate: false,
      anyOf: [
        { kind: 'has', param: 'patient', source: { resourceType: 'Observation', where: [{ negate: false, anyOf: [{ kind: 'token', param: 'code', code: '1234-5' }] }] } },
      ],
    },
  ]);
  const nested = where('Patient', '_has:Encounter:subject:_has:Observation:encounter:code=a')[0]!.anyOf[0] as any;
  t.equal(nested.kind, 'has');
  t.equal(nested.source.resourceType, 'Encounter');
  t.same(nested.source.where[0].anyOf[0].kind, 'has');
  t.same(nested.source.where[0].anyOf[0].source.resourceType, 'Observation');
  t.same(where('Patient', '_has:Observation:patient:subject:Patient.name=x')[0]!.anyOf[0]!.kind, 'has', 'a chain inside _has');

  t.same(errorCodes('Patient', '_has:Observation=1'), ['_has:Observation:VLM_SEARCH_BAD_HAS']);
  t.same(errorCodes('Patient', '_has:Observation:patient=1'), ['_has:Observation:patient:VLM_SEARCH_BAD_HAS']);
  t.same(errorCodes('Patient', '_has:Nope:patient:code=1'), ['_has:Nope:patient:code:VLM_SEARCH_BAD_HAS']);
  t.same(errorCodes('Patient', '_has:Observation:code:code=1'), ['_has:Observation:code:code:VLM_SEARCH_BAD_HAS']);
  t.same(errorCodes('Practitioner', '_has:Observation:patient:code=1'), ['_has:Observation:patient:code:VLM_SEARCH_BAD_HAS'], 'patient never targets a Practitioner');
  t.same(errorCodes('Patient', '_has:Observation:patient:date=2020-13'), ['_has:Observation:patient:date:VLM_SEARCH_BAD_DATE']);
  t.same(parse('Patient', '_has:Observation:nope:code=1&_has:Observation:patient:nope=1').unknown, ['_has:Observation:nope:code', '_has:Observation:patient:nope']);
  t.same(
    errorCodes('Patient', '_has:A:b:_has:A:b:_has:A:b:_has:A:b:x=1'),
    ['_has:A:b:_has:A:b:_has:A:b:_has:A:b:x:VLM_SEARCH_BAD_HAS'],
    'unknown types are refused before depth matters',
  );
  const tooDeep = '_has:Observation:patient:_has:Observation:patient:_has:Observation:patient:_has:Observation:patient:code=1';
  t.same(errorCodes('Patient', tooDeep).map((e) => e.split(':').pop()), ['VLM_SEARCH_BAD_HAS']);
});

t.test('composites and :of-type', async (t) => {
  t.same(where('Observation', 'component-code-value-quantity=http://loinc.org|8480-6$gt100'), [
    {
      negate: false,
      anyOf: [
        {
          kind: 'composite',
          param: 'component-code-value-quantity',
          components: [
            { kind: 'token', param: 'component-code-value-quantity$0', system: 'http://loinc.org', code: '8480-6' },
            { kind: 'quantity', param: 'component-code-value-quantity$1', prefix: 'gt', value: 100, low: 99.5, high: 100.5 },
          ],
        },
      ],
    },
  ]);
  const or = where('Observation', 'code-value-concept=a$b,c$http://x|d')[0]!;
  t.equal(or.anyOf.length, 2, 'comma: OR of pairs');
  t.same((or.anyOf[1] as any).components[1], { kind: 'token', param: 'code-value-concept$1', system: 'http://x', code: 'd' });
  t.same((where('Observation', 'code-value-date=a$ge2020')[0]!.anyOf[0] as any).components[1].prefix, 'ge');
  t.same((where('Observation', 'code-value-string=a$Foo')[0]!.anyOf[0] as any).components[1], { kind: 'string', param: 'code-value-string$1', op: 'starts', value: 'foo' });
  t.same((where('Observation', 'code-value-string=a$x\\$y')[0]!.anyOf[0] as any).components[1].value, 'x$y', '\\$ escapes the separator');
  t.same((where('Group', 'characteristic-value=gender$male')[0]!.anyOf[0] as any).components.length, 2);
  t.same((where('MolecularSequence', 'chromosome-variant-coordinate=1$gt10$lt20')[0]!.anyOf[0] as any).components.length, 3);
  // R4 swaps the component expressions of DocumentReference-relationship; the registry corrects them.
  t.same((where('DocumentReference', 'relationship=DocumentReference/x$replaces')[0]!.anyOf[0] as any).components, [
    { kind: 'reference', param: 'relationship$0', id: 'x', types: ['DocumentReference'] },
    { kind: 'token', param: 'relationship$1', code: 'replaces' },
  ]);

  t.same(errorCodes('Observation', 'code-value-quantity=1234-5'), ['code-value-quantity:VLM_SEARCH_BAD_COMPOSITE']);
  t.same(errorCodes('Observation', 'code-value-quantity=a$1$2'), ['code-value-quantity:VLM_SEARCH_BAD_COMPOSITE']);
  t.same(errorCodes('Observation', 'code-value-quantity=$1'), ['code-value-quantity:VLM_SEARCH_BAD_COMPOSITE']);
  t.same(errorCodes('Observation', 'code-value-quantity=a$1x'), ['code-value-quantity:VLM_SEARCH_BAD_NUMBER']);
  t.same(errorCodes('Observation', 'code-value-quantity:exact=a$1'), ['code-value-quantity:exact:VLM_SEARCH_BAD_MODIFIER']);
  t.same(where('Observation', 'code-value-quantity:missing=true'), [
    { negate: false, anyOf: [{ kind: 'missing', of: 'composite', param: 'code-value-quantity$0', missing: true }] },
  ]);
  t.same(errorCodes('Observation', 'code-value-date=a$2020-13'), ['code-value-date:VLM_SEARCH_BAD_DATE']);

  t.same(where('Patient', 'identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|123,|DL|9'), [
    {
      negate: false,
      anyOf: [
        {
          kind: 'composite',
          param: 'identifier:of-type',
          components: [
            { kind: 'token', param: 'identifier:of-type$0', system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' },
            { kind: 'token', param: 'identifier:of-type$1', code: '123' },
          ],
        },
        {
          kind: 'composite',
          param: 'identifier:of-type',
          components: [
            { kind: 'token', param: 'identifier:of-type$0', code: 'DL' },
            { kind: 'token', param: 'identifier:of-type$1', code: '9' },
          ],
        },
      ],
    },
  ]);
  for (const bad of ['MR|123', 'a|MR|', 'a||123', 'a|b|c|d']) {
    t.same(errorCodes('Patient', `identifier:of-type=${encodeURIComponent(bad)}`), ['identifier:of-type:VLM_SEARCH_BAD_OF_TYPE'], bad);
  }
});

t.test('system level: _type scopes the other parameters', async (t) => {
  const parsed = parse(null, '_type=Patient,Practitioner&name=x&family=y');
  t.same(parsed.unknown, [], 'name and family exist in both');
  t.same(parsed.query.where[1], { negate: false, anyOf: [name('name', 'x')] });
  t.same(parse(null, '_type=Patient,Observation&family=y').unknown, ['family'], 'Observation has no family');
  t.same(parse(null, 'family=y').unknown, ['family'], 'without _type only Resource parameters');
  t.same(parse(null, '_type=Patient,Observation&_id=a').unknown, []);
  t.same(parse(null, '_type=Observation,Encounter&subject:Patient.name=x').errors, [], 'chains at system level');
  t.same(parse(null, '_type=Patient,Organization&name=x').unknown, [], 'same kind (string) in both');
  t.same(parse(null, '_type=Patient,Group&name=x').unknown, ['name'], 'Group has no name');
  t.same(parse(null, '_type=Patient,Observation&_sort=family').errors, [{ param: '_sort', code: 'VLM_SEARCH_BAD_SORT' }]);
  t.same(parse(null, '_type=Patient,Practitioner&_sort=family').errors, []);
});

t.test('the planned SQL binds every value', async (t) => {
  const marker = 'zq9marker';
  for (const [type, query] of [
    ['Observation', `subject:Patient.name=${marker}`],
    ['Observation', `encounter:Encounter.subject:Patient.family:exact=${marker}&code=${marker}2`],
    ['Patient', `_has:Observation:patient:code=${marker}`],
    ['Patient', `_has:Encounter:subject:_has:Observation:encounter:code=${marker}&name=${marker}3`],
    ['Observation', `component-code-value-quantity=${marker}|8480-6$gt100|${marker}u|${marker}c`],
    ['Patient', `identifier:of-type=${marker}|MR|${marker}v`],
    [null, `_type=Patient,Practitioner&name=${marker}`],
  ] as const) {
    const parsed = parse(type, query);
    t.same(parsed.errors, [], query);
    for (const planned of [planSearch(parsed.query), planCount(parsed.query)]) {
      t.notOk(planned.sql.includes(marker), `${query}: no value in the SQL text`);
      t.ok(planned.params.some((p) => String(p).includes(marker)), `${query}: the value is bound`);
      t.equal((planned.sql.match(/\?/g) ?? []).length, planned.params.length, 'one bound value per placeholder');
    }
  }
});
