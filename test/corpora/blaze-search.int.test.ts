/**
 * Search on real data: Blaze's Synthea set (CORPORA/search/blaze-synthea, 92,114 resources) loaded
 * in the documented order — the two `batch` bundles with `ifNoneExist`, then 120 transactions with
 * conditional references — and searched. Every expectation is computed from the files by the
 * oracle in test/helpers/blaze.ts, never copied from the server's answers.
 */
import t from 'tap';
import { BlazeOracle, blazeFiles, fold, hasCode, readBlazeFile, type Json } from '../helpers/blaze.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const LOINC = 'http://loinc.org';
const DAY = 86_400_000;

async function count(s: TestServer, query: string): Promise<number | undefined> {
  const res = await s.fhir('GET', `${query}${query.includes('?') ? '&' : '?'}_summary=count`);
  if (res.status !== 200) return -res.status;
  return res.json.total;
}

/** All pages of a search, following `next` links; returns the match entries. */
async function allPages(s: TestServer, first: { status: number; json: any }): Promise<Json[]> {
  const out: Json[] = [];
  let page = first;
  for (let guard = 0; guard < 1000; guard++) {
    if (page.status !== 200) throw new Error(`page answered ${page.status}`);
    out.push(...(page.json.entry ?? []).filter((e: any) => e.search?.mode !== 'include' && e.search?.mode !== 'outcome'));
    const next = (page.json.link ?? []).find((l: any) => l.relation === 'next')?.url as string | undefined;
    if (!next) return out;
    page = await s.fhir('GET', next.slice(next.indexOf('/fhir/') + '/fhir/'.length));
  }
  throw new Error('too many pages');
}

