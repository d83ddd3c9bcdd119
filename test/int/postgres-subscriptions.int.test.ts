/**
 * Subscriptions on several nodes (two Vellums on one PostgreSQL database): a subscription created
 * on one node is an event target of writes on the other from the moment it is stored, one node
 * delivers (the delivery lease) so each notification is sent once, and when that node goes the
 * other takes over.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { freshDatabase } from '../helpers/postgres.ts';
import { startTestServer } from '../helpers/server.ts';
import { receiver, subscriptionsOf } from '../fhir/subscriptions/harness.ts';

const observation = (id: string, code: string) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code }] },
});

t.test('two nodes: made on one, notified of writes on the other, once each, in order; the other node takes over', async (t) => {
  const database = await freshDatabase(t);
  const hook = await receiver(t);
  // One database, one master key (nodes must share it: docs/deploy.md).
  const env = { VELLUM_DATABASE_URL: database, VELLUM_MASTER_KEY: randomBytes(32).toString('hex'), VELLUM_SUBSCRIPTION_ENDPOINTS_ALLOW: `127.0.0.1:${hook.port}`, VELLUM_SUBSCRIPTION_RETRY_MS: '10' };
  const a = await startTestServer(t, env);
  const b = await startTestServer(t, env);
  const subscription = {
    resourceType: 'Subscription',
    id: 'hr',
    status: 'requested',
    reason: 'heart rates',
    criteria: 'Observation?code=http://loinc.org|8867-4',
    channel: { type: 'rest-hook', endpoint: hook.url('hr'), payload: 'application/fhir+json' },
  };
  t.equal((await a.fhir('PUT', 'Subscription/hr', subscription)).status, 201, 'stored on node A');
  // No wait for node B to hear of it: its next commit reads the new Subscription first.
  for (let i = 0; i < 5; i++) t.equal((await b.fhir('PUT', `Observation/o${i}`, observation(`o${i}`, '8867-4'))).status, 201);
  t.equal((await b.fhir('PUT', 'Observation/other', observation('other', '1234-5'))).status, 201);
  await hook.until('hr', 6);
  const bodies = hook.at('hr').map((r) => r.body);
  t.equal(bodies[0], '', 'the handshake first');
  t.same(
    bodies.slice(1).map((b) => JSON.parse(b).id),
    ['o0', 'o1', 'o2', 'o3', 'o4'],
    'every write on node B, in order',
  );
  await subscriptionsOf(a).settle();
  await subscriptionsOf(b).settle();
  t.equal(hook.tried('hr').length, 6, 'each sent once: one node delivers');

  // The node that delivers goes away (or the other did): writes on the node left are still notified.
  await a.close();
  t.equal((await b.fhir('PUT', 'Observation/o5', observation('o5', '8867-4'))).status, 201);
  await hook.until('hr', 7);
  t.equal(JSON.parse(hook.at('hr')[6]!.body).id, 'o5', 'delivered by the node left');
});
