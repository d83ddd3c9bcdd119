/**
 * `vellum migrate` against a real PostgreSQL: applies the migrations once (a second run has
 * nothing to apply), reports them (text and --json) without printing the URL, and exits 1 on a
 * database it cannot reach, 2 on bad usage.
 */
import t from 'tap';
import pg from 'pg';
import { main } from '../../src/cli/vellum.ts';
import { MIGRATIONS } from '../../src/storage/postgres/database.ts';
import { freshDatabase } from '../helpers/postgres.ts';

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
