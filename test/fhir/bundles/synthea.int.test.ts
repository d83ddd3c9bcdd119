/**
 * Real data through `POST [base]` (http://hl7.org/fhir/R4/http.html#transaction):
 *
 * - the 50 Synthea patients of CORPORA/synthea (README §3), each one transaction Bundle of POSTs
 *   with `urn:uuid:` fullUrls and references: every entry is `201 Created`, no `urn:uuid:` is left
 *   in any stored resource, and the per-patient counts by type equal those of index.json;
 * - Blaze's Synthea set (CORPORA/search/blaze-synthea, README §4a): the hospital and practitioner
 *   `batch` Bundles (POST with `ifNoneExist`) first — twice, the second time every entry matches —
 *   then patient transactions whose references to them are conditional
 *   (`Organization?identifier=…`): each is resolved to the one match.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CORPORA } from '../../helpers/corpora.ts';
import { startTestServer, type TestServer } from '../../helpers/server.ts';

interface IndexEntry {
  file: string;
  patientId: string;
  entries: number;
  resourceCounts: Record<string, number>;
}

type Bundle = { resourceType: 'Bundle'; type: string; entry: { fullUrl?: string; resource: Record<string, any>; request: Record<string, string> }[] };

/** Types without a `patient` search parameter: counted in total rather than per patient. */
const NOT_PER_PATIENT = new Set(['Patient', 'Organization', 'Practitioner', 'PractitionerRole', 'Location']);

/** Every `reference` string in a resource. */
function references(value: unknown, into: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) references(v, into);
  else if (value !== null && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      if (key === 'reference' && typeof v === 'string') into.push(v);
      else references(v, into);
    }
  }
  return into;
}

/** Every current resource in the store, read back through the repository (decrypted). */
async function* storedResources(s: TestServer): AsyncGenerator<Record<string, any>> {
  const index = s.services.repository.index;
  const maxSeq = await index.lastSeq();
  for (let offset = 0; ; offset += 1000) {
    const page = await index.history({ count: 1000, offset, maxSeq });
    for (const record of page.records) {
      const resource = await s.services.loadResource(record);
      if (resource) yield resource;
    }
    if (page.records.length < 1000) return;
  }
}

function statuses(response: any): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of response.entry ?? []) out[entry.response.status] = (out[entry.response.status] ?? 0) + 1;
  return out;
}

