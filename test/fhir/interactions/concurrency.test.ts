/**
 * Concurrent writers (http://hl7.org/fhir/R4/http.html#concurrency): no lost or duplicated
 * versions, and If-Match lets exactly one of several racing updates win.
 */
import t from 'tap';
import { startTestServer, vellumCodes } from '../../helpers/server.ts';
import { JSON_PATCH, TYPE_CASES } from './examples.ts';

const WRITERS = 8;
const ROUNDS = 5;

t.test('8 writers × N PUTs of one resource', async (t) => {
  const s = await startTestServer(t);
  for (const c of [TYPE_CASES[0]!, TYPE_CASES[1]!, TYPE_CASES[3]!]) {
    await t.test(c.type, async (t) => {
      const id = `contended-${c.type.toLowerCase()}`;
      const url = `${c.type}/${id}`;
      const results: { n: number; status: number; json: any }[] = [];
      await Promise.all(
        Array.from({ length: WRITERS }, async (_, w) => {
          for (let r = 0; r < ROUNDS; r++) {
            const n = w * ROUNDS + r + 1; // every write carries a different value
            const res = await s.fhir('PUT', url, { ...c.revise(c.example(), n), id });
            results.push({ n, status: res.status, json: res.json });
          }
        }),
      );
      t.equal(results.length, WRITERS * ROUNDS);
      const succeeded = results.filter((r) => r.status === 200 || r.status === 201);
      for (const failed of results.filter((r) => !(r.status === 200 || r.status === 201))) {
        // A write may lose a race, but only cleanly: an OperationOutcome, never a fault.
        t.ok([409, 412, 503].includes(failed.status), `clean failure ${failed.status}`);
        t.equal(failed.json?.resourceType, 'OperationOutcome');
      }
      t.equal(results.filter((r) => r.status === 201).length, 1, 'exactly one write created it');
      const versions = succeeded.map((r) => Number(r.json.meta.versionId)).sort((a, b) => a - b);
      const k = succeeded.length;
      t.same(versions, Array.from({ length: k }, (_, i) => i + 1), 'the writes got versions 1..K, each once');

      const history = await s.fhir('GET', `${url}/_history?_count=1000`);
      t.equal(history.json.total, k);
      t.same(
        history.json.entry.map((e: any) => Number(e.resource.meta.versionId)),
        Array.from({ length: k }, (_, i) => k - i),
        'history holds every version exactly once',
      );
      for (const entry of history.json.entry) {
        const write = succeeded.find((r) => r.json.meta.versionId === entry.resource.meta.versionId)!;
        t.same(c.revision(entry.resource), c.revision(c.revise(c.example(), write.n)), `version ${entry.resource.meta.versionId} is the write that got it`);
      }
      const final = await s.fhir('GET', url);
      t.equal(final.json.meta.versionId, String(k));
      const last = succeeded.find((r) => r.json.meta.versionId === String(k))!;
      t.same(final.json, last.json, 'the final state is one of the writes: the one that got the last version');
    });
  }
});

t.test('8 racing If-Match updates: exactly one wins', async (t) => {
  const s = await startTestServer(t);
  for (const c of TYPE_CASES) {
    const id = `race-${c.type.toLowerCase()}`;
    await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 0), id });
    await s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 1), id });
    const results = await Promise.all(
      Array.from({ length: WRITERS }, (_, w) =>
        s.fhir('PUT', `${c.type}/${id}`, { ...c.revise(c.example(), 100 + w), id }, { 'if-match': 'W/"2"' }),
      ),
    );
    const statuses = results.map((r) => r.status);
    t.equal(statuses.filter((x) => x === 200).length, 1, `${c.type}: one 200`);
    t.equal(statuses.filter((x) => x === 412).length, WRITERS - 1, `${c.type}: the rest 412`);
    for (const r of results.filter((x) => x.status === 412)) t.same(vellumCodes(r.json), ['VLM_FHIR_VERSION_MISMATCH']);
    const winner = results.find((r) => r.status === 200)!;
    const final = await s.fhir('GET', `${c.type}/${id}`);
    t.equal(final.json.meta.versionId, '3');
    t.same(final.json, winner.json, 'the stored state is the winner');
    t.equal((await s.fhir('GET', `${c.type}/${id}/_history`)).json.total, 3);
  }
});

t.test('racing patches lose no update; racing conditional creates make one resource', async (t) => {
  const s = await startTestServer(t);
  const { id } = (await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Start' }] })).json;
  const patches = await Promise.all(
    Array.from({ length: WRITERS * 2 }, (_, i) =>
      s.fhir('PATCH', `Patient/${id}`, [{ op: 'add', path: '/name/-', value: { family: `P${i}` } }], JSON_PATCH),
    ),
  );
  t.ok(patches.every((r) => r.status === 200));
  const patched = await s.fhir('GET', `Patient/${id}`);
  t.same(
    patched.json.name.map((n: any) => n.family).sort(),
    ['Start', ...Array.from({ length: WRITERS * 2 }, (_, i) => `P${i}`)].sort(),
    'every patch applied to the version before it',
  );
  t.equal(patched.json.meta.versionId, String(WRITERS * 2 + 1));

  const creates = await Promise.all(
    Array.from({ length: WRITERS }, () =>
      s.fhir('POST', 'Organization', { ...TYPE_CASES[6]!.mark(TYPE_CASES[6]!.example(), 'race-org') }, { 'if-none-exist': TYPE_CASES[6]!.criteria('race-org') }),
    ),
  );
  t.equal(creates.filter((r) => r.status === 201).length, 1, 'one created');
  t.equal(creates.filter((r) => r.status === 200).length, WRITERS - 1, 'the rest found it');
  t.equal(new Set(creates.map((r) => r.json.id)).size, 1, 'all name the same resource');
  t.equal((await s.fhir('GET', 'Organization/_history')).json.total, 1);
});
