/**
 * `_include` / `_revinclude` (http://hl7.org/fhir/R4/search.html#include): parsing each form and
 * its error codes, then gathering over a real SQLite index (in memory): both directions,
 * `:iterate`, no repeats, and the cap.
 */
import t from 'tap';
import { createExtractor } from '../../../src/fhir/search/extract.ts';
import { gatherIncludes, parseIncludes, supportedIncludes, type IncludeDirective } from '../../../src/fhir/search/include.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import type { VersionRecord } from '../../../src/storage/index-store.ts';
import { SqliteIndexStore } from '../../../src/storage/sqlite/sqlite-index.ts';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: 'https://vellum.example/fhir' });

const parse = (query: string) => parseIncludes(registry, [...new URLSearchParams(query)]);

t.test('parsing', async (t) => {
  t.same(parse('_include=Observation:subject&_revinclude:iterate=Provenance:target:Patient&name=x&_include=*&_include:recurse=Patient:*'), {
    directives: [
      { name: '_include', reverse: false, iterate: false, sourceType: 'Observation', params: ['subject'] },
      { name: '_revinclude:iterate', reverse: true, iterate: true, sourceType: 'Provenance', params: ['target'], targetType: 'Patient' },
      { name: '_include', reverse: false, iterate: false, sourceType: null, params: null },
      { name: '_include:recurse', reverse: false, iterate: true, sourceType: 'Patient', params: null },
    ],
    unknown: [],
    errors: [],
  });
  t.same(parse('_include=Observation:nope&_revinclude=*').unknown, ['_include', '_revinclude']);
  const codes = (q: string) => parse(q).errors.map((e) => `${e.param}:${e.code}`);
  t.same(codes('_include=Observation'), ['_include:VLM_SEARCH_BAD_INCLUDE']);
  t.same(codes('_include=Nope:subject'), ['_include:VLM_SEARCH_BAD_INCLUDE']);
  t.same(codes('_include=Observation:code'), ['_include:VLM_SEARCH_BAD_INCLUDE'], 'not a reference');
  t.same(codes('_include=Observation:subject:Organization'), ['_include:VLM_SEARCH_BAD_INCLUDE'], 'not a target of subject');
  t.same(codes('_include=Observation:subject:Nope'), ['_include:VLM_SEARCH_BAD_INCLUDE']);
  t.same(codes('_include=Observation:subject:Patient:x'), ['_include:VLM_SEARCH_BAD_INCLUDE']);
  t.same(codes('_include:nope=Observation:subject'), ['_include:nope:VLM_SEARCH_BAD_MODIFIER']);
  t.same(codes('_revinclude:iterate:x=Observation:subject'), ['_revinclude:iterate:x:VLM_SEARCH_BAD_MODIFIER']);
});

t.test('what the CapabilityStatement can list', async (t) => {
  const patient = supportedIncludes(registry, 'Patient');
  t.ok(patient.searchInclude.includes('Patient:organization'));
  t.ok(patient.searchInclude.includes('Patient:general-practitioner'));
  t.ok(patient.searchInclude.includes('*'));
  t.notOk(patient.searchInclude.includes('Patient:name'), 'only reference parameters');
  t.ok(patient.searchRevInclude.includes('Observation:subject'));
  t.ok(patient.searchRevInclude.includes('Observation:patient'));
  t.notOk(patient.searchRevInclude.includes('Observation:performer:Device'));
  t.notOk(supportedIncludes(registry, 'Organization').searchRevInclude.includes('Observation:patient'), 'patient never targets an Organization');
  // Every listed value parses as a directive.
  for (const value of patient.searchInclude) t.same(parse(`_include=${value}`).errors, [], value);
  for (const value of patient.searchRevInclude) t.same(parse(`_revinclude=${value}`).errors, [], value);
});

t.test('gathering over the index', async (t) => {
  const index = SqliteIndexStore.open(':memory:');
  t.teardown(() => index.close());
  const records = new Map<string, VersionRecord>();
  const put = async (resource: FhirResource) => {
    const [record] = await index.commit([
      {
        type: resource.resourceType,
        id: resource.id!,
        versionId: 1,
        expectedVersion: 0,
        lastUpdated: Date.now(),
        deleted: false,
        method: 'create',
        cid: `cid-${resource.id}`,
        keyScope: 'shared',
        searchRows: extractor.extract(resource),
      },
    ]);
    records.set(`${resource.resourceType}/${resource.id}`, record!);
  };
  await put({ resourceType: 'Organization', id: 'org' });
  await put({ resourceType: 'Patient', id: 'p', managingOrganization: { reference: 'Organization/org' } });
  for (let i = 0; i < 5; i++) {
    await put({ resourceType: 'Observation', id: `o${i}`, status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/p' } });
  }
  const source = { registry, search: (q: any) => index.search(q) };
  const keys = (rs: VersionRecord[]) => rs.map((r) => `${r.type}/${r.id}`).sort();
  const d = (query: string): IncludeDirective[] => parse(query).directives;
  const rec = (key: string) => records.get(key)!;

  let got = await gatherIncludes(source, d('_include=Observation:subject'), [rec('Observation/o0'), rec('Observation/o1')]);
  t.same(keys(got.records), ['Patient/p']);
  t.equal(got.capped, false);

  got = await gatherIncludes(source, d('_revinclude=Observation:subject&_include:iterate=Observation:subject'), [rec('Patient/p')]);
  t.same(keys(got.records), ['Observation/o0', 'Observation/o1', 'Observation/o2', 'Observation/o3', 'Observation/o4'], 'the match is never included again');

  got = await gatherIncludes(source, d('_include:iterate=Observation:subject&_include:iterate=Patient:organization'), [rec('Observation/o3')]);
  t.same(keys(got.records), ['Organization/org', 'Patient/p']);

  got = await gatherIncludes(source, d('_revinclude=Observation:subject'), [rec('Patient/p')], 3);
  t.equal(got.records.length, 3, 'at most the limit');
  t.equal(got.capped, true);
  got = await gatherIncludes(source, d('_revinclude=Observation:subject'), [rec('Patient/p')], 5);
  t.equal(got.records.length, 5);
  t.equal(got.capped, false, 'exactly the limit is not capped');
  got = await gatherIncludes(source, d('_revinclude=Observation:subject&_include:iterate=Patient:organization'), [rec('Patient/p')], 5);
  t.equal(got.capped, true, 'the cap counts every round');
});