t.test('the 50 Synthea patients, one transaction each', async (t) => {
  const dir = join(CORPORA, 'synthea');
  const indexFile = join(dir, 'index.json');
  if (!existsSync(indexFile)) {
    t.fail(`corpus not found at ${dir} (set VELLUM_CORPORA)`);
    return;
  }
  const index = JSON.parse(readFileSync(indexFile, 'utf8')) as { files: IndexEntry[]; totalEntries: number; resourceTypeTotals: Record<string, number> };
  t.equal(index.files.length, 50);
  const s = await startTestServer(t);
  const start = performance.now();
  const patients: { meta: IndexEntry; ref: string }[] = [];
  for (const meta of index.files) {
    const text = readFileSync(join(dir, meta.file), 'utf8');
    // Sent as the file's own text: its decimals travel exactly as written.
    const res = await s.fhir('POST', '', text, { prefer: 'return=minimal' });
    if (res.status !== 200) {
      t.fail(`${meta.file}: ${res.status}`, { issues: res.json?.issue });
      continue;
    }
    t.equal(res.json.type, 'transaction-response');
    t.same(statuses(res.json), { '201 Created': meta.entries }, `${meta.file}: ${meta.entries} entries created`);
    const bundle = JSON.parse(text) as Bundle;
    const at = bundle.entry.findIndex((e) => e.resource.resourceType === 'Patient');
    const location = res.json.entry[at].response.location as string;
    t.match(location, /^Patient\/[^/]+\/_history\/1$/);
    patients.push({ meta, ref: location.split('/_history')[0]! });
  }
  t.comment(`${index.totalEntries} resources in 50 transactions: ${((performance.now() - start) / 1000).toFixed(1)} s`);

  // Per patient, per type: what index.json says the bundle holds.
  for (const { meta, ref } of patients) {
    const counted: Record<string, number> = {};
    for (const type of Object.keys(meta.resourceCounts)) {
      if (NOT_PER_PATIENT.has(type)) continue;
      const res = await s.fhir('GET', `${type}?patient=${ref}&_summary=count`);
      counted[type] = res.json?.total;
    }
    const expected = Object.fromEntries(Object.entries(meta.resourceCounts).filter(([type]) => !NOT_PER_PATIENT.has(type)));
    t.same(counted, expected, `${meta.file}: counts by type`);
  }
  // $everything (all pages) and compartment search give the same counts, the patient's
  // Organizations and Practitioners included (they are referenced from its encounters and claims).
  for (const { meta, ref } of patients.slice(0, 10)) {
    const counted: Record<string, number> = {};
    let url: string | undefined = `${ref}/$everything?_count=500`;
    let pages = 0;
    while (url) {
      const page = await s.fhir('GET', url);
      t.equal(page.status, 200);
      for (const e of page.json.entry ?? []) counted[e.resource.resourceType] = (counted[e.resource.resourceType] ?? 0) + 1;
      const next = (page.json.link ?? []).find((l: any) => l.relation === 'next')?.url as string | undefined;
      url = next?.slice(next.indexOf('/fhir/') + '/fhir/'.length);
      pages++;
    }
    t.ok(pages >= 1);
    t.same(counted, meta.resourceCounts, `${meta.file}: $everything counts by type`);
    const compartment = await s.fhir('GET', `${ref}/Observation?_summary=count`);
    t.equal(compartment.json.total, meta.resourceCounts.Observation ?? 0, `${meta.file}: Patient/{id}/Observation`);
  }

  // POSTs always create: the type totals are the corpus totals.
  const totals: Record<string, number> = {};
  for (const type of Object.keys(index.resourceTypeTotals)) totals[type] = (await s.fhir('GET', `${type}?_summary=count`)).json.total;
  t.same(totals, index.resourceTypeTotals, 'totals by type');

  // Every reference was rewritten: no urn:uuid left, each Type/id names a stored resource.
  const stored = new Set<string>();
  const refs: string[] = [];
  for await (const resource of storedResources(s)) {
    stored.add(`${resource.resourceType}/${resource.id}`);
    references(resource, refs);
  }
  t.equal(stored.size, index.totalEntries, 'every entry stored');
  t.same(refs.filter((r) => r.includes('urn:uuid:')), [], 'no urn:uuid reference left in any stored resource');
  const dangling = refs.filter((r) => !r.startsWith('#') && !stored.has(r));
  t.same(dangling, [], 'every reference names a stored resource (or a contained one)');
  t.ok(refs.length > index.totalEntries, `${refs.length} references checked`);
});

