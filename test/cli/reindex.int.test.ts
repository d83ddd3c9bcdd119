/**
 * `vellum reindex`: search rows lost or stale in the index (as after a SearchParameter change)
 * are re-extracted from the stored versions, with the server stopped; searches then answer
 * right again. Idempotent, limited by `--type`, and refused (coded) without an index.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { runReindex } from '../../src/cli/reindex.ts';
import { main } from '../../src/cli/vellum.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const ENV = { PORT: '8080', VELLUM_CHAIN: 'off' };
const TABLES = ['string', 'token', 'date', 'reference', 'number', 'quantity', 'uri', 'composite'];

function captureIo() {
  let stdout = '';
  let stderr = '';
  return {
    io: { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } },
    out: () => stdout,
    err: () => stderr,
  };
}

async function reindex(dataDir: string, args: string[] = []) {
  const cap = captureIo();
  const code = await runReindex([...args, '--json'], cap.io, { VELLUM_DATA_DIR: dataDir, ...ENV });
  let report: any;
  try {
    report = JSON.parse(cap.out());
  } catch {
    report = undefined;
  }
  return { code, report, stderr: cap.err() };
}

/** Every search row of the index, keyed by Type/id, sorted: comparable across runs. */
function dumpRows(dataDir: string): string[] {
  const db = new DatabaseSync(path.join(dataDir, 'vellum.db'));
  try {
    const out: string[] = [];
    for (const table of TABLES) {
      const rows = db.prepare(`SELECT r.type, r.id, s.* FROM search_${table} s JOIN resources r ON r.rid = s.rid`).all();
      for (const row of rows) out.push(`${table} ${JSON.stringify(row)}`);
    }
    return out.sort();
  } finally {
    db.close();
  }
}

/** Run SQL against the stopped server's index (to lose or spoil search rows). */
function tamper(dataDir: string, sql: string, ...params: (string | number)[]): number {
  const db = new DatabaseSync(path.join(dataDir, 'vellum.db'));
  try {
    return Number(db.prepare(sql).run(...params).changes);
  } finally {
    db.close();
  }
}

function ridOf(dataDir: string, type: string, id: string): number {
  const db = new DatabaseSync(path.join(dataDir, 'vellum.db'));
  try {
    return Number((db.prepare('SELECT rid FROM resources WHERE type = ? AND id = ?').get(type, id) as { rid: number }).rid);
  } finally {
    db.close();
  }
}

const ids = (bundle: any): string[] => (bundle?.entry ?? []).map((e: any) => `${e.resource.resourceType}/${e.resource.id}`).sort();

async function answers(s: TestServer, queries: string[]): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const q of queries) {
    const res = await s.fhir('GET', q);
    if (res.status !== 200) throw new Error(`${q}: ${res.status} ${res.text}`);
    out[q] = ids(res.json);
  }
  return out;
}

const QUERIES = [
  'Patient?family=Reindexed',
  'Patient?family=Other',
  'Patient?identifier=urn:test:mrn|m-1',
  'Observation?code=http://loinc.org|8867-4',
  'Observation?subject:Patient.family=Reindexed',
  'Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100',
  'Observation?date=ge2021-01-01',
];

