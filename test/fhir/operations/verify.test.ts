import t from 'tap';
import { RANDOM_32, rawIndex, type RawSql } from '../../helpers/raw-index.ts';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';

/** A statement with 32 random bytes at `%R`, in both dialects. */
const sqlWith = (sql: string): RawSql => ({ sqlite: sql.replace('%R', RANDOM_32.sqlite), postgres: sql.replace('%R', RANDOM_32.postgres) });

const param = (p: any, name: string) => p.parameter.find((x: any) => x.name === name);
const params = (p: any, name: string) => p.parameter.filter((x: any) => x.name === name);

t.test('every version gets a proof the contract accepts; tampering is detected', async (t) => {
  const s = await startTestServer(t, { VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '50' });
  const wait = { prefer: 'anchor=wait' };
  const created = await s.fhir('POST', 'Observation', {
    resourceType: 'Observation',
    status: 'final',
    code: { text: 'weight' },
    valueQuantity: { value: 70.5, unit: 'kg' },
  }, wait);
  t.equal(created.status, 201);
  const id = created.json.id;
  const updated = await s.fhir('PUT', `Observation/${id}`, { ...created.json, status: 'amended' }, wait);
  t.equal(updated.status, 200);
  const deleted = await s.fhir('DELETE', `Observation/${id}`, undefined, wait);
  t.equal(deleted.status, 204);

  for (const vid of [1, 2, 3]) {
    const res = await s.fhir('GET', `Observation/${id}/_history/${vid}/$verify`);
    t.equal(res.status, 200, `version ${vid}`);
    t.equal(param(res.json, 'status').valueCode, 'anchored');
    t.equal(param(res.json, 'verified').valueBoolean, true, `version ${vid} verified against the contract`);
    t.equal(params(res.json, 'problem').length, 0);
    t.match(param(res.json, 'transaction').valueString, /^0x[0-9a-f]{64}$/);
    t.equal(param(res.json, 'chainId').valueInteger, 31337);
  }
  const current = await s.fhir('GET', `Observation/${id}/$verify`);
  t.equal(param(current.json, 'resource').valueString, `Observation/${id}/_history/3`, 'instance $verify checks the current version');

  // The CapabilityStatement lists $verify when anchoring is on, $everything on Patient only, and
  // the consent operations only where consent is enforced (it is off here).
  const metadata = await s.fhir('GET', 'metadata');
  t.ok(metadata.json.rest[0].operation.some((o: any) => o.name === 'verify'));
  const opsOf = (type: string): string[] => metadata.json.rest[0].resource.find((r: any) => r.type === type).operation.map((o: any) => o.name);
  t.ok(opsOf('Patient').includes('everything'), 'Patient lists $everything');
  t.notOk(opsOf('Observation').includes('everything'), 'other types do not');
  t.notOk(opsOf('Consent').includes('grant-signed'), 'no consent operations without consent enforcement');

  const sweep = await s.fhir('GET', '$verify');
  t.equal(sweep.status, 200);
  t.equal(param(sweep.json, 'checked').valueInteger, 3, 'the sweep checks every version');
  t.equal(param(sweep.json, 'verified').valueInteger, 3);
  t.equal(param(sweep.json, 'mismatches').valueInteger, 0);
  t.equal((await s.fhir('GET', '$verify?_since=not-a-date')).status, 400);

  // Tamper with the index: another leaf → the recomputed leaf no longer matches.
  await s.close();
  await rawIndex(s, sqlWith('UPDATE anchor_leaves SET leaf = %R WHERE seq = (SELECT seq FROM versions WHERE id = ? AND version = 2)'), id);
  const again = await startTestServer(t, { VELLUM_CHAIN: 'embedded', VELLUM_DATA_DIR: s.dataDir });
  const tampered = await again.fhir('GET', `Observation/${id}/_history/2/$verify`);
  t.equal(param(tampered.json, 'verified').valueBoolean, false, 'a changed index row is detected');
  t.ok(params(tampered.json, 'problem').some((p: any) => p.valueCode === 'leaf'));
  const swept = await again.fhir('GET', '$verify');
  t.equal(param(swept.json, 'mismatches').valueInteger, 1, 'the sweep reports the tampered version');
  const mismatch = params(swept.json, 'mismatch')[0];
  t.same(
    mismatch.part.find((p: any) => p.name === 'resource').valueString,
    `Observation/${id}/_history/2`,
    'and names it',
  );
  const untouched = await again.fhir('GET', `Observation/${id}/_history/1/$verify`);
  t.equal(param(untouched.json, 'verified').valueBoolean, true, 'and the chain survived the restart (replayed)');
});

t.test('$verify without anchoring is 501, and unknown versions 404', async (t) => {
  const s = await startTestServer(t);
  const created = await s.fhir('POST', 'Patient', { resourceType: 'Patient', active: true });
  const res = await s.fhir('GET', `Patient/${created.json.id}/$verify`);
  t.equal(res.status, 501);
  t.same(vellumCodes(res.json), ['VLM_ANCHOR_DISABLED']);
  const anchored = await startTestServer(t, { VELLUM_CHAIN: 'embedded' });
  t.equal((await anchored.fhir('GET', 'Patient/nope/$verify')).status, 404);
  t.equal((await anchored.fhir('GET', 'Patient/nope/_history/1/$verify')).status, 404);
});

t.test('proofs are rebuilt from the batch leaves: a changed neighbour breaks them, a stored proof is still used', async (t) => {
  const s = await startTestServer(t, { VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '400' });
  const created = await Promise.all(
    ['One', 'Two', 'Three'].map((family) => s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family }] }, { prefer: 'anchor=wait' })),
  );
  const ids = created.map((c) => c.json.id as string);
  const verified = await Promise.all(ids.map((id) => s.fhir('GET', `Patient/${id}/$verify`)));
  const roots = new Set(verified.map((v) => param(v.json, 'root').valueString));
  t.equal(roots.size, 1, 'the three versions are leaves of one batch');
  t.ok(verified.every((v) => param(v.json, 'verified').valueBoolean === true), 'each proof, rebuilt, is accepted by the contract');
  t.ok(verified.every((v) => params(v.json, 'proof').length >= 1), 'and returned');
  await s.close();

  // Another leaf of the batch changed in the index: the tree rebuilt from the leaves no longer gives the anchored root.
  const seqOf = async (id: string) => Number((await rawIndex(s, 'SELECT seq FROM versions WHERE id = ?', id))[0]!.seq);
  await rawIndex(s, sqlWith('UPDATE anchor_leaves SET leaf = %R WHERE seq = ?'), await seqOf(ids[0]!));
  // A proof stored by an earlier version of Vellum is used as it is (here: a wrong one).
  await rawIndex(s, sqlWith('UPDATE anchor_leaves SET proof = %R WHERE seq = ?'), await seqOf(ids[2]!));
  const again = await startTestServer(t, { VELLUM_CHAIN: 'embedded', VELLUM_DATA_DIR: s.dataDir });
  const problemsOf = async (id: string) => params((await again.fhir('GET', `Patient/${id}/$verify`)).json, 'problem').map((p: any) => p.valueCode);
  t.ok((await problemsOf(ids[0]!)).includes('leaf'), 'the changed leaf itself is reported');
  t.same(await problemsOf(ids[1]!), ['proof', 'contract-rejects-proof'], 'its untouched neighbour no longer proves against the root');
  t.ok((await problemsOf(ids[2]!)).includes('proof'), 'a stored proof is used, and checked');
});
