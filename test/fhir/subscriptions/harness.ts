/**
 * Shared by the subscription tests: a local HTTP receiver of notifications, and waits on
 * conditions (delivery rounds, receiver requests) bounded by PATIENCE_MS so that a failure names
 * what never happened.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Test } from 'tap';
import type { SubscriptionService } from '../../../src/fhir/subscriptions/service.ts';
import { startTestServer, type TestServer } from '../../helpers/server.ts';
import { backendForm, clientAssertion, harnessOf, registerBackendClient, type Harness } from '../auth/harness.ts';

export const BASE = 'http://vellum.test/fhir';
/** Longest any condition below is waited for: a failure names what never happened, rather than the suite timing out. */
export const PATIENCE_MS = 30_000;

export interface Attempt {
  path: string;
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/**
 * A receiver of several endpoints (`/name`), each answering with the statuses `fail(name, …)`
 * queued for it (then 200): `received` holds the requests answered 200, `attempts` every request;
 * waiters resolve as requests arrive.
 */
export async function receiver(t: Test) {
  const received: Attempt[] = [];
  const attempts: Attempt[] = [];
  const scripts = new Map<string, number[]>();
  const waiters: { ready: () => boolean; resolve: () => void }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      const path = req.url ?? '';
      const status = scripts.get(path)?.shift() ?? 200;
      const attempt = { path, status, body, headers: req.headers };
      attempts.push(attempt);
      if (status === 200) received.push(attempt);
      res.writeHead(status).end();
      for (const w of waiters.filter((w) => w.ready())) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  const wait = (ready: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (ready()) return resolve();
      const timer = setTimeout(() => reject(new Error(`receiver: ${what} did not happen within ${PATIENCE_MS} ms`)), PATIENCE_MS);
      waiters.push({ ready, resolve: () => (clearTimeout(timer), resolve()) });
    });
  const tried = (name: string) => attempts.filter((a) => a.path === `/${name}`);
  return {
    port,
    url: (name: string) => `http://127.0.0.1:${port}/${name}`,
    /** Queue the statuses the next requests to `/name` are answered with. */
    fail: (name: string, ...statuses: number[]) => scripts.set(`/${name}`, [...(scripts.get(`/${name}`) ?? []), ...statuses]),
    /** The requests to `/name` answered 200, and every request to it. */
    at: (name: string) => received.filter((r) => r.path === `/${name}`),
    tried,
    /** Resolves once `n` requests to `/name` have been answered 200. */
    until: (name: string, n: number) => wait(() => received.filter((r) => r.path === `/${name}`).length >= n, `${n} deliveries to /${name}`),
    /** Resolves once `n` requests to `/name` (whatever the answer) have arrived. */
    attempted: (name: string, n: number) => wait(() => tried(name).length >= n, `${n} attempts at /${name}`),
  };
}

/** `promise`, or a failure naming `what` after PATIENCE_MS. */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${PATIENCE_MS} ms`)), PATIENCE_MS)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

export const subscriptionsOf = (s: TestServer) => s.services.subscriptions as unknown as SubscriptionService;

/** Poll `check` between delivery rounds until it holds (bounded by PATIENCE_MS). */
export async function eventually<T>(s: TestServer, what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + PATIENCE_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${PATIENCE_MS} ms`);
    await subscriptionsOf(s).settle();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Wait until Subscription/id has `status` (read with the administrator's token). */
export const statusOf = (s: TestServer, admin: string, id: string, status: string) =>
  eventually(s, `Subscription/${id} ${status}`, async () => {
    const res = await s.fhir('GET', `Subscription/${id}`, undefined, { authorization: `Bearer ${admin}` });
    return res.json?.status === status ? res.json : undefined;
  });

/** Wait until the delivery state of `id` has reached event `n` (delivered or passed over). */
export const deliveredUpTo = (s: TestServer, id: string, n: number) =>
  eventually(s, `Subscription/${id} past event ${n}`, async () => {
    const state = await s.services.repository.index.subscriptions.state(id);
    return state && state.delivered >= n ? state : undefined;
  });


/** A test server with embedded authorization (and the audit trail unless `env` says otherwise), and an administrator token. */
export async function authServer(t: Test, env: Record<string, string>) {
  const s = await startTestServer(t, { VELLUM_AUTH: 'embedded', VELLUM_AUDIT: 'on', VELLUM_BASE_URL: BASE, ...env });
  const adminFile = JSON.parse(fs.readFileSync(path.join(s.dataDir, 'admin-client.json'), 'utf8'));
  const h = harnessOf(s, { clientId: adminFile.client_id, secret: adminFile.client_secret });
  return { s, h, admin: await h.adminToken() };
}

/** A Backend Services client registered with `scope` (and bound to `fhirUser`), and a token for all of it. */
export async function backendToken(h: Harness, scope: string, fhirUser?: string): Promise<{ clientId: string; token: string }> {
  const client = await registerBackendClient(h, { scope, ...(fhirUser ? { fhirUser } : {}) });
  const res = await h.token(backendForm(await clientAssertion(h, client), { scope }));
  if (res.status !== 200) throw new Error(`token: ${res.status} ${res.text}`);
  return { clientId: client.clientId, token: res.json.access_token as string };
}