t.test('reindex restores lost and spoiled search rows; idempotent; --type limits it', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-reindex-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  const first = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  const patient = await first.fhir('POST', 'Patient', {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:test:mrn', value: 'm-1' }],
    name: [{ family: 'Reindexed', given: ['Ada'] }],
  });
  t.equal(patient.status, 201);
  const pid = patient.json.id;
  const other = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Other' }] });
  const gone = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Reindexed', given: ['Gone'] }] });
  t.equal((await first.fhir('DELETE', `Patient/${gone.json.id}`)).status, 204);
  const obs = [];
  for (const [i, systolic] of [90, 120, 140].entries()) {
    const res = await first.fhir('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: i === 0 ? '8310-5' : '8867-4' }] },
      subject: { reference: `Patient/${i === 2 ? other.json.id : pid}` },
      effectiveDateTime: `202${i}-06-01`,
      component: [
        { code: { coding: [{ system: 'http://loinc.org', code: '8480-6' }] }, valueQuantity: { value: systolic, unit: 'mmHg', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
      ],
    });
    t.equal(res.status, 201);
    obs.push(res.json.id);
  }
  const before = await answers(first, QUERIES);
  t.same(before['Patient?family=Reindexed'], [`Patient/${pid}`], 'the deleted patient is not found');
  t.same(before['Observation?code=http://loinc.org|8867-4'], [`Observation/${obs[1]}`, `Observation/${obs[2]}`].sort());
  t.same(before['Observation?component-code-value-quantity=http://loinc.org|8480-6$gt100'], [`Observation/${obs[1]}`, `Observation/${obs[2]}`].sort());
  t.same(before['Observation?subject:Patient.family=Reindexed'], [`Observation/${obs[0]}`, `Observation/${obs[1]}`].sort());
  await first.close();
  const rowsBefore = dumpRows(dataDir);
  const goneRid = ridOf(dataDir, 'Patient', gone.json.id);
  t.notOk(rowsBefore.some((r) => r.includes(gone.json.id)), 'a deleted resource has no search rows');

  // Lose or spoil rows of every kind, as a registry change would leave them.
  const patientRid = ridOf(dataDir, 'Patient', pid);
  t.ok(tamper(dataDir, "DELETE FROM search_string WHERE rid = ? AND param = 'family'", patientRid) > 0);
  t.ok(tamper(dataDir, "UPDATE search_token SET code = 'spoiled' WHERE rid = ?", patientRid) > 0);
  t.ok(tamper(dataDir, "DELETE FROM search_token WHERE param = 'code' AND rid IN (SELECT rid FROM resources WHERE type = 'Observation')") > 0);
  t.ok(tamper(dataDir, "DELETE FROM search_composite WHERE rid IN (SELECT rid FROM resources WHERE type = 'Observation')") > 0);
  t.ok(tamper(dataDir, "DELETE FROM search_reference WHERE rid IN (SELECT rid FROM resources WHERE type = 'Observation')") > 0);
  t.ok(tamper(dataDir, 'DELETE FROM search_date') > 0);
  // A stale row no current version would give: it must be replaced, not kept.
  t.ok(tamper(dataDir, "INSERT INTO search_string (rid, param, norm, exact) VALUES (?, 'family', 'stale', 'Stale')", patientRid) > 0);

  const spoiled = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  const broken = await answers(spoiled, [...QUERIES, 'Patient?family=Stale']);
  t.same(broken['Patient?family=Reindexed'], [], 'the lost row makes the search miss');
  t.same(broken['Observation?code=http://loinc.org|8867-4'], []);
  t.same(broken['Patient?family=Stale'], [`Patient/${pid}`], 'the stale row matches');
  await spoiled.close();

  // --type Patient: only the patients come back.
  const onlyPatients = await reindex(dataDir, ['--type', 'Patient']);
  t.equal(onlyPatients.code, 0, onlyPatients.stderr);
  t.equal(onlyPatients.report.reindexed, true);
  t.same(onlyPatients.report.byType, { Patient: 2 }, 'two live patients; the deleted one is skipped');
  const partly = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  const partial = await answers(partly, [...QUERIES, 'Patient?family=Stale']);
  t.same(partial['Patient?family=Reindexed'], before['Patient?family=Reindexed'], 'patients reindexed');
  t.same(partial['Patient?identifier=urn:test:mrn|m-1'], before['Patient?identifier=urn:test:mrn|m-1']);
  t.same(partial['Patient?family=Stale'], [], 'the stale row is gone');
  t.same(partial['Observation?code=http://loinc.org|8867-4'], [], 'observations untouched by --type Patient');
  await partly.close();

  const full = await reindex(dataDir);
  t.equal(full.code, 0, full.stderr);
  t.same(full.report.byType, { Patient: 2, Observation: 3 });
  t.equal(full.report.resources, 5);
  t.equal(full.report.shredded, 0);
  t.same(dumpRows(dataDir), rowsBefore, 'every row is what the writes made');
  const db = new DatabaseSync(path.join(dataDir, 'vellum.db'));
  for (const table of TABLES) {
    const n = (db.prepare(`SELECT COUNT(*) AS n FROM search_${table} WHERE rid = ?`).get(goneRid) as { n: number }).n;
    t.equal(Number(n), 0, `the deleted patient has no ${table} rows`);
  }
  db.close();

  const again = await reindex(dataDir, ['--chunk', '2']);
  t.equal(again.code, 0);
  t.equal(again.report.chunks, 3, 'five resources in chunks of two');
  t.same(dumpRows(dataDir), rowsBefore, 'idempotent');

  const after = await startTestServer(t, { VELLUM_DATA_DIR: dataDir });
  t.same(await answers(after, QUERIES), before, 'every search answers as before');
  t.equal((await after.fhir('GET', `Patient/${gone.json.id}`)).status, 410, 'the deleted patient stays deleted');
  t.equal((await after.fhir('GET', `Patient/${pid}/_history`)).json.total, 1, 'history untouched');
  await after.close();
});

