import t from 'tap';
import { rawIndex, type RawSql } from '../../helpers/raw-index.ts';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';

/** Change stored data behind the server's back (it is closed first), then start it again. */
async function tamper(t: Tap, s: TestServer, sql: RawSql | string, ...params: (string | number)[]) {
  await rawIndex(s, sql, ...params);
  return startTestServer(t, { VELLUM_DATA_DIR: s.dataDir });
}
type Tap = Parameters<typeof startTestServer>[0];

t.test('a changed envelope byte, or swapped envelopes, never reach the client', async (t) => {
  const s = await startTestServer(t);
  const a = (await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Alpha' }] })).json;
  const b = (await s.fhir('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Beta' }] })).json;
  const cidB = String((await rawIndex(s, 'SELECT cid FROM versions WHERE id = ?', b.id))[0]!.cid);
  await s.close();

  // 1. Swap: Patient A's index rows point at Patient B's envelope.
  const swapped = await tamper(t, s, 'UPDATE versions SET cid = ? WHERE id = ?', cidB, a.id);
  const readSwapped = await swapped.fhir('GET', `Patient/${a.id}/_history/1`);
  t.equal(readSwapped.status, 500, 'a swapped envelope is refused');
  t.same(vellumCodes(readSwapped.json), ['VLM_INTEGRITY']);
  t.notMatch(readSwapped.text, /Beta/, 'and the other patient\'s data is not returned');
  await swapped.close();

  // 2. One byte of B's envelope changed in the block store: its CID no longer matches.
  const flipped = await tamper(
    t,
    s,
    {
      sqlite: "UPDATE blocks SET bytes = CAST(substr(bytes, 1, 40) || 'X' || substr(bytes, 42) AS BLOB) WHERE cid = ?",
      postgres: "UPDATE blocks SET bytes = overlay(bytes placing 'X'::bytea from 41 for 1) WHERE cid = ?",
    },
    cidB,
  );
  const readFlipped = await flipped.fhir('GET', `Patient/${b.id}`);
  t.equal(readFlipped.status, 500, 'a changed envelope is refused');
  t.same(vellumCodes(readFlipped.json), ['VLM_INTEGRITY']);
  const search = await flipped.fhir('GET', 'Patient?name=beta');
  t.equal(search.status, 500, 'search refuses it too rather than returning altered data');
});