t.test('Blaze Synthea: load, then search with independently computed expectations', async (t) => {
  const s = await startTestServer(t);
  const oracle = new BlazeOracle();
  /** fullUrl in the files → `Type/id` on the server (from the response bundles' locations). */
  const serverRef = new Map<string, string>();
  const { infos, patients } = blazeFiles();
  t.equal(infos.length, 2);
  t.equal(patients.length, 120);
  const loadStart = performance.now();
  for (const file of [...infos, ...patients]) {
    const text = readBlazeFile(file);
    const bundle = JSON.parse(text);
    const res = await s.fhir('POST', '', text, { prefer: 'return=minimal' });
    if (res.status !== 200) {
      t.fail(`${file}: ${res.status}`, { issues: res.json?.issue });
      continue;
    }
    oracle.add(bundle);
    bundle.entry.forEach((entry: any, i: number) => {
      const location = res.json.entry[i]?.response?.location as string | undefined;
      if (entry.fullUrl && location) serverRef.set(entry.fullUrl, location.split('/_history')[0]!);
    });
  }
  t.comment(`loaded ${oracle.total()} resources in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);
  t.equal(oracle.total(), 92_114, 'the corpus documents 92,114 resources');

  t.test('totals by type', async (t) => {
    const expected: Record<string, number> = {};
    const got: Record<string, number | undefined> = {};
    for (const [type, list] of oracle.byType) {
      expected[type] = list.length;
      got[type] = await count(s, type);
    }
    t.same(got, expected);
  });

  t.test('token OR list', async (t) => {
    const expected = oracle.all('Observation').filter((o) => hasCode(o.code, LOINC, '8302-2') || hasCode(o.code, LOINC, '29463-7')).length;
    t.ok(expected > 0);
    t.equal(await count(s, `Observation?code=${LOINC}|8302-2,${LOINC}|29463-7`), expected);
    t.equal(await count(s, 'Observation?code=8302-2,29463-7'), expected, 'code without system');
  });

  t.test('date prefixes at year precision', async (t) => {
    const birthYear = (p: Json) => Number(String(p.birthDate).slice(0, 4));
    const pts = oracle.all('Patient');
    t.equal(await count(s, 'Patient?birthdate=ge1960&birthdate=lt1970'), pts.filter((p) => birthYear(p) >= 1960 && birthYear(p) < 1970).length);
    const year = birthYear(pts[0]!);
    t.equal(await count(s, `Patient?birthdate=${year}`), pts.filter((p) => birthYear(p) === year).length);
    t.equal(await count(s, 'Patient?birthdate=gt2000'), pts.filter((p) => birthYear(p) > 2000).length);

    // Encounter.period: eq2015 = the period lies within 2015 (UTC); ge2019 = it reaches into 2019 or later.
    const encounters = oracle.all('Encounter');
    const start = (e: Json) => Date.parse(e.period.start);
    const end = (e: Json) => (e.period.end ? Date.parse(e.period.end) : Number.POSITIVE_INFINITY);
    const y2015 = Date.UTC(2015, 0, 1);
    const y2016 = Date.UTC(2016, 0, 1);
    t.equal(await count(s, 'Encounter?date=2015'), encounters.filter((e) => start(e) >= y2015 && end(e) < y2016).length, 'eq2015');
    t.equal(await count(s, 'Encounter?date=ge2019'), encounters.filter((e) => end(e) >= Date.UTC(2019, 0, 1)).length, 'ge2019');
    // dateTime to the second: its range is that second.
    const obs = oracle.all('Observation').filter((o) => o.effectiveDateTime);
    t.equal(await count(s, 'Observation?date=lt1990'), obs.filter((o) => Date.parse(o.effectiveDateTime) < Date.UTC(1990, 0, 1)).length, 'lt1990');
    t.equal(
      await count(s, 'Observation?date=sa2020-06-01'),
      obs.filter((o) => Date.parse(o.effectiveDateTime) >= Date.UTC(2020, 5, 1) + DAY).length,
      'sa: starts after the day',
    );
  });

  t.test('chains, one and two levels', async (t) => {
    const patient = oracle.all('Patient')[3]!;
    const family = patient.name[0].family as string;
    const familyMatches = (p: Json | undefined) => (p?.name ?? []).some((n: Json) => fold(n.family ?? '').startsWith(fold(family)));
    const expected = oracle.all('Observation').filter((o) => familyMatches(oracle.resolve(o.subject?.reference))).length;
    t.ok(expected > 0);
    t.equal(await count(s, `Observation?subject:Patient.family=${encodeURIComponent(family)}`), expected, 'one level');

    const orgName = 'MILFORD';
    const viaOrg = oracle.all('Observation').filter((o) => {
      const encounter = oracle.resolve(o.encounter?.reference);
      const org = oracle.resolve(encounter?.serviceProvider?.reference);
      return org !== undefined && fold(org.name ?? '').startsWith(fold(orgName));
    }).length;
    t.ok(viaOrg > 0);
    t.equal(await count(s, `Observation?encounter:Encounter.service-provider:Organization.name=${orgName}`), viaOrg, 'two levels');
  });

  t.test('_has (reverse chaining)', async (t) => {
    // The LOINC code observed in the fewest patients (at least 3): a selective _has.
    const patientsByCode = new Map<string, Set<string>>();
    for (const o of oracle.all('Observation')) {
      for (const c of o.code?.coding ?? []) {
        if (c.system !== LOINC) continue;
        const set = patientsByCode.get(c.code) ?? new Set<string>();
        set.add(o.subject?.reference);
        patientsByCode.set(c.code, set);
      }
    }
    const [code, who] = [...patientsByCode].filter(([, set]) => set.size >= 3).sort((a, b) => a[1].size - b[1].size || a[0].localeCompare(b[0]))[0]!;
    t.equal(await count(s, `Patient?_has:Observation:patient:code=${LOINC}|${code}`), who.size, `patients with an observation ${code}`);
  });

  t.test('_profile and _profile:below', async (t) => {
    const profiles = (r: Json): string[] => r.meta?.profile ?? [];
    const encounterProfile = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter';
    t.equal(await count(s, `Encounter?_profile=${encounterProfile}`), oracle.all('Encounter').filter((e) => profiles(e).includes(encounterProfile)).length);
    const base = 'http://hl7.org/fhir/StructureDefinition';
    const below = oracle.all('Observation').filter((o) => profiles(o).some((p) => p === base || p.startsWith(`${base}/`))).length;
    t.ok(below > 0);
    t.equal(await count(s, `Observation?_profile:below=${base}`), below);
  });

  t.test('_revinclude and _include', async (t) => {
    const patient = oracle.all('Patient')[7]!;
    const fullUrl = [...oracle.byFullUrl].find(([, r]) => r === patient)![0];
    const ref = serverRef.get(fullUrl)!;
    const encounters = oracle.all('Encounter').filter((e) => e.subject?.reference === fullUrl);
    const res = await s.fhir('GET', `Patient?_id=${ref.split('/')[1]}&_revinclude=Encounter:patient&_count=1000`);
    t.equal(res.status, 200);
    const modes = (res.json.entry ?? []).map((e: any) => `${e.search?.mode}:${e.resource.resourceType}`);
    t.equal(modes.filter((m: string) => m === 'match:Patient').length, 1);
    t.equal(modes.filter((m: string) => m === 'include:Encounter').length, encounters.length, 'every encounter of the patient included');

    const orgs = new Set(encounters.map((e) => oracle.resolve(e.serviceProvider?.reference)).filter(Boolean));
    const inc = await s.fhir('GET', `Encounter?patient=${ref}&_include=Encounter:service-provider&_count=1000`);
    const included = (inc.json.entry ?? []).filter((e: any) => e.search?.mode === 'include');
    t.equal(included.length, orgs.size, 'each distinct service provider included once');
  });

  t.test('sorting with paging: GET and POST agree, and the order holds', async (t) => {
    const expected = oracle.all('Observation').filter((o) => hasCode(o.code, LOINC, '8302-2'));
    const get = await allPages(s, await s.fhir('GET', `Observation?code=${LOINC}|8302-2&_sort=-date&_count=37`));
    const post = await allPages(
      s,
      await s.fhir('POST', 'Observation/_search', `code=${encodeURIComponent(`${LOINC}|8302-2`)}&_sort=-date&_count=37`, {
        'content-type': 'application/x-www-form-urlencoded',
      }),
    );
    t.equal(get.length, expected.length, 'every match, once');
    t.equal(new Set(get.map((e) => e.resource.id)).size, expected.length, 'no duplicates across pages');
    t.same(post.map((e) => e.resource.id), get.map((e) => e.resource.id), 'POST _search pages = GET pages');
    const times = get.map((e) => Date.parse(e.resource.effectiveDateTime));
    t.ok(times.every((time, i) => i === 0 || time <= times[i - 1]!), 'newest first');
  });
});
