/**
 * `_summary` and `_elements` on read, vread and search — http://hl7.org/fhir/R4/search.html#summary
 * and #elements: subsetted resources carry the SUBSETTED tag and keep their mandatory elements.
 */
import t, { type Test } from 'tap';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { TYPE_CASES } from '../interactions/examples.ts';

const SUBSETTED = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue|SUBSETTED';
const tags = (r: any): string[] => (r?.meta?.tag ?? []).map((x: any) => `${x.system}|${x.code}`);

/** Per example: elements it has that `_summary=true` keeps, and that it drops (from the R4 definitions). */
const SUMMARY: Record<string, { kept: string[]; dropped: string[] }> = {
  Patient: { kept: ['identifier', 'active', 'name', 'gender', 'birthDate', 'address', 'managingOrganization'], dropped: ['text', 'contact'] },
  Observation: { kept: ['status', 'code', 'subject', 'encounter', 'effectiveDateTime', 'valueQuantity'], dropped: ['text', 'category'] },
  MedicationRequest: { kept: ['status', 'intent', 'medicationReference', 'subject', 'authoredOn', 'requester'], dropped: ['text', 'note', 'dosageInstruction', 'dispenseRequest'] },
  Consent: { kept: ['status', 'scope', 'category', 'patient', 'dateTime', 'organization', 'policyRule', 'provision'], dropped: ['text'] },
  AuditEvent: { kept: ['type', 'subtype', 'action', 'recorded', 'outcome'], dropped: ['text', 'agent', 'source'] },
  Practitioner: { kept: ['identifier', 'active', 'name', 'address'], dropped: ['text', 'qualification'] },
  Organization: { kept: ['identifier', 'name'], dropped: ['text', 'telecom'] },
};

async function seed(s: TestServer) {
  const stored: Record<string, any> = {};
  for (const c of TYPE_CASES) {
    // AuditEvent is marked with a tag of its own: SUBSETTED must be added beside it.
    stored[c.type] = (await s.fhir('POST', c.type, c.mark(c.example(), `${c.type}-sum`))).json;
  }
  return stored;
}

function checkSubsetted(t: Test, r: any, stored: any, kept: string[], dropped: string[], label: string) {
  t.ok(tags(r).includes(SUBSETTED), `${label}: tagged SUBSETTED`);
  for (const tag of tags(stored)) t.ok(tags(r).includes(tag), `${label}: keeps its own tag ${tag}`);
  t.equal(r.id, stored.id);
  t.equal(r.meta.versionId, stored.meta.versionId);
  for (const k of kept) t.same(r[k], stored[k], `${label}: keeps ${k}`);
  for (const k of dropped) t.notOk(k in r, `${label}: drops ${k}`);
}

t.test('_summary on read, vread and search', async (t) => {
  const s = await startTestServer(t);
  const stored = await seed(s);
  for (const c of TYPE_CASES) {
    const r = stored[c.type];
    const { kept, dropped } = SUMMARY[c.type]!;
    const mandatory = c.mandatory;
    const search = (q: string) => s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-sum`)}&${q}`);

    for (const [label, get] of [
      ['read', (q: string) => s.fhir('GET', `${c.type}/${r.id}?${q}`).then((x) => x.json)],
      ['vread', (q: string) => s.fhir('GET', `${c.type}/${r.id}/_history/1?${q}`).then((x) => x.json)],
      ['search', (q: string) => search(q).then((x) => x.json.entry[0].resource)],
    ] as const) {
      const label2 = `${c.type} ${label}`;
      checkSubsetted(t, await get('_summary=true'), r, kept, dropped, `${label2} _summary=true`);

      const text = await get('_summary=text');
      const textKept = ['text', ...mandatory];
      checkSubsetted(t, text, r, textKept, Object.keys(r).filter((k) => !['resourceType', 'id', 'meta', ...textKept].includes(k) && !mandatory.some((m) => k.startsWith(m))), `${label2} _summary=text`);

      const data = await get('_summary=data');
      checkSubsetted(t, data, r, Object.keys(r).filter((k) => !['text', 'meta'].includes(k)), ['text'], `${label2} _summary=data`);

      const full = await get('_summary=false');
      t.same(full, r, `${label2} _summary=false is the whole resource, untagged`);
    }
    const count = await search('_summary=count');
    t.equal(count.json.total, 1);
    t.same(count.json.entry ?? [], [], `${c.type}: _summary=count has no entries`);

    const again = await s.fhir('GET', `${c.type}/${r.id}`);
    t.same(again.json, r, 'subsetting never changes what is stored');
  }
});

