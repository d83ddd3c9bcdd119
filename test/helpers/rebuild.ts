/** Helpers of the `vellum rebuild` tests: run the command, lose an index, compare answers. */
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Test } from 'tap';
import { runRebuild } from '../../src/cli/rebuild.ts';
import type { TestServer } from './server.ts';

export const CHAIN_ENV = { VELLUM_CHAIN: 'embedded', VELLUM_ANCHOR_INTERVAL_MS: '50' };

export function captureIo() {
  let stdout = '';
  let stderr = '';
  return {
    io: { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } },
    out: () => stdout,
    err: () => stderr,
  };
}

export async function rebuild(dataDir: string, args: string[], env: Record<string, string> = {}) {
  const cap = captureIo();
  const code = await runRebuild([...args, '--json'], cap.io, { VELLUM_DATA_DIR: dataDir, PORT: '8080', ...CHAIN_ENV, ...env });
  let report: any;
  try {
    report = JSON.parse(cap.out());
  } catch {
    report = undefined;
  }
  return { code, report, stderr: cap.err() };
}

/** What a client sees of a bundle, without what legitimately differs between two servers (ids, paging tokens). */
export function entries(bundle: any) {
  return {
    total: bundle?.total,
    entry: (bundle?.entry ?? []).map((e: any) => ({ fullUrl: e.fullUrl, resource: e.resource, request: e.request, response: e.response, search: e.search })),
  };
}

export const verifyParams = (p: any) =>
  Object.fromEntries((p?.parameter ?? []).map((x: any) => [x.name, x.valueString ?? x.valueBoolean ?? x.valueInteger ?? x.valueUnsignedInt ?? x.valueCode ?? x.valueBase64Binary ?? x.valueUri ?? x.valueDecimal ?? null]));

export async function waitAnchored(t: Test, s: TestServer) {
  // A liveness bound, not a speed check: anchoring must drain eventually.
  for (let i = 0; i < 2400; i++) {
    const ready = await s.app.inject({ method: 'GET', url: '/ready' });
    if (JSON.parse(ready.body).anchorBacklog === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.fail('anchoring did not catch up');
}

/** Move the index database away and strip it down to its blocks: all a rebuild may use. */
export function loseIndex(dataDir: string): string {
  const db = path.join(dataDir, 'vellum.db');
  const blocksOnly = path.join(dataDir, 'blocks-only.db');
  for (const suffix of ['', '-wal', '-shm']) if (fs.existsSync(db + suffix)) fs.renameSync(db + suffix, blocksOnly + suffix);
  const sqlite = new DatabaseSync(blocksOnly);
  const tables = (sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((r) => r.name);
  sqlite.exec('PRAGMA foreign_keys = OFF');
  for (const name of tables) if (name !== 'blocks') sqlite.exec(`DROP TABLE "${name}"`);
  sqlite.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  sqlite.close();
  return blocksOnly;
}

