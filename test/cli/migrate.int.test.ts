/**
 * `vellum migrate` against a real PostgreSQL: applies the migrations once (a second run has
 * nothing to apply), reports them (text and --json) without printing the URL, and exits 1 on a
 * database it cannot reach, 2 on bad usage; `--from-sqlite` moves an embedded deployment.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { main } from '../../src/cli/vellum.ts';
import { MIGRATIONS } from '../../src/storage/postgres/database.ts';
import { freshDatabase } from '../helpers/postgres.ts';
import { startTestServer } from '../helpers/server.ts';

function capture() {
  let stdout = '';
  let stderr = '';
  return { io: { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } }, out: () => stdout, err: () => stderr };
}

const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;

t.test('vellum migrate applies the schema once', async (t) => {
  const url = await freshDatabase(t);
  const first = capture();
  t.equal(await main(['migrate', '--database', url, '--json'], first.io), 0);
  t.same(JSON.parse(first.out()), { applied: MIGRATIONS.map((m) => m.version), schemaVersion: latest });
  const second = capture();
  t.equal(await main(['migrate', '--database', url], second.io), 0);
  t.equal(second.out(), `nothing to apply; schema version ${latest}\n`);
  t.notOk(first.out().includes(url) || second.out().includes(url), 'the URL is not printed');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  t.teardown(() => client.end());
  const { rows } = await client.query("SELECT to_regclass('blocks') AS blocks, to_regclass('auth_clients') AS clients");
  t.same(rows[0], { blocks: 'blocks', clients: 'auth_clients' }, 'the tables exist');
});

t.test('vellum migrate: an unreachable database exits 1, bad usage 2', async (t) => {
  const down = capture();
  t.equal(await main(['migrate', '--database', 'postgres://postgres:secret@127.0.0.1:1/none', '--json'], down.io), 1);
  t.same(JSON.parse(down.out()), { error: 'VLM_DB_UNAVAILABLE' });
  t.notOk(down.err().includes('secret'), 'no password in the message');
  const usage = capture();
  t.equal(await main(['migrate', '--database', 'mysql://x'], usage.io), 2);
  t.equal(await main(['migrate', '--nope'], capture().io), 2);
});

t.test('vellum migrate --from-sqlite moves a deployment: every version, its search rows, anchors and proofs', async (t) => {
  const url = await freshDatabase(t);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-migrate-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '50' };
  // An embedded deployment (SQLite, explicitly: not the suite's engine) with creates, updates, a deletion, all anchored.
  const before = await startTestServer(t, { ...env, VELLUM_DATABASE_URL: '' });
  const wait = { prefer: 'anchor=wait' };
  for (let i = 0; i < 12; i++) t.equal((await before.fhir('PUT', `Patient/p${i}`, { resourceType: 'Patient', id: `p${i}`, name: [{ family: `Move${i}` }] }, wait)).status, 201);
  t.equal((await before.fhir('PUT', 'Patient/p1', { resourceType: 'Patient', id: 'p1', name: [{ family: 'Moved' }] }, wait)).status, 200);
  t.equal((await before.fhir('DELETE', 'Patient/p2', undefined, wait)).status, 204);
  const expected = (await before.fhir('GET', 'Patient?_count=100&_sort=family')).json.entry.map((e: any) => e.resource.id);
  await before.close();

  const run = capture();
  t.equal(await main(['migrate', '--from-sqlite', path.join(dataDir, 'vellum.db'), '--to', url, '--json'], run.io), 0, run.err());
  const summary = JSON.parse(run.out());
  t.equal(summary.versions, 14, 'every version');
  t.equal(summary.cidsChecked, 14, 'every envelope read back and hashed to its CID');
  t.equal(summary.leavesChecked, 14, 'every anchor leaf proved against its batch root');
  t.notOk(run.out().includes(url) || run.err().includes(url), 'the URL is not printed');

  // The same data dir (master key, embedded chain), now on PostgreSQL.
  const after = await startTestServer(t, { ...env, VELLUM_DATABASE_URL: url });
  t.same((await after.fhir('GET', 'Patient?_count=100&_sort=family')).json.entry.map((e: any) => e.resource.id), expected, 'the same search results, in order');
  t.equal((await after.fhir('GET', 'Patient/p2')).status, 410, 'the deletion came along');
  t.same((await after.fhir('GET', 'Patient/p1/_history')).json.entry.map((e: any) => e.resource.meta.versionId), ['2', '1'], 'and the history');
  const verify = await after.fhir('GET', 'Patient/p1/_history/1/$verify');
  t.equal(verify.json.parameter.find((p: any) => p.name === 'verified')?.valueBoolean, true, 'a moved version still verifies on chain');
  t.equal((await after.fhir('PUT', 'Patient/p12', { resourceType: 'Patient', id: 'p12' })).status, 201, 'and new writes go on after the moved ids');
  await after.close();

  const again = capture();
  t.equal(await main(['migrate', '--from-sqlite', path.join(dataDir, 'vellum.db'), '--to', url, '--json'], again.io), 1, 'a database that holds versions is refused');
  t.same(JSON.parse(again.out()), { error: 'VLM_MIGRATE_TARGET_NOT_EMPTY' });
  const usage = capture();
  t.equal(await main(['migrate', '--from-sqlite', path.join(dataDir, 'vellum.db')], usage.io), 2, 'no target');
});