t.test('Blaze Synthea: ifNoneExist batches, then conditional references', async (t) => {
  const dir = join(CORPORA, 'search', 'blaze-synthea');
  if (!existsSync(dir)) {
    t.fail(`corpus not found at ${dir} (set VELLUM_CORPORA)`);
    return;
  }
  const read = (file: string): string => execFileSync('bzip2', ['-dc', join(dir, file)], { maxBuffer: 256 * 1024 * 1024 }).toString('utf8');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json.bz2')).sort();
  const infos = files.filter((f) => f.startsWith('0-'));
  t.equal(infos.length, 2, 'hospital and practitioner information');
  const s = await startTestServer(t);

  let stored = 0;
  for (const file of infos) {
    const text = read(file);
    const bundle = JSON.parse(text) as Bundle;
    t.equal(bundle.type, 'batch');
    const conditional = bundle.entry.map((e) => e.request.ifNoneExist !== undefined);
    const first = await s.fhir('POST', '', text, { prefer: 'return=minimal' });
    t.equal(first.status, 200);
    t.equal(first.json.type, 'batch-response');
    t.same(statuses(first.json), { '201 Created': bundle.entry.length }, `${file}: created`);
    // Organization, Location and Practitioner are POSTed with ifNoneExist; PractitionerRole is not.
    const again = await s.fhir('POST', '', text);
    const expected = conditional.map((c) => (c ? '200 OK' : '201 Created'));
    t.same(
      again.json.entry.map((e: any) => e.response.status),
      expected,
      `${file} again: the ${conditional.filter(Boolean).length} ifNoneExist entries match, the others create`,
    );
    t.same(
      again.json.entry.map((e: any) => e.response.location).filter((_: string, i: number) => conditional[i]),
      first.json.entry.map((e: any) => e.response.location).filter((_: string, i: number) => conditional[i]),
      'the existing resources are answered',
    );
    t.equal(again.json.entry[0].resource.resourceType, bundle.entry[0]!.resource.resourceType, 'with their representation');
    stored += bundle.entry.length + conditional.filter((c) => !c).length;
  }
  t.equal((await s.fhir('GET', '_history?_summary=count')).json.total, stored, 'no ifNoneExist entry created twice');

  // Patient transactions (a spread of 8 of the 120, to keep the run short).
  const patientFiles = files.filter((f) => !f.startsWith('0-'));
  const picks = [0, 15, 30, 45, 60, 75, 90, 105].map((i) => patientFiles[i]!);
  const byIdentifier = async (type: string, criteria: string): Promise<string> => {
    const res = await s.fhir('GET', `${type}?${criteria}`);
    t.equal(res.json.total, 1, `${type}?${criteria} has one match`);
    return `${type}/${res.json.entry[0].resource.id}`;
  };
  for (const file of picks) {
    const text = read(file);
    const bundle = JSON.parse(text) as Bundle;
    const conditional = new Set(references(bundle).filter((r) => /^[A-Z][A-Za-z]+\?/.test(r)));
    t.ok(conditional.size > 0, `${file}: ${conditional.size} distinct conditional references`);
    const res = await s.fhir('POST', '', text);
    if (res.status !== 200) {
      t.fail(`${file}: ${res.status}`, { issues: res.json?.issue });
      continue;
    }
    t.same(statuses(res.json), { '201 Created': bundle.entry.length }, `${file}: every entry created`);
    const expected = new Map<string, string>();
    for (const ref of conditional) {
      const [type, criteria] = ref.split('?') as [string, string];
      expected.set(ref, await byIdentifier(type, criteria));
    }
    // Each stored resource (the representation answered) has its references resolved.
    const wrong: string[] = [];
    bundle.entry.forEach((entry, i) => {
      const stored = references(res.json.entry[i].resource);
      const sent = references(entry.resource);
      sent.forEach((ref, k) => {
        const got = stored[k]!;
        if (expected.has(ref) ? got !== expected.get(ref) : ref.startsWith('urn:uuid:') ? !/^[A-Z][A-Za-z]+\/[^/]+$/.test(got) : got !== ref) {
          wrong.push(`${ref} → ${got}`);
        }
      });
    });
    t.same(wrong, [], `${file}: references resolved`);
    const patient = res.json.entry.find((e: any) => e.resource.resourceType === 'Patient');
    const perType: Record<string, number> = {};
    for (const entry of bundle.entry) {
      const type = entry.resource.resourceType;
      if (!NOT_PER_PATIENT.has(type) && type !== 'Provenance' && type !== 'Medication') perType[type] = (perType[type] ?? 0) + 1;
    }
    const counted: Record<string, number> = {};
    for (const type of Object.keys(perType)) {
      counted[type] = (await s.fhir('GET', `${type}?patient=Patient/${patient.resource.id}&_summary=count`)).json?.total;
    }
    t.same(counted, perType, `${file}: counts by type`);
  }
});
