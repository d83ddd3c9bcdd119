/**
 * Synthea patients (CORPORA/synthea, README §3). The files are transaction Bundles, and
 * transactions come later; until then each entry's resource is written on its own:
 * PUT [base]/<Type>/<fresh id> (update-as-create) with every `urn:uuid:` reference rewritten to
 * `Type/id`, as a transaction would (http://hl7.org/fhir/R4/http.html#trules). Every resource must
 * validate (201), and `Observation?subject=Patient/<id>&_summary=count` must count the patient's
 * Observations in the bundle.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CORPORA } from '../helpers/corpora.ts';
import { startTestServer } from '../helpers/server.ts';

const DIR = join(CORPORA, 'synthea');

/** Which of the 50 files (index.json order): first, middle, last, for a spread of sizes and ages. */
const PICK = [0, 25, 49];

interface IndexEntry {
  file: string;
  patientId: string;
  entries: number;
  resourceCounts: Record<string, number>;
}

/** Replace every `reference` that names a bundle entry (urn:uuid:…) by its new `Type/id`. */
function rewriteReferences(value: unknown, ids: Map<string, string>): unknown {
  if (Array.isArray(value)) return value.map((v) => rewriteReferences(v, ids));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (key === 'reference' && typeof v === 'string' && v.startsWith('urn:uuid:')) {
      const target = ids.get(v);
      if (target === undefined) throw new Error(`reference ${v} names no entry of the bundle`);
      out[key] = target;
    } else {
      out[key] = rewriteReferences(v, ids);
    }
  }
  return out;
}

t.test('Synthea bundles written entry by entry', async (t) => {
  const indexFile = join(DIR, 'index.json');
  if (!existsSync(indexFile)) {
    t.fail(`corpus not found at ${DIR} (set VELLUM_CORPORA)`);
    return;
  }
  const index = JSON.parse(readFileSync(indexFile, 'utf8')) as { files: IndexEntry[] };
  const s = await startTestServer(t);
  const createdPerType = new Map<string, number>();
  const start = performance.now();
  let written = 0;

  for (const pick of PICK) {
    const meta = index.files[pick]!;
    const bundle = JSON.parse(readFileSync(join(DIR, meta.file), 'utf8')) as {
      type: string;
      entry: { fullUrl: string; resource: Record<string, any> }[];
    };
    t.equal(bundle.type, 'transaction', `${meta.file} is a transaction`);
    t.equal(bundle.entry.length, meta.entries, `${meta.file}: ${meta.entries} entries`);

    const ids = new Map<string, string>();
    for (const entry of bundle.entry) ids.set(entry.fullUrl, `${entry.resource.resourceType}/${randomUUID()}`);
    const patients = bundle.entry.filter((e) => e.resource.resourceType === 'Patient');
    t.equal(patients.length, 1, 'one patient per bundle');
    const patientUrn = patients[0]!.fullUrl;
    const patientRef = ids.get(patientUrn)!;

    const failures: { ref: string; status: number; issues: unknown }[] = [];
    for (const entry of bundle.entry) {
      const ref = ids.get(entry.fullUrl)!;
      const [type, id] = ref.split('/') as [string, string];
      const resource = { ...(rewriteReferences(entry.resource, ids) as Record<string, unknown>), id };
      const res = await s.fhir('PUT', ref, resource);
      if (res.status === 201) {
        written++;
        createdPerType.set(type, (createdPerType.get(type) ?? 0) + 1);
      } else {
        failures.push({ ref, status: res.status, issues: res.json?.issue });
      }
    }
    t.same(failures, [], `${meta.file}: every one of ${bundle.entry.length} resources validated and was created (201)`);

    const observations = bundle.entry.filter(
      (e) => e.resource.resourceType === 'Observation' && e.resource.subject?.reference === patientUrn,
    ).length;
    t.equal(observations, meta.resourceCounts['Observation'] ?? 0, 'every Observation of the bundle is about its patient');
    const count = await s.fhir('GET', `Observation?subject=${patientRef}&_summary=count`);
    t.equal(count.status, 200);
    t.equal(count.json.total, observations, `${meta.file}: Observation?subject=${patientRef.split('/')[0]}/… counts ${observations}`);
    t.same(count.json.entry ?? [], [], '_summary=count returns no entries');
    const byPatient = await s.fhir('GET', `Observation?patient=${patientRef}&_summary=count`);
    t.equal(byPatient.json.total, observations, 'Observation?patient= agrees');

    const patient = await s.fhir('GET', patientRef);
    t.equal(patient.status, 200);
    t.equal(patient.json.birthDate, patients[0]!.resource.birthDate);
  }

  // Fresh ids everywhere: the per-type totals are exactly what was written.
  for (const [type, n] of [...createdPerType].sort()) {
    const res = await s.fhir('GET', `${type}?_summary=count`);
    t.equal(res.json.total, n, `${type}: ${n} in total`);
  }
  t.comment(`${written} resources from ${PICK.length} bundles written in ${((performance.now() - start) / 1000).toFixed(1)} s`);
});
