/**
 * `vellum migrate --from-sqlite data/vellum.db --to postgres://… [--json]`: move an embedded
 * deployment into PostgreSQL (migrate-sqlite.ts).
 *
 * `vellum migrate --database postgres://… [--json]`: apply the PostgreSQL schema migrations not yet
 * applied (src/storage/postgres/database.ts), safely from several machines at once (an advisory
 * lock), and report the versions applied and the schema version reached. Exit 0 done (also when
 * nothing was left to apply), 1 the database refused (unreachable, a schema newer than this Vellum,
 * a migration failed), 2 usage. The URL may also come from VELLUM_DATABASE_URL; it is never printed.
 */
import { parseArgs } from 'node:util';
import { isStorageError } from '../storage/errors.ts';
import { migrate, MIGRATIONS, openPostgres } from '../storage/postgres/database.ts';
import type { Io } from './verify.ts';
import { migrateError, migrateFromSqlite } from './migrate-sqlite.ts';

const HELP = `Usage: vellum migrate [--database postgres://…] [--json]
  Apply the PostgreSQL schema migrations not yet applied (the URL defaults to VELLUM_DATABASE_URL).
       vellum migrate --from-sqlite data/vellum.db --to postgres://… [--json]
  Move an embedded index and its blocks into an empty PostgreSQL database, checking every version.
`;

export async function runMigrate(argv: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values: { database?: string; json?: boolean; help?: boolean; 'from-sqlite'?: string; to?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { database: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' }, 'from-sqlite': { type: 'string' }, to: { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    io.stderr.write(`vellum migrate: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(HELP);
    return 0;
  }
  if (values['from-sqlite'] !== undefined || values.to !== undefined) return fromSqlite(values['from-sqlite'], values.to ?? env.VELLUM_DATABASE_URL, values.json === true, io);
  const url = values.database ?? env.VELLUM_DATABASE_URL;
  if (!url || !/^postgres(ql)?:\/\//.test(url)) {
    io.stderr.write(`vellum migrate: --database (or VELLUM_DATABASE_URL) must be a postgres:// URL\n\n${HELP}`);
    return 2;
  }
  const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
  let pool;
  try {
    pool = await openPostgres({ url, maxConnections: 1 });
    const applied = await migrate(pool);
    if (values.json) io.stdout.write(`${JSON.stringify({ applied, schemaVersion: latest })}\n`);
    else io.stdout.write(applied.length ? `applied migrations ${applied.join(', ')}; schema version ${latest}\n` : `nothing to apply; schema version ${latest}\n`);
    return 0;
  } catch (err) {
    const code = isStorageError(err) ? err.code : 'VLM_DB_ERROR';
    if (values.json) io.stdout.write(`${JSON.stringify({ error: code })}\n`);
    io.stderr.write(`vellum migrate: ${code}: ${isStorageError(err) ? err.message : 'the migration failed'}\n`);
    return 1;
  } finally {
    await pool?.end().catch(() => undefined);
  }
}

async function fromSqlite(from: string | undefined, to: string | undefined, json: boolean, io: Io): Promise<number> {
  if (!from || !to || !/^postgres(ql)?:\/\//.test(to)) {
    io.stderr.write(`vellum migrate: --from-sqlite needs a file and --to (or VELLUM_DATABASE_URL) a postgres:// URL\n\n${HELP}`);
    return 2;
  }
  try {
    // One line per table and every 1,000 versions (a terminal shows them as a running counter).
    const summary = await migrateFromSqlite(from, to, (line, final) => io.stderr.write(`${line}${final ? '\n' : '\r'}`));
    if (json) io.stdout.write(`${JSON.stringify(summary)}\n`);
    else io.stdout.write(`migrated ${summary.versions} versions (${summary.cidsChecked} envelopes and ${summary.leavesChecked} anchor leaves checked)\n`);
    return 0;
  } catch (err) {
    const code = migrateError(err);
    if (json) io.stdout.write(`${JSON.stringify({ error: code })}\n`);
    io.stderr.write(`vellum migrate: ${code}: ${isStorageError(err) ? err.message : 'the migration failed'}\n`);
    return 1;
  }
}
