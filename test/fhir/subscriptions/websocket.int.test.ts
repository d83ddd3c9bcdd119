/**
 * The subscription websocket over a real listening server and real websocket clients (`ws`):
 * R4 `bind {id}` → `bound {id}`, `ping {id}` per event in order, events waiting while no socket is
 * bound; the Backport IG's `$get-ws-binding-token` and `bind-with-token` with handshake and
 * notification bundles; and with authorization on, only the owner (or a binding token it asked
 * for) binds.
 */
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import { startTestServer, vellumCodes, type TestServer } from '../../helpers/server.ts';
import { authServer, backendToken, eventually, PATIENCE_MS } from './harness.ts';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';

/** A websocket client that queues the text messages it receives; `next()` waits for the next one. */
async function connect(t: Test, url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, { headers });
  const messages: string[] = [];
  const waiters: ((m: string) => void)[] = [];
  ws.on('message', (data) => {
    const text = data.toString('utf8');
    const waiter = waiters.shift();
    if (waiter) waiter(text);
    else messages.push(text);
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    ws.once('error', reject);
  });
  t.teardown(() => ws.terminate());
  return {
    ws,
    send: (text: string) => ws.send(text),
    next: () =>
      new Promise<string>((resolve, reject) => {
        const queued = messages.shift();
        if (queued !== undefined) return resolve(queued);
        const timer = setTimeout(() => reject(new Error(`no websocket message within ${PATIENCE_MS} ms`)), PATIENCE_MS);
        waiters.push((m) => (clearTimeout(timer), resolve(m)));
      }),
    /** Messages received and not yet taken. */
    pending: () => [...messages],
  };
}

async function listening(t: Test, s: TestServer): Promise<string> {
  await s.app.listen({ port: 0, host: '127.0.0.1' });
  const port = (s.app.server.address() as { port: number }).port;
  const metadata = (await s.fhir('GET', 'metadata')).json;
  const advertised = metadata.rest[0].extension.find((e: any) => e.url === 'http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket').valueUri as string;
  t.equal(new URL(advertised).pathname, '/fhir/websocket', 'the advertised websocket path');
  return `ws://127.0.0.1:${port}/fhir/websocket`;
}

const wsSubscription = (id: string, criteria = 'Observation?code=http://loinc.org|8867-4', extra: Record<string, unknown> = {}) => ({
  resourceType: 'Subscription',
  id,
  status: 'requested',
  reason: 'tests',
  criteria,
  channel: { type: 'websocket' },
  ...extra,
});

const heartRate = (id: string, code = '8867-4') => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code }] },
  subject: { reference: 'Patient/p1' },
  valueQuantity: { value: 60, unit: '/min' },
});

t.test('R4: bind, bound, a ping per event in order; events wait while nobody is bound', async (t) => {
  const s = await startTestServer(t);
  const url = await listening(t, s);
  t.equal((await s.fhir('PUT', 'Subscription/hr', wsSubscription('hr'))).status, 201);
  await eventually(s, 'hr active', async () => ((await s.fhir('GET', 'Subscription/hr')).json.status === 'active' ? true : undefined));

  const client = await connect(t, url);
  client.send('bind nope');
  t.equal(await client.next(), 'error nope not-found', 'an unknown subscription is not bound');
  client.send('hello');
  t.match(await client.next(), /^error hello bad-request$/, 'a malformed message');
  client.send('bind hr');
  t.equal(await client.next(), 'bound hr');

  await s.fhir('PUT', 'Observation/o1', heartRate('o1'));
  await s.fhir('PUT', 'Observation/not', heartRate('not', '0000-0'));
  await s.fhir('PUT', 'Observation/o2', heartRate('o2'));
  t.equal(await client.next(), 'ping hr', 'a ping for o1');
  t.equal(await client.next(), 'ping hr', 'a ping for o2');
  await eventually(s, 'two events delivered', async () => {
    const state = await s.services.repository.index.subscriptions.state('hr');
    return state && state.delivered >= 2 ? state : undefined;
  });
  t.same(client.pending(), [], 'nothing for the Observation that does not match');

  // Nobody bound: the events wait (no failure counted), and reach the next socket that binds.
  client.ws.close();
  await eventually(s, 'the socket is gone', async () => (s.services.subscriptions && (s.services.subscriptions as any).boundSockets() === 0 ? true : undefined));
  await s.fhir('PUT', 'Observation/o3', heartRate('o3'));
  await s.fhir('PUT', 'Observation/o4', heartRate('o4'));
  const waiting = await s.services.repository.index.subscriptions.state('hr');
  t.match(waiting, { delivered: 2, failures: 0 }, 'the events wait, no failure counted');
  const again = await connect(t, url);
  again.send('bind hr');
  t.equal(await again.next(), 'bound hr');
  t.same([await again.next(), await again.next()], ['ping hr', 'ping hr'], 'the waiting events, once bound');
  t.equal((await s.fhir('GET', 'Subscription/hr')).json.status, 'active', 'still active');
});

