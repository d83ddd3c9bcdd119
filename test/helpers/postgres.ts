/**
 * PostgreSQL for tests: `VELLUM_TEST_DATABASE_URL` when set (a server of your own), else a
 * throwaway cluster started once per test process from Debian's packages (`.ci/run` installs
 * them): initdb and pg_ctl as user `postgres` in a temporary directory, listening on 127.0.0.1
 * only, `fsync=off`; stopped and removed at the end. Each test asks for a fresh, empty database.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { Test } from 'tap';
import { freePort } from './process-server.ts';

let cluster: Promise<string> | undefined;
let databases = 0;

function binaries(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does), or set VELLUM_TEST_DATABASE_URL');
  return path.join(root, versions.sort((a, b) => Number(b) - Number(a))[0]!, 'bin');
}

/** A throwaway cluster of one's own: its admin URL, and stop/start for fault tests. */
export interface Cluster {
  url: string;
  /** Stop the server (`-m fast`: connections are closed); the data stays. */
  stop(): void;
  /** Start it again on the same port. */
  start(): void;
}

/** Start a throwaway cluster (stopped and removed when this process exits). */
export async function launchCluster(): Promise<Cluster> {
  const bin = binaries();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-pg-'));
  fs.chmodSync(dir, 0o777);
  const data = path.join(dir, 'data');
  const asPostgres = (command: string, args: string[]) => {
    const result = spawnSync('runuser', ['-u', 'postgres', '--', path.join(bin, command), ...args], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`${command} failed: ${result.stderr || result.stdout}`);
  };
  asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const port = await freePort();
  const start = () =>
    asPostgres('pg_ctl', [
      '-D',
      data,
      '-w',
      '-l',
      path.join(dir, 'log'),
      '-o',
      `-k ${dir} -p ${port} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300`,
      'start',
    ]);
  start();
  process.once('exit', () => {
    spawnSync('runuser', ['-u', 'postgres', '--', path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']);
    try {
      execFileSync('rm', ['-rf', dir]);
    } catch {
      // best effort
    }
  });
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => asPostgres('pg_ctl', ['-D', data, '-w', '-m', 'fast', 'stop']),
    start,
  };
}

/** Start a throwaway cluster (stopped and removed when this process exits); its admin URL. */
export async function startCluster(): Promise<string> {
  return (await launchCluster()).url;
}

/** The URL of a fresh, empty database (dropped when `t` ends). */
export async function freshDatabase(t: Test): Promise<string> {
  const { url, drop } = await createDatabase();
  t.teardown(drop);
  return url;
}

/** A fresh, empty database and how to drop it (for callers that must close their pools first). */
export async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = process.env.VELLUM_TEST_DATABASE_URL || (await (cluster ??= startCluster()));
  const name = `vellum_test_${process.pid}_${++databases}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      // VELLUM_TEST_KEEP_DATABASES=1 leaves them for inspection with psql.
      if (process.env.VELLUM_TEST_KEEP_DATABASES === '1') return;
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/**
 * Which database the in-process test servers use: `VELLUM_TEST_DATABASE=postgres` runs them on
 * PostgreSQL (a fresh database each), anything else on the embedded SQLite file.
 */
export function testDatabase(): 'sqlite' | 'postgres' {
  return process.env.VELLUM_TEST_DATABASE === 'postgres' ? 'postgres' : 'sqlite';
}
