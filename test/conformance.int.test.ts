/**
 * The black-box conformance checks (`conformance/`) against a real Vellum: the server started as
 * `npm start` starts it (`node --import tsx src/main.ts`, configured only through the environment,
 * on a fresh data directory and a free port), the checks run as `npm run conformance` runs them —
 * a separate process that knows nothing but the base URL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { adminToken } from './helpers/process-server.ts';
import { freshDatabase, testDatabase } from './helpers/postgres.ts';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const READY_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 30_000;
const CONFORMANCE_TIMEOUT_MS = 240_000;
/** Below this many passing checks the suite has lost coverage, even if nothing fails. */
const MIN_PASSED = 35;

/** The test runner's own settings must not reach the children (its loaders, a stray PORT). */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['HOST', 'PORT', 'VELLUM_DATA_DIR', 'VELLUM_BASE_URL', 'VELLUM_MASTER_KEY', 'VELLUM_LOG_LEVEL', 'NODE_OPTIONS', 'NODE_V8_COVERAGE']) {
    delete env[name];
  }
  return { ...env, ...extra };
}

interface Child {
  child: ChildProcess;
  exited: Promise<number | null>;
  stdout(): string;
  stderr(): string;
}

function start(t: Test, args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  });
  return { child, exited, stdout: () => out, stderr: () => err };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Start Vellum on a free port and wait for GET /ready; retried if another process took the port. */
async function startVellum(t: Test): Promise<{ baseUrl: string; token: string }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-conformance-'));
  // Registered first, so it runs after the server's own teardown has stopped it.
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  // The PostgreSQL pass (VELLUM_TEST_DATABASE=postgres): the same server on a fresh database.
  const database = testDatabase() === 'postgres' ? await freshDatabase(t) : undefined;
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort();
    const server = start(
      t,
      ['--import', 'tsx', 'src/main.ts'],
      childEnv({ HOST: '127.0.0.1', PORT: String(port), VELLUM_DATA_DIR: dataDir, VELLUM_LOG_LEVEL: 'warn', ...(database ? { VELLUM_DATABASE_URL: database } : {}) }),
    );
    let exitCode: number | null | undefined;
    void server.exited.then((code) => (exitCode = code));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline && exitCode === undefined) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/ready`);
        await res.arrayBuffer();
        // Authorization is on, as `npm start` runs: the suite uses the administrator's token.
        if (res.status === 200) return { baseUrl: `http://127.0.0.1:${port}/fhir`, token: await adminToken(dataDir) };
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    if (exitCode !== undefined && /EADDRINUSE/.test(server.stderr())) continue;
    throw new Error(`Vellum did not become ready (exit ${exitCode ?? 'none, timed out'}):\n${server.stderr()}`);
  }
  throw new Error('Vellum could not get a free port');
}

t.test('every conformance check passes against a real Vellum', async (t) => {
  const { baseUrl, token } = await startVellum(t);
  const run = start(t, ['--import', 'tsx', 'conformance/run.ts', '--base-url', baseUrl, '--token', token], childEnv({}));
  const timer = setTimeout(() => run.child.kill('SIGKILL'), CONFORMANCE_TIMEOUT_MS);
  const status = await run.exited;
  clearTimeout(timer);

  const lines = run.stdout().trim().split('\n');
  const failures = lines.filter((line) => line.startsWith('FAIL'));
  t.same(failures, [], 'no check fails');
  t.equal(status, 0, 'the exit status is the number of failed checks: 0');
  const summary = lines.at(-1) ?? '';
  const m = summary.match(/^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/);
  t.ok(m, `the last line is the summary (got ${JSON.stringify(summary)})`, { stderr: run.stderr() });
  if (!m) return;
  t.ok(Number(m[1]) >= MIN_PASSED, `at least ${MIN_PASSED} checks pass (${m[1]} did)`);
  t.equal(Number(m[2]), 0, 'the summary reports no failure');
  const skipped = lines.filter((line) => line.startsWith('SKIP'));
  if (skipped.length) t.comment(`skipped:\n${skipped.join('\n')}`);
});
