/**
 * R4 rest-hook Subscriptions against a local HTTP receiver: refusals (channel types, criteria,
 * endpoints, headers, status), the handshake that makes a subscription active, events in order with
 * the resource or empty, a receiver down then back (nothing lost, order kept), `error` after too
 * many failures, `end` honoured, and delivery resumed after a restart from the committed outbox.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { SubscriptionService } from '../../../src/fhir/subscriptions/service.ts';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { eventually, within } from './harness.ts';

interface Received {
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** A receiver answering with the statuses of `script` (then 200), resolving waiters as requests arrive. */
async function receiver(t: Test) {
  const received: Received[] = [];
  const script: number[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      const status = script.shift() ?? 200;
      if (status === 200) received.push({ body, headers: req.headers });
      res.writeHead(status).end();
      for (const w of waiters.filter((w) => received.length >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    url: `http://127.0.0.1:${port}/hook`,
    received,
    script,
    /** Resolves once `n` requests have been answered 200. */
    until: (n: number) => new Promise<void>((resolve) => (received.length >= n ? resolve() : waiters.push({ n, resolve }))),
  };
}

const subscriptionsOf = (s: TestServer) => s.services.subscriptions as unknown as SubscriptionService;

/** Wait until Subscription/id has `status` (delivery rounds run as events and retries come). */
async function statusOf(s: TestServer, id: string, status: string): Promise<any> {
  for (;;) {
    const res = await s.fhir("GET", `Subscription/${id}`);
    if (res.json?.status === status) return res.json;
    await subscriptionsOf(s).settle();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const heartRate = (id: string, value: number) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
  subject: { reference: 'Patient/p1' },
  valueQuantity: { value, unit: '/min' },
});

const subscription = (id: string, endpoint: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Subscription',
  id,
  status: 'requested',
  reason: 'heart rate',
  criteria: 'Observation?code=http://loinc.org|8867-4',
  channel: { type: 'rest-hook', endpoint, payload: 'application/fhir+json', header: ['Authorization: Bearer receiver-secret'] },
  ...extra,
});

t.test('subscriptions that cannot be delivered are refused, and nothing is stored', async (t) => {
  const s = await startTestServer(t);
  const cases: [string, Record<string, unknown>, number, string][] = [
    ['email channel', { channel: { type: 'email', endpoint: 'mailto:a@example.org' } }, 422, 'VLM_SUB_CHANNEL_UNSUPPORTED'],
    ['sms channel', { channel: { type: 'sms', endpoint: 'tel:+15555550100' } }, 422, 'VLM_SUB_CHANNEL_UNSUPPORTED'],
    ['message channel', { channel: { type: 'message', endpoint: 'https://example.org/m' } }, 422, 'VLM_SUB_CHANNEL_UNSUPPORTED'],
    ['unknown criteria parameter', { criteria: 'Observation?not-a-param=1' }, 422, 'VLM_SUB_BAD_CRITERIA'],
    ['criteria on no type', { criteria: 'Nothing?code=1' }, 422, 'VLM_SUB_BAD_CRITERIA'],
    ['malformed criteria value', { criteria: 'Observation?date=not-a-date' }, 400, 'VLM_FHIR_BAD_SEARCH_PARAMETER'],
    ['chained criteria', { criteria: 'Observation?subject.name=x' }, 422, 'VLM_SUB_BAD_CRITERIA'],
    ['plain http endpoint', { channel: { type: 'rest-hook', endpoint: 'http://example.org/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['loopback endpoint', { channel: { type: 'rest-hook', endpoint: 'https://127.0.0.1:9/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['private endpoint', { channel: { type: 'rest-hook', endpoint: 'https://10.1.2.3/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['link-local endpoint', { channel: { type: 'rest-hook', endpoint: 'https://169.254.169.254/latest' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['IPv4-mapped loopback', { channel: { type: 'rest-hook', endpoint: 'https://[::ffff:127.0.0.1]/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['IPv4-mapped link-local, in hex', { channel: { type: 'rest-hook', endpoint: 'https://[::ffff:a9fe:a9fe]/latest' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['NAT64 of a private address', { channel: { type: 'rest-hook', endpoint: 'https://[64:ff9b::a00:5]/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['IPv6 unique local', { channel: { type: 'rest-hook', endpoint: 'https://[fd00::5]/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['localhost endpoint', { channel: { type: 'rest-hook', endpoint: 'https://localhost/hook' } }, 422, 'VLM_SUB_ENDPOINT_REFUSED'],
    ['Host header', { channel: { type: 'rest-hook', endpoint: 'https://example.org/hook', header: ['Host: internal'] } }, 422, 'VLM_SUB_BAD_HEADER'],
    ['client sets active', { status: 'active', channel: { type: 'rest-hook', endpoint: 'https://example.org/hook' } }, 422, 'VLM_SUB_STATUS'],
  ];
  for (const [name, change, status, code] of cases) {
    const res = await s.fhir('POST', 'Subscription', { ...subscription('x', 'https://example.org/hook'), ...change });
    t.equal(res.status, status, `${name}: ${status}`);
    t.ok(vellumCodes(res.json).includes(code), `${name}: ${code}`);
  }
  const stored = await s.fhir('GET', 'Subscription?_summary=count');
  t.equal(stored.json.total, 0, 'no Subscription was stored');
});

t.test('handshake, then events in order: the resource, or nothing for what does not match', async (t) => {
  const hook = await receiver(t);
  const s = await startTestServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' });
  t.equal((await s.fhir('PUT', 'Subscription/hr', subscription('hr', hook.url))).status, 201);
  await hook.until(1);
  t.equal(hook.received[0]!.body, '', 'the handshake is an empty notification');
  t.equal(hook.received[0]!.headers.authorization, 'Bearer receiver-secret', 'with the channel headers');
  await statusOf(s, 'hr', 'active');

  t.equal((await s.fhir('PUT', 'Observation/o1', heartRate('o1', 61))).status, 201);
  t.equal((await s.fhir('PUT', 'Observation/other', { ...heartRate('other', 1), code: { text: 'not heart rate' } })).status, 201);
  t.equal((await s.fhir('PUT', 'Observation/o1', heartRate('o1', 62))).status, 200);
  t.equal((await s.fhir('DELETE', 'Observation/o1')).status, 204);
  await hook.until(4);
  const [, created, updated, deleted] = hook.received;
  t.same([JSON.parse(created!.body).id, JSON.parse(created!.body).valueQuantity.value], ['o1', 61], 'created: the resource');
  t.equal(created!.headers['content-type'], 'application/fhir+json');
  t.same([JSON.parse(updated!.body).id, JSON.parse(updated!.body).meta.versionId], ['o1', '2'], 'updated: the new version');
  t.equal(deleted!.body, '', 'deleted: an empty notification');
  await subscriptionsOf(s).settle();
  t.equal(hook.received.length, 4, 'nothing for the Observation that does not match');
});

t.test('a receiver down then back gets every event, in order; too many failures end in error', async (t) => {
  const hook = await receiver(t);
  const s = await startTestServer(t, {
    VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`,
    VELLUM_SUBSCRIPTION_RETRY_MS: '5',
    VELLUM_SUBSCRIPTION_MAX_FAILURES: '4',
  });
  await s.fhir('PUT', 'Subscription/hr', subscription('hr', hook.url));
  await statusOf(s, 'hr', 'active');
  hook.script.push(500, 503, 500); // down for three attempts
  for (let i = 1; i <= 5; i++) await s.fhir('PUT', `Observation/o${i}`, heartRate(`o${i}`, 60 + i));
  await hook.until(6);
  t.same(hook.received.slice(1).map((r) => JSON.parse(r.body).id), ['o1', 'o2', 'o3', 'o4', 'o5'], 'every event, in order, once');
  t.equal((await s.fhir('GET', 'Subscription/hr')).json.status, 'active', 'still active');

  hook.script.push(500, 500, 500, 500, 500);
  await s.fhir('PUT', 'Observation/o6', heartRate('o6', 66));
  const failed = await statusOf(s, 'hr', 'error');
  t.match(failed.error, /HTTP 500/, 'the reason is in the subscription');
  t.equal(hook.received.length, 6, 'nothing more was delivered');
});

t.test('end is honoured: a subscription that has ended is off, and one asked for after its end is refused', async (t) => {
  const hook = await receiver(t);
  const s = await startTestServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}` });
  const late = await s.fhir('PUT', 'Subscription/late', subscription('late', hook.url, { end: '2020-01-01T00:00:00Z' }));
  t.equal(late.status, 422, 'an end already past is refused');
  t.same(vellumCodes(late.json), ['VLM_SUB_BAD_END']);
  const end = new Date(Date.now() + 1500).toISOString();
  t.equal((await s.fhir('PUT', 'Subscription/old', subscription('old', hook.url, { end }))).status, 201);
  await statusOf(s, 'old', 'active');
  // Waits for the condition: the delivery timer set for `end` turns it off.
  const off = await statusOf(s, 'old', 'off');
  t.equal(off.status, 'off');
  t.ok(Date.parse(off.meta.lastUpdated) >= Date.parse(end), 'set off once its end had come');
  await s.fhir('PUT', 'Observation/o1', heartRate('o1', 70));
  await subscriptionsOf(s).settle();
  t.equal(hook.received.length, 1, 'after its end, nothing but the handshake was sent');
});

t.test('events committed before a stop are delivered after the restart', async (t) => {
  const hook = await receiver(t);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-sub-restart-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const env = { VELLUM_DATA_DIR: dataDir, VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '60000' };
  const first = await startTestServer(t, env);
  await first.fhir('PUT', 'Subscription/hr', subscription('hr', hook.url));
  await statusOf(first, 'hr', 'active');
  hook.script.push(500); // the first event fails; the next attempt is a minute away
  await first.fhir('PUT', 'Observation/o1', heartRate('o1', 61));
  await first.fhir('PUT', 'Observation/o2', heartRate('o2', 62));
  await subscriptionsOf(first).settle();
  t.equal(hook.received.length, 1, 'only the handshake before the stop');
  await first.close();

  const second = await startTestServer(t, { ...env, VELLUM_SUBSCRIPTION_RETRY_MS: '5' });
  // A start retries at once what was waiting for a retry.
  await second.fhir('PUT', 'Observation/o3', heartRate('o3', 63));
  await hook.until(4);
  t.same(hook.received.slice(1).map((r) => JSON.parse(r.body).id), ['o1', 'o2', 'o3'], 'resumed in order, nothing lost');
});

t.test('a subscription written or deleted while one of its notifications is in flight: the write wins', async (t) => {
  // A receiver that holds every notification with a body until released.
  const arrived: string[] = [];
  const held: (() => void)[] = [];
  let heldNow!: () => void;
  let holding = new Promise<void>((resolve) => (heldNow = resolve));
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      arrived.push(`${req.url} ${body ? JSON.parse(body).id : 'handshake'}`);
      if (!body) return void res.writeHead(200).end();
      held.push(() => res.writeHead(200).end());
      heldNow();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
  const port = (server.address() as { port: number }).port;
  const s = await startTestServer(t, { VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' });
  const at = (p: string) => subscription('hr', `http://127.0.0.1:${port}${p}`);
  const active = () => eventually(s, 'Subscription/hr active', async () => ((await s.fhir('GET', 'Subscription/hr')).json?.status === 'active' ? true : undefined));
  const release = async () => {
    for (const r of held.splice(0)) r();
    holding = new Promise<void>((resolve) => (heldNow = resolve));
  };

  // Updated (a new endpoint) while a notification to the old one is held: the new endpoint gets its handshake.
  await s.fhir('PUT', 'Subscription/hr', at('/old'));
  await active();
  await s.fhir('PUT', 'Observation/o1', heartRate('o1', 61));
  await within(holding, 'a held notification');
  t.equal((await s.fhir('PUT', 'Subscription/hr', at('/new'))).status, 200, 'updated while o1 is in flight');
  await release();
  // (No settle while a notification is held: a delivery round lasts as long as its notification.)
  await within(holding, 'o1 held at the new endpoint');
  t.same(arrived.slice(-2), ['/new handshake', '/new o1'], 'the new endpoint gets its handshake, then o1 again (at least once)');
  await release();
  await active();
  await subscriptionsOf(s).settle();
  t.equal(arrived.filter((a) => a === '/new o1').length, 1, 'o1 once at the new endpoint');

  // Deleted while a notification is held, then created again under the same id: nothing of the old one's state remains.
  await s.fhir('PUT', 'Observation/o2', heartRate('o2', 62));
  await within(holding, 'a held notification');
  t.equal((await s.fhir('DELETE', 'Subscription/hr')).status, 204);
  await release();
  await subscriptionsOf(s).settle();
  t.equal((await s.fhir('PUT', 'Subscription/hr', at('/again'))).status, 201, 'created again');
  await active();
  await s.fhir('PUT', 'Observation/o3', heartRate('o3', 63));
  await within(holding, 'a held notification');
  await release();
  await subscriptionsOf(s).settle();
  t.same(arrived.filter((a) => a.startsWith('/again')), ['/again handshake', '/again o3'], 'the re-created subscription gets its first event');
  t.match(await s.services.repository.index.subscriptions.state('hr'), { delivered: 1 }, 'its state starts afresh');
});
