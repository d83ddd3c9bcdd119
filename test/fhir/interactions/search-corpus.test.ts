/**
 * Chains, `_has`, includes, composites and `:of-type` on real data: three patients of the Blaze
 * Synthea search set (shared/corpora/search/blaze-synthea, see its README), with the
 * organisations, locations and practitioners they refer to. Every expected result is computed
 * here from the JSON files, never taken from a server's answer.
 *
 * Loading: the bundles' `urn:uuid:` references become `Type/id`, and conditional references
 * (`Practitioner?identifier=system|value`) are resolved against the two `0-…Information` batch
 * bundles, as a server processing the transaction would; resources are written with PUT.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CORPORA } from '../../helpers/corpora.ts';
import { startTestServer } from '../../helpers/server.ts';
import { ids } from '../search/fixtures.ts';

const DIR = path.join(CORPORA, 'search/blaze-synthea');
const PATIENTS = 3;

type Json = Record<string, any>;

function bunzip(file: string): Json {
  return JSON.parse(execFileSync('bunzip2', ['-c', path.join(DIR, file)], { maxBuffer: 256 * 1024 * 1024 }).toString('utf8'));
}

function hasBunzip(): boolean {
  try {
    execFileSync('bunzip2', ['--help'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const available = fs.existsSync(DIR) && hasBunzip();

t.test('search features on Synthea data', { skip: available ? false : 'corpus or bunzip2 not available' }, async (t) => {
  const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.json.bz2'));
  const shared = files.filter((f) => f.startsWith('0-')).flatMap((f) => bunzip(f).entry.map((e: Json) => e.resource as Json));
  const byIdentifier = new Map<string, Json>();
  for (const r of shared) for (const i of r.identifier ?? []) byIdentifier.set(`${r.resourceType}?identifier=${i.system}|${i.value}`, r);
  // The smallest patient bundles keep the test quick.
  const patientFiles = files
    .filter((f) => !f.startsWith('0-'))
    .sort((a, b) => fs.statSync(path.join(DIR, a)).size - fs.statSync(path.join(DIR, b)).size)
    .slice(0, PATIENTS);

  const resources: Json[] = [];
  const needed = new Map<string, Json>();
  for (const file of patientFiles) {
    const bundle = bunzip(file);
    const byFullUrl = new Map<string, string>(bundle.entry.map((e: Json) => [e.fullUrl, `${e.resource.resourceType}/${e.resource.id}`]));
    const rewrite = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(rewrite);
      if (node === null || typeof node !== 'object') return;
      const o = node as Json;
      if (typeof o['reference'] === 'string') {
        const ref = o['reference'] as string;
        if (byFullUrl.has(ref)) o['reference'] = byFullUrl.get(ref);
        else if (byIdentifier.has(ref)) {
          const target = byIdentifier.get(ref)!;
          o['reference'] = `${target.resourceType}/${target.id}`;
          needed.set(o['reference'], target);
        } else if (ref.includes('?')) delete o['reference'];
      }
      for (const value of Object.values(o)) rewrite(value);
    };
    for (const e of bundle.entry) {
      rewrite(e.resource);
      resources.push(e.resource);
    }
  }
  // Shared resources refer to each other too (a Location's managingOrganization).
  for (const r of [...needed.values()]) {
    for (const ref of JSON.stringify(r).match(/"reference":"([^"]+)"/g) ?? []) {
      const target = byIdentifier.get(ref.slice(13, -1));
      if (target) needed.set(`${target.resourceType}/${target.id}`, target);
    }
  }
  const loaded = [...needed.values(), ...resources].map((r) => structuredClone(r));
  for (const r of loaded) {
    const rewriteShared = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(rewriteShared);
      if (node === null || typeof node !== 'object') return;
      const o = node as Json;
      if (typeof o['reference'] === 'string' && o['reference'].includes('?')) {
        const target = byIdentifier.get(o['reference']);
        if (target && needed.has(`${target.resourceType}/${target.id}`)) o['reference'] = `${target.resourceType}/${target.id}`;
        else delete o['reference'];
      }
      for (const value of Object.values(o)) rewriteShared(value);
    };
    rewriteShared(r);
  }

  const s = await startTestServer(t);
  for (const r of loaded) {
    const res = await s.fhir('PUT', `${r.resourceType}/${r.id}`, r);
    if (res.status !== 201 && res.status !== 200) t.fail(`${r.resourceType}/${r.id}: ${res.status} ${res.text.slice(0, 300)}`);
  }
  t.comment(`loaded ${loaded.length} resources`);

  // --- The data, indexed here for the expectations.
  const of = (type: string) => loaded.filter((r) => r.resourceType === type);
  const key = (r: Json) => `${r.resourceType}/${r.id}`;
  const byKey = new Map(loaded.map((r) => [key(r), r]));
  const ref = (r: Json, field: string): string | undefined => r[field]?.reference;
  const patients = of('Patient');
  const observations = of('Observation');
  const encounters = of('Encounter');
  t.equal(patients.length, PATIENTS);

  const search = async (query: string): Promise<string[]> => {
    const res = await s.fhir('GET', query);
    t.equal(res.status, 200, query);
    t.ok(res.json.total <= 1000, 'one page holds every match');
    return ids(res.json);
  };
  const sorted = (rs: Json[]) => rs.map(key).sort();

  // Chain: Observation?subject:Patient.family=<a family name> (string: case-insensitive prefix).
  const patient = patients[0]!;
  const family: string = patient.name[0].family;
  const familyMatches = (p: Json | undefined, value: string) =>
    (p?.name ?? []).some((n: Json) => typeof n.family === 'string' && n.family.toLowerCase().startsWith(value.toLowerCase()));
  const expectedChain = observations.filter((o) => familyMatches(byKey.get(ref(o, 'subject') ?? ''), family));
  t.ok(expectedChain.length > 0);
  t.same(await search(`Observation?subject:Patient.family=${encodeURIComponent(family)}&_count=1000`), sorted(expectedChain), 'one-level chain');

  // Two levels: through the encounter.
  const expectedTwo = observations.filter((o) => familyMatches(byKey.get(ref(byKey.get(ref(o, 'encounter') ?? '') ?? {}, 'subject') ?? ''), family));
  t.same(
    await search(`Observation?encounter:Encounter.subject:Patient.family=${encodeURIComponent(family)}&_count=1000`),
    sorted(expectedTwo),
    'two-level chain',
  );

  // _has: patients with an encounter of each class code present.
  const classes = [...new Set(encounters.map((e) => e.class?.code as string))];
  for (const code of classes) {
    const expected = patients.filter((p) => encounters.some((e) => e.class?.code === code && ref(e, 'subject') === key(p)));
    t.same(await search(`Patient?_has:Encounter:patient:class=${code}`), sorted(expected), `_has class=${code}`);
  }

  // _revinclude and _include.
  const revinclude = await s.fhir('GET', `Patient?_id=${patient.id}&_revinclude=Encounter:patient`);
  t.same(ids(revinclude.json, 'include'), sorted(encounters.filter((e) => ref(e, 'subject') === key(patient))), '_revinclude');
  const own = observations.filter((o) => ref(o, 'subject') === key(patient));
  const include = await s.fhir('GET', `Observation?patient=${patient.id}&_count=1000&_include=Observation:encounter`);
  t.same(ids(include.json), sorted(own));
  const encounterKeys = [...new Set(own.map((o) => ref(o, 'encounter')).filter((r): r is string => r !== undefined))].sort();
  t.same(ids(include.json, 'include'), encounterKeys, '_include: each encounter once');

  // Composite: a systolic component above 120 (in the same component).
  const systolicAbove = (o: Json, limit: number) =>
    (o.component ?? []).some(
      (c: Json) => c.code?.coding?.some((x: Json) => x.system === 'http://loinc.org' && x.code === '8480-6') && c.valueQuantity?.value > limit,
    );
  for (const limit of [100, 120, 140]) {
    const expected = observations.filter((o) => systolicAbove(o, limit));
    t.same(
      await search(`Observation?component-code-value-quantity=http://loinc.org%7C8480-6$gt${limit}&_count=1000`),
      sorted(expected),
      `component-code-value-quantity gt${limit}`,
    );
  }
  const withBp = observations.filter((o) => (o.component ?? []).length > 0);
  t.ok(withBp.length > 0, 'the data has component observations');

  // :of-type on the patients' typed identifiers.
  const typed = patients.flatMap((p) =>
    (p.identifier ?? []).flatMap((i: Json) => (i.type?.coding ?? []).map((c: Json) => ({ p, system: c.system, code: c.code, value: i.value }))),
  );
  t.ok(typed.length > 0);
  for (const { system, code, value } of typed.slice(0, 6)) {
    const expected = patients.filter((p) =>
      (p.identifier ?? []).some((i: Json) => i.value === value && (i.type?.coding ?? []).some((c: Json) => c.system === system && c.code === code)),
    );
    t.same(
      await search(`Patient?identifier:of-type=${encodeURIComponent(`${system}|${code}|${value}`)}`),
      sorted(expected),
      `of-type ${code}`,
    );
  }

  // _type at system level.
  const sys = await s.fhir('GET', '?_type=Patient,Practitioner&_summary=count');
  t.equal(sys.json.total, patients.length + of('Practitioner').length, '_type');
});