t.test('_elements on read, vread and search', async (t) => {
  const s = await startTestServer(t);
  const stored = await seed(s);
  for (const c of TYPE_CASES) {
    const r = stored[c.type];
    const asked = SUMMARY[c.type]!.kept.filter((k) => !c.mandatory.includes(k)).slice(0, 2);
    for (const [label, get] of [
      ['read', (q: string) => s.fhir('GET', `${c.type}/${r.id}?${q}`).then((x) => x.json)],
      ['vread', (q: string) => s.fhir('GET', `${c.type}/${r.id}/_history/1?${q}`).then((x) => x.json)],
      ['search', (q: string) => s.fhir('GET', `${c.type}?${c.criteria(`${c.type}-sum`)}&${q}`).then((x) => x.json.entry[0].resource)],
    ] as const) {
      const expectedKeys = ['resourceType', 'id', 'meta', ...asked, ...Object.keys(r).filter((k) => c.mandatory.some((m) => k === m || k.startsWith(m)))];
      const dropped = Object.keys(r).filter((k) => !expectedKeys.includes(k));
      for (const query of [`_elements=${asked.join(',')}`, asked.map((a) => `_elements=${a}`).join('&'), `_elements=${asked.map((a) => `${c.type}.${a}`).join(',')}`]) {
        const res = await get(query);
        checkSubsetted(t, res, r, [...asked, ...c.mandatory.filter((m) => m in r)], dropped, `${c.type} ${label} ${query}`);
        t.same(Object.keys(res).sort(), [...new Set(expectedKeys)].sort(), 'exactly the asked and mandatory elements');
      }
    }
  }
  // a choice element is asked for by its name without the type suffix
  const obs = stored['Observation'];
  const value = (await s.fhir('GET', `Observation/${obs.id}?_elements=value,effective`)).json;
  t.same(value.valueQuantity, obs.valueQuantity);
  t.equal(value.effectiveDateTime, obs.effectiveDateTime);
  t.notOk('subject' in value);
});

t.test('invalid _summary and _elements are 400', async (t) => {
  const s = await startTestServer(t);
  const stored = await seed(s);
  const id = stored['Patient'].id;
  for (const path of [`Patient/${id}`, `Patient/${id}/_history/1`, 'Patient', 'Patient/_history', 'metadata']) {
    for (const [param, value] of [
      ['_summary', 'yes'],
      ['_summary', 'TRUE'],
      ['_summary', ''],
      ['_elements', 'name.family'],
      ['_elements', 'Observation.code'],
      ['_elements', 'na$me'],
      ['_elements', '*'],
    ] as const) {
      const res = await s.fhir('GET', `${path}?${param}=${encodeURIComponent(value)}`);
      if (path === 'metadata' && value === 'Observation.code') continue; // no resource type to compare with
      t.equal(res.status, 400, `${path}?${param}=${value}`);
      t.same(vellumCodes(res.json), ['VLM_FHIR_BAD_PARAMETER']);
      t.same(res.json.issue[0].expression, [param]);
    }
  }
  const fine = await s.fhir('GET', `Patient/${id}?_elements=`);
  t.equal(fine.status, 200, 'an empty _elements asks for the mandatory elements only');
});
