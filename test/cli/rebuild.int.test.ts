/**
 * `vellum rebuild`: the index is a cache, the chain is the log. Write through the API with the
 * embedded chain, lose the index database, rebuild it from the chain's events + the blocks + the
 * master key, and every read, search, history and $verify answer is the same as before.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import t from 'tap';
import { CHAIN_ENV, entries, loseIndex, rebuild, verifyParams, waitAnchored } from '../helpers/rebuild.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

async function answers(s: TestServer, patientId: string, versionsOf: Record<string, number>) {
  const get = async (url: string) => {
    const res = await s.fhir('GET', url);
    return { status: res.status, body: res.json?.resourceType === 'Bundle' ? entries(res.json) : res.json };
  };
  const out: Record<string, unknown> = {};
  const urls = [
    '_history?_count=100',
    'Patient/_history',
    `Patient/${patientId}/_history`,
    `Patient/${patientId}`,
    `Observation?subject=Patient/${patientId}&_sort=_id`,
    'Observation?code=http://loinc.org|8867-4&_sort=_id',
    'Patient?family=Rebuilt',
    'Patient?name=changed',
    'Observation?_summary=count',
    'Organization?name=Clinic',
  ];
  for (const url of urls) out[url] = await get(url);
  for (const [ref, last] of Object.entries(versionsOf)) {
    for (let v = 1; v <= last; v++) {
      out[`${ref}/_history/${v}`] = await get(`${ref}/_history/${v}`);
      const verify = await s.fhir('GET', `${ref}/_history/${v}/$verify`);
      out[`${ref}/_history/${v}/$verify`] = { status: verify.status, params: verifyParams(verify.json) };
    }
  }
  return out;
}

t.test('rebuild reproduces reads, searches, history and proofs from the chain and the blocks alone', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-rebuild-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  const first = await startTestServer(t, { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir });
  const patient = await first.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Rebuilt', given: ['Ada'] }], birthDate: '1970-01-02' });
  t.equal(patient.status, 201);
  const pid = patient.json.id;
  t.equal((await first.fhir('PUT', `Patient/${pid}`, { ...patient.json, name: [{ family: 'Rebuilt', given: ['Ada', 'changed'] }] })).status, 200);
  const patched = await first.fhir('PATCH', `Patient/${pid}`, [{ op: 'add', path: '/gender', value: 'female' }], {
    'content-type': 'application/json-patch+json',
  });
  t.equal(patched.status, 200);
  const obs = async (value: number) =>
    first.fhir('POST', 'Observation', {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${pid}` },
      valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    });
  const o1 = await obs(61.5);
  const o2 = await obs(72);
  t.equal((await first.fhir('DELETE', `Observation/${o2.json.id}`)).status, 204);
  // A resource outside any patient compartment (shared key scope), created by PUT.
  t.equal((await first.fhir('PUT', 'Organization/clinic-1', { resourceType: 'Organization', id: 'clinic-1', name: 'Clinic One' })).status, 201);
  await waitAnchored(t, first);

  const versionsOf = { [`Patient/${pid}`]: 3, [`Observation/${o1.json.id}`]: 1, [`Observation/${o2.json.id}`]: 2, 'Organization/clinic-1': 1 };
  const before = await answers(first, pid, versionsOf);
  t.equal((before[`Patient/${pid}/_history/3/$verify`] as any).params.verified, true, 'anchored and verified before');
  await first.close();

  const blocks = loseIndex(dataDir);
  t.notOk(fs.existsSync(path.join(dataDir, 'vellum.db')), 'the index database is gone');

  const usage = await rebuild(dataDir, []);
  t.equal(usage.code, 1, 'without the blocks, the rebuild cannot verify the log');
  t.equal(usage.report.error.code, 'VLM_REBUILD_BLOCK_MISSING');
  t.notOk(fs.existsSync(path.join(dataDir, 'vellum.db')), 'a failed rebuild leaves no index behind');

  const done = await rebuild(dataDir, ['--blocks-from', blocks]);
  t.equal(done.code, 0, done.stderr);
  t.equal(done.report.versions, 7, 'every anchored version came back');
  t.equal(done.report.resources, 4);

  const again = await rebuild(dataDir, ['--blocks-from', blocks]);
  t.equal(again.code, 2);
  t.equal(again.report.error.code, 'VLM_REBUILD_INDEX_EXISTS', 'never overwrites an index');

  fs.rmSync(blocks);
  const second = await startTestServer(t, { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir });
  const after = await answers(second, pid, versionsOf);
  t.same(after, before, 'every answer is identical after the rebuild');
  t.strictSame(Object.keys(after), Object.keys(before));

  // The rebuilt server carries on: new versions follow the old ones and are anchored.
  const next = await second.fhir('PUT', `Patient/${pid}`, { ...patched.json, active: true }, { prefer: 'anchor=wait' });
  t.equal(next.status, 200);
  t.equal(next.json.meta.versionId, '4');
  const verify = await second.fhir('GET', `Patient/${pid}/_history/4/$verify`);
  t.equal(verifyParams(verify.json).verified, true);
  await second.close();
});

t.test('rebuild refuses what does not verify, and writes nothing', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-rebuild-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const s = await startTestServer(t, { ...CHAIN_ENV, VELLUM_DATA_DIR: dataDir });
  const created = await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Tamper' }] }, { prefer: 'anchor=wait' });
  t.equal(created.status, 201);
  const cid = (await s.services.repository.index.current('Patient', created.json.id))!.cid;
  await s.close();
  const blocks = loseIndex(dataDir);

  // Another master key: the locators do not open.
  const otherKey = Buffer.alloc(32, 7).toString('base64url');
  const foreign = await rebuild(dataDir, ['--blocks-from', blocks], { VELLUM_MASTER_KEY: otherKey });
  t.equal(foreign.code, 1);
  t.equal(foreign.report.error.code, 'VLM_REBUILD_LOCATOR');
  t.equal(foreign.report.error.batchId, 1);

  // A flipped byte in the stored envelope: its CID no longer matches.
  const sqlite = new DatabaseSync(blocks);
  const row = sqlite.prepare('SELECT bytes FROM blocks WHERE cid = ?').get(cid) as { bytes: Uint8Array };
  const bytes = Buffer.from(row.bytes);
  bytes[bytes.length - 5]! ^= 1;
  sqlite.prepare('UPDATE blocks SET bytes = ? WHERE cid = ?').run(bytes, cid);
  sqlite.close();
  const tampered = await rebuild(dataDir, ['--blocks-from', blocks]);
  t.equal(tampered.code, 1);
  t.equal(tampered.report.error.code, 'VLM_REBUILD_BLOCK_CORRUPT');
  t.notOk(fs.existsSync(path.join(dataDir, 'vellum.db')), 'nothing written');
  t.notOk(fs.existsSync(path.join(dataDir, 'vellum.db.rebuild')), 'no partial index left');

  // No chain log to replay.
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-rebuild-'));
  t.teardown(() => fs.rmSync(empty, { recursive: true, force: true }));
  fs.copyFileSync(path.join(dataDir, 'master.key'), path.join(empty, 'master.key'));
  const nolog = await rebuild(empty, ['--blocks-from', blocks]);
  t.equal(nolog.code, 2);
  t.equal(nolog.report.error.code, 'VLM_REBUILD_CHAIN_OFF');
  const nokey = await rebuild(fs.mkdtempSync(path.join(empty, 'x-')), []);
  t.equal(nokey.code, 2);
  t.equal(nokey.report.error.code, 'VLM_REBUILD_NO_KEY');
});
