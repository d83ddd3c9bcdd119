/**
 * Test harness: a real Vellum (SQLite index, SQLite block store, JWE envelopes) on a fresh data
 * directory, driven through `app.inject()`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { loadConfig, type Config } from '../../src/config.ts';
import { createVellum, type Vellum } from '../../src/server.ts';
import { createDatabase, testDatabase } from './postgres.ts';

export const FHIR_JSON = 'application/fhir+json';

export interface TestServer extends Vellum {
  config: Config;
  dataDir: string;
  /** JSON request against the FHIR base (`path` relative to /fhir). */
  fhir(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; headers: Record<string, string | string[] | number | undefined>; json: any; text: string }>;
}

/**
 * Start a Vellum on a temporary data dir; closed and removed when the test ends. With
 * `VELLUM_DATA_DIR` in `env`, that dir is used and left in place (the caller owns it).
 */
export async function startTestServer(t: Test, env: Record<string, string> = {}): Promise<TestServer> {
  const owned = env.VELLUM_DATA_DIR === undefined;
  const dataDir = env.VELLUM_DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-test-'));
  // Anchoring is off unless a test asks for it (VELLUM_CHAIN=embedded): HTTP-semantics tests do not
  // need a chain, and the anchoring tests and every `npm start`-style process test run the default.
  // Authorization and the audit trail are off too: their own tests turn them on.
  // VELLUM_TEST_DATABASE=postgres: the same server on a fresh PostgreSQL database (helpers/postgres.ts),
  // one per data dir: a server restarted on a data dir finds its database again.
  const database = testDatabase() === 'postgres' && env.VELLUM_DATABASE_URL === undefined ? await databaseOf(dataDir) : undefined;
  const config = loadConfig({
    VELLUM_DATA_DIR: dataDir,
    PORT: '8080',
    VELLUM_CHAIN: 'off',
    VELLUM_AUTH: 'off',
    VELLUM_AUDIT: 'off',
    ...(database ? { VELLUM_DATABASE_URL: database.url } : {}),
    ...env,
  });
  const vellum = await createVellum(config, { logger: false });
  t.teardown(async () => {
    await vellum.close();
    await database?.release();
    if (owned) fs.rmSync(dataDir, { recursive: true, force: true });
  });
  return {
    ...vellum,
    config,
    dataDir,
    async fhir(method, url, body, headers = {}) {
      const res = await vellum.app.inject({
        method: method as 'GET',
        url: `/fhir/${url}`.replace(/\/+$/, '').replace('/fhir/?', '/fhir?'),
        headers: { accept: FHIR_JSON, ...(body !== undefined ? { 'content-type': FHIR_JSON } : {}), ...headers },
        payload: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      let json: any;
      try {
        json = res.body ? JSON.parse(res.body) : undefined;
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, headers: res.headers, json, text: res.body };
    },
  };
}

/** PostgreSQL databases of the data dirs in use, dropped when the last server on one ends. */
const databases = new Map<string, { url: Promise<{ url: string; drop(): Promise<void> }>; users: number }>();

async function databaseOf(dataDir: string): Promise<{ url: string; release(): Promise<void> }> {
  let entry = databases.get(dataDir);
  if (!entry) {
    entry = { url: createDatabase(), users: 0 };
    databases.set(dataDir, entry);
  }
  entry.users++;
  const created = await entry.url;
  const held = entry;
  return {
    url: created.url,
    async release() {
      if (--held.users > 0) return;
      databases.delete(dataDir);
      await created.drop();
    },
  };
}

/** The issue codes of an OperationOutcome. */
export function issueCodes(outcome: any): string[] {
  return (outcome?.issue ?? []).map((i: any) => i.code);
}

/** The Vellum error codes (details.coding) of an OperationOutcome. */
export function vellumCodes(outcome: any): string[] {
  return (outcome?.issue ?? []).flatMap((i: any) => (i.details?.coding ?? []).map((c: any) => c.code));
}
