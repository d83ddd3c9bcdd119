/**
 * `vellum rebuild` on real data: the 50 Synthea patients (CORPORA/synthea) loaded as transactions
 * with anchoring on, the index database lost, rebuilt from the chain + blocks + master key, and
 * every search and history answer is identical.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CORPORA } from '../helpers/corpora.ts';
import { CHAIN_ENV, entries, loseIndex, rebuild, verifyParams, waitAnchored } from '../helpers/rebuild.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

interface IndexEntry {
  file: string;
  resourceCounts: Record<string, number>;
}

/** Types with a `patient` search parameter (the others are counted by type). */
const NOT_PER_PATIENT = new Set(['Patient', 'Organization', 'Practitioner', 'PractitionerRole', 'Location']);

async function answers(s: TestServer, patients: { ref: string; types: string[] }[], allTypes: string[]) {
  const out: Record<string, unknown> = {};
  const get = async (url: string) => {
    const res = await s.fhir('GET', url);
    return { status: res.status, body: res.json?.resourceType === 'Bundle' ? entries(res.json) : res.json };
  };
  for (const type of allTypes) out[`${type}?_summary=count`] = await get(`${type}?_summary=count`);
  out['_history?_count=200'] = await get('_history?_count=200');
  for (const { ref, types } of patients) {
    out[ref] = await get(ref);
    out[`${ref}/_history`] = await get(`${ref}/_history`);
    for (const type of types) out[`${type}?patient=${ref}`] = await get(`${type}?patient=${ref}&_sort=_id&_count=1000`);
  }
  out['Observation?code=http://loinc.org|8302-2&_sort=_id&_count=1000'] = await get('Observation?code=http://loinc.org|8302-2&_sort=_id&_count=1000');
  out['Patient?gender=female&_sort=_id&_count=100'] = await get('Patient?gender=female&_sort=_id&_count=100');
  out['Encounter?date=ge2015-01-01&_sort=_id&_count=1000'] = await get('Encounter?date=ge2015-01-01&_sort=_id&_count=1000');
  for (const { ref } of patients.slice(0, 5)) {
    const verify = await s.fhir('GET', `${ref}/$verify`);
    out[`${ref}/$verify`] = { status: verify.status, params: verifyParams(verify.json) };
  }
  return out;
}

t.test('Synthea: load, lose the index, rebuild, identical answers', async (t) => {
  const dir = path.join(CORPORA, 'synthea');
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as {
    files: IndexEntry[];
    totalEntries: number;
    resourceTypeTotals: Record<string, number>;
  };
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-rebuild-synthea-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  const first = await startTestServer(t, { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir });
  const patients: { ref: string; types: string[] }[] = [];
  for (const meta of index.files) {
    const res = await first.fhir('POST', '', fs.readFileSync(path.join(dir, meta.file), 'utf8'), { prefer: 'return=minimal' });
    t.equal(res.status, 200, meta.file);
    const patient = (res.json?.entry ?? []).map((e: any) => e.response?.location as string).find((l: string) => l?.startsWith('Patient/'));
    patients.push({ ref: patient.split('/_history')[0], types: Object.keys(meta.resourceCounts).filter((type) => !NOT_PER_PATIENT.has(type)) });
  }
  await waitAnchored(t, first);
  const allTypes = Object.keys(index.resourceTypeTotals);
  const before = await answers(first, patients, allTypes);
  t.equal((before['Observation?_summary=count'] as any).body.total, index.resourceTypeTotals.Observation, 'loaded');
  await first.close();

  const blocks = loseIndex(dataDir);
  const done = await rebuild(dataDir, ['--blocks-from', blocks]);
  t.equal(done.code, 0, done.stderr);
  t.equal(done.report.versions, index.totalEntries, 'every version rebuilt');
  t.equal(done.report.resources, index.totalEntries);
  fs.rmSync(blocks);

  const second = await startTestServer(t, { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir });
  const after = await answers(second, patients, allTypes);
  t.strictSame(Object.keys(after), Object.keys(before));
  let differing = 0;
  for (const key of Object.keys(before)) {
    if (JSON.stringify(after[key]) !== JSON.stringify(before[key])) {
      differing++;
      if (differing <= 3) t.same(after[key], before[key], key);
    }
  }
  t.equal(differing, 0, `all ${Object.keys(before).length} answers identical after the rebuild`);
  await second.close();
});
