/**
 * Composite parameters at write time (http://hl7.org/fhir/R4/search.html#composite): the registry
 * takes each composite's components from the R4 SearchParameter registry (`component.definition`
 * and `component.expression`), and the extractor writes one group per element so that components
 * are matched within the same element. Also the `:of-type` groups of identifiers.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { createExtractor } from '../../../src/fhir/search/extract.ts';
import { createSearchRegistry } from '../../../src/fhir/search/registry.ts';
import type { FhirResource } from '../../../src/fhir/request.ts';
import { R4_RESOURCE_TYPES } from '../../../src/fhir/validation/resource-types.ts';
import type { CompositeRow, SearchRow } from '../../../src/storage/search-types.ts';
import { CORPORA } from '../../helpers/corpora.ts';

const registry = createSearchRegistry(R4_RESOURCE_TYPES);
const extractor = createExtractor(registry, { baseUrl: 'https://vellum.example/fhir' });

/** The groups of composite `code`: per group, per component, a short text of each row. */
function groups(rows: SearchRow[], code: string): string[][][] {
  const byGroup = new Map<number, string[][]>();
  for (const row of rows) {
    if (row.kind !== 'composite' || !row.param.startsWith(`${code}$`)) continue;
    const index = Number(row.param.slice(code.length + 1));
    const group = byGroup.get(row.group) ?? [];
    (group[index] ??= []).push(describe(row));
    byGroup.set(row.group, group);
  }
  return [...byGroup.values()].map((g) => g.map((c) => c.sort()));
}

function describe(row: CompositeRow): string {
  const p = row.part;
  switch (p.kind) {
    case 'token':
      return `${p.system ?? ''}|${p.code}`;
    case 'quantity':
      return `${p.value} ${p.code}`;
    case 'number':
      return String(p.value);
    case 'reference':
      return p.targetId !== null ? `${p.targetType}/${p.targetId}` : p.url!;
    case 'date':
      return `${p.low}..${p.high}`;
    case 'string':
      return p.norm;
    case 'uri':
      return p.value;
  }
}

t.test('every R4 composite resolves its components from the registry', async (t) => {
  const official = JSON.parse(fs.readFileSync(path.join(CORPORA, 'r4-definitions/search-parameters.json'), 'utf8')) as {
    entry: { resource: { id: string; code: string; type: string; base: string[]; url: string; component?: { definition: string; expression: string }[] } }[];
  };
  const byUrl = new Map(official.entry.map((e) => [e.resource.url, e.resource]));
  let checked = 0;
  for (const { resource: sp } of official.entry) {
    if (sp.type !== 'composite') continue;
    for (const base of sp.base) {
      const def = registry.get(base, sp.code);
      t.ok(def?.components, `${base} ${sp.code} is searchable`);
      t.same(
        def?.components?.map((c) => [c.code, c.kind]),
        sp.component!.map((c) => [byUrl.get(c.definition)!.code, byUrl.get(c.definition)!.type]),
        `${base} ${sp.code}: components in order, with their definitions' types`,
      );
      checked++;
    }
  }
  t.ok(checked >= 40, `${checked} composites checked`);
});

t.test('one group per element: Observation components', async (t) => {
  const obs = {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '85354-9' }] },
    valueQuantity: { value: 1, unit: 'x' },
    component: [
      { code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }, { system: 'urn:other', code: 'sys' }] }, valueQuantity: { value: 120, code: 'mm[Hg]' } },
      { code: { coding: [{ system: 'http://loinc.org', code: '8462-4' }] }, valueQuantity: { value: 80, code: 'mm[Hg]' } },
      { code: { coding: [{ system: 'http://loinc.org', code: '9999-9' }] }, valueString: 'no quantity' },
    ],
  } as FhirResource;
  const rows = extractor.extract(obs);
  t.same(groups(rows, 'component-code-value-quantity'), [
    [['http://loinc.org|8480-6', 'urn:other|sys'], ['120 mm[Hg]']],
    [['http://loinc.org|8462-4'], ['80 mm[Hg]']],
  ], 'a component without a quantity forms no group');
  t.same(groups(rows, 'code-value-quantity'), [[['http://loinc.org|85354-9'], ['1 x']]]);
  t.same(groups(rows, 'combo-code-value-quantity').length, 3, 'combo: the Observation and each component with a quantity');
  t.same(groups(rows, 'component-code-value-concept'), []);
  const all = rows.filter((r): r is CompositeRow => r.kind === 'composite');
  t.equal(new Set(all.map((r) => r.group)).size, 6, 'groups are unique within the resource');
});

t.test('composites over the official examples', async (t) => {
  const example = (type: string, file: string) =>
    JSON.parse(fs.readFileSync(path.join(CORPORA, 'r4-examples', type, file), 'utf8')) as FhirResource;
  const bp = extractor.extract(example('Observation', 'Observation-blood-pressure.json'));
  t.same(groups(bp, 'component-code-value-quantity'), [
    [['http://acme.org/devices/clinical-codes|bp-s', 'http://loinc.org|8480-6', 'http://snomed.info/sct|271649006'], ['107 mm[Hg]']],
    [['http://loinc.org|8462-4'], ['60 mm[Hg]']],
  ]);
  const seq = extractor.extract(example('MolecularSequence', 'MolecularSequence-example.json'));
  t.same(groups(seq, 'referenceseqid-window-coordinate'), [[['http://www.ncbi.nlm.nih.gov/nuccore|NC_000009.11'], ['22125500'], ['22125510']]]);
  t.same(
    groups(seq, 'referenceseqid-variant-coordinate'),
    [[['http://www.ncbi.nlm.nih.gov/nuccore|NC_000009.11'], ['22125503'], ['22125504']]],
    '%resource reaches the reference sequence from the variant',
  );
  t.same(groups(seq, 'chromosome-window-coordinate'), [], 'no chromosome: no group');
});

t.test(':of-type groups: type codings and value of one identifier', async (t) => {
  const patient = {
    resourceType: 'Patient',
    identifier: [
      { type: { coding: [{ system: 'urn:t', code: 'MR' }, { system: 'urn:u', code: 'MRN' }] }, value: '1' },
      { type: { text: 'no coding' }, value: '2' },
      { value: '3' },
      { type: { coding: [{ system: 'urn:t', code: 'DL' }] }, value: '4' },
    ],
  } as FhirResource;
  t.same(groups(extractor.extract(patient), 'identifier:of-type'), [
    [['urn:t|MR', 'urn:u|MRN'], ['|1']],
    [['urn:t|DL'], ['|4']],
  ]);
});