t.test('reindex refuses what it cannot do, with codes', async (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-reindex-empty-'));
  t.teardown(() => fs.rmSync(empty, { recursive: true, force: true }));
  const none = await reindex(empty);
  t.equal(none.code, 2);
  t.equal(none.report.error.code, 'VLM_REINDEX_NO_INDEX');
  t.notOk(fs.existsSync(path.join(empty, 'vellum.db')), 'no index is created');
  t.notOk(fs.existsSync(path.join(empty, 'master.key')), 'no key is created');

  const s = await startTestServer(t, { VELLUM_DATA_DIR: empty });
  t.equal((await s.fhir('POST', 'Patient', { resourceType: 'Patient' })).status, 201);
  await s.close();
  const bad = await reindex(empty, ['--type', 'Patient,NotAType']);
  t.equal(bad.code, 2);
  t.equal(bad.report.error.code, 'VLM_REINDEX_UNKNOWN_TYPE');
  const chunk = await reindex(empty, ['--chunk', 'many']);
  t.equal(chunk.code, 2);
  t.equal(chunk.report.error.code, 'VLM_REINDEX_BAD_CHUNK');

  fs.renameSync(path.join(empty, 'master.key'), path.join(empty, 'master.key.away'));
  const noKey = await reindex(empty);
  t.equal(noKey.code, 2);
  t.equal(noKey.report.error.code, 'VLM_REINDEX_NO_KEY');
  // Another master key: the version does not decrypt, so nothing is written and the run says so.
  const other = captureIo();
  const wrongKey = await runReindex(['--json'], other.io, { VELLUM_DATA_DIR: empty, ...ENV, VELLUM_MASTER_KEY: '11'.repeat(32) });
  t.equal(wrongKey, 1);
  t.equal(JSON.parse(other.out()).error.code, 'VLM_REINDEX_READ');
  fs.renameSync(path.join(empty, 'master.key.away'), path.join(empty, 'master.key'));

  const unknownOption = captureIo();
  t.equal(await runReindex(['--frobnicate'], unknownOption.io, { VELLUM_DATA_DIR: empty, ...ENV }), 2);
  const help = captureIo();
  t.equal(await main(['reindex', '--help'], help.io), 0);
  t.match(help.out(), /vellum reindex/);
  const top = captureIo();
  t.equal(await main(['help'], top.io), 0);
  t.match(top.out(), /reindex/);
  const ok = await reindex(empty);
  t.equal(ok.code, 0);
  t.equal(ok.report.resources, 1);
});