t.test('Backport: a binding token, the handshake bundle, notification bundles', async (t) => {
  const s = await startTestServer(t);
  const url = await listening(t, s);
  const sub = {
    ...wsSubscription('enc', 'https://vellum.dev/fhir/SubscriptionTopic/encounter'),
    meta: { profile: [`${BACKPORT}/backport-subscription`] },
    channel: { type: 'websocket', payload: 'application/fhir+json', _payload: { extension: [{ url: `${BACKPORT}/backport-payload-content`, valueCode: 'full-resource' }] } },
  };
  t.equal((await s.fhir('PUT', 'Subscription/enc', sub)).status, 201);
  const tokenRes = await s.fhir('POST', 'Subscription/enc/$get-ws-binding-token');
  t.equal(tokenRes.status, 200);
  const param = (name: string) => tokenRes.json.parameter.find((p: any) => p.name === name);
  t.match(param('websocket-url').valueUrl, /\/fhir\/websocket$/);
  t.ok(Date.parse(param('expiration').valueDateTime) > Date.now(), 'an expiration in the future');
  const token = param('token').valueString as string;

  const client = await connect(t, url);
  client.send('bind-with-token not-a-token');
  t.equal(await client.next(), 'error bind-with-token invalid-token', 'a forged token binds nothing');
  client.send(`bind-with-token ${token.slice(0, -2)}xx`);
  t.equal(await client.next(), 'error bind-with-token invalid-token', 'a tampered token binds nothing');
  client.send(`bind-with-token ${token}`);
  t.equal(await client.next(), 'bound enc');
  const handshake = JSON.parse(await client.next());
  t.equal(handshake.resourceType, 'Bundle');
  t.equal(handshake.entry[0].resource.parameter.find((p: any) => p.name === 'type').valueCode, 'handshake', 'the handshake bundle');

  await s.fhir('PUT', 'Encounter/e1', { resourceType: 'Encounter', id: 'e1', status: 'planned', class: { code: 'AMB' }, subject: { reference: 'Patient/p1' } });
  const notification = JSON.parse(await client.next());
  const params = notification.entry[0].resource.parameter;
  t.equal(params.find((p: any) => p.name === 'type').valueCode, 'event-notification');
  t.equal(params.find((p: any) => p.name === 'notification-event').part.find((p: any) => p.name === 'event-number').valueString, '1');
  t.equal(notification.entry[1].resource.id, 'e1', 'full-resource: the Encounter');

  const rest = await s.fhir('PUT', 'Subscription/hook', { ...wsSubscription('hook'), channel: { type: 'rest-hook', endpoint: 'https://example.org/hook' } });
  t.equal(rest.status, 201);
  const refused = await s.fhir('POST', 'Subscription/hook/$get-ws-binding-token');
  t.equal(refused.status, 422, 'binding tokens are for websocket subscriptions');
  t.same(vellumCodes(refused.json), ['VLM_SUB_NOT_WEBSOCKET']);
});

t.test('with authorization on, only the owner binds', async (t) => {
  const { s, h, admin } = await authServer(t, { VELLUM_AUDIT: 'off' });
  const url = await listening(t, s);
  const scope = 'system/Subscription.cruds system/Observation.cruds';
  const owner = await backendToken(h, scope);
  const stranger = await backendToken(h, scope);
  const as = (token: string, method: string, path: string, body?: unknown) => s.fhir(method, path, body, { authorization: `Bearer ${token}` });
  t.equal((await as(owner.token, 'PUT', 'Subscription/mine', wsSubscription('mine'))).status, 201);

  const bad = await connect(t, url, { authorization: 'Bearer not-a-token' }).then(
    () => 0,
    (err: { status?: number }) => err.status,
  );
  t.equal(bad, 401, 'a bad token: 401 on upgrade');
  const anonymous = await connect(t, url);
  anonymous.send('bind mine');
  t.equal(await anonymous.next(), 'error mine not-found', 'no token: not bound');
  const other = await connect(t, url, { authorization: `Bearer ${stranger.token}` });
  other.send('bind mine');
  t.equal(await other.next(), 'error mine not-found', "another client's token: not bound");
  t.equal((await as(stranger.token, 'POST', 'Subscription/mine/$get-ws-binding-token')).status, 404, 'nor a binding token for it');

  const mine = await connect(t, url, { authorization: `Bearer ${owner.token}` });
  mine.send('bind mine');
  t.equal(await mine.next(), 'bound mine', 'the owner binds');
  const token = (await as(owner.token, 'POST', 'Subscription/mine/$get-ws-binding-token')).json.parameter.find((p: any) => p.name === 'token').valueString;
  anonymous.send(`bind-with-token ${token}`);
  t.equal(await anonymous.next(), 'bound mine', "a token the owner asked for binds a socket that carries no header (a browser's)");
  const adminSocket = await connect(t, url, { authorization: `Bearer ${admin}` });
  adminSocket.send('bind mine');
  t.equal(await adminSocket.next(), 'bound mine', 'an administrator binds');

  await as(owner.token, 'PUT', 'Observation/o1', heartRate('o1'));
  t.same([await mine.next(), await anonymous.next(), await adminSocket.next()], ['ping mine', 'ping mine', 'ping mine'], 'every bound socket is pinged');
  t.same(other.pending(), [], 'the stranger hears nothing');
});
